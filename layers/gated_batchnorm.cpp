// GatedBatchNorm2d: forward, the hand-derived backward beside it, and the
// module. The loops are BatchNorm's (channel_kernels in kernels/norm.h).
#include "layers/gated_batchnorm.h"

#include <cmath>
#include <cstdio>
#include <utility>

#include "core/autograd.h"
#include "kernels/norm.h"

namespace minnow {

// ================================================================ backward
//
// Per channel (dropping the index c), with m values x_i, upstream gradient
// dy_i = dL/dy_i, the gate logit a, and the running statistics rm, rv
// (constants: they are buffers, not functions of x). The forward:
//
//     g      = sigmoid(a)                          dg/da = g (1 - g)
//     mu_B   = 1/m sum_i x_i
//     var_B  = 1/m sum_i (x_i - mu_B)^2
//     mu     = g mu_B  + (1 - g) rm
//     var    = g var_B + (1 - g) rv
//     invstd = (var + eps)^(-1/2)
//     xhat_i = (x_i - mu) * invstd
//     y_i    = gamma * xhat_i + beta
//
// Two sums of the upstream gradient carry everything:
//
//     S  = sum_i dy_i
//     T  = sum_i dy_i (x_i - mu)
//
// The parameters see y directly:
//
//     dL/dbeta  = S                                                       (1)
//     dL/dgamma = sum_i dy_i xhat_i = invstd * T                          (2)
//
// Through xhat (dxhat_i = gamma dy_i), the two mixed statistics get
//
//     dL/dmu  = sum_i dxhat_i * (-invstd)                 = -gamma invstd S
//     dL/dvar = sum_i dxhat_i (x_i - mu) * (-1/2) invstd^3 = -gamma/2 invstd^3 T
//
// (var does not contain mu: var_B is the spread around mu_B, so there is no
// dvar/dmu term.)
//
// The gate: mu and var depend on g linearly,
//
//     dmu/dg = mu_B - rm,   dvar/dg = var_B - rv,
//     dL/da  = g (1 - g) * (dL/dmu (mu_B - rm) + dL/dvar (var_B - rv))
//            = -g (1 - g) gamma invstd * (S (mu_B - rm) + invstd^2 T (var_B - rv) / 2)     (4)
//
// The input: x_i reaches L directly through xhat_i, through mu (via mu_B,
// weighted by g) and through var (via var_B, weighted by g):
//
//     dmu/dx_i  = g / m
//     dvar/dx_i = g * 2 (x_i - mu_B) / m      (var_B's own dependence on mu_B
//                                              adds -2/m sum_j (x_j - mu_B) = 0)
//     dL/dx_i = gamma invstd dy_i + dL/dmu * g/m + dL/dvar * 2 g (x_i - mu_B)/m
//             = gamma invstd dy_i - g gamma invstd S/m - g gamma invstd^3 (x_i - mu_B) T/m
//             = gamma invstd * (dy_i - g S/m - (x_i - mu_B) * g invstd^2 T/m)            (3)
//
// With g = 1 (so mu = mu_B, T = sum_i dy_i (x_i - mu_B)), (3) is BatchNorm's
// (3) in layers/batchnorm.cpp; with g = 0 it is the eval-mode (3'). Note the
// two different centres: T is taken around the mixed mu (it is the gradient
// of the normalisation), while the x_i - mu_B in (3) is var_B's derivative.
//
// The code: channel_kernels::backward makes one pass over (dy, x) per channel
// around the BATCH mean, giving
//     sum_dy     = S
//     sum_dy_xmu = sum_i dy_i (x_i - mu_B),
// and T = sum_dy_xmu + (mu_B - mu) S  with  mu_B - mu = (1 - g)(mu_B - rm).
// Then (1), (2), (4), and a second pass writes (3) as
//     dx = a * (dy - b - (x - mu_B) * k),   a = gamma * invstd,  b = g S / m,
//                                           k = g invstd^2 T / m.
// Saved: x (the caller's tensor, not a copy) and, per channel, mu_B, invstd,
// g, and the gaps mu_B - rm and var_B - rv (the running statistics before the
// batch was folded in, i.e. the values the forward mixed).
struct GatedBatchNormBackward : Node {
    Tensor x;                   // the input, [N, C, *]
    Tensor batch_mean;          // [C] mu_B: the centre of the backward kernel's sums
    Tensor invstd;              // [C] (var + eps)^(-1/2), var the mixed variance
    Tensor gate_prob;           // [C] g = sigmoid(a)
    Tensor mean_gap, var_gap;   // [C] mu_B - rm and var_B - rv
    Tensor weight;              // gamma [C], or undefined (gamma = 1)

    std::vector<Tensor> backward(const Tensor& dy) override {
        const ChannelView v(x.shape());
        const double m = static_cast<double>(v.per_channel());
        const float* is = invstd.data();
        const float* pg = gate_prob.data();
        const float* pmg = mean_gap.data();
        const float* pvg = var_gap.data();
        const float* gamma = weight.defined() ? weight.data() : nullptr;
        Tensor dx, dweight, dbias, dgate;
        if (needs_grad(0)) dx = Tensor::empty(x.shape());
        if (needs_grad(1)) dweight = Tensor::empty({v.C});
        if (needs_grad(2)) dbias = Tensor::empty({v.C});
        if (needs_grad(3)) dgate = Tensor::empty({v.C});
        float* pdw = dweight.defined() ? dweight.data() : nullptr;
        float* pdb = dbias.defined() ? dbias.data() : nullptr;
        float* pda = dgate.defined() ? dgate.data() : nullptr;
        auto coef = [&](int64_t c, double sum_dy, double sum_dy_xmu_batch, float& a, float& b, float& k) {
            const double g = pg[c], inv = is[c], gam = gamma ? gamma[c] : 1.0;
            const double S = sum_dy;
            const double T = sum_dy_xmu_batch + (1.0 - g) * pmg[c] * S;  // sum dy (x - mu)
            if (pdb) pdb[c] = static_cast<float>(S);                       // (1)
            if (pdw) pdw[c] = static_cast<float>(inv * T);                 // (2)
            if (pda)                                                       // (4)
                pda[c] = static_cast<float>(-g * (1.0 - g) * gam * inv *
                                            (S * pmg[c] + inv * inv * T * pvg[c] / 2.0));
            a = static_cast<float>(gam * inv);                             // (3)
            b = static_cast<float>(g * S / m);
            k = static_cast<float>(g * inv * inv * T / m);
        };
        channel_kernels::backward(dy.data(), x.data(), v, batch_mean.data(), coef,
                                  dx.defined() ? dx.data() : nullptr);
        return {dx, dweight, dbias, dgate};
    }
    void release_saved() override { x = batch_mean = invstd = gate_prob = mean_gap = var_gap = weight = Tensor(); }
    const char* name() const override { return "GatedBatchNormBackward"; }
};

// ================================================================ forward
Tensor gated_batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                        const Tensor& weight, const Tensor& bias, const Tensor& gate, float momentum,
                        float eps) {
    if (x.dim() < 2)
        throw Error("gated_batch_norm: expected an input [N, C, *] with at least 2 dims, got shape " +
                    shape_str(x.shape()));
    const ChannelView v(x.shape());
    const int64_t C = v.C, m = v.per_channel();
    if (m <= 1)
        throw Error("gated_batch_norm: expected more than 1 value per channel when training, got input of shape " +
                    shape_str(x.shape()));
    if (!running_mean.defined() || !running_var.defined() || !gate.defined())
        throw Error("gated_batch_norm: running_mean, running_var and gate are required");
    const std::pair<const Tensor*, const char*> per_channel[] = {
        {&running_mean, "running_mean"}, {&running_var, "running_var"}, {&gate, "gate"},
        {&weight, "weight"}, {&bias, "bias"}};
    for (const auto& [t, what] : per_channel)
        if (t->defined() && t->shape() != Shape{C})
            throw Error(std::string("gated_batch_norm: ") + what + " has shape " + shape_str(t->shape()) +
                        ", expected [" + std::to_string(C) + "] for input of shape " + shape_str(x.shape()));

    Tensor batch_mean = Tensor::empty({C}), invstd = Tensor::empty({C}), gate_prob = Tensor::empty({C});
    Tensor mean_gap = Tensor::empty({C}), var_gap = Tensor::empty({C});
    float *pbm = batch_mean.data(), *pi = invstd.data(), *pg = gate_prob.data();
    float *pmg = mean_gap.data(), *pvg = var_gap.data();
    const float* gamma = weight.defined() ? weight.data() : nullptr;
    const float* beta = bias.defined() ? bias.data() : nullptr;
    const float* pa = gate.data();
    Tensor rm = running_mean, rv = running_var;  // handles: updated in place
    float* prm = rm.data();
    float* prv = rv.data();
    const double f = momentum;
    const double unbias = static_cast<double>(m) / static_cast<double>(m - 1);

    // y = gamma * (x - mu) * invstd + beta = x * scale + shift, with
    // scale = gamma * invstd and shift = beta - mu * scale.
    auto coef = [&](int64_t c, double mu_b, double var_b, float& scale, float& shift) {
        const double g = 1.0 / (1.0 + std::exp(-static_cast<double>(pa[c])));
        const double mu = g * mu_b + (1.0 - g) * prm[c];   // running values from before this batch
        const double var = g * var_b + (1.0 - g) * prv[c];
        const double inv = 1.0 / std::sqrt(var + eps);
        pbm[c] = static_cast<float>(mu_b);
        pi[c] = static_cast<float>(inv);
        pg[c] = static_cast<float>(g);
        pmg[c] = static_cast<float>(mu_b - prm[c]);
        pvg[c] = static_cast<float>(var_b - prv[c]);
        // then fold the batch into the running statistics (BatchNorm's rule)
        prm[c] = static_cast<float>(f * mu_b + (1 - f) * prm[c]);
        prv[c] = static_cast<float>(f * var_b * unbias + (1 - f) * prv[c]);
        const double sc = (gamma ? gamma[c] : 1.0) * inv;
        scale = static_cast<float>(sc);
        shift = static_cast<float>((beta ? beta[c] : 0.0) - mu * sc);
    };
    Tensor y = Tensor::empty(x.shape());
    channel_kernels::normalize(x.data(), v, coef, y.data());

    if (!any_requires_grad({x, weight, bias, gate})) return y;
    auto node = std::make_shared<GatedBatchNormBackward>();
    node->x = x.detach();
    node->batch_mean = batch_mean;
    node->invstd = invstd;
    node->gate_prob = gate_prob;
    node->mean_gap = mean_gap;
    node->var_gap = var_gap;
    if (weight.defined()) node->weight = weight.detach();
    return attach(y, node, {x, weight, bias, gate});
}

// ================================================================ the module
GatedBatchNorm2d::GatedBatchNorm2d(int64_t num_features, GatedBatchNormOptions options)
    : BatchNorm("GatedBatchNorm2d", {4}, num_features, options.eps, options.momentum, options.affine,
                /*track_running_stats=*/true),
      initial_gate_logit_(options.initial_gate_logit) {
    if (!std::isfinite(options.initial_gate_logit))
        throw Error(layer_name() + ": initial_gate_logit must be finite, got " +
                    std::to_string(options.initial_gate_logit));
    gate = register_parameter("gate", Tensor::full({num_features}, options.initial_gate_logit));
}

std::string GatedBatchNorm2d::extra_repr() const {
    char buf[200];
    std::string mom = "None";
    if (momentum()) {
        std::snprintf(buf, sizeof buf, "%g", static_cast<double>(*momentum()));
        mom = buf;
    }
    std::snprintf(buf, sizeof buf, "%lld, eps=%g, momentum=%s, affine=%s, initial_gate_logit=%g",
                  static_cast<long long>(num_features()), static_cast<double>(eps()), mom.c_str(),
                  affine() ? "True" : "False", static_cast<double>(initial_gate_logit_));
    return buf;
}

Tensor GatedBatchNorm2d::gate_probability() const {
    Tensor g = Tensor::empty({num_features()});
    for (int64_t c = 0; c < num_features(); ++c)
        g.data()[c] = static_cast<float>(1.0 / (1.0 + std::exp(-static_cast<double>(gate.data()[c]))));
    return g;
}

Tensor GatedBatchNorm2d::forward(const Tensor& x) {
    const Plan p = plan();  // batch statistics unless eval mode or frozen statistics
    check_input(x, p.batch_stats);
    if (!p.batch_stats)  // the running statistics alone: BatchNorm2d's eval mode
        return batch_norm(x, running_mean, running_var, weight, bias, /*training=*/false, 0.f, eps());
    const float factor = count_batch();  // momentum, or 1 / count without one
    return gated_batch_norm(x, running_mean, running_var, weight, bias, gate, factor, eps());
}

}  // namespace minnow
