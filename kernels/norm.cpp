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

namespace run_sums {

double sum(const float* p, int64_t len) {
    double s = 0;
    for (int64_t i0 = 0; i0 < len; i0 += kChunk) {
        const int64_t i1 = std::min(len, i0 + kChunk);
        float part = 0.f;
#pragma omp simd reduction(+ : part)
        for (int64_t i = i0; i < i1; ++i) part += p[i];
        s += part;
    }
    return s;
}

double sum_sq_dev(const float* p, int64_t len, float mu) {
    double s = 0;
    for (int64_t i0 = 0; i0 < len; i0 += kChunk) {
        const int64_t i1 = std::min(len, i0 + kChunk);
        float part = 0.f;
#pragma omp simd reduction(+ : part)
        for (int64_t i = i0; i < i1; ++i) part += (p[i] - mu) * (p[i] - mu);
        s += part;
    }
    return s;
}

void grad_sums(const float* dy, const float* x, int64_t len, float mu, double& s_dy, double& s_dy_xmu) {
    for (int64_t i0 = 0; i0 < len; i0 += kChunk) {
        const int64_t i1 = std::min(len, i0 + kChunk);
        float a = 0.f, b = 0.f;
#pragma omp simd reduction(+ : a, b)
        for (int64_t i = i0; i < i1; ++i) {
            a += dy[i];
            b += dy[i] * (x[i] - mu);
        }
        s_dy += a;
        s_dy_xmu += b;
    }
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
// reaches z through the ReLU: the same chunks and the same order of
// additions, so the same sums as ReLU's backward writing g and grad_sums
// reading it.
void grad_sums_through_relu(const float* dy, const float* x, int64_t len, float mu, float a, float b, double& s_dy,
                            double& s_dy_xmu) {
    for (int64_t i0 = 0; i0 < len; i0 += kChunk) {
        const int64_t i1 = std::min(len, i0 + kChunk);
        float sg = 0.f, sgx = 0.f;
#pragma omp simd reduction(+ : sg, sgx)
        for (int64_t i = i0; i < i1; ++i) {
            const float g = relu_grad(dy[i], affine(x[i], a, b));
            sg += g;
            sgx += g * (x[i] - mu);
        }
        s_dy += sg;
        s_dy_xmu += sgx;
    }
}

template <bool Relu>
void normalize_impl(const float* x, const ChannelView& v, const channel_kernels::ForwardCoef& coef, float* y) {
    const double m = static_cast<double>(v.per_channel());
#pragma omp parallel for if (v.numel() > kParallelGrain)
    for (int64_t c = 0; c < v.C; ++c) {
        // Pass 1: the mean (from memory). Pass 2: the squared deviations
        // (from cache), which cannot cancel like E[x^2] - E[x]^2 does when
        // |mean| >> std.
        double s = 0;
        for (int64_t n = 0; n < v.N; ++n) s += run_sums::sum(x + (n * v.C + c) * v.S, v.S);
        const double mean = s / m;
        double q = 0;
        for (int64_t n = 0; n < v.N; ++n)
            q += run_sums::sum_sq_dev(x + (n * v.C + c) * v.S, v.S, static_cast<float>(mean));
        float scale, shift;
        coef(c, mean, q / m, scale, shift);
        scale_shift_channel<Relu>(x, v, c, scale, shift, y);  // pass 3 (from cache)
    }
}

template <bool Relu>
void scale_shift_impl(const float* x, const ChannelView& v, const float* scale, const float* shift, float* y) {
#pragma omp parallel for if (v.numel() > kParallelGrain)
    for (int64_t c = 0; c < v.C; ++c) scale_shift_channel<Relu>(x, v, c, scale[c], shift[c], y);
}

// With Relu, dy is the gradient of relu(x * scale + shift) and g (the
// gradient of z) replaces dy throughout; without, g = dy.
template <bool Relu>
void backward_impl(const float* dy, const float* x, const ChannelView& v, const float* mean,
                   const channel_kernels::BackwardCoef& coef, float* dx, const channel_kernels::ReluAfter* relu) {
#pragma omp parallel for if (v.numel() > kParallelGrain)
    for (int64_t c = 0; c < v.C; ++c) {
        const float mu = mean[c];
        const float zs = Relu ? relu->scale[c] : 0.f, zb = Relu ? relu->shift[c] : 0.f;
        // Pass 1: the two sums (from memory).
        double s_dy = 0, s_dy_xmu = 0;
        for (int64_t n = 0; n < v.N; ++n) {
            const int64_t off = (n * v.C + c) * v.S;
            if (Relu)
                grad_sums_through_relu(dy + off, x + off, v.S, mu, zs, zb, s_dy, s_dy_xmu);
            else
                run_sums::grad_sums(dy + off, x + off, v.S, mu, s_dy, s_dy_xmu);
        }
        float a, b, k;
        coef(c, s_dy, s_dy_xmu, a, b, k);
        if (!dx) continue;
        // Pass 2: dx (dy and x from cache). With b = k = 0 (eval mode, frozen
        // statistics) dx = a * g, without x: (x - mu) * 0 is NaN where x is
        // +-inf, and PyTorch's eval backward, gamma * invstd * dy, is finite there.
        // (For finite x both forms give the same bits.)
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

}  // namespace channel_kernels

}  // namespace minnow
