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
#include <vector>

#include "core/tensor.h"

namespace minnow {

// Over all ranks: B = the sum of the ranks' `count`, and the mean
// sum_r count_r * value_r / B (NaN if any rank's value is NaN), summed in rank
// order. With one rank: count and value.
struct GlobalMean {
    int64_t count;
    double mean;
};
GlobalMean global_mean(int64_t count, double value);

// Every parameter's gradient (those that have one) = sum over ranks of
// weight_r * gradient_r, with weight = this rank's m_r / B. The gradients go
// in buckets of at most `bucket_floats` floats, one allreduce each. Nothing
// to do with one rank.
void average_gradients(const std::vector<Tensor>& params, double weight, int64_t bucket_floats = int64_t{1} << 22);

}  // namespace minnow
