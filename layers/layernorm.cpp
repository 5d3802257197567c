// LayerNorm: forward, the hand-derived backward beside it, and the module.
#include "layers/layernorm.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "core/autograd.h"
#include "core/parallel.h"
#include "kernels/norm.h"

namespace minnow {

static constexpr int64_t kColumnBlock = 256;  // columns per task in the weight/bias gradient

// ================================================================ backward
//
// One row, M values, g_i = dL/dy_i, w/b the per-element weight and bias:
//
//     mu = 1/M sum_i x_i,  var = 1/M sum_i (x_i - mu)^2,  invstd = 1/sqrt(var + eps)
//     xhat_i = (x_i - mu) * invstd,   y_i = w_i xhat_i + b_i
//
// This is BatchNorm's function with the roles of the axes swapped (the
// statistics are over a row instead of a channel), so its derivation
// (layers/batchnorm.cpp) carries over with dxhat_i = w_i g_i in place of
// gamma * g_i; w now varies with i, so it stays inside the sums:
//
//     dx_i = invstd / M * (M dxhat_i - sum_j dxhat_j - xhat_i sum_j dxhat_j xhat_j)
//          = invstd * (dxhat_i - mean(dxhat) - xhat_i * mean(dxhat * xhat))         (1)
//
// The parameters are per element, shared by all rows, so their gradients sum
// over the rows:
//     dw_i = sum_rows g_i xhat_i,    db_i = sum_rows g_i                          (2)
struct LayerNormBackward : Node {
    Tensor x;             // the input
    Tensor mean, invstd;  // [rows]
    Tensor weight;        // normalized_shape, or undefined
    Shape normalized_shape;
    int64_t M = 0;        // values per row

    std::vector<Tensor> backward(const Tensor& dy) override {
        const int64_t R = x.numel() / M;
        const float* px = x.data();
        const float* pg = dy.data();
        const float* pm = mean.data();
        const float* pi = invstd.data();
        const float* w = weight.defined() ? weight.data() : nullptr;
        Tensor dx, dw, db;
        if (needs_grad(0)) {  // (1), one row per task
            dx = Tensor::empty(x.shape());
            float* pdx = dx.data();
#pragma omp parallel for if (x.numel() > kParallelGrain)
            for (int64_t r = 0; r < R; ++r) {
                const float* xr = px + r * M;
                const float* gr = pg + r * M;
                float* dxr = pdx + r * M;
                const float mu = pm[r], is = pi[r];
                double s1 = 0, s2 = 0;  // sum dxhat, sum dxhat * xhat
                for (int64_t i = 0; i < M; ++i) {
                    const double dxhat = static_cast<double>(gr[i]) * (w ? w[i] : 1.f);
                    s1 += dxhat;
                    s2 += dxhat * (xr[i] - mu) * is;
                }
                const float mean_dxhat = static_cast<float>(s1 / M), mean_dxhat_xhat = static_cast<float>(s2 / M);
#pragma omp simd
                for (int64_t i = 0; i < M; ++i) {
                    const float xhat = (xr[i] - mu) * is;
                    dxr[i] = is * (gr[i] * (w ? w[i] : 1.f) - mean_dxhat - xhat * mean_dxhat_xhat);
                }
            }
        }
        if (needs_grad(1) || needs_grad(2)) {  // (2), one block of columns per task
            if (needs_grad(1)) dw = Tensor::empty(normalized_shape);
            if (needs_grad(2)) db = Tensor::empty(normalized_shape);
            float* pdw = dw.defined() ? dw.data() : nullptr;
            float* pdb = db.defined() ? db.data() : nullptr;
            const int64_t blocks = (M + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for if (x.numel() > kParallelGrain)
            for (int64_t blk = 0; blk < blocks; ++blk) {
                const int64_t i0 = blk * kColumnBlock, i1 = std::min(M, i0 + kColumnBlock);
                double acc_w[kColumnBlock] = {}, acc_b[kColumnBlock] = {};
                for (int64_t r = 0; r < R; ++r) {
                    const float mu = pm[r], is = pi[r];
                    for (int64_t i = i0; i < i1; ++i) {
                        const float g = pg[r * M + i];
                        acc_w[i - i0] += g * ((px[r * M + i] - mu) * is);
                        acc_b[i - i0] += g;
                    }
                }
                for (int64_t i = i0; i < i1; ++i) {
                    if (pdw) pdw[i] = static_cast<float>(acc_w[i - i0]);
                    if (pdb) pdb[i] = static_cast<float>(acc_b[i - i0]);
                }
            }
        }
        return {dx, dw, db};
    }
    void release_saved() override { x = mean = invstd = weight = Tensor(); }
    const char* name() const override { return "LayerNormBackward"; }
};

// ================================================================ forward
Tensor layer_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight, const Tensor& bias,
                  float eps) {
    const int64_t D = static_cast<int64_t>(normalized_shape.size());
    const Shape& xs = x.shape();
    bool ok = D >= 1 && x.dim() >= D;
    for (int64_t k = 0; ok && k < D; ++k) ok = xs[x.dim() - D + k] == normalized_shape[k];
    if (!ok)
        throw Error("layer_norm: input of shape " + shape_str(xs) + " does not end in normalized_shape " +
                    shape_str(normalized_shape));
    for (const Tensor* t : {&weight, &bias})
        if (t->defined() && t->shape() != normalized_shape)
            throw Error("layer_norm: weight/bias of shape " + shape_str(t->shape()) + ", expected " +
                        shape_str(normalized_shape));
    const int64_t M = shape_numel(normalized_shape);
    const int64_t R = M == 0 ? 0 : x.numel() / M;
    Tensor mean = Tensor::empty({R}), invstd = Tensor::empty({R});
    Tensor y = Tensor::empty(xs);
    const float* px = x.data();
    float* py = y.data();
    float* pm = mean.data();
    float* pi = invstd.data();
    const float* w = weight.defined() ? weight.data() : nullptr;
    const float* b = bias.defined() ? bias.data() : nullptr;
#pragma omp parallel for if (x.numel() > kParallelGrain)
    for (int64_t r = 0; r < R; ++r) {
        const float* xr = px + r * M;
        float* yr = py + r * M;
        const double mu = run_sums::sum(xr, M) / M;
        const double var = run_sums::sum_sq_dev(xr, M, static_cast<float>(mu)) / M;
        pm[r] = static_cast<float>(mu);
        pi[r] = static_cast<float>(1.0 / std::sqrt(var + eps));
        const float m = pm[r], is = pi[r];
#pragma omp simd
        for (int64_t i = 0; i < M; ++i) yr[i] = (xr[i] - m) * is * (w ? w[i] : 1.f) + (b ? b[i] : 0.f);
    }
    if (!any_requires_grad({x, weight, bias})) return y;
    auto node = std::make_shared<LayerNormBackward>();
    node->x = x.detach();
    node->mean = mean;
    node->invstd = invstd;
    if (weight.defined()) node->weight = weight.detach();
    node->normalized_shape = normalized_shape;
    node->M = M;
    return attach(y, node, {x, weight, bias});
}

// ================================================================ the module
LayerNorm::LayerNorm(Shape normalized_shape, float eps, bool elementwise_affine)
    : normalized_shape_(std::move(normalized_shape)), eps_(eps), affine_(elementwise_affine) {
    if (normalized_shape_.empty() || shape_numel(normalized_shape_) < 1)
        throw Error("LayerNorm: normalized_shape must be non-empty with positive sizes, got " +
                    shape_str(normalized_shape_));
    if (affine_) {
        weight = register_parameter("weight", Tensor::ones(normalized_shape_));
        bias = register_parameter("bias", Tensor::zeros(normalized_shape_));
    }
}

std::string LayerNorm::extra_repr() const {
    std::string s = "(";
    for (size_t i = 0; i < normalized_shape_.size(); ++i)
        s += (i ? ", " : "") + std::to_string(normalized_shape_[i]);
    s += normalized_shape_.size() == 1 ? ",)" : ")";
    char buf[96];
    std::snprintf(buf, sizeof buf, ", eps=%g, elementwise_affine=%s", static_cast<double>(eps_),
                  affine_ ? "True" : "False");
    return s + buf;
}

Tensor LayerNorm::forward(const Tensor& x) {
    try {
        return layer_norm(x, normalized_shape_, weight, bias, eps_);
    } catch (const Error& e) {
        throw Error("LayerNorm(" + shape_str(normalized_shape_) + "): " + e.what());
    }
}

}  // namespace minnow
