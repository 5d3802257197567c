// minnow/layers/gated_batchnorm.h: BatchNorm with a learned per-channel gate
// between the batch statistics and the running averages, for [N, C, H, W].
//
// With a small batch (down to batch size 1, where a channel's statistics come
// from one image's H*W pixels) BatchNorm's batch statistics are noisy, and the
// network is trained with them but evaluated with the running averages (the
// train/eval mismatch of docs/batchnorm.md, section 5). GatedBatchNorm2d lets
// each channel learn how much to trust the batch. Per channel c, in training
// mode:
//
//     g       = sigmoid(a_c)                   (a = the parameter "gate", a logit)
//     mu_B    = mean of x over (N, H, W)
//     var_B   = biased variance of x over (N, H, W)
//     mu      = g * mu_B  + (1 - g) * running_mean
//     var     = g * var_B + (1 - g) * running_var
//     y       = gamma * (x - mu) / sqrt(var + eps) + beta
//
// running_mean / running_var are the values from BEFORE this batch (the batch
// is folded into them afterwards, so it is not counted twice), and they are
// constants in backward: the gradient reaches x through mu_B and var_B (times
// g) and the gate through mu and var (times g (1 - g)). g = 1 is BatchNorm2d's
// training mode, g = 0 its eval mode. The layer is ONE autograd node with a
// hand-derived backward (layers/gated_batchnorm.cpp; docs/batchnorm.md,
// section "Gated BatchNorm").
//
// Everything else is BatchNorm2d's, exactly (it derives from BatchNorm):
//   * running statistics: running = (1 - momentum) * running + momentum * batch,
//     momentum 0.1 the weight of the new batch (std::nullopt: the cumulative
//     average), running_var from the UNBIASED batch variance var_B * m/(m-1),
//     num_batches_tracked counted;
//   * eval mode normalises with the running statistics only (the gate plays no
//     part), as do frozen statistics (BatchNorm::freeze_statistics);
//   * a training batch with one value per channel (N*H*W = 1) is an error;
//     batch size 1 is fine whenever H*W > 1.
//   * state_dict: weight, bias, gate, running_mean, running_var,
//     num_batches_tracked (I64). Without the gate it is a BatchNorm2d
//     state_dict, so running statistics and affine move to and from
//     BatchNorm2d with load_state_dict(..., strict = false).
//   * always tracks running statistics (the gate mixes them in).
//
// The gate's initial logit (GatedBatchNormOptions::initial_gate_logit) is 4,
// g = sigmoid(4) = 0.982: the layer starts almost as plain BatchNorm. At batch
// 128 the batch statistics are precise (m = 128*H*W values) while the running
// statistics start at the placeholders 0 and 1, so the batch should dominate;
// 1.8% on the running side is forgotten as they converge (their initial
// values weigh 0.9^t after t batches), and it keeps g (1 - g) = 0.018, so the
// gate can still move (at logit 6 that factor is 0.0025). Note that weight
// decay on every parameter (train_cifar's default) pulls a towards 0, g = 1/2.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "layers/batchnorm.h"

namespace minnow {

// The training-mode function. x is [N, C, *] with more than one value per
// channel; running_mean / running_var [C] are required (they are mixed in) and
// are updated in place with `momentum` from the batch statistics (momentum 0
// leaves them exactly as they are, which is what a gradient check wants).
// gate is the logit a [C]; weight / bias may be undefined (gamma = 1,
// beta = 0). Gradients: x, weight, bias, gate.
Tensor gated_batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                        const Tensor& weight, const Tensor& bias, const Tensor& gate,
                        float momentum = 0.1f, float eps = 1e-5f);

struct GatedBatchNormOptions {
    float eps = 1e-5f;
    std::optional<float> momentum = 0.1f;  // weight of the new batch (nullopt: cumulative average)
    bool affine = true;
    float initial_gate_logit = 4.f;        // a at init for every channel: g = sigmoid(4) = 0.982
};

class GatedBatchNorm2d : public BatchNorm {
public:
    explicit GatedBatchNorm2d(int64_t num_features, GatedBatchNormOptions options = {});

    Tensor forward(const Tensor& x) override;
    std::string extra_repr() const override;

    // g = sigmoid(gate), [C], a copy (no graph).
    Tensor gate_probability() const;
    float initial_gate_logit() const { return initial_gate_logit_; }

    // The logit a [C], a parameter (always defined, also without affine).
    Tensor gate;

private:
    float initial_gate_logit_;
};

}  // namespace minnow
