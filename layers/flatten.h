// minnow/layers/flatten.h: layers that only reshape or pass through.
#pragma once

#include <cstdint>

#include "layers/module.h"

namespace minnow {

// nn.Flatten(start_dim=1, end_dim=-1): dims start..end merged into one, e.g.
// [N, C, H, W] -> [N, C*H*W]. A view (no copy); the gradient is reshaped back
// (core's ReshapeBackward).
class Flatten : public Module {
public:
    explicit Flatten(int64_t start_dim = 1, int64_t end_dim = -1) : start_dim(start_dim), end_dim(end_dim) {}
    Tensor forward(const Tensor& x) override;
    std::string type_name() const override { return "Flatten"; }
    std::string extra_repr() const override;
    int64_t start_dim, end_dim;
};

// nn.Identity(): y = x (the same tensor), e.g. where a model can switch a
// layer off without renumbering the ones after it.
class Identity : public Module {
public:
    Tensor forward(const Tensor& x) override { return x; }
    std::string type_name() const override { return "Identity"; }
};

}  // namespace minnow
