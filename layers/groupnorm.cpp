// GroupNorm: forward, the hand-derived backward beside it, and the module.
//
// For a fixed sample n, the channels of group g are consecutive, so the group
// is ONE contiguous run of M = (C/G) * S floats (S = H * W) starting at
// (n * C + g * C/G) * S: the statistics are plain sums over a run.
#include "layers/groupnorm.h"

#include <cmath>
#include <cstdio>

#include "core/autograd.h"
#include "core/parallel.h"
#include "kernels/norm.h"

namespace minnow {

// ================================================================ backward
//
// One group (sample n, group g), M values x_i, g_i = dL/dy_i, c(i) the
// channel of value i:
//
//     xhat_i = (x_i - mu) * invstd,    y_i = w_c(i) xhat_i + b_c(i)
//
// With dxhat_i = w_c(i) g_i this is BatchNorm's function over the group
// (layers/batchnorm.cpp derives it), so
//
//     dx_i = invstd * (dxhat_i - mean(dxhat) - xhat_i * mean(dxhat * xhat))      (1)
//
// Both means are over the group; since w is constant within a channel, they
// come from per-channel sums of the run:
//     s1[n, c] = sum_{i in c} g_i,    s2[n, c] = sum_{i in c} g_i (x_i - mu)
//     sum dxhat        = sum_{c in g} w_c s1[n, c]
//     sum dxhat * xhat = invstd * sum_{c in g} w_c s2[n, c]
// The parameters are per channel, summed over the samples:
//     db_c = sum_n s1[n, c],     dw_c = sum_n invstd[n, g(c)] * s2[n, c]         (2)
struct GroupNormBackward : Node {
    Tensor x;             // the input [N, C, *]
    Tensor mean, invstd;  // [N, G]
    Tensor weight;        // [C], or undefined
    int64_t G = 1;

    std::vector<Tensor> backward(const Tensor& dy) override {
        const ChannelView v(x.shape());
        const int64_t N = v.N, C = v.C, S = v.S, Cg = C / G;
        const double M = static_cast<double>(Cg * S);
        const float* px = x.data();
        const float* pg = dy.data();
        const float* pm = mean.data();
        const float* pi = invstd.data();
        const float* w = weight.defined() ? weight.data() : nullptr;
        std::vector<double> s1(N * C), s2(N * C);
        Tensor dx = needs_grad(0) ? Tensor::empty(x.shape()) : Tensor();
        float* pdx = dx.defined() ? dx.data() : nullptr;
#pragma omp parallel for if (x.numel() > kParallelGrain)
        for (int64_t ng = 0; ng < N * G; ++ng) {
            const int64_t n = ng / G, g = ng % G;
            const float mu = pm[ng], is = pi[ng];
            // pass 1: per-channel sums, then the group's means
            double sum_dxhat = 0, sum_dxhat_xhat = 0;
            for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c) {
                const int64_t off = (n * C + c) * S;
                double a = 0, b = 0;
                run_sums::grad_sums(pg + off, px + off, S, mu, a, b);
                s1[n * C + c] = a;
                s2[n * C + c] = b;
                const double wc = w ? w[c] : 1.0;
                sum_dxhat += wc * a;
                sum_dxhat_xhat += wc * b * is;
            }
            if (!pdx) continue;
            // pass 2: (1)
            const float mean_dxhat = static_cast<float>(sum_dxhat / M);
            const float mean_dxhat_xhat = static_cast<float>(sum_dxhat_xhat / M);
            for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c) {
                const int64_t off = (n * C + c) * S;
                const float wc = w ? w[c] : 1.f;
#pragma omp simd
                for (int64_t i = 0; i < S; ++i) {
                    const float xhat = (px[off + i] - mu) * is;
                    pdx[off + i] = is * (wc * pg[off + i] - mean_dxhat - xhat * mean_dxhat_xhat);
                }
            }
        }
        Tensor dw, db;  // (2)
        if (needs_grad(1)) dw = Tensor::zeros({C});
        if (needs_grad(2)) db = Tensor::zeros({C});
        for (int64_t c = 0; c < C; ++c) {
            double aw = 0, ab = 0;
            for (int64_t n = 0; n < N; ++n) {
                aw += pi[n * G + c / Cg] * s2[n * C + c];
                ab += s1[n * C + c];
            }
            if (dw.defined()) dw.data()[c] = static_cast<float>(aw);
            if (db.defined()) db.data()[c] = static_cast<float>(ab);
        }
        return {dx, dw, db};
    }
    void release_saved() override { x = mean = invstd = weight = Tensor(); }
    const char* name() const override { return "GroupNormBackward"; }
};

// ================================================================ forward
Tensor group_norm(const Tensor& x, int64_t G, const Tensor& weight, const Tensor& bias, float eps) {
    if (x.dim() < 2)
        throw Error("group_norm: expected an input [N, C, *], got shape " + shape_str(x.shape()));
    const ChannelView v(x.shape());
    const int64_t N = v.N, C = v.C, S = v.S;
    if (G < 1 || C % G != 0)
        throw Error("group_norm: " + std::to_string(C) + " channels cannot be split into " + std::to_string(G) +
                    " groups (input of shape " + shape_str(x.shape()) + ")");
    for (const Tensor* t : {&weight, &bias})
        if (t->defined() && t->shape() != Shape{C})
            throw Error("group_norm: weight/bias of shape " + shape_str(t->shape()) + ", expected [" +
                        std::to_string(C) + "]");
    const int64_t Cg = C / G, M = Cg * S;
    Tensor mean = Tensor::empty({N, G}), invstd = Tensor::empty({N, G});
    Tensor y = Tensor::empty(x.shape());
    const float* px = x.data();
    float* py = y.data();
    float* pm = mean.data();
    float* pi = invstd.data();
    const float* w = weight.defined() ? weight.data() : nullptr;
    const float* b = bias.defined() ? bias.data() : nullptr;
#pragma omp parallel for if (x.numel() > kParallelGrain)
    for (int64_t ng = 0; ng < N * G; ++ng) {
        const int64_t n = ng / G, g = ng % G;
        const float* xg = px + (n * C + g * Cg) * S;  // the group: one run of M floats
        const double mu = run_sums::sum(xg, M) / static_cast<double>(M);
        const double var = run_sums::sum_sq_dev(xg, M, static_cast<float>(mu)) / static_cast<double>(M);
        pm[ng] = static_cast<float>(mu);
        pi[ng] = static_cast<float>(1.0 / std::sqrt(var + eps));
        // y = w_c * (x - mu) * invstd + b_c = x * scale + shift, per channel
        for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c) {
            const float scale = (w ? w[c] : 1.f) * pi[ng];
            const float shift = (b ? b[c] : 0.f) - pm[ng] * scale;
            const int64_t off = (n * C + c) * S;
#pragma omp simd
            for (int64_t i = 0; i < S; ++i) py[off + i] = px[off + i] * scale + shift;
        }
    }
    if (!any_requires_grad({x, weight, bias})) return y;
    auto node = std::make_shared<GroupNormBackward>();
    node->x = x.detach();
    node->mean = mean;
    node->invstd = invstd;
    if (weight.defined()) node->weight = weight.detach();
    node->G = G;
    return attach(y, node, {x, weight, bias});
}

// ================================================================ the module
GroupNorm::GroupNorm(int64_t num_groups, int64_t num_channels, float eps, bool affine)
    : num_groups_(num_groups), num_channels_(num_channels), eps_(eps), affine_(affine) {
    if (num_groups < 1 || num_channels < 1 || num_channels % num_groups != 0)
        throw Error("GroupNorm: num_channels (" + std::to_string(num_channels) +
                    ") must be a positive multiple of num_groups (" + std::to_string(num_groups) + ")");
    if (affine) {
        weight = register_parameter("weight", Tensor::ones({num_channels}));
        bias = register_parameter("bias", Tensor::zeros({num_channels}));
    }
}

std::string GroupNorm::extra_repr() const {
    char buf[128];
    std::snprintf(buf, sizeof buf, "%lld, %lld, eps=%g, affine=%s", static_cast<long long>(num_groups_),
                  static_cast<long long>(num_channels_), static_cast<double>(eps_), affine_ ? "True" : "False");
    return buf;
}

Tensor GroupNorm::forward(const Tensor& x) {
    if (x.dim() < 2 || x.size(1) != num_channels_)
        throw Error("GroupNorm(" + std::to_string(num_groups_) + ", " + std::to_string(num_channels_) +
                    "): expected an input [N, " + std::to_string(num_channels_) + ", *], got shape " +
                    shape_str(x.shape()));
    return group_norm(x, num_groups_, weight, bias, eps_);
}

}  // namespace minnow
