// minnow/layers/syncbatchnorm.h: BatchNorm over the whole global batch of a
// data-parallel job (PyTorch's nn.SyncBatchNorm).
//
// In data-parallel training (dist/comm.h) each of the K ranks sees its own
// slice of every batch. BatchNorm normalises each slice with its own
// statistics (Goyal et al. 2017 do so on purpose); SyncBatchNorm computes
// the statistics of the whole batch, so that K ranks x B/K images normalise
// exactly as one process with B images would (up to the order of float
// additions). What crosses the ranks, per channel (see syncbatchnorm.cpp
// and docs/batchnorm.md, section 11):
//   forward:  each rank's count, mean and sum of squared deviations (one
//             allgather of 3C doubles), combined in rank order;
//   backward: the two sums of BatchNorm's backward, sum g and
//             sum g * (x - mu) (one allgather of 2C doubles).
// gamma's and beta's gradients stay the local sums, as in PyTorch: the
// data-parallel gradient averaging combines them with every other gradient.
//
// Parameters, buffers and names are BatchNorm's, so a state_dict moves
// between the two (and to PyTorch's SyncBatchNorm). In eval mode, with frozen
// statistics, and in a job of one process, it computes what BatchNorm does.
#pragma once

#include <memory>

#include "layers/batchnorm.h"

namespace minnow {

// The functional form: batch_norm(x, ...) with training = true, over the
// global batch.
Tensor sync_batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var, const Tensor& weight,
                       const Tensor& bias, float momentum = 0.1f, float eps = 1e-5f);

class SyncBatchNorm : public BatchNorm {
public:
    explicit SyncBatchNorm(int64_t num_features, float eps = 1e-5f, std::optional<float> momentum = 0.1f,
                           bool affine = true, bool track_running_stats = true);
    Tensor forward(const Tensor& x) override;
};

// Puts a SyncBatchNorm in place of every BatchNorm1d/2d in `model` (children
// at any depth), carrying over its options, parameters, buffers and frozen
// state, as torch.nn.SyncBatchNorm.convert_sync_batchnorm does. Returns how
// many it replaced.
int convert_sync_batchnorm(Module& model);

}  // namespace minnow
