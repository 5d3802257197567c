// minnow/optim/sgd.h: stochastic gradient descent with momentum, as torch.optim.SGD.
#pragma once

#include "optim/optimizer.h"

namespace minnow {

// torch.optim.SGD's hyperparameters and defaults (lr has no default there either).
struct SGDOptions {
    explicit SGDOptions(double lr) : lr(lr) {}
    double lr;
    double momentum = 0;
    double dampening = 0;
    double weight_decay = 0;  // L2: added to the gradient, on every parameter of the group
    bool nesterov = false;
};

// Per parameter with gradient g, as PyTorch 1.13 (elementwise in float32, with
// its rounding: bit-identical results on a CPU with FMA, see kernel_utils.h):
//     d = g + weight_decay * p
//     if momentum != 0:
//         buf = d                                   on the first step (no dampening)
//         buf = momentum * buf + (1 - dampening) * d   afterwards
//         d = nesterov ? d + momentum * buf : buf
//     p = p - lr * d
class SGD : public Optimizer {
public:
    SGD(const std::vector<Tensor>& params, const SGDOptions& options);
    SGD(const NamedTensors& params, const SGDOptions& options);
    SGD(std::vector<ParamGroupSpec> groups, const SGDOptions& options);
    const char* name() const override { return "SGD"; }

protected:
    void update(const ParamGroup& group, Tensor& param, const Tensor& grad, ParamState& state) override;
    void check_group(const ParamGroup& g) const override;
};

}  // namespace minnow
