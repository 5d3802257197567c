// minnow/train/data_parallel.h: what one training step adds when it runs on
// several ranks (dist/comm.h), each on its own slice of the batch.
//
// Each rank's loss is the mean over its m_r images, L_r = (1/m_r) sum_i l_i;
// the batch's loss over all B = sum_r m_r images is
//     L = (1/B) sum_r sum_i l_i = sum_r (m_r / B) L_r,
// so its gradient is  dL/dw = sum_r (m_r / B) dL_r/dw: each rank scales its
// gradients by m_r / B and the ranks sum them. Every rank then holds the
// same gradient, takes the same optimizer step, and keeps the same weights
// (the sums give the same bits on every rank: tests/mpi/test_mpi.cpp).
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

#include "core/autograd.h"
#include "core/tensor.h"
#include "layers/module.h"

namespace minnow {

// One batch over all ranks: what every rank must decide alike (whether to
// step, what to log) is decided from these, never from its own slice. Each
// rank gives its image count m_r, its slice's mean loss L_r and how many of
// its images the model got right; the sums are in rank order (one allgather
// of 3 doubles), so every rank gets the same bits. With one rank: its own.
struct BatchTotals {
    int64_t count = 0;               // B = sum_r m_r
    double loss = 0;                 // sum_r m_r L_r / B (NaN if any rank's L_r is)
    int64_t correct = 0;             // over all ranks
    int first_non_finite_rank = -1;  // the first rank whose L_r is NaN or infinite, or -1
};
BatchTotals batch_totals(int64_t count, double loss, int64_t correct);

// Every parameter's gradient (those that have one) = sum over ranks of
// weight_r * gradient_r, with weight = this rank's m_r / B, overlapped with
// backward() as PyTorch's DDP does. The parameters go, in reverse order (the
// order backward() finishes them: the last layer's first), into buckets of
// about `bucket_floats` floats. While backward() runs, the engine says when
// each parameter's gradient is final (core/autograd.h, BackwardListener);
// the reducer copies it, scaled, into its bucket, and starts the bucket's
// allreduce as soon as the bucket is full, in bucket order on every rank
// (MPI's rule), so the sums run while backward() computes the layers below.
// finish() starts what has not started (a parameter no gradient reached),
// waits, and writes the sums back into the gradients. With one rank, or
// overlap off (MINNOW_ALLREDUCE=blocking: all buckets start in finish()),
// the sums are the same bits; with one rank it does nothing at all.
//
//     GradientReducer reducer(model.parameters(), m_r / B);
//     { BackwardListenerScope listen(reducer.listener()); loss.backward(); }
//     reducer.finish();
class GradientReducer : BackwardListener {
public:
    GradientReducer(const std::vector<Tensor>& params, double weight, int64_t bucket_floats = int64_t{1} << 18);
    ~GradientReducer() override;  // waits for sums still running (an exception in backward())
    GradientReducer(const GradientReducer&) = delete;
    GradientReducer& operator=(const GradientReducer&) = delete;
    BackwardListener* listener() { return active_ && overlap_ ? this : nullptr; }
    void finish();

private:
    struct Bucket;
    void leaf_grad_final(const TensorImpl& leaf) override;
    void node_done() override;
    void fill(size_t param);
    void start_ready_buckets();

    std::vector<Tensor> params_;
    float weight_;
    bool active_, overlap_;
    std::vector<Bucket> buckets_;
    std::vector<size_t> bucket_of_, offset_of_;  // per parameter
    std::vector<bool> filled_;                   // per parameter: its gradient is in its bucket
    std::unordered_map<const TensorImpl*, size_t> index_of_;
    size_t next_to_start_ = 0;
};

// What the gradients' allreduces cost the steps since the process started
// (rank-local): the time finish() waited for sums after backward(), over
// `steps` steps. With MINNOW_ALLREDUCE=blocking that is the whole allreduce;
// overlapped, what the overlap left exposed.
struct AllreduceTime {
    double waited_s = 0;
    int64_t steps = 0;
};
AllreduceTime allreduce_time();

// Every buffer of `model` (BatchNorm's running statistics) = its mean over
// the ranks, in double and in rank order, so every rank holds the same bits.
// Without SyncBatchNorm each rank's running statistics follow its own slices
// (Goyal et al. 2017); the mean is what evaluation and checkpoints use.
// Buffers that are already equal on every rank keep their bits: K copies of
// a float sum exactly in double (K < 2^29), and dividing by K gives it back.
void average_buffers(Module& model);

}  // namespace minnow
