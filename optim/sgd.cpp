#include "optim/sgd.h"

#include "core/parallel.h"
#include "optim/kernel_utils.h"

namespace minnow {

using optim_detail::add_alpha;

static ParamGroup sgd_defaults(const SGDOptions& o) {
    ParamGroup g;
    g.lr = o.lr;
    g.momentum = o.momentum;
    g.dampening = o.dampening;
    g.weight_decay = o.weight_decay;
    g.nesterov = o.nesterov;
    return g;
}

// PyTorch's checks, applied to every group.
void SGD::check_group(const ParamGroup& g) const {
    auto bad = [](const char* what, double v) {
        return Error(std::string("SGD: invalid ") + what + ": " + std::to_string(v));
    };
    if (!(g.lr >= 0)) throw bad("learning rate", g.lr);
    if (!(g.momentum >= 0)) throw bad("momentum value", g.momentum);
    if (!(g.weight_decay >= 0)) throw bad("weight_decay value", g.weight_decay);
    if (g.nesterov && (g.momentum <= 0 || g.dampening != 0))
        throw Error("SGD: nesterov momentum requires a momentum and zero dampening");
}

SGD::SGD(std::vector<ParamGroupSpec> groups, const SGDOptions& options)
    : Optimizer(std::move(groups), sgd_defaults(options)) {
    for (const ParamGroup& g : param_groups()) check_group(g);
}

SGD::SGD(const std::vector<Tensor>& params, const SGDOptions& options)
    : SGD(std::vector<ParamGroupSpec>{ParamGroupSpec(params)}, options) {}

SGD::SGD(const NamedTensors& params, const SGDOptions& options)
    : SGD(std::vector<ParamGroupSpec>{ParamGroupSpec(params)}, options) {}

void SGD::update(const ParamGroup& group, Tensor& param, const Tensor& grad, ParamState& state) {
    // The scalars become float, as PyTorch hands them to its float kernels.
    const float lr = static_cast<float>(group.lr);
    const float weight_decay = static_cast<float>(group.weight_decay);
    const float momentum = static_cast<float>(group.momentum);
    const float one_minus_dampening = static_cast<float>(1 - group.dampening);
    const bool nesterov = group.nesterov;

    const bool use_momentum = group.momentum != 0;
    const bool first = use_momentum && !state.momentum_buffer.defined();
    if (first) state.momentum_buffer = Tensor::zeros(param.shape());
    float* buf = use_momentum ? state.momentum_buffer.data() : nullptr;

    float* p = param.data();
    const float* g = grad.data();
    const int64_t n = param.numel();
    // Each line is one PyTorch op (see kernel_utils.h for add_alpha).
#pragma omp parallel for simd if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) {
        float d = g[i];
        if (weight_decay != 0.f) d = add_alpha(d, p[i], weight_decay);  // d = g + wd * p
        if (buf) {
            // buf = d at first, then buf.mul_(momentum).add_(d, alpha=1 - dampening)
            buf[i] = first ? d : add_alpha(buf[i] * momentum, d, one_minus_dampening);
            d = nesterov ? add_alpha(d, buf[i], momentum) : buf[i];  // d + momentum * buf, or buf
        }
        p[i] = add_alpha(p[i], d, -lr);  // p.add_(d, alpha=-lr)
    }
}

}  // namespace minnow
