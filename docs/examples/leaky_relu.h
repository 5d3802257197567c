// docs/examples/leaky_relu.h: a layer written OUTSIDE the library, the example
// of docs/new-layer.md. tests/test_layers_example_doc.cpp builds and
// gradchecks it in CI, so the walk-through never goes stale.
//
//   y = x            where x > 0
//   y = slope * x    elsewhere                 (nn.LeakyReLU(negative_slope))
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "layers/module.h"

namespace example {

// ---- backward ---------------------------------------------------------------
// y_i depends on x_i only, so the Jacobian is diagonal:
//   dy_i/dx_i = 1      if x_i > 0
//             = slope  otherwise (at x_i = 0 too, as PyTorch)
// and the chain rule dL/dx_i = sum_j dL/dy_j dy_j/dx_i keeps one term:
//   dx_i = dy_i * (x_i > 0 ? 1 : slope)
struct LeakyReluBackward : minnow::Node {
    minnow::Tensor x;  // saved by the forward (detached: no graph inside a node)
    float slope = 0.01f;

    std::vector<minnow::Tensor> backward(const minnow::Tensor& dy) override {
        minnow::Tensor dx = minnow::Tensor::empty(dy.shape());
        const float* px = x.data();
        const float* pdy = dy.data();
        float* pdx = dx.data();
        for (int64_t i = 0; i < dx.numel(); ++i) pdx[i] = pdy[i] * (px[i] > 0.f ? 1.f : slope);
        return {dx};  // one gradient per input given to attach(), in order
    }
    void release_saved() override { x = minnow::Tensor(); }  // free x once backward ran
    const char* name() const override { return "LeakyReluBackward"; }
};

// ---- forward ----------------------------------------------------------------
inline minnow::Tensor leaky_relu(const minnow::Tensor& x, float slope = 0.01f) {
    minnow::Tensor y = minnow::Tensor::empty(x.shape());
    const float* px = x.data();
    float* py = y.data();
    for (int64_t i = 0; i < x.numel(); ++i) py[i] = px[i] > 0.f ? px[i] : slope * px[i];

    if (!minnow::any_requires_grad({x})) return y;  // no graph wanted: save nothing
    auto node = std::make_shared<LeakyReluBackward>();
    node->x = x.detach();
    node->slope = slope;
    return minnow::attach(y, node, {x});  // y now has grad_fn = node, with an edge to x
}

// ---- module -----------------------------------------------------------------
class LeakyReLU : public minnow::Module {
public:
    explicit LeakyReLU(float negative_slope = 0.01f) : negative_slope(negative_slope) {}
    minnow::Tensor forward(const minnow::Tensor& x) override { return leaky_relu(x, negative_slope); }
    std::string type_name() const override { return "LeakyReLU"; }
    std::string extra_repr() const override { return "negative_slope=" + std::to_string(negative_slope); }

    float negative_slope;
};

}  // namespace example
