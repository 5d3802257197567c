// minnow/layers/activation.h: activation modules.
//
// ReLU wraps core's relu() (core/ops.cpp), one autograd node whose backward
// is dx = dy where y > 0, else 0 (the gradient at exactly 0 is 0, as in
// PyTorch). Other activations are a Module plus a node like it: see
// docs/new-layer.md, which adds LeakyReLU outside the library.
#pragma once

#include "layers/module.h"

namespace minnow {

// nn.ReLU(): y = max(x, 0).
class ReLU : public Module {
public:
    Tensor forward(const Tensor& x) override;
    std::string type_name() const override { return "ReLU"; }
};

}  // namespace minnow
