// minnow/core/gradcheck.h: checks a backward against finite differences.
//
// For a function f of tensors, gradcheck builds the scalar
//     L(x) = sum_i w_i * f(x)_i        (w: fixed random weights)
// and compares, for every element of every input that requires grad, the
// gradient backward() gives with the central difference
//     (L(x + eps e_j) - L(x - eps e_j)) / (2 eps),
// evaluated in float32 with L summed in double. Random weights (rather than
// all ones) make every output element count with a different weight, so a
// backward that mixes up elements, drops a term, or gets a sign wrong fails.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace minnow {

struct GradcheckOptions {
    double eps = 1e-2;   // float32: smaller steps drown in rounding error
    double atol = 1e-3;  // pass if |analytic - numeric| <= atol + rtol * |numeric|
    double rtol = 1e-2;
    uint64_t seed = 1234;  // for the weights w
    // For a function with kinks (ReLU, max-pool): the smooth piece its last
    // evaluation lay on, e.g. a hash of its ReLU masks and max-pool choices.
    // An element whose x + eps or x - eps evaluation lies on another piece
    // than x itself is skipped (counted in `skipped`): across a kink, the
    // difference quotient is no derivative.
    std::function<uint64_t()> piece;
};

struct GradcheckResult {
    bool ok = true;
    std::string message;  // the first mismatch: input, element, both values
    double max_abs_error = 0;
    int64_t checked = 0, skipped = 0;  // elements compared, and skipped at a kink (see piece)
};

using TensorFn = std::function<Tensor(const std::vector<Tensor>&)>;

// Inputs that do not require grad are held fixed. f must be deterministic.
GradcheckResult gradcheck(const TensorFn& f, const std::vector<Tensor>& inputs,
                          const GradcheckOptions& opts = {});

}  // namespace minnow
