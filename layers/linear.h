// minnow/layers/linear.h: the fully connected layer, y = x W^T + b.
//
// The smallest complete layer: a function `linear` that computes the output
// and records one autograd node with a hand-written backward (both in
// linear.cpp, side by side), and a Module `Linear` that owns the parameters
// and calls it.
#pragma once

#include <cstdint>

#include "core/random.h"
#include "layers/module.h"

namespace minnow {

// x [*, in], weight [out, in], bias [out] or undefined  ->  y [*, out].
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

// nn.Linear(in_features, out_features, bias=True). Parameters "weight"
// [out, in] and "bias" [out], initialised as PyTorch does (layers/init.h)
// from `gen` (default_generator() if null).
class Linear : public Module {
public:
    Linear(int64_t in_features, int64_t out_features, bool bias = true, Generator* gen = nullptr);
    Tensor forward(const Tensor& x) override;
    std::string type_name() const override { return "Linear"; }
    std::string extra_repr() const override;

    int64_t in_features, out_features;
    Tensor weight, bias;  // bias undefined when built with bias = false
};

}  // namespace minnow
