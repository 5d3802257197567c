// minnow/layers/eval_pooling.h: max pooling for inference only.
//
// MaxPool2d (layers/pooling.h) records, for its backward, where each maximum
// came from, and handles any window with a general loop. At inference no
// backward will come: EvalMaxPool2d computes only the maxima, and for the
// common 2x2 window with stride 2 (the reference CNN's) in a loop the compiler
// vectorises. Same values as MaxPool2d, NaN included (a window holding a NaN
// gives NaN, as in PyTorch).
#pragma once

#include <cstdint>

#include "layers/pooling.h"

namespace minnow {

class EvalMaxPool2d : public Module {
public:
    explicit EvalMaxPool2d(const MaxPool2d& pool)
        : kernel_size(pool.kernel_size), stride(pool.stride), padding(pool.padding) {}
    // Errors in training mode and for an input that wants a gradient.
    Tensor forward(const Tensor& x) override;
    std::string type_name() const override { return "EvalMaxPool2d"; }
    std::string extra_repr() const override;
    int64_t kernel_size, stride, padding;
};

}  // namespace minnow
