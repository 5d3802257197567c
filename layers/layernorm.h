// minnow/layers/layernorm.h: LayerNorm (Ba, Kiros & Hinton 2016), as nn.LayerNorm.
//
// Normalises each sample over its last D dims (D = normalized_shape.size()),
// with statistics of that sample alone, so training and eval compute the same
// function and there are no running statistics:
//
//     for each row (the leading dims), over its M = prod(normalized_shape) values:
//     mu = mean(x),  var = mean((x - mu)^2)  (biased),  xhat = (x - mu) / sqrt(var + eps)
//     y  = weight * xhat + bias      (weight, bias: normalized_shape, per ELEMENT)
//
// One autograd node with a hand-derived backward (layernorm.cpp).
#pragma once

#include <string>

#include "layers/module.h"

namespace minnow {

// weight / bias may be undefined (1 and 0); if defined, shaped normalized_shape.
Tensor layer_norm(const Tensor& x, const Shape& normalized_shape, const Tensor& weight,
                  const Tensor& bias, float eps = 1e-5f);

class LayerNorm : public Module {
public:
    explicit LayerNorm(Shape normalized_shape, float eps = 1e-5f, bool elementwise_affine = true);
    Tensor forward(const Tensor& x) override;
    std::string type_name() const override { return "LayerNorm"; }
    std::string extra_repr() const override;

    const Shape& normalized_shape() const { return normalized_shape_; }
    float eps() const { return eps_; }
    bool elementwise_affine() const { return affine_; }

    Tensor weight, bias;  // normalized_shape (undefined without elementwise_affine)

private:
    Shape normalized_shape_;
    float eps_;
    bool affine_;
};

}  // namespace minnow
