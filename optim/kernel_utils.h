// minnow/optim/kernel_utils.h: what the optimizer loops share (internal).
//
// The update loops reproduce PyTorch's float32 rounding: each of its in-place
// ops rounds once, and its CPU kernels compute `a.add_(b, alpha=s)` as a fused
// multiply-add (one rounding for a + s * b). Written with add_alpha() below, a
// loop gives the same bits as PyTorch 1.13 on the same kind of CPU.
#pragma once

#include <cmath>

namespace minnow::optim_detail {

// PyTorch's a.add_(b, alpha): a + alpha * b. On a CPU with FMA PyTorch's kernels
// round it once, and so does this; without FMA (a build without -march=native)
// both compute the plain expression, and std::fma would be a slow library call.
inline float add_alpha(float a, float b, float alpha) {
#ifdef __FMA__
    return std::fma(alpha, b, a);
#else
    return a + alpha * b;
#endif
}

}  // namespace minnow::optim_detail
