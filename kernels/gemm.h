// minnow/kernels/gemm.h: the one call into OpenBLAS's single-precision GEMM.
//
// Every float32 matrix product of minnow (matmul, Linear, the im2col
// convolutions) goes through sgemm(). Called from inside one of minnow's
// OpenMP parallel regions it runs single-threaded in that thread; called
// outside, OpenBLAS may spread it over the threads (core/parallel.h).
#pragma once

#include <cstdint>

namespace minnow {

// C [m, n] = op(A) op(B) + beta C, row-major, where op(A) [m, k] is A or
// (ta) A^T, op(B) [k, n] is B or (tb) B^T, and lda, ldb, ldc are the row
// strides of A, B and C as stored.
void sgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* A, int64_t lda, const float* B,
           int64_t ldb, float beta, float* C, int64_t ldc);

}  // namespace minnow
