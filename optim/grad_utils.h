// minnow/optim/grad_utils.h: gradient norms, clipping and a non-finite check.
//
// Every function reads the accumulated gradients p.grad() of the parameters it
// is given and skips a parameter whose gradient is undefined. Norms are L2 and
// accumulated in double.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "layers/module.h"

namespace minnow {

// sqrt(sum over parameters of sum over elements of grad^2): the norm of all
// gradients seen as one vector (0 when no parameter has a gradient).
double global_grad_norm(const std::vector<Tensor>& params);

// The L2 norm of each parameter's gradient, in order; parameters without a
// gradient are left out.
std::vector<std::pair<std::string, double>> per_parameter_grad_norms(const NamedTensors& params);

// torch.nn.utils.clip_grad_norm_: computes the global norm `total`; if
// max_norm / (total + 1e-6) < 1 multiplies every gradient by that factor.
// Returns `total`, the norm BEFORE clipping. As in PyTorch, a non-finite total
// turns the gradients into NaN; check the result (or all_finite_grads) first.
double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm);

// True when every gradient is finite (no NaN or inf). Otherwise false, and the
// name of the first parameter with a non-finite gradient goes to *first_non_finite.
bool all_finite_grads(const NamedTensors& params, std::string* first_non_finite = nullptr);

}  // namespace minnow
