// minnow/train/step.h: one training step, and what went wrong in one that
// went non-finite.
//
//     StepResult r = train_step(model, opt, batch);
//     if (!r.finite()) std::puts(diagnose_non_finite(model, batch.images, std::isfinite(r.loss)).c_str());
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>

#include "data/loader.h"
#include "layers/module.h"
#include "optim/optimizer.h"

namespace minnow {

struct StepResult {
    float loss = NAN;        // the batch's mean cross-entropy
    double grad_norm = NAN;  // global L2 norm of the gradient (NaN if the loss was not finite)
    int64_t correct = 0;     // images of the batch the model got right (before the step)
    // On several ranks the loss, the count and `correct` are the whole
    // batch's (train/data_parallel.h); the first rank whose own slice's loss
    // was not finite, or -1.
    int non_finite_loss_rank = -1;
    // After the optimizer's step: the first parameter or buffer (running
    // statistic) that is not finite, with its element; empty if all are.
    std::string non_finite_after_step;
    bool finite() const { return std::isfinite(loss) && std::isfinite(grad_norm) && non_finite_after_step.empty(); }
};

// One step: zero_grad, forward, cross-entropy (with label smoothing), backward,
// the gradient's global norm, then (only if loss and gradient are finite)
// `after_backward` (to look at the gradients), opt.step() and a check that
// every parameter and buffer is still finite (a finite gradient times a huge
// lr, or a running variance, can overflow). A non-finite loss or gradient
// changes no weight; a non-finite state after the step has changed them. The
// caller decides what to do (see diagnose_non_finite).
StepResult train_step(Module& model, Optimizer& opt, const Batch& b, float label_smoothing = 0.f,
                      const std::function<void()>& after_backward = {});

// "element 12 is nan" for the first element of `t` that is not finite, or "".
std::string non_finite_element(const Tensor& t);
// The first tensor holding a NaN or an infinity, and where
// ("features.0.weight (element 12 is nan)"), or "" if all are finite. With a
// model's state_dict(): its parameters and buffers, layer by layer.
std::string first_non_finite(const std::vector<TensorEntry>& entries);

// Called when the loss or the gradient went non-finite: names the first
// parameter or buffer that is not finite, or else reruns the batch with a hook
// on every layer and names the first whose output is not finite, or else the
// first parameter whose gradient is not. `loss_finite`: whether the
// step's loss was finite (then the gradients of that step are looked at first).
std::string diagnose_non_finite(Module& model, const Tensor& images, bool loss_finite);

}  // namespace minnow
