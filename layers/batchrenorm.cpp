// BatchRenorm2d: forward, the hand-derived backward beside it, and the module
// (choosing r and d, the rmax/dmax ramp, the running statistics). The loops
// are BatchNorm's (channel_kernels in kernels/norm.h).
#include "layers/batchrenorm.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>

#include "core/autograd.h"
#include "kernels/norm.h"
#include "layers/batchnorm.h"  // batch_norm, for eval mode

namespace minnow {

// ================================================================ backward
//
// Per channel, with m values, g_i = dL/dy_i, and r, d constants:
//
//     xn_i   = (x_i - mu_B) / sigma_B          (plain BatchNorm normalisation)
//     xhat_i = r * xn_i + d
//     y_i    = gamma * xhat_i + beta
//
// The parameters:
//     dL/dbeta  = sum_i g_i                                               (1)
//     dL/dgamma = sum_i g_i xhat_i = r * sum_i g_i xn_i + d * sum_i g_i   (2)
// The input: dL/dxn_i = gamma * r * g_i, and xn is BatchNorm's xhat, whose
// backward is derived in layers/batchnorm.cpp; with gamma there replaced by
// gamma * r:
//     dx_i = gamma r / (m sigma_B) * (m g_i - sum_j g_j - xn_i sum_j g_j xn_j)   (3)
//          = a * (g_i - b - (x_i - mu_B) * k),
//     a = gamma * r * invstd_B,  b = mean(g),  k = invstd_B * mean(g * xn).
// (Were r and d not constants, they would add the terms through sigma_B and
// mu_B inside r and d; Algorithm 1 of the paper drops them on purpose.)
struct BatchRenormBackward : Node {
    Tensor x;                // the input
    Tensor mean, invstd;     // [C]: batch mean and 1 / sigma_B
    Tensor r, d;             // [C]: the constants
    Tensor weight;           // gamma, or undefined (= 1)

    std::vector<Tensor> backward(const Tensor& dy) override {
        const ChannelView v(x.shape());
        const double m = static_cast<double>(v.per_channel());
        const float* is = invstd.data();
        const float* pr = r.data();
        const float* pd = d.data();
        const float* gamma = weight.defined() ? weight.data() : nullptr;
        Tensor dx, dweight, dbias;
        if (needs_grad(0)) dx = Tensor::empty(x.shape());
        if (needs_grad(1)) dweight = Tensor::empty({v.C});
        if (needs_grad(2)) dbias = Tensor::empty({v.C});
        float* pdw = dweight.defined() ? dweight.data() : nullptr;
        float* pdb = dbias.defined() ? dbias.data() : nullptr;
        auto coef = [&](int64_t c, double sum_dy, double sum_dy_xmu, float& a, float& b, float& k) {
            const double sum_dy_xn = sum_dy_xmu * is[c];                        // sum g * xn
            if (pdw) pdw[c] = static_cast<float>(pr[c] * sum_dy_xn + pd[c] * sum_dy);  // (2)
            if (pdb) pdb[c] = static_cast<float>(sum_dy);                       // (1)
            a = (gamma ? gamma[c] : 1.f) * pr[c] * is[c];                       // (3)
            b = static_cast<float>(sum_dy / m);
            k = static_cast<float>(is[c] * sum_dy_xn / m);
        };
        channel_kernels::backward(dy.data(), x.data(), v, mean.data(), coef,
                                  dx.defined() ? dx.data() : nullptr);
        return {dx, dweight, dbias};
    }
    void release_saved() override { x = mean = invstd = r = d = weight = Tensor(); }
    const char* name() const override { return "BatchRenormBackward"; }
};

// ================================================================ forward
// r and d of channel c, from its batch mean and biased variance.
using ChooseRD = std::function<void(int64_t c, double mean, double var, float& r, float& d)>;

static Tensor renorm_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, float eps,
                             const ChooseRD& choose, Tensor* r_out, Tensor* d_out) {
    const ChannelView v(x.shape());
    const int64_t C = v.C;
    if (v.per_channel() <= 1)
        throw Error("batch_renorm: expected more than 1 value per channel when training, got input of shape " +
                    shape_str(x.shape()));
    for (const Tensor* t : {&weight, &bias})
        if (t->defined() && t->shape() != Shape{C})
            throw Error("batch_renorm: weight/bias of shape " + shape_str(t->shape()) + " for input of shape " +
                        shape_str(x.shape()));
    Tensor mean = Tensor::empty({C}), invstd = Tensor::empty({C}), r = Tensor::empty({C}), d = Tensor::empty({C});
    float *pm = mean.data(), *pi = invstd.data(), *pr = r.data(), *pd = d.data();
    const float* gamma = weight.defined() ? weight.data() : nullptr;
    const float* beta = bias.defined() ? bias.data() : nullptr;
    // y = gamma * ((x - mu_B) * invstd_B * r + d) + beta = x * scale + shift,
    // scale = gamma * r * invstd_B,  shift = gamma * d + beta - mu_B * scale.
    auto coef = [&](int64_t c, double mu, double var, float& scale, float& shift) {
        pm[c] = static_cast<float>(mu);
        pi[c] = static_cast<float>(1.0 / std::sqrt(var + eps));
        choose(c, mu, var, pr[c], pd[c]);
        const float g = gamma ? gamma[c] : 1.f;
        scale = g * pr[c] * pi[c];
        shift = g * pd[c] + (beta ? beta[c] : 0.f) - pm[c] * scale;
    };
    Tensor y = Tensor::empty(x.shape());
    channel_kernels::normalize(x.data(), v, coef, y.data());
    if (r_out) *r_out = r;
    if (d_out) *d_out = d;
    if (!any_requires_grad({x, weight, bias})) return y;
    auto node = std::make_shared<BatchRenormBackward>();
    node->x = x.detach();
    node->mean = mean;
    node->invstd = invstd;
    node->r = r;
    node->d = d;
    if (weight.defined()) node->weight = weight.detach();
    return attach(y, node, {x, weight, bias});
}

Tensor batch_renorm(const Tensor& x, const Tensor& r, const Tensor& d, const Tensor& weight,
                    const Tensor& bias, float eps) {
    if (x.dim() < 2) throw Error("batch_renorm: expected an input [N, C, *], got shape " + shape_str(x.shape()));
    const int64_t C = x.size(1);
    if (r.shape() != Shape{C} || d.shape() != Shape{C})
        throw Error("batch_renorm: r and d must be [" + std::to_string(C) + "], got " + shape_str(r.shape()) +
                    " and " + shape_str(d.shape()));
    const float* pr = r.data();
    const float* pd = d.data();
    return renorm_forward(
        x, weight, bias, eps, [&](int64_t c, double, double, float& rc, float& dc) { rc = pr[c]; dc = pd[c]; },
        nullptr, nullptr);
}

// ================================================================ the module
BatchRenorm2d::BatchRenorm2d(int64_t num_features, BatchRenormOptions options)
    : num_features_(num_features), opt_(options) {
    if (num_features < 1) throw Error("BatchRenorm2d: num_features must be positive, got " + std::to_string(num_features));
    if (!(opt_.rmax >= 1.f)) throw Error("BatchRenorm2d: rmax must be >= 1, got " + std::to_string(opt_.rmax));
    if (!(opt_.dmax >= 0.f)) throw Error("BatchRenorm2d: dmax must be >= 0, got " + std::to_string(opt_.dmax));
    if (opt_.warmup_steps < 0)
        throw Error("BatchRenorm2d: warmup_steps must be >= 0, got " + std::to_string(opt_.warmup_steps));
    if (!(opt_.momentum >= 0.f && opt_.momentum <= 1.f))
        throw Error("BatchRenorm2d: momentum must be in [0, 1], got " + std::to_string(opt_.momentum));
    if (opt_.affine) {
        weight = register_parameter("weight", Tensor::ones({num_features}));
        bias = register_parameter("bias", Tensor::zeros({num_features}));
    }
    running_mean = register_buffer("running_mean", Tensor::zeros({num_features}));
    running_var = register_buffer("running_var", Tensor::ones({num_features}));
    num_batches_tracked = register_buffer("num_batches_tracked", Tensor::zeros({}), DType::I64);
}

std::string BatchRenorm2d::extra_repr() const {
    char buf[200];
    std::snprintf(buf, sizeof buf, "%lld, eps=%g, momentum=%g, rmax=%g, dmax=%g, warmup_steps=%lld, affine=%s",
                  static_cast<long long>(num_features_), static_cast<double>(opt_.eps),
                  static_cast<double>(opt_.momentum), static_cast<double>(opt_.rmax),
                  static_cast<double>(opt_.dmax), static_cast<long long>(opt_.warmup_steps),
                  opt_.affine ? "True" : "False");
    return buf;
}

// Linear ramp: the fraction of the warm-up done before the next batch.
static double ramp(float step, int64_t warmup) {
    if (warmup <= 0) return 1.0;
    return std::min(1.0, static_cast<double>(step) / static_cast<double>(warmup));
}
float BatchRenorm2d::current_rmax() const {
    return static_cast<float>(1.0 + (opt_.rmax - 1.0) * ramp(num_batches_tracked.item(), opt_.warmup_steps));
}
float BatchRenorm2d::current_dmax() const {
    return static_cast<float>(opt_.dmax * ramp(num_batches_tracked.item(), opt_.warmup_steps));
}

Tensor BatchRenorm2d::forward(const Tensor& x) {
    if (x.dim() != 4 || x.size(1) != num_features_)
        throw Error("BatchRenorm2d(" + std::to_string(num_features_) + "): expected an input [N, " +
                    std::to_string(num_features_) + ", H, W], got shape " + shape_str(x.shape()));
    if (!is_training()) {  // eval: exactly BatchNorm2d's eval mode
        return batch_norm(x, running_mean, running_var, weight, bias, /*training=*/false, 0.f, opt_.eps);
    }
    if (ChannelView(x.shape()).per_channel() <= 1)
        throw Error("BatchRenorm2d(" + std::to_string(num_features_) +
                    "): expected more than 1 value per channel when training, got input of shape " +
                    shape_str(x.shape()));
    const double rmax = current_rmax(), dmax = current_dmax();
    const double f = opt_.momentum, eps = opt_.eps;
    const double m = static_cast<double>(ChannelView(x.shape()).per_channel());
    float* rm = running_mean.data();
    float* rv = running_var.data();
    auto choose = [&](int64_t c, double mu_b, double var_b, float& r, float& d) {
        // r and d against the running statistics as they were before this batch
        const double sigma_b = std::sqrt(var_b + eps);
        const double sigma = std::sqrt(static_cast<double>(rv[c]) + eps);
        r = static_cast<float>(std::clamp(sigma_b / sigma, 1.0 / rmax, rmax));
        d = static_cast<float>(std::clamp((mu_b - rm[c]) / sigma, -dmax, dmax));
        // then fold the batch into them (BatchNorm's rule)
        rm[c] = static_cast<float>(f * mu_b + (1 - f) * rm[c]);
        rv[c] = static_cast<float>(f * var_b * m / (m - 1) + (1 - f) * rv[c]);
    };
    Tensor y = renorm_forward(x, weight, bias, opt_.eps, choose, &last_r_, &last_d_);
    num_batches_tracked.data()[0] += 1.f;
    return y;
}

}  // namespace minnow
