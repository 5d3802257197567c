// minnow/kernels/gemm.h: the one single-precision GEMM every matrix product goes through.
//
// Every float32 matrix product of minnow (matmul, Linear, the im2col
// convolutions) goes through sgemm(). In the usual build it is OpenBLAS's;
// called from inside one of minnow's OpenMP parallel regions it runs
// single-threaded in that thread, called outside, OpenBLAS may spread it over
// the threads (core/parallel.h). A build without OpenBLAS (-DMINNOW_BLAS=OFF,
// and always for WebAssembly) uses sgemm_plain() instead, the same interface.
#pragma once

#include <cstdint>

namespace minnow {

// C [m, n] = op(A) op(B) + beta C, row-major, where op(A) [m, k] is A or
// (ta) A^T, op(B) [k, n] is B or (tb) B^T, and lda, ldb, ldc are the row
// strides of A, B and C as stored. With beta 0, C is only written (as in
// BLAS: a NaN already in C does not survive).
void sgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* A, int64_t lda, const float* B,
           int64_t ldb, float beta, float* C, int64_t ldc);

// The same product in plain C++ (kernels/gemm.cpp): what sgemm() is without
// OpenBLAS, compiled in every build so that the tests hold it to OpenBLAS.
void sgemm_plain(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* A, int64_t lda, const float* B,
                 int64_t ldb, float beta, float* C, int64_t ldc);

// "OpenBLAS" or "plain": which one sgemm() is in this build.
const char* sgemm_name();

}  // namespace minnow
