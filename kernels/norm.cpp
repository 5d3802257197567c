// The normalisation kernels of kernels/norm.h.
#include "kernels/norm.h"

#include <algorithm>
#include <string>

#include "core/error.h"
#include "core/parallel.h"

namespace minnow {

// Sums run in float over chunks this long (so the loop vectorises), and the
// chunk sums are added up in double: each float partial sees few terms.
static constexpr int64_t kChunk = 1024;

ChannelView::ChannelView(const std::vector<int64_t>& shape) {
    if (shape.size() < 2) {
        std::string dims;
        for (int64_t d : shape) dims += (dims.empty() ? "" : ", ") + std::to_string(d);
        throw Error("ChannelView: expected a tensor [N, C, *], got shape [" + dims + "]");
    }
    N = shape[0];
    C = shape[1];
    S = 1;
    for (size_t d = 2; d < shape.size(); ++d) S *= shape[d];
}

namespace {

// ---------------------------------------------------------------- the order of additions
// Every float sum of this file is one of lane_sums below, so its order of
// additions is written out here and not left to the vectoriser: term i of a
// chunk goes to lane i % kLanes, each lane adds its terms in order of i (the
// tail's, fewer than kLanes, to the first lanes), and the lanes are combined
// by a fixed tree (l += l + 8, then + 4, + 2, + 1). A `#pragma omp simd
// reduction` leaves the order (vector width, unrolling, the epilogue) to the
// compiler, which need not pick the same for two loops: BatchNorm + ReLU
// fused promises the bits of ReLU's backward followed by BatchNorm's, so its
// sums over g = relu_grad(dy, z) and grad_sums over the g that ReLU wrote must
// add the same numbers in the same order. kLanes = 16 floats are one AVX-512
// register, two AVX2 ones or four SSE ones: the same order vectorises at
// every width. The other half of the promise is that a product rounds the same
// way in both loops; with fused multiply-adds left to the compiler (g++'s
// default -ffp-contract=fast) it did not: g++ 12 at -march=native on Zen 3
// gave grad_sums' vector loop vmulps + vaddps and the fused one's vfmadd231ps.
// So this file is compiled with -ffp-contract=off (CMakeLists.txt): every
// a * b + c here rounds the product, whatever the compiler and the ISA.
constexpr int kLanes = 16;

// sa = sum_{i < n} ta(i), sb = sum_{i < n} tb(i), in the order above (n <= kChunk).
template <class TermA, class TermB>
inline void lane_sums(int64_t n, TermA ta, TermB tb, float& sa, float& sb) {
    float a[kLanes] = {}, b[kLanes] = {};
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes) {
#pragma omp simd
        for (int l = 0; l < kLanes; ++l) {
            a[l] += ta(i + l);
            b[l] += tb(i + l);
        }
    }
    for (int l = 0; i + l < n; ++l) {
        a[l] += ta(i + l);
        b[l] += tb(i + l);
    }
    for (int w = kLanes / 2; w >= 1; w /= 2)
        for (int l = 0; l < w; ++l) {
            a[l] += a[l + w];
            b[l] += b[l + w];
        }
    sa = a[0], sb = b[0];
}

// One sum in the same order.
template <class Term>
inline float lane_sum(int64_t n, Term t) {
    float a[kLanes] = {};
    int64_t i = 0;
    for (; i + kLanes <= n; i += kLanes) {
#pragma omp simd
        for (int l = 0; l < kLanes; ++l) a[l] += t(i + l);
    }
    for (int l = 0; i + l < n; ++l) a[l] += t(i + l);
    for (int w = kLanes / 2; w >= 1; w /= 2)
        for (int l = 0; l < w; ++l) a[l] += a[l + w];
    return a[0];
}

// The backward's two sums over a run, s_dy += sum g(i) and s_dy_xmu += sum
// g(i) * (x[i] - mu), for g = dy (BatchNorm's own backward) or g =
// relu_grad(dy, z) (fused with the ReLU after it): one function for both, so
// the same g gives the same sums.
template <class Grad>
inline void grad_sums_of(Grad g, const float* x, int64_t len, float mu, double& s_dy, double& s_dy_xmu) {
    for (int64_t i0 = 0; i0 < len; i0 += kChunk) {
        const float* xc = x + i0;
        float a, b;
        lane_sums(
            std::min(len - i0, kChunk), [&](int64_t i) { return g(i0 + i); },
            [&](int64_t i) { return g(i0 + i) * (xc[i] - mu); }, a, b);
        s_dy += a;
        s_dy_xmu += b;
    }
}

}  // namespace

namespace run_sums {

double sum(const float* p, int64_t len) {
    double s = 0;
    for (int64_t i0 = 0; i0 < len; i0 += kChunk) {
        const float* c = p + i0;
        s += lane_sum(std::min(len - i0, kChunk), [&](int64_t i) { return c[i]; });
    }
    return s;
}

double sum_sq_dev(const float* p, int64_t len, float mu) {
    double s = 0;
    for (int64_t i0 = 0; i0 < len; i0 += kChunk) {
        const float* c = p + i0;
        s += lane_sum(std::min(len - i0, kChunk), [&](int64_t i) { return (c[i] - mu) * (c[i] - mu); });
    }
    return s;
}

void grad_sums(const float* dy, const float* x, int64_t len, float mu, double& s_dy, double& s_dy_xmu) {
    grad_sums_of([&](int64_t i) { return dy[i]; }, x, len, mu, s_dy, s_dy_xmu);
}

}  // namespace run_sums

namespace {

// z = x * a + b, the normalised value: the forward writes it (or relu(z)),
// the fused backward recomputes it for ReLU's mask. One function, so both
// evaluate the same expression and get the same bits.
inline float affine(float x, float a, float b) { return x * a + b; }
// relu(z) and its backward, as core's relu(): written as !(z <= 0) so that a
// NaN passes through both ways, and the gradient at the kink z = 0 is 0.
inline float relu_of(float z) { return !(z <= 0.f) ? z : 0.f; }
inline float relu_grad(float dy, float z) { return !(z <= 0.f) ? dy : 0.f; }

// y = x * a + b (or its relu) over the N runs of channel c.
template <bool Relu>
void scale_shift_channel(const float* x, const ChannelView& v, int64_t c, float a, float b, float* y) {
    for (int64_t n = 0; n < v.N; ++n) {
        const int64_t off = (n * v.C + c) * v.S;
        const float* xp = x + off;
        float* yp = y + off;
#pragma omp simd
        for (int64_t i = 0; i < v.S; ++i) {
            const float z = affine(xp[i], a, b);
            yp[i] = Relu ? relu_of(z) : z;
        }
    }
}

// run_sums::grad_sums over g = relu_grad(dy, x * a + b), the gradient that
// reaches z through the ReLU: the same function of g (grad_sums_of), so the
// same sums as ReLU's backward writing g and grad_sums reading it.
void grad_sums_through_relu(const float* dy, const float* x, int64_t len, float mu, float a, float b, double& s_dy,
                            double& s_dy_xmu) {
    grad_sums_of([&](int64_t i) { return relu_grad(dy[i], affine(x[i], a, b)); }, x, len, mu, s_dy, s_dy_xmu);
}

// Passes 1 and 2 over channel c: its mean (from memory), then the sum of
// squared deviations from it (from cache), which cannot cancel like
// E[x^2] - E[x]^2 does when |mean| >> std.
void channel_moments(const float* x, const ChannelView& v, int64_t c, double& mean, double& m2) {
    double s = 0;
    for (int64_t n = 0; n < v.N; ++n) s += run_sums::sum(x + (n * v.C + c) * v.S, v.S);
    mean = s / static_cast<double>(v.per_channel());
    double q = 0;
    for (int64_t n = 0; n < v.N; ++n)
        q += run_sums::sum_sq_dev(x + (n * v.C + c) * v.S, v.S, static_cast<float>(mean));
    m2 = q;
}

// With Relu, dy is the gradient of relu(x * zs + zb) and g (the gradient of
// z) replaces dy throughout; without, g = dy (zs, zb unused).
// The backward's pass 1 over channel c: s_dy += sum g, s_dy_xmu += sum g * (x - mu).
template <bool Relu>
void channel_grad_sums(const float* dy, const float* x, const ChannelView& v, int64_t c, float mu, float zs,
                       float zb, double& s_dy, double& s_dy_xmu) {
    for (int64_t n = 0; n < v.N; ++n) {
        const int64_t off = (n * v.C + c) * v.S;
        if (Relu)
            grad_sums_through_relu(dy + off, x + off, v.S, mu, zs, zb, s_dy, s_dy_xmu);
        else
            run_sums::grad_sums(dy + off, x + off, v.S, mu, s_dy, s_dy_xmu);
    }
}

// The backward's pass 2 over channel c: dx = a * (g - b - (x - mu) * k).
// With b = k = 0 (eval mode, frozen statistics) dx = a * g, without x:
// (x - mu) * 0 is NaN where x is +-inf, and PyTorch's eval backward,
// gamma * invstd * dy, is finite there. (For finite x both forms give the
// same bits.)
template <bool Relu>
void channel_input_grad(const float* dy, const float* x, const ChannelView& v, int64_t c, float mu, float zs,
                        float zb, float a, float b, float k, float* dx) {
    const bool const_stats = b == 0.f && k == 0.f;
    for (int64_t n = 0; n < v.N; ++n) {
        const int64_t off = (n * v.C + c) * v.S;
        const float* dyp = dy + off;
        const float* xp = x + off;
        float* dxp = dx + off;
        if (const_stats) {
#pragma omp simd
            for (int64_t i = 0; i < v.S; ++i) dxp[i] = a * (Relu ? relu_grad(dyp[i], affine(xp[i], zs, zb)) : dyp[i]);
            continue;
        }
#pragma omp simd
        for (int64_t i = 0; i < v.S; ++i) {
            const float g = Relu ? relu_grad(dyp[i], affine(xp[i], zs, zb)) : dyp[i];
            dxp[i] = a * (g - b - (xp[i] - mu) * k);
        }
    }
}

template <bool Relu>
void normalize_impl(const float* x, const ChannelView& v, const channel_kernels::ForwardCoef& coef, float* y) {
    const double m = static_cast<double>(v.per_channel());
#pragma omp parallel for if (v.numel() > kParallelGrain)
    for (int64_t c = 0; c < v.C; ++c) {
        double mean, m2;
        channel_moments(x, v, c, mean, m2);  // passes 1 and 2
        float scale, shift;
        coef(c, mean, m2 / m, scale, shift);
        scale_shift_channel<Relu>(x, v, c, scale, shift, y);  // pass 3 (from cache)
    }
}

template <bool Relu>
void scale_shift_impl(const float* x, const ChannelView& v, const float* scale, const float* shift, float* y) {
#pragma omp parallel for if (v.numel() > kParallelGrain)
    for (int64_t c = 0; c < v.C; ++c) scale_shift_channel<Relu>(x, v, c, scale[c], shift[c], y);
}

template <bool Relu>
void backward_impl(const float* dy, const float* x, const ChannelView& v, const float* mean,
                   const channel_kernels::BackwardCoef& coef, float* dx, const channel_kernels::ReluAfter* relu) {
#pragma omp parallel for if (v.numel() > kParallelGrain)
    for (int64_t c = 0; c < v.C; ++c) {
        const float zs = Relu ? relu->scale[c] : 0.f, zb = Relu ? relu->shift[c] : 0.f;
        double s_dy = 0, s_dy_xmu = 0;
        channel_grad_sums<Relu>(dy, x, v, c, mean[c], zs, zb, s_dy, s_dy_xmu);  // pass 1 (from memory)
        float a, b, k;
        coef(c, s_dy, s_dy_xmu, a, b, k);
        if (dx) channel_input_grad<Relu>(dy, x, v, c, mean[c], zs, zb, a, b, k, dx);  // pass 2 (from cache)
    }
}

template <bool Relu>
void grad_sums_impl(const float* dy, const float* x, const ChannelView& v, const float* mean,
                    const channel_kernels::ReluAfter* relu, double* s_dy, double* s_dy_xmu) {
#pragma omp parallel for if (v.numel() > kParallelGrain)
    for (int64_t c = 0; c < v.C; ++c) {
        s_dy[c] = s_dy_xmu[c] = 0;
        channel_grad_sums<Relu>(dy, x, v, c, mean[c], Relu ? relu->scale[c] : 0.f, Relu ? relu->shift[c] : 0.f,
                                s_dy[c], s_dy_xmu[c]);
    }
}

template <bool Relu>
void input_grad_impl(const float* dy, const float* x, const ChannelView& v, const float* mean, const float* a,
                     const float* b, const float* k, const channel_kernels::ReluAfter* relu, float* dx) {
#pragma omp parallel for if (v.numel() > kParallelGrain)
    for (int64_t c = 0; c < v.C; ++c)
        channel_input_grad<Relu>(dy, x, v, c, mean[c], Relu ? relu->scale[c] : 0.f, Relu ? relu->shift[c] : 0.f,
                                 a[c], b[c], k[c], dx);
}

}  // namespace

namespace channel_kernels {

void normalize(const float* x, const ChannelView& v, const ForwardCoef& coef, float* y, bool relu) {
    relu ? normalize_impl<true>(x, v, coef, y) : normalize_impl<false>(x, v, coef, y);
}

void scale_shift(const float* x, const ChannelView& v, const float* scale, const float* shift, float* y,
                 bool relu) {
    relu ? scale_shift_impl<true>(x, v, scale, shift, y) : scale_shift_impl<false>(x, v, scale, shift, y);
}

void backward(const float* dy, const float* x, const ChannelView& v, const float* mean,
              const BackwardCoef& coef, float* dx, const ReluAfter* relu) {
    relu ? backward_impl<true>(dy, x, v, mean, coef, dx, relu) : backward_impl<false>(dy, x, v, mean, coef, dx, nullptr);
}

void moments(const float* x, const ChannelView& v, double* mean, double* m2) {
#pragma omp parallel for if (v.numel() > kParallelGrain)
    for (int64_t c = 0; c < v.C; ++c) channel_moments(x, v, c, mean[c], m2[c]);
}

void grad_sums(const float* dy, const float* x, const ChannelView& v, const float* mean, double* sum_dy,
               double* sum_dy_xmu, const ReluAfter* relu) {
    relu ? grad_sums_impl<true>(dy, x, v, mean, relu, sum_dy, sum_dy_xmu)
         : grad_sums_impl<false>(dy, x, v, mean, nullptr, sum_dy, sum_dy_xmu);
}

void input_grad(const float* dy, const float* x, const ChannelView& v, const float* mean, const float* a,
                const float* b, const float* k, float* dx, const ReluAfter* relu) {
    relu ? input_grad_impl<true>(dy, x, v, mean, a, b, k, relu, dx)
         : input_grad_impl<false>(dy, x, v, mean, a, b, k, nullptr, dx);
}

}  // namespace channel_kernels

}  // namespace minnow
