#include "optim/adam.h"

#include <cmath>

#include "core/parallel.h"
#include "optim/kernel_utils.h"

namespace minnow {

using optim_detail::add_alpha;

static ParamGroup adam_defaults(const AdamOptions& o) {
    ParamGroup g;
    g.lr = o.lr;
    g.beta1 = o.beta1;
    g.beta2 = o.beta2;
    g.eps = o.eps;
    g.weight_decay = o.weight_decay;
    return g;
}

// PyTorch's checks, applied to every group.
void Adam::check_group(const ParamGroup& g) const {
    auto bad = [this](const char* what, double v) {
        return Error(std::string(name()) + ": invalid " + what + ": " + std::to_string(v));
    };
    if (!(g.lr >= 0)) throw bad("learning rate", g.lr);
    if (!(g.eps >= 0)) throw bad("epsilon value", g.eps);
    if (!(g.beta1 >= 0 && g.beta1 < 1)) throw bad("beta parameter at index 0", g.beta1);
    if (!(g.beta2 >= 0 && g.beta2 < 1)) throw bad("beta parameter at index 1", g.beta2);
    if (!(g.weight_decay >= 0)) throw bad("weight_decay value", g.weight_decay);
}

Adam::Adam(std::vector<ParamGroupSpec> groups, const AdamOptions& options, bool decoupled_weight_decay)
    : Optimizer(std::move(groups), adam_defaults(options)), decoupled_weight_decay_(decoupled_weight_decay) {
    for (const ParamGroup& g : param_groups()) check_group(g);
}

Adam::Adam(std::vector<ParamGroupSpec> groups, const AdamOptions& options)
    : Adam(std::move(groups), options, false) {}
Adam::Adam(const std::vector<Tensor>& params, const AdamOptions& options)
    : Adam(std::vector<ParamGroupSpec>{ParamGroupSpec(params)}, options, false) {}
Adam::Adam(const NamedTensors& params, const AdamOptions& options)
    : Adam(std::vector<ParamGroupSpec>{ParamGroupSpec(params)}, options, false) {}

AdamW::AdamW(std::vector<ParamGroupSpec> groups, const AdamWOptions& options)
    : Adam(std::move(groups), options, true) {}
AdamW::AdamW(const std::vector<Tensor>& params, const AdamWOptions& options)
    : Adam(std::vector<ParamGroupSpec>{ParamGroupSpec(params)}, options, true) {}
AdamW::AdamW(const NamedTensors& params, const AdamWOptions& options)
    : Adam(std::vector<ParamGroupSpec>{ParamGroupSpec(params)}, options, true) {}

void Adam::update(const ParamGroup& group, Tensor& param, const Tensor& grad, ParamState& state) {
    if (!state.exp_avg.defined()) {
        state.exp_avg = Tensor::zeros(param.shape());
        state.exp_avg_sq = Tensor::zeros(param.shape());
    }
    // Scalars in double (PyTorch computes them in Python), then float for the kernel.
    const double t = static_cast<double>(state.step);
    const double bias_correction1 = 1 - std::pow(group.beta1, t);
    const double bias_correction2 = 1 - std::pow(group.beta2, t);
    const float step_size = static_cast<float>(group.lr / bias_correction1);
    const float bias_correction2_sqrt = static_cast<float>(std::sqrt(bias_correction2));
    const float beta1 = static_cast<float>(group.beta1), one_minus_beta1 = static_cast<float>(1 - group.beta1);
    const float beta2 = static_cast<float>(group.beta2), one_minus_beta2 = static_cast<float>(1 - group.beta2);
    const float eps = static_cast<float>(group.eps);
    // Adam adds weight_decay * p to the gradient; AdamW scales p by 1 - lr * weight_decay
    // (the other one is then 0, resp. 1, which changes nothing).
    const float l2 = decoupled_weight_decay_ ? 0.f : static_cast<float>(group.weight_decay);
    const float decay = decoupled_weight_decay_ ? static_cast<float>(1 - group.lr * group.weight_decay) : 1.f;

    float* p = param.data();
    const float* g = grad.data();
    float* m = state.exp_avg.data();
    float* v = state.exp_avg_sq.data();
    const int64_t n = param.numel();
    // Each line is one PyTorch op (see kernel_utils.h for add_alpha).
#pragma omp parallel for simd if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) {
        float gi = g[i];
        if (l2 != 0.f) gi = add_alpha(gi, p[i], l2);        // grad.add(p, alpha=weight_decay)
        const float pi = p[i] * decay;                       // p.mul_(1 - lr * weight_decay)
        m[i] = add_alpha(m[i] * beta1, gi, one_minus_beta1);  // m.mul_(beta1).add_(g, alpha=1 - beta1)
        // v.mul_(beta2).addcmul_(g, g, value=1 - beta2), which computes v + ((1 - beta2) * g) * g
        v[i] = add_alpha(v[i] * beta2, gi, one_minus_beta2 * gi);
        const float denom = std::sqrt(v[i]) / bias_correction2_sqrt + eps;
        p[i] = pi + (-step_size * m[i]) / denom;  // p.addcdiv_(m, denom, value=-step_size)
    }
}

}  // namespace minnow
