// minnow/layers/batchnorm.h: BatchNorm1d and BatchNorm2d (Ioffe & Szegedy 2015).
//
// For every channel c, over all m values of that channel in the batch
// (m = N for [N, C], N*L for [N, C, L], N*H*W for [N, C, H, W]):
//
//     mu_c    = mean of x over the m values
//     var_c   = mean of (x - mu_c)^2              (the biased variance)
//     xhat    = (x - mu_c) / sqrt(var_c + eps)
//     y       = gamma_c * xhat + beta_c           (gamma = "weight", beta = "bias")
//
// Training mode normalises with the batch's mu/var and folds them into the
// running statistics; eval mode normalises with the running statistics. The
// whole layer is ONE autograd node whose backward is derived by hand (see
// batchnorm.cpp, and docs/batchnorm.md for the long version). For the same
// layer built from autograd primitives, see layers/batchnorm_reference.h.
//
// PyTorch's conventions, exactly:
//   * momentum 0.1 is the weight of the NEW batch:
//         running = (1 - momentum) * running + momentum * batch_stat
//     momentum = std::nullopt gives the cumulative average over all batches
//     seen (factor 1 / num_batches_tracked).
//   * running_var is updated with the UNBIASED batch variance var * m/(m-1);
//     the normalisation itself uses the biased one.
//   * buffers running_mean [C] (init 0), running_var [C] (init 1),
//     num_batches_tracked (0-d, saved as I64); parameters weight [C] (init 1),
//     bias [C] (init 0). Same names, so state_dicts move to and from PyTorch.
//   * track_running_stats = false: no buffers at all (not in the state_dict)
//     and batch statistics are used in eval mode too.
//   * a training-mode batch with one value per channel is an error.
//
// Beyond PyTorch: freezing the statistics (see freeze_statistics()): training
// mode then normalises with the running statistics, which stop changing, and
// gradients flow as in eval mode; gamma and beta keep training.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "layers/module.h"

namespace minnow {

// The functional form, like torch.nn.functional.batch_norm.
//   training = true : normalise with batch statistics; if running_mean and
//                     running_var are defined, update them in place with
//                     `momentum` (the factor given is used as is).
//   training = false: normalise with running_mean / running_var (required).
// weight / bias may be undefined (gamma = 1, beta = 0). x is [N, C, *].
Tensor batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                  const Tensor& weight, const Tensor& bias, bool training, float momentum = 0.1f,
                  float eps = 1e-5f);
// relu(batch_norm(...)) in the same passes over memory, forward and backward,
// with the same bits (see batchnorm.cpp): one node that saves only x.
Tensor batch_norm_relu(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                       const Tensor& weight, const Tensor& bias, bool training, float momentum = 0.1f,
                       float eps = 1e-5f);

class BatchNorm : public Module {
public:
    // Accepts [N, C], [N, C, L] and [N, C, H, W]; BatchNorm1d and BatchNorm2d
    // below only narrow the accepted shapes and the name.
    explicit BatchNorm(int64_t num_features, float eps = 1e-5f,
                       std::optional<float> momentum = 0.1f, bool affine = true,
                       bool track_running_stats = true);

    Tensor forward(const Tensor& x) override;
    // relu(forward(x)) by batch_norm_relu (Module::call_relu uses it).
    Tensor forward_relu(const Tensor& x) override;
    std::string type_name() const override { return type_name_; }
    std::string extra_repr() const override;

    // ---- frozen statistics ----
    // While frozen, training mode behaves like eval mode for the statistics:
    // x is normalised with running_mean / running_var, they are not updated
    // (nor is num_batches_tracked), and the backward treats them as constants.
    // gamma and beta still get gradients. Needs track_running_stats.
    void freeze_statistics(bool on = true);
    // Freeze automatically once num_batches_tracked reaches `steps` (a warm-up
    // of that many training batches); std::nullopt turns it off. Because it is
    // decided from num_batches_tracked, it survives a checkpoint round trip.
    // (freeze_statistics(false) undoes only a freeze made by hand.)
    void freeze_after_steps(std::optional<int64_t> steps);
    bool statistics_frozen() const;

    int64_t num_features() const { return num_features_; }
    float eps() const { return eps_; }
    std::optional<float> momentum() const { return momentum_; }
    // Changes the weight of each new batch in the running statistics from the
    // next batch on (std::nullopt: cumulative average), as assigning
    // `bn.momentum` does in PyTorch.
    // Outside [0, 1] is an Error, as in the constructor.
    void set_momentum(std::optional<float> momentum);
    bool affine() const { return affine_; }
    bool track_running_stats() const { return track_running_stats_; }

    // gamma, beta: [C] parameters (undefined without affine).
    Tensor weight, bias;
    // [C], [C] and 0-d buffers (undefined without track_running_stats).
    Tensor running_mean, running_var, num_batches_tracked;

protected:
    BatchNorm(std::string type_name, std::vector<int64_t> accepted_dims, int64_t num_features,
              float eps, std::optional<float> momentum, bool affine, bool track_running_stats);
    // Shape checks with errors that name the layer: dims, channel count, and
    // (when batch statistics will be used) more than one value per channel.
    void check_input(const Tensor& x, bool batch_stats) const;
    // What forward does this call.
    struct Plan {
        bool batch_stats;     // normalise with batch statistics (else the running ones)
        bool update_running;  // fold the batch statistics into the running ones
    };
    Plan plan() const;
    // Counts one more batch in num_batches_tracked and returns the weight of
    // this batch in the running statistics: momentum, or 1 / count without one.
    float count_batch();
    std::string layer_name() const;  // "BatchNorm2d(64)", for error messages
    Tensor forward_impl(const Tensor& x, bool relu);  // forward(), or forward_relu()

private:
    std::string type_name_;
    std::vector<int64_t> accepted_dims_;
    int64_t num_features_;
    float eps_;
    std::optional<float> momentum_;
    bool affine_, track_running_stats_;
    bool frozen_ = false;
    std::optional<int64_t> freeze_after_;
};

// Input [N, C] or [N, C, L].
class BatchNorm1d : public BatchNorm {
public:
    explicit BatchNorm1d(int64_t num_features, float eps = 1e-5f,
                         std::optional<float> momentum = 0.1f, bool affine = true,
                         bool track_running_stats = true)
        : BatchNorm("BatchNorm1d", {2, 3}, num_features, eps, momentum, affine, track_running_stats) {}
};

// Input [N, C, H, W].
class BatchNorm2d : public BatchNorm {
public:
    explicit BatchNorm2d(int64_t num_features, float eps = 1e-5f,
                         std::optional<float> momentum = 0.1f, bool affine = true,
                         bool track_running_stats = true)
        : BatchNorm("BatchNorm2d", {4}, num_features, eps, momentum, affine, track_running_stats) {}
};

}  // namespace minnow
