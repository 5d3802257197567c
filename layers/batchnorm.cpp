// BatchNorm: the hand-derived backward, the forward, and the module (running
// statistics, momentum, frozen statistics). The per-channel loops they run are
// kernels/norm.h's.
#include "layers/batchnorm.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <typeinfo>

#include "core/autograd.h"
#include "core/parallel.h"
#include "kernels/norm.h"

namespace minnow {

// ================================================================ backward
//
// Per channel (dropping the index c), with m values x_i, upstream gradient
// g_i = dL/dy_i, and the forward
//
//     mu     = 1/m sum_i x_i
//     var    = 1/m sum_i (x_i - mu)^2
//     sigma  = sqrt(var + eps)                 (invstd = 1 / sigma)
//     xhat_i = (x_i - mu) / sigma
//     y_i    = gamma * xhat_i + beta
//
// The parameters see y directly:
//
//     dL/dbeta  = sum_i g_i                                               (1)
//     dL/dgamma = sum_i g_i * xhat_i                                      (2)
//
// and the input through xhat, whose gradient is  dxhat_i = gamma * g_i.
// Each x_i reaches L three ways: through its own xhat_i, through mu and
// through var (both of which every xhat_j depends on):
//
//     dL/dx_i = dxhat_i / sigma  +  dL/dvar * dvar/dx_i  +  dL/dmu * dmu/dx_i
//
// with dmu/dx_i = 1/m and dvar/dx_i = 2 (x_i - mu) / m  (the term
// -2/m sum_j (x_j - mu) from var's own dependence on mu is zero). Then
//
//     dL/dvar = sum_j dxhat_j * (x_j - mu) * d(sigma^-1)/dvar
//             = sum_j dxhat_j * (x_j - mu) * (-1/2) sigma^-3
//             = -1/(2 sigma^2) * sum_j dxhat_j xhat_j
//     dL/dmu  = sum_j dxhat_j * (-1 / sigma)   (+ dL/dvar * dvar/dmu = 0)
//
// and substituting,
//
//     dL/dx_i = dxhat_i / sigma
//             - 1/(2 sigma^2) sum_j dxhat_j xhat_j * 2 (x_i - mu) / m
//             - 1/(m sigma) sum_j dxhat_j
//             = 1/(m sigma) * (m dxhat_i - sum_j dxhat_j - xhat_i sum_j dxhat_j xhat_j)
//
// and with dxhat = gamma * g, the compact form
//
//     dx_i = gamma / (m sigma) * (m g_i - sum_j g_j - xhat_i sum_j g_j xhat_j)   (3)
//          = gamma * invstd * (g_i - mean(g) - xhat_i * mean(g * xhat))
//
// In eval mode (and with frozen statistics) mu and sigma are constants, not
// functions of x: only the first term survives,
//
//     dx_i = gamma * invstd * g_i                                         (3')
//
// while (1) and (2) are unchanged.
//
// The code: one pass over (g, x) per channel computes
//     sum_dy     = sum_i g_i
//     sum_dy_xmu = sum_i g_i (x_i - mu)      so sum_i g_i xhat_i = sum_dy_xmu * invstd,
// giving (1) and (2); a second pass writes (3) as
//     dx = a * (g - b - (x - mu) * k),   a = gamma * invstd,  b = sum_dy / m,
//                                        k = invstd * (sum_i g_i xhat_i) / m
// (xhat_i * mean(g xhat) = (x_i - mu) * k). Only x (shared with the caller,
// not copied) and the per-channel mean and invstd are saved: xhat is
// recomputed on the fly, which is cheaper than storing and reloading it.
//
// BatchNorm followed by ReLU (batch_norm_relu, r_i = max(y_i, 0)): the
// gradient reaching y is  g_i = dL/dr_i * [y_i > 0],  and (1)-(3) hold with
// that g. The mask is recomputed from x, as y_i = x_i * scale + shift with
// the forward's scale = gamma * invstd and shift = beta - mu * scale (saved,
// two floats per channel), so the same bits as the forward's y; the passes
// stay two.
// Memory: the node saves x, and with the ReLU two more [C] vectors. The
// pair unfused saves as much (ReLU's saved output is the tensor the next
// layer saves anyway), but writes y, a tensor of x's size alive until the
// ReLU has run, and in the backward ReLU's gradient dL/dy, another. Passes
// over a tensor of x's size, unfused -> fused: forward, read x, write y, read
// y, write r -> read x, write r (4 -> 2, besides BatchNorm's rereads of x
// from cache); backward, read dL/dr, read r, write dL/dy, read dL/dy and x, write
// dx -> read dL/dr and x, write dx (6 -> 3).
struct BatchNormBackward : Node {
    Tensor x;             // the input, [N, C, *]
    Tensor mean, invstd;  // [C]: the statistics x was normalised with
    Tensor weight;        // gamma [C], or undefined (gamma = 1)
    bool batch_stats = true;  // mean/invstd computed from x (training) or constants (eval)
    Tensor scale, shift;      // [C], with a fused ReLU only: y = x * scale + shift

    std::vector<Tensor> backward(const Tensor& dy) override {
        const ChannelView v(x.shape());
        const double m = static_cast<double>(v.per_channel());
        const float* is = invstd.data();
        const float* gamma = weight.defined() ? weight.data() : nullptr;
        Tensor dx, dweight, dbias;
        if (needs_grad(0)) dx = Tensor::empty(x.shape());
        if (needs_grad(1)) dweight = Tensor::empty({v.C});
        if (needs_grad(2)) dbias = Tensor::empty({v.C});
        float* pdw = dweight.defined() ? dweight.data() : nullptr;
        float* pdb = dbias.defined() ? dbias.data() : nullptr;
        const bool batch = batch_stats;
        auto coef = [&](int64_t c, double sum_dy, double sum_dy_xmu, float& a, float& b, float& k) {
            const double sum_dy_xhat = sum_dy_xmu * is[c];  // sum g * xhat
            if (pdw) pdw[c] = static_cast<float>(sum_dy_xhat);  // (2)
            if (pdb) pdb[c] = static_cast<float>(sum_dy);       // (1)
            a = (gamma ? gamma[c] : 1.f) * is[c];               // (3): gamma * invstd
            b = batch ? static_cast<float>(sum_dy / m) : 0.f;   //      mean(g)
            k = batch ? static_cast<float>(is[c] * sum_dy_xhat / m) : 0.f;  // invstd * mean(g xhat)
        };
        const channel_kernels::ReluAfter relu{scale.defined() ? scale.data() : nullptr,
                                              shift.defined() ? shift.data() : nullptr};
        channel_kernels::backward(dy.data(), x.data(), v, mean.data(), coef, dx.defined() ? dx.data() : nullptr,
                                  scale.defined() ? &relu : nullptr);
        return {dx, dweight, dbias};
    }
    void release_saved() override { x = mean = invstd = weight = scale = shift = Tensor(); }
    const char* name() const override { return scale.defined() ? "BatchNormReluBackward" : "BatchNormBackward"; }
};

// ================================================================ forward
static void check_per_channel(const Tensor& t, int64_t C, const char* what, const Tensor& x) {
    if (t.defined() && t.shape() != Shape{C})
        throw Error(std::string("batch_norm: ") + what + " has shape " + shape_str(t.shape()) +
                    ", expected [" + std::to_string(C) + "] for input of shape " + shape_str(x.shape()));
}

// batch_norm, and with relu batch_norm_relu: the same code, the ReLU applied in
// the pass that writes y.
static Tensor batch_norm_impl(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                              const Tensor& weight, const Tensor& bias, bool training, float momentum, float eps,
                              bool relu) {
    if (x.dim() < 2)
        throw Error("batch_norm: expected an input [N, C, *] with at least 2 dims, got shape " +
                    shape_str(x.shape()));
    const ChannelView v(x.shape());
    const int64_t C = v.C, m = v.per_channel();
    check_per_channel(running_mean, C, "running_mean", x);
    check_per_channel(running_var, C, "running_var", x);
    check_per_channel(weight, C, "weight", x);
    check_per_channel(bias, C, "bias", x);

    if (training && m <= 1)
        throw Error("batch_norm: expected more than 1 value per channel when training, got input of shape " +
                    shape_str(x.shape()));
    if (!training && (!running_mean.defined() || !running_var.defined()))
        throw Error("batch_norm: eval mode (training=false) needs running_mean and running_var");

    // mean[c] and invstd[c] = 1 / sqrt(var[c] + eps): saved for backward, and
    // with the ReLU the scale[c] and shift[c] that y was computed with.
    Tensor mean = Tensor::empty({C}), invstd = Tensor::empty({C});
    Tensor scale = Tensor::empty({C}), shift = Tensor::empty({C});
    float* pm = mean.data();
    float* pi = invstd.data();
    float* ps = scale.data();
    float* pt = shift.data();
    const float* gamma = weight.defined() ? weight.data() : nullptr;
    const float* beta = bias.defined() ? bias.data() : nullptr;
    Tensor rm = running_mean, rv = running_var;  // handles: updated in place
    float* prm = rm.defined() ? rm.data() : nullptr;
    float* prv = rv.defined() ? rv.data() : nullptr;
    Tensor y = Tensor::empty(x.shape());

    // y = gamma * (x - mean) * invstd + beta = x * scale + shift, with
    // scale = gamma * invstd and shift = beta - mean * scale.
    auto scale_shift_of = [&](int64_t c, float& sc, float& sh) {
        sc = ps[c] = (gamma ? gamma[c] : 1.f) * pi[c];
        sh = pt[c] = (beta ? beta[c] : 0.f) - pm[c] * sc;
    };
    if (training) {
        const double f = momentum;
        const double unbias = static_cast<double>(m) / static_cast<double>(m - 1);
        auto coef = [&](int64_t c, double mu, double var, float& sc, float& sh) {
            pm[c] = static_cast<float>(mu);
            pi[c] = static_cast<float>(1.0 / std::sqrt(var + eps));
            // running = (1 - momentum) * running + momentum * batch, with the
            // unbiased variance var * m / (m - 1) for running_var.
            if (prm) prm[c] = static_cast<float>(f * mu + (1 - f) * prm[c]);
            if (prv) prv[c] = static_cast<float>(f * var * unbias + (1 - f) * prv[c]);
            scale_shift_of(c, sc, sh);
        };
        channel_kernels::normalize(x.data(), v, coef, y.data(), relu);
    } else {
        float sc, sh;
        for (int64_t c = 0; c < C; ++c) {
            pm[c] = prm[c];
            pi[c] = static_cast<float>(1.0 / std::sqrt(static_cast<double>(prv[c]) + eps));
            scale_shift_of(c, sc, sh);
        }
        channel_kernels::scale_shift(x.data(), v, ps, pt, y.data(), relu);
    }

    if (!any_requires_grad({x, weight, bias})) return y;
    auto node = std::make_shared<BatchNormBackward>();
    node->x = x.detach();
    node->mean = mean;
    node->invstd = invstd;
    if (weight.defined()) node->weight = weight.detach();
    node->batch_stats = training;
    if (relu) {
        node->scale = scale;
        node->shift = shift;
    }
    return attach(y, node, {x, weight, bias});
}

Tensor batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var, const Tensor& weight,
                  const Tensor& bias, bool training, float momentum, float eps) {
    return batch_norm_impl(x, running_mean, running_var, weight, bias, training, momentum, eps, /*relu=*/false);
}

Tensor batch_norm_relu(const Tensor& x, const Tensor& running_mean, const Tensor& running_var, const Tensor& weight,
                       const Tensor& bias, bool training, float momentum, float eps) {
    return batch_norm_impl(x, running_mean, running_var, weight, bias, training, momentum, eps, /*relu=*/true);
}

// ================================================================ the module
BatchNorm::BatchNorm(int64_t num_features, float eps, std::optional<float> momentum, bool affine,
                     bool track_running_stats)
    : BatchNorm("BatchNorm", {2, 3, 4}, num_features, eps, momentum, affine, track_running_stats) {}

BatchNorm::BatchNorm(std::string type_name, std::vector<int64_t> accepted_dims, int64_t num_features,
                     float eps, std::optional<float> momentum, bool affine, bool track_running_stats)
    : type_name_(std::move(type_name)),
      accepted_dims_(std::move(accepted_dims)),
      num_features_(num_features),
      eps_(eps),
      momentum_(momentum),
      affine_(affine),
      track_running_stats_(track_running_stats) {
    if (num_features < 1)
        throw Error(type_name_ + ": num_features must be positive, got " + std::to_string(num_features));
    if (!(eps >= 0.f)) throw Error(type_name_ + ": eps must be >= 0, got " + std::to_string(eps));
    set_momentum(momentum);
    if (affine) {
        weight = register_parameter("weight", Tensor::ones({num_features}));
        bias = register_parameter("bias", Tensor::zeros({num_features}));
    }
    if (track_running_stats) {
        running_mean = register_buffer("running_mean", Tensor::zeros({num_features}));
        running_var = register_buffer("running_var", Tensor::ones({num_features}));
        num_batches_tracked = register_buffer("num_batches_tracked", Tensor::zeros({}), DType::I64);
    }
}

std::string BatchNorm::layer_name() const { return type_name_ + "(" + std::to_string(num_features_) + ")"; }

std::string BatchNorm::extra_repr() const {
    char buf[160];
    std::string mom = momentum_ ? "" : "None";
    if (momentum_) {
        std::snprintf(buf, sizeof buf, "%g", static_cast<double>(*momentum_));
        mom = buf;
    }
    std::snprintf(buf, sizeof buf, "%lld, eps=%g, momentum=%s, affine=%s, track_running_stats=%s",
                  static_cast<long long>(num_features_), static_cast<double>(eps_), mom.c_str(),
                  affine_ ? "True" : "False", track_running_stats_ ? "True" : "False");
    return buf;
}

void BatchNorm::set_momentum(std::optional<float> momentum) {
    if (momentum && !(*momentum >= 0.f && *momentum <= 1.f))
        throw Error(type_name_ + ": momentum must be in [0, 1] (or none), got " + std::to_string(*momentum));
    momentum_ = momentum;
}

void BatchNorm::freeze_statistics(bool on) {
    if (on && !track_running_stats_)
        throw Error(layer_name() + ": freezing the statistics needs track_running_stats=true");
    frozen_ = on;
}

void BatchNorm::freeze_after_steps(std::optional<int64_t> steps) {
    if (steps && !track_running_stats_)
        throw Error(layer_name() + ": freeze_after_steps needs track_running_stats=true");
    if (steps && *steps < 0)
        throw Error(layer_name() + ": freeze_after_steps must be >= 0, got " + std::to_string(*steps));
    freeze_after_ = steps;
}

bool BatchNorm::statistics_frozen() const {
    if (!track_running_stats_) return false;
    if (frozen_) return true;
    return freeze_after_ && num_batches_tracked.item() >= static_cast<float>(*freeze_after_);
}

BatchNorm::Plan BatchNorm::plan() const {
    Plan p;
    const bool frozen = statistics_frozen();
    // Batch statistics in training mode (unless frozen), and always when there
    // are no running statistics to use instead (PyTorch's rule).
    p.batch_stats = !track_running_stats_ || (is_training() && !frozen);
    p.update_running = track_running_stats_ && is_training() && !frozen;
    return p;
}

float BatchNorm::count_batch() {
    float& count = num_batches_tracked.data()[0];
    count += 1.f;
    // momentum = none: the cumulative average, running += (batch - running) / count
    return momentum_ ? *momentum_ : 1.f / count;
}

void BatchNorm::check_input(const Tensor& x, bool batch_stats) const {
    const int64_t d = x.dim();
    if (std::find(accepted_dims_.begin(), accepted_dims_.end(), d) == accepted_dims_.end()) {
        const std::string want = accepted_dims_ == std::vector<int64_t>{4} ? "a 4-d input [N, C, H, W]"
                                 : accepted_dims_ == std::vector<int64_t>{2, 3}
                                     ? "a 2-d or 3-d input ([N, C] or [N, C, L])"
                                     : "a 2-d, 3-d or 4-d input [N, C, *]";
        throw Error(layer_name() + ": expected " + want + ", got shape " + shape_str(x.shape()));
    }
    if (x.size(1) != num_features_)
        throw Error(layer_name() + ": expected " + std::to_string(num_features_) +
                    " channels in dim 1, got input of shape " + shape_str(x.shape()));
    if (batch_stats && ChannelView(x.shape()).per_channel() <= 1)
        throw Error(layer_name() + ": expected more than 1 value per channel when training, got input of shape " +
                    shape_str(x.shape()));
}

Tensor BatchNorm::forward(const Tensor& x) { return forward_impl(x, /*relu=*/false); }

// A subclass that computes something else in forward() (GatedBatchNorm2d,
// BatchNormReference) takes Module's relu(forward(x)), not this fused pass.
Tensor BatchNorm::forward_relu(const Tensor& x) {
    const std::type_info& t = typeid(*this);
    if (t != typeid(BatchNorm) && t != typeid(BatchNorm1d) && t != typeid(BatchNorm2d)) return Module::forward_relu(x);
    return forward_impl(x, /*relu=*/true);
}

Tensor BatchNorm::forward_impl(const Tensor& x, bool relu) {
    const Plan p = plan();
    check_input(x, p.batch_stats);
    const auto fn = relu ? batch_norm_relu : batch_norm;
    if (!p.batch_stats)  // eval mode, or frozen statistics
        return fn(x, running_mean, running_var, weight, bias, /*training=*/false, 0.f, eps_);
    const float factor = p.update_running ? count_batch() : 0.f;
    return fn(x, p.update_running ? running_mean : Tensor(), p.update_running ? running_var : Tensor(), weight,
              bias, /*training=*/true, factor, eps_);
}

}  // namespace minnow
