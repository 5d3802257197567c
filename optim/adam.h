// minnow/optim/adam.h: Adam and AdamW, as torch.optim.Adam and torch.optim.AdamW.
#pragma once

#include "optim/optimizer.h"

namespace minnow {

// torch.optim.Adam's hyperparameters and defaults (amsgrad is not supported).
struct AdamOptions {
    explicit AdamOptions(double lr = 1e-3) : lr(lr) {}
    double lr;
    double beta1 = 0.9;  // betas = (beta1, beta2)
    double beta2 = 0.999;
    double eps = 1e-8;
    double weight_decay = 0;
};

// AdamW's default weight decay is 1e-2 (Adam's is 0).
struct AdamWOptions : AdamOptions {
    explicit AdamWOptions(double lr = 1e-3) : AdamOptions(lr) { weight_decay = 1e-2; }
};

// Per parameter with gradient g, at its step t (1 on its first update), as
// PyTorch 1.13 (elementwise in float32 with its rounding, the scalars in double:
// bit-identical results on a CPU with FMA, see kernel_utils.h):
//     g = g + weight_decay * p                      (Adam: L2 on the gradient)
//     p = p * (1 - lr * weight_decay)               (AdamW instead: decoupled decay)
//     m = beta1 * m + (1 - beta1) * g               (m, v start at 0)
//     v = beta2 * v + (1 - beta2) * g * g
//     p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// (eps is added after the bias correction of sqrt(v)).
class Adam : public Optimizer {
public:
    Adam(const std::vector<Tensor>& params, const AdamOptions& options);
    Adam(const NamedTensors& params, const AdamOptions& options);
    Adam(std::vector<ParamGroupSpec> groups, const AdamOptions& options);
    const char* name() const override { return decoupled_weight_decay_ ? "AdamW" : "Adam"; }
    bool uses_betas() const override { return true; }

protected:
    Adam(std::vector<ParamGroupSpec> groups, const AdamOptions& options, bool decoupled_weight_decay);
    void update(const ParamGroup& group, Tensor& param, const Tensor& grad, ParamState& state) override;
    std::vector<std::string> required_buffers() const override { return {"exp_avg", "exp_avg_sq"}; }
    void check_group(const ParamGroup& g) const override;

private:
    bool decoupled_weight_decay_ = false;
};

class AdamW : public Adam {
public:
    AdamW(const std::vector<Tensor>& params, const AdamWOptions& options);
    AdamW(const NamedTensors& params, const AdamWOptions& options);
    AdamW(std::vector<ParamGroupSpec> groups, const AdamWOptions& options);
};

}  // namespace minnow
