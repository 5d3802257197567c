// minnow/optim/optimizer.h: parameter groups and the Optimizer base class.
//
// As in torch.optim, an optimizer holds its parameters in groups, each group
// with its own hyperparameters (lr, weight_decay, ...), and keeps state per
// parameter (momentum buffers, Adam moments, step counts). step() updates
// every parameter that has a gradient; a parameter whose grad is undefined is
// skipped, exactly as PyTorch skips `p.grad is None`.
//
//     SGDOptions o(0.1);                  // lr
//     o.momentum = 0.9;
//     o.weight_decay = 5e-4;
//     // weight decay on every parameter (torch.optim.SGD's default) ...
//     SGD opt(model.named_parameters(), o);
//     // ... or none on biases and normalisation weights:
//     SGD opt2(param_groups_no_decay_for_norm_and_bias(model.named_parameters(), 5e-4), o);
//     for (...) { opt.zero_grad(); loss.backward(); opt.step(); }
//
// The update rules are in sgd.cpp and adam.cpp; the schedules that change a
// group's lr over time are in lr_scheduler.h.
//
// ---- Checkpoints ----
// state_dict() returns the state as the part of a safetensors file it becomes
// (put it in the same file as the model's state_dict; every name starts with
// `prefix`, "optim." by default, so it never clashes with the model's names):
//
//   tensors (F32)   <prefix>state.<param>.momentum_buffer        SGD with momentum
//                   <prefix>state.<param>.exp_avg, .exp_avg_sq   Adam, AdamW
//   metadata        <prefix>type                  "SGD", "Adam" or "AdamW"
//                   <prefix>param_groups          JSON, one object per group:
//                       {"params": [names], "lr": 0.1, "weight_decay": 0.0005, "momentum": 0.9,
//                        "dampening": 0, "nesterov": false, "betas": [0.9, 0.999], "eps": 1e-08,
//                        "initial_lr": 0.1 or null}
//                   <prefix>state.<param>.step    the number of updates applied to <param> ("12")
//
// <param> is the parameter's name (from Module::named_parameters()), or its
// index over all groups ("0", "1", ...) when the optimizer was given bare
// tensors, as in PyTorch's state_dict. Numbers in the metadata are text that
// reads back to the same double and integer, so a resumed run continues
// bit-for-bit. A parameter has state exactly when it has a `step` entry.
//
// load_state_dict() checks everything before changing anything: the type, the
// number of groups and their parameter names, every buffer's shape, missing
// buffers and unexpected names; all problems are reported in one Error.
#pragma once

#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/safetensors.h"
#include "core/tensor.h"
#include "layers/module.h"

namespace minnow {

// One group of parameters and its hyperparameters (PyTorch's param_groups[i]).
// Each optimizer reads the fields it uses; schedulers change `lr` (and
// OneCycleLR `momentum` or `beta1`) between steps. Change hyperparameters
// freely; do not add or remove parameters after construction.
struct ParamGroup {
    std::vector<Tensor> params;
    std::vector<std::string> names;  // one per parameter (see the checkpoint notes above)

    double lr = 0;
    double weight_decay = 0;
    // SGD
    double momentum = 0;
    double dampening = 0;
    bool nesterov = false;
    // Adam, AdamW
    double beta1 = 0.9;
    double beta2 = 0.999;
    double eps = 1e-8;
    // The lr a schedule starts from (PyTorch's group["initial_lr"]): set by the
    // first LRScheduler made on the optimizer, unset before.
    std::optional<double> initial_lr;
};

// A group as a user asks for it (PyTorch: {"params": [...], "weight_decay": 0}):
// hyperparameters left unset take the optimizer's defaults. Other
// hyperparameters can be changed per group through param_groups() afterwards.
struct ParamGroupSpec {
    ParamGroupSpec(std::vector<Tensor> params);  // named by index over all groups
    ParamGroupSpec(const NamedTensors& named_params);

    std::vector<Tensor> params;
    std::vector<std::string> names;  // empty: named by index
    std::optional<double> lr;
    std::optional<double> weight_decay;
};

// Two groups: [0] "decay": every parameter of rank >= 2 (conv and linear
// weights), with `weight_decay`; [1] "no_decay": every parameter of rank <= 1
// (biases, and BatchNorm/LayerNorm/GroupNorm weights and biases), with weight
// decay 0. Both are always returned, in the order of `named_params`; either may
// be empty.
std::vector<ParamGroupSpec> param_groups_no_decay_for_norm_and_bias(const NamedTensors& named_params,
                                                                    double weight_decay);

// What an optimizer keeps per parameter. Buffers an optimizer does not use
// stay undefined.
struct ParamState {
    int64_t step = 0;        // updates applied to this parameter (Adam's bias correction)
    Tensor momentum_buffer;  // SGD (made on the first step with momentum != 0)
    Tensor exp_avg;          // Adam, AdamW: first moment m
    Tensor exp_avg_sq;       // Adam, AdamW: second moment v
};

class Optimizer {
public:
    virtual ~Optimizer() = default;
    Optimizer(const Optimizer&) = delete;
    Optimizer& operator=(const Optimizer&) = delete;

    // "SGD", "Adam", "AdamW": the class name, in errors and checkpoints.
    virtual const char* name() const = 0;
    // True when the momentum of this optimizer is beta1 (Adam, AdamW); OneCycleLR
    // cycles beta1 then, and `momentum` otherwise.
    virtual bool uses_betas() const { return false; }

    // One update of every parameter that has a gradient, under NoGradGuard.
    void step();
    // Drops every parameter's gradient (PyTorch's zero_grad(set_to_none=True)).
    void zero_grad();

    std::vector<ParamGroup>& param_groups() { return groups_; }
    const std::vector<ParamGroup>& param_groups() const { return groups_; }
    // The state of a parameter, or null before its first update.
    const ParamState* state(const Tensor& param) const;

    // ---- checkpoints (format at the top of this file) ----
    // The tensors share storage with the live state (save them before the next step).
    SafetensorsFile state_dict(const std::string& prefix = "optim.") const;
    // Copies the state in; errors name `state.path` (or "optimizer state").
    void load_state_dict(const SafetensorsFile& state, const std::string& prefix = "optim.");

protected:
    // `defaults` holds the hyperparameters of groups that do not set their own.
    Optimizer(std::vector<ParamGroupSpec> groups, const ParamGroup& defaults);

    // The update rule for one parameter with gradient `grad` (same shape);
    // `state.step` already counts this update.
    virtual void update(const ParamGroup& group, Tensor& param, const Tensor& grad, ParamState& state) = 0;
    // Buffers a parameter with state must have (checked on load).
    virtual std::vector<std::string> required_buffers() const { return {}; }
    // Throws Error if the hyperparameters of `g` are invalid for this optimizer
    // (PyTorch's checks): the constructors and load_state_dict call it.
    virtual void check_group(const ParamGroup& g) const = 0;

private:
    std::vector<ParamGroup> groups_;
    std::unordered_map<const TensorImpl*, ParamState> state_;  // keyed by parameter, as in PyTorch
};

}  // namespace minnow
