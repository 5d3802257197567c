// minnow/kernels/norm.h: the loops of the normalisation layers.
//
// BatchNorm, BatchRenorm and GatedBatchNorm normalise per channel (the
// channel_kernels below, over a ChannelView); LayerNorm and GroupNorm per
// sample or group, which are contiguous runs (run_sums). Raw pointers in and
// out: the layers (layers/batchnorm.cpp and its siblings) own the tensors,
// the statistics and the autograd nodes, and hand the kernels the per-channel
// coefficients as callbacks.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

namespace minnow {

// A tensor [N, C, *] is
// seen as [N, C, S] (S = product of the dims after C; 1 for [N, C]): channel
// c is N runs of S contiguous floats, the run of sample n starting at
// (n * C + c) * S. Every kernel runs over channels in parallel (OpenMP) once
// the tensor is big enough, and does all its passes over one channel before
// moving to the next, so the later passes read the channel from cache, not
// from memory. Sums are accumulated in double.
struct ChannelView {
    int64_t N = 0, C = 0, S = 1;
    ChannelView(int64_t N_, int64_t C_, int64_t S_) : N(N_), C(C_), S(S_) {}
    // From a tensor's shape [N, C, *] (an Error for fewer than 2 dims).
    explicit ChannelView(const std::vector<int64_t>& shape);
    int64_t per_channel() const { return N * S; }  // m
    int64_t numel() const { return N * C * S; }
};

// Sums over one contiguous run of n floats, accumulated in float over short
// chunks (so they vectorise) and in double across chunks. Also used by
// LayerNorm and GroupNorm, whose groups are contiguous runs.
namespace run_sums {
double sum(const float* p, int64_t n);                        // sum p[i]
double sum_sq_dev(const float* p, int64_t n, float mu);       // sum (p[i] - mu)^2
// s_dy += sum dy[i];  s_dy_xmu += sum dy[i] * (x[i] - mu)
void grad_sums(const float* dy, const float* x, int64_t n, float mu, double& s_dy, double& s_dy_xmu);
}  // namespace run_sums

namespace channel_kernels {
// Given a channel's statistics, the (scale, shift) to apply to it. Called
// once per channel, possibly from several threads at once (for different c).
using ForwardCoef = std::function<void(int64_t c, double mean, double var, float& scale, float& shift)>;
// Per channel c: mean and biased var of x (two passes: the mean, then squared
// deviations), (scale, shift) = coef(c, mean, var), then y = x * scale + shift.
// With relu, y = relu(x * scale + shift) in the same pass: BatchNorm and the
// ReLU after it in one pass over memory (relu(z) = z for z > 0 and for NaN,
// else 0, as core's relu()).
void normalize(const float* x, const ChannelView& v, const ForwardCoef& coef, float* y, bool relu = false);
// y = x * scale[c] + shift[c]  (when the statistics are known already), or
// its relu.
void scale_shift(const float* x, const ChannelView& v, const float* scale, const float* shift, float* y,
                 bool relu = false);

// Given a channel's gradient sums, the (a, b, k) of its input gradient.
using BackwardCoef =
    std::function<void(int64_t c, double sum_dy, double sum_dy_xmu, float& a, float& b, float& k)>;
// The ReLU after a normalisation, as its backward sees it: the (scale, shift)
// [C] the forward used, from which z = x * scale + shift, and with it ReLU's
// mask [z > 0], is recomputed instead of saved. z is computed by one function
// in norm.cpp for the forward and the backward, so the mask has the forward's
// bits.
struct ReluAfter {
    const float* scale;
    const float* shift;
};
// Per channel c: sum_dy = sum of dy, sum_dy_xmu = sum of dy * (x - mean[c]),
// (a, b, k) = coef(c, sum_dy, sum_dy_xmu), then (unless dx is null)
// dx = a * (dy - b - (x - mean[c]) * k).
// With relu, dy is the gradient of relu(z) and everything above is taken over
// g = dy where z > 0 (or z is NaN), else 0, the gradient that reaches z: the
// same two passes, without ReLU's own pass over memory, and the same sums in
// the same order as ReLU's backward writing g and this reading it.
void backward(const float* dy, const float* x, const ChannelView& v, const float* mean,
              const BackwardCoef& coef, float* dx, const ReluAfter* relu = nullptr);

// The same passes one at a time, over every channel, for a caller that must
// combine each channel's numbers with other processes' before the next pass
// (SyncBatchNorm, layers/syncbatchnorm.cpp). Each channel's data is then read
// from memory by every pass, where the functions above reread it from cache.
//   moments:    mean[c] and m2[c] = sum of (x - mean[c])^2 (normalize's passes 1 and 2)
//   grad_sums:  sum_dy[c], sum_dy_xmu[c] around the given mean (backward's pass 1)
//   input_grad: dx = a[c] * (g - b[c] - (x - mean[c]) * k[c])  (backward's pass 2)
void moments(const float* x, const ChannelView& v, double* mean, double* m2);
void grad_sums(const float* dy, const float* x, const ChannelView& v, const float* mean, double* sum_dy,
               double* sum_dy_xmu, const ReluAfter* relu = nullptr);
void input_grad(const float* dy, const float* x, const ChannelView& v, const float* mean, const float* a,
                const float* b, const float* k, float* dx, const ReluAfter* relu = nullptr);
}  // namespace channel_kernels

}  // namespace minnow
