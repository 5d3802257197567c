// minnow/layers/dropout.h: inverted dropout.
//
// Train mode: every element is kept with probability 1 - p and scaled by
// 1 / (1 - p), or zeroed, so the expected output equals the input. Eval mode:
// the identity. As in PyTorch.
#pragma once

#include "core/random.h"
#include "layers/module.h"

namespace minnow {

// Functional form; `gen` null means default_generator().
Tensor dropout(const Tensor& x, float p, bool training, Generator* gen = nullptr);

// nn.Dropout(p=0.5). Draws its masks from `gen`, or default_generator() if
// null; the generator must outlive the module.
class Dropout : public Module {
public:
    explicit Dropout(float p = 0.5f, Generator* gen = nullptr);
    Tensor forward(const Tensor& x) override { return dropout(x, p, is_training(), gen_); }
    std::string type_name() const override { return "Dropout"; }
    std::string extra_repr() const override { return "p=" + std::to_string(p); }
    float p;

private:
    Generator* gen_;
};

}  // namespace minnow
