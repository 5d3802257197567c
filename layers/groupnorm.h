// minnow/layers/groupnorm.h: GroupNorm (Wu & He 2018), as nn.GroupNorm.
//
// The C channels are split into G groups of C/G consecutive channels; each
// sample's group (C/G channels x all positions) is normalised with its own
// mean and biased variance, then each channel gets its own affine:
//
//     for sample n, group g (M = C/G * H * W values):
//     mu = mean(x), var = mean((x - mu)^2), xhat = (x - mu) / sqrt(var + eps)
//     y[n, c, ...] = weight[c] * xhat + bias[c]
//
// No batch statistics, so no train/eval difference and no small-batch
// problem. G = 1 is LayerNorm over (C, H, W) with a per-channel affine;
// G = C is InstanceNorm. One autograd node, hand-derived backward.
#pragma once

#include <string>

#include "layers/module.h"

namespace minnow {

// x [N, C, *]; weight / bias [C] or undefined.
Tensor group_norm(const Tensor& x, int64_t num_groups, const Tensor& weight, const Tensor& bias,
                  float eps = 1e-5f);

class GroupNorm : public Module {
public:
    GroupNorm(int64_t num_groups, int64_t num_channels, float eps = 1e-5f, bool affine = true);
    Tensor forward(const Tensor& x) override;
    std::string type_name() const override { return "GroupNorm"; }
    std::string extra_repr() const override;

    int64_t num_groups() const { return num_groups_; }
    int64_t num_channels() const { return num_channels_; }
    float eps() const { return eps_; }
    bool affine() const { return affine_; }

    Tensor weight, bias;  // [C] (undefined without affine)

private:
    int64_t num_groups_, num_channels_;
    float eps_;
    bool affine_;
};

}  // namespace minnow
