// minnow/layers/batchnorm_reference.h: BatchNorm assembled from autograd
// primitives, kept as a teaching reference.
//
// It computes exactly what layers/batchnorm.h computes, but as a chain of
// ordinary differentiable ops (mean, sub, square, add, rsqrt, mul), so its
// backward is whatever the autograd engine derives by chaining their
// backwards: no hand-derived formula to trust. tests/test_norm_reference.cpp
// shows that the two give the same outputs, gradients and running statistics;
// bench/bench_batchnorm.cpp shows what the hand-derived backward saves: this
// graph has eleven nodes and keeps two full-size tensors alive until backward
// (x - mu, saved by square and by the multiply with invstd, and xhat, saved by
// the multiply with gamma), where BatchNorm's one node keeps only x (which the
// caller holds anyway) and two [C] vectors. It is also much slower: each
// primitive is its own pass over memory, several with broadcasting.
#pragma once

#include "layers/batchnorm.h"

namespace minnow {

// Same arguments and behaviour as batch_norm() in layers/batchnorm.h.
Tensor batch_norm_reference(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                            const Tensor& weight, const Tensor& bias, bool training,
                            float momentum = 0.1f, float eps = 1e-5f);

// A BatchNorm (same parameters, buffers, modes, momentum rules, frozen
// statistics) whose forward is batch_norm_reference. Accepts [N, C, *].
class BatchNormReference : public BatchNorm {
public:
    explicit BatchNormReference(int64_t num_features, float eps = 1e-5f,
                                std::optional<float> momentum = 0.1f, bool affine = true,
                                bool track_running_stats = true)
        : BatchNorm("BatchNormReference", {2, 3, 4}, num_features, eps, momentum, affine,
                    track_running_stats) {}
    Tensor forward(const Tensor& x) override;
};

}  // namespace minnow
