// minnow/layers/batchrenorm.h: Batch Renormalization (Ioffe 2017), for [N, C, H, W].
//
// BatchNorm trains with batch statistics but evaluates with running ones, so
// the network it is trained as is not the network it is used as (see
// docs/batchnorm.md). Batch Renormalization corrects each training batch
// towards the running statistics, per channel (Algorithm 1 of the paper):
//
//     mu_B, sigma_B = batch mean and sqrt(biased batch var + eps)
//     mu,   sigma   = running_mean and sqrt(running_var + eps)
//     r    = clip(sigma_B / sigma,    1/rmax, rmax)
//     d    = clip((mu_B - mu) / sigma, -dmax,  dmax)
//     xhat = (x - mu_B) / sigma_B * r + d
//     y    = gamma * xhat + beta
//
// With r and d unclipped, xhat = (x - mu) / sigma exactly: the running
// statistics, as in eval mode. r and d are treated as constants in backward
// (stop_gradient), so the gradient is BatchNorm's, scaled by r.
//
// rmax and dmax are relaxed linearly, from 1 and 0 (plain BatchNorm, while the
// running statistics are still poor) to their final values over the first
// `warmup_steps` training batches; the step is num_batches_tracked, so the
// schedule resumes correctly from a checkpoint.
//
// Running statistics are kept exactly as BatchNorm2d keeps them (momentum is
// the weight of the new batch, running_var from the unbiased variance, same
// buffer names and dtypes); the paper's running sigma is sqrt(running_var +
// eps). So eval mode is BatchNorm2d's eval mode, and a BatchRenorm2d
// checkpoint loads into a BatchNorm2d (and back) unchanged.
#pragma once

#include <cstdint>
#include <string>

#include "layers/module.h"

namespace minnow {

// The training-mode function with r and d given (per channel, [C]) and held
// constant: y = gamma * ((x - mu_B) / sigma_B * r + d) + beta, with the
// batch statistics of x. weight / bias may be undefined. This is the function
// BatchRenorm2d computes once it has chosen r and d; gradcheck it directly.
Tensor batch_renorm(const Tensor& x, const Tensor& r, const Tensor& d, const Tensor& weight,
                    const Tensor& bias, float eps = 1e-5f);

struct BatchRenormOptions {
    float eps = 1e-5f;
    float momentum = 0.1f;       // weight of the new batch in the running statistics
    float rmax = 3.f;            // final r limit: r in [1/rmax, rmax]      (paper: 3)
    float dmax = 5.f;            // final d limit: d in [-dmax, dmax]       (paper: 5)
    int64_t warmup_steps = 5000; // batches over which rmax ramps 1 -> rmax and dmax 0 -> dmax
    bool affine = true;
};

class BatchRenorm2d : public Module {
public:
    explicit BatchRenorm2d(int64_t num_features, BatchRenormOptions options = {});

    Tensor forward(const Tensor& x) override;
    std::string type_name() const override { return "BatchRenorm2d"; }
    std::string extra_repr() const override;

    // The limits for the next training batch (from num_batches_tracked).
    float current_rmax() const;
    float current_dmax() const;
    // r and d [C] of the last training batch (undefined before the first).
    const Tensor& last_r() const { return last_r_; }
    const Tensor& last_d() const { return last_d_; }

    int64_t num_features() const { return num_features_; }
    const BatchRenormOptions& options() const { return opt_; }

    Tensor weight, bias;                                    // [C] (undefined without affine)
    Tensor running_mean, running_var, num_batches_tracked;  // [C], [C], 0-d (saved as I64)

private:
    int64_t num_features_;
    BatchRenormOptions opt_;
    Tensor last_r_, last_d_;
};

}  // namespace minnow
