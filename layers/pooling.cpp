// Pooling: forward and backward side by side.
//
// Layout: x [N, C, H, W] and y [N, C, Ho, Wo], contiguous. Every (n, c) plane
// is pooled on its own, so the kernels run the planes in parallel (each
// plane's gradient is written by one thread only: no races).
#include "layers/pooling.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "core/autograd.h"
#include "core/parallel.h"
#include "kernels/per_isa.h"

namespace minnow {

namespace {

struct PoolGeometry {
    int64_t planes, H, W, k, s, p, Ho, Wo;
};

PoolGeometry pool_geometry(const char* op, const Tensor& x, int64_t k, std::optional<int64_t> stride,
                           int64_t p) {
    const int64_t s = stride.value_or(k);
    const std::string where = std::string(op) + "(kernel_size=" + std::to_string(k) + ", stride=" +
                              std::to_string(s) + ", padding=" + std::to_string(p) + ")";
    if (k < 1 || s < 1 || p < 0 || p > k / 2)
        throw Error(where + ": need kernel_size >= 1, stride >= 1 and 0 <= padding <= kernel_size / 2");
    if (x.dim() != 4) throw Error(where + ": expected input [N, C, H, W], got " + shape_str(x.shape()));
    const int64_t H = x.size(2), W = x.size(3);
    if (H + 2 * p < k || W + 2 * p < k)
        throw Error(where + ": input " + shape_str(x.shape()) + " is smaller than the window");
    return {x.size(0) * x.size(1), H, W, k, s, p, (H + 2 * p - k) / s + 1, (W + 2 * p - k) / s + 1};
}

}  // namespace

// ================================================================ max pool
// y = x[argmax over the window]  =>  dx[argmax] += dy, every other pixel 0.
// (A pixel in several overlapping windows collects from each.)
struct MaxPool2dBackward : Node {
    Tensor indices;  // flat ih*W + iw per output element, within its plane
    Shape input_shape;
    PoolGeometry g{};
    std::vector<Tensor> backward(const Tensor& dy) override {
        Tensor dx = Tensor::zeros(input_shape);
        const int64_t in_plane = g.H * g.W, out_plane = g.Ho * g.Wo;
        const float* idx = indices.data();
        const float* pdy = dy.data();
        float* pdx = dx.data();
#pragma omp parallel for if (dx.numel() > kParallelGrain)
        for (int64_t pl = 0; pl < g.planes; ++pl)
            for (int64_t q = 0; q < out_plane; ++q)
                pdx[pl * in_plane + static_cast<int64_t>(idx[pl * out_plane + q])] += pdy[pl * out_plane + q];
        return {dx};
    }
    void release_saved() override { indices = Tensor(); }
    const char* name() const override { return "MaxPool2dBackward"; }
};

// mask ? a : b for a mask of all ones or all zeros, with bit operations: g++
// turns `take ? a : b` on floats into a branch (it does not if-convert float
// selects under its default -ftrapping-math), which keeps the loop from
// vectorising; this form vectorises to compares and blends.
static inline float select_bits(uint32_t mask, float a, float b) {
    uint32_t ua, ub;
    std::memcpy(&ua, &a, 4);
    std::memcpy(&ub, &b, 4);
    const uint32_t r = (ua & mask) | (ub & ~mask);
    float out;
    std::memcpy(&out, &r, 4);
    return out;
}

// The outputs of one plane without padding: the same choice as the
// window-by-window loop in max_pool2d_with_indices (window elements in
// row-major order, a strictly larger value or a NaN takes over), written so
// that the loop over the outputs ow of a row vectorises. (The loop per window
// was about 15x slower for the 2x2 windows of the reference CNN: too short to
// vectorise, with a branch per element.) The window size K and stride S are
// template parameters for the common 2x2 stride 2, whose window loops then
// unroll; K = S = 0 reads them at run time (that loop does not vectorise, but
// it has no branches either). Compiled per instruction-set level
// (kernels/per_isa.h): the 2x2 loop over a batch [128, 64, 32, 32] took 1.8 ms
// at avx512 and avx2 against 2.4 ms for baseline x86-64 (SSE2), one thread
// of a Zen 5.
namespace {

template <int K, int S>
struct MaxPoolPlane {
    MINNOW_LOOP_BODY static void run(const float* plane, PoolGeometry g, float* __restrict y, float* __restrict idx) {
        // Positions in int32 (the caller checks that the plane fits): their
        // conversion to float vectorises with any level, where int64's needs
        // AVX-512DQ (without it the AVX2 copy stayed scalar, 7x slower).
        const int32_t k = K ? K : static_cast<int32_t>(g.k), s = S ? S : static_cast<int32_t>(g.s);
        const int32_t W = static_cast<int32_t>(g.W), Ho = static_cast<int32_t>(g.Ho), Wo = static_cast<int32_t>(g.Wo);
        for (int32_t oh = 0; oh < Ho; ++oh, y += Wo, idx += Wo) {
            const float* __restrict top = plane + oh * s * W;  // the windows' first row
#pragma omp simd
            for (int32_t ow = 0; ow < Wo; ++ow) {
                float best = top[ow * s];
                float at = static_cast<float>(oh * s * W + ow * s);  // flat index of the element in the plane
                for (int32_t i = 0; i < k; ++i)
                    for (int32_t j = 0; j < k; ++j) {
                        if (i == 0 && j == 0) continue;
                        const float v = top[i * W + ow * s + j];
                        const uint32_t take = ((v > best) | (v != v)) ? ~0u : 0u;  // v != v: a NaN
                        best = select_bits(take, v, best);
                        at = select_bits(take, static_cast<float>((oh * s + i) * W + ow * s + j), at);
                    }
                y[ow] = best;
                idx[ow] = at;
            }
        }
    }
};

}  // namespace

MaxPoolResult max_pool2d_with_indices(const Tensor& x, int64_t k, std::optional<int64_t> stride, int64_t p) {
    const PoolGeometry g = pool_geometry("MaxPool2d", x, k, stride, p);
    Tensor y = Tensor::empty({x.size(0), x.size(1), g.Ho, g.Wo});
    Tensor indices = Tensor::empty(y.shape());
    const float* px = x.data();
    float* py = y.data();
    float* pi = indices.data();
#pragma omp parallel for if (x.numel() > kParallelGrain)
    for (int64_t pl = 0; pl < g.planes; ++pl) {
        const float* plane = px + pl * g.H * g.W;
        if (g.p == 0 && g.H * g.W <= INT32_MAX) {  // every window lies inside the image: MaxPoolPlane
            const int64_t o = pl * g.Ho * g.Wo;
            if (g.k == 2 && g.s == 2) per_isa::run<MaxPoolPlane<2, 2>>(plane, g, py + o, pi + o);
            else per_isa::run<MaxPoolPlane<0, 0>>(plane, g, py + o, pi + o);
            continue;
        }
        for (int64_t oh = 0; oh < g.Ho; ++oh)
            for (int64_t ow = 0; ow < g.Wo; ++ow) {
                // the window clipped to the image (padding never wins: it is -inf)
                const int64_t h0 = std::max<int64_t>(oh * g.s - g.p, 0), h1 = std::min(oh * g.s - g.p + k, g.H);
                const int64_t w0 = std::max<int64_t>(ow * g.s - g.p, 0), w1 = std::min(ow * g.s - g.p + k, g.W);
                int64_t best = h0 * g.W + w0;
                float best_v = -std::numeric_limits<float>::infinity();
                for (int64_t ih = h0; ih < h1; ++ih)
                    for (int64_t iw = w0; iw < w1; ++iw) {
                        const float v = plane[ih * g.W + iw];
                        if (v > best_v || std::isnan(v)) {  // strict >: the first maximum wins ties
                            best_v = v;
                            best = ih * g.W + iw;
                        }
                    }
                const int64_t o = (pl * g.Ho + oh) * g.Wo + ow;
                py[o] = best_v;
                pi[o] = static_cast<float>(best);
            }
    }
    if (any_requires_grad({x})) {
        auto node = std::make_shared<MaxPool2dBackward>();
        node->indices = indices;
        node->input_shape = x.shape();
        node->g = g;
        y = attach(y, node, {x});
    }
    return {y, indices};
}

Tensor max_pool2d(const Tensor& x, int64_t k, std::optional<int64_t> stride, int64_t p) {
    return max_pool2d_with_indices(x, k, stride, p).output;
}

// ================================================================ average pool
// y[oh, ow] = 1/k^2 * sum over the window of x (padding adds zeros)
//   =>  dx[ih, iw] = sum over the windows containing (ih, iw) of dy[oh, ow] / k^2
struct AvgPool2dBackward : Node {
    Shape input_shape;
    PoolGeometry g{};
    std::vector<Tensor> backward(const Tensor& dy) override {
        Tensor dx = Tensor::zeros(input_shape);
        const float inv = 1.f / static_cast<float>(g.k * g.k);
        const float* pdy = dy.data();
        float* pdx = dx.data();
#pragma omp parallel for if (dx.numel() > kParallelGrain)
        for (int64_t pl = 0; pl < g.planes; ++pl) {
            float* plane = pdx + pl * g.H * g.W;
            for (int64_t oh = 0; oh < g.Ho; ++oh)
                for (int64_t ow = 0; ow < g.Wo; ++ow) {
                    const float share = pdy[(pl * g.Ho + oh) * g.Wo + ow] * inv;
                    const int64_t h0 = std::max<int64_t>(oh * g.s - g.p, 0), h1 = std::min(oh * g.s - g.p + g.k, g.H);
                    const int64_t w0 = std::max<int64_t>(ow * g.s - g.p, 0), w1 = std::min(ow * g.s - g.p + g.k, g.W);
                    for (int64_t ih = h0; ih < h1; ++ih)
                        for (int64_t iw = w0; iw < w1; ++iw) plane[ih * g.W + iw] += share;
                }
        }
        return {dx};
    }
    const char* name() const override { return "AvgPool2dBackward"; }
};

Tensor avg_pool2d(const Tensor& x, int64_t k, std::optional<int64_t> stride, int64_t p) {
    const PoolGeometry g = pool_geometry("AvgPool2d", x, k, stride, p);
    Tensor y = Tensor::empty({x.size(0), x.size(1), g.Ho, g.Wo});
    const float inv = 1.f / static_cast<float>(k * k);
    const float* px = x.data();
    float* py = y.data();
#pragma omp parallel for if (x.numel() > kParallelGrain)
    for (int64_t pl = 0; pl < g.planes; ++pl) {
        const float* plane = px + pl * g.H * g.W;
        for (int64_t oh = 0; oh < g.Ho; ++oh)
            for (int64_t ow = 0; ow < g.Wo; ++ow) {
                const int64_t h0 = std::max<int64_t>(oh * g.s - g.p, 0), h1 = std::min(oh * g.s - g.p + k, g.H);
                const int64_t w0 = std::max<int64_t>(ow * g.s - g.p, 0), w1 = std::min(ow * g.s - g.p + k, g.W);
                float sum = 0.f;
                for (int64_t ih = h0; ih < h1; ++ih)
                    for (int64_t iw = w0; iw < w1; ++iw) sum += plane[ih * g.W + iw];
                py[(pl * g.Ho + oh) * g.Wo + ow] = sum * inv;
            }
    }
    auto node = std::make_shared<AvgPool2dBackward>();
    node->input_shape = x.shape();
    node->g = g;
    return attach(y, node, {x});
}

// ================================================================ global average pool
// y[n, c] = 1/(H W) * sum_{h, w} x[n, c, h, w]  =>  dx[n, c, h, w] = dy[n, c] / (H W)
struct AdaptiveAvgPool2dBackward : Node {
    Shape input_shape;
    std::vector<Tensor> backward(const Tensor& dy) override {
        Tensor dx = Tensor::empty(input_shape);
        const int64_t hw = input_shape[2] * input_shape[3], planes = input_shape[0] * input_shape[1];
        const float inv = 1.f / static_cast<float>(hw);
        const float* pdy = dy.data();
        float* pdx = dx.data();
#pragma omp parallel for if (dx.numel() > kParallelGrain)
        for (int64_t pl = 0; pl < planes; ++pl) std::fill(pdx + pl * hw, pdx + (pl + 1) * hw, pdy[pl] * inv);
        return {dx};
    }
    const char* name() const override { return "AdaptiveAvgPool2dBackward"; }
};

Tensor adaptive_avg_pool2d(const Tensor& x, int64_t output_size) {
    if (output_size != 1)
        throw Error("AdaptiveAvgPool2d: only output_size 1 (global average pooling) is supported, got " +
                    std::to_string(output_size));
    if (x.dim() != 4 || x.size(2) * x.size(3) == 0)
        throw Error("AdaptiveAvgPool2d(output_size=1): expected input [N, C, H, W] with H, W >= 1, got " +
                    shape_str(x.shape()));
    const int64_t planes = x.size(0) * x.size(1), hw = x.size(2) * x.size(3);
    Tensor y = Tensor::empty({x.size(0), x.size(1), 1, 1});
    const float* px = x.data();
    float* py = y.data();
#pragma omp parallel for if (x.numel() > kParallelGrain)
    for (int64_t pl = 0; pl < planes; ++pl) {
        double sum = 0;  // in double: H*W terms
        for (int64_t q = 0; q < hw; ++q) sum += px[pl * hw + q];
        py[pl] = static_cast<float>(sum / static_cast<double>(hw));
    }
    auto node = std::make_shared<AdaptiveAvgPool2dBackward>();
    node->input_shape = x.shape();
    return attach(y, node, {x});
}

// ================================================================ modules
static std::string pool_repr(int64_t k, int64_t s, int64_t p) {
    return "kernel_size=" + std::to_string(k) + ", stride=" + std::to_string(s) + ", padding=" + std::to_string(p);
}

MaxPool2d::MaxPool2d(int64_t k, std::optional<int64_t> s, int64_t p)
    : kernel_size(k), stride(s.value_or(k)), padding(p) {
    if (k < 1 || stride < 1 || p < 0 || p > k / 2)
        throw Error("MaxPool2d(" + pool_repr(k, stride, p) + "): invalid configuration");
}
Tensor MaxPool2d::forward(const Tensor& x) { return max_pool2d(x, kernel_size, stride, padding); }
std::string MaxPool2d::extra_repr() const { return pool_repr(kernel_size, stride, padding); }

AvgPool2d::AvgPool2d(int64_t k, std::optional<int64_t> s, int64_t p)
    : kernel_size(k), stride(s.value_or(k)), padding(p) {
    if (k < 1 || stride < 1 || p < 0 || p > k / 2)
        throw Error("AvgPool2d(" + pool_repr(k, stride, p) + "): invalid configuration");
}
Tensor AvgPool2d::forward(const Tensor& x) { return avg_pool2d(x, kernel_size, stride, padding); }
std::string AvgPool2d::extra_repr() const { return pool_repr(kernel_size, stride, padding); }

AdaptiveAvgPool2d::AdaptiveAvgPool2d(int64_t output_size) : output_size(output_size) {
    if (output_size != 1)
        throw Error("AdaptiveAvgPool2d: only output_size 1 (global average pooling) is supported, got " +
                    std::to_string(output_size));
}

}  // namespace minnow
