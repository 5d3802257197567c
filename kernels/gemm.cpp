#include "kernels/gemm.h"

#include <algorithm>
#include <vector>

#include "core/parallel.h"

#if MINNOW_BLAS
#include <cblas.h>
#endif

namespace minnow {

void sgemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* A, int64_t lda, const float* B,
           int64_t ldb, float beta, float* C, int64_t ldc) {
#if MINNOW_BLAS
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                static_cast<blasint>(m), static_cast<blasint>(n), static_cast<blasint>(k), 1.f, A,
                static_cast<blasint>(lda), B, static_cast<blasint>(ldb), beta, C, static_cast<blasint>(ldc));
#else
    sgemm_plain(ta, tb, m, n, k, A, lda, B, ldb, beta, C, ldc);
#endif
}

const char* sgemm_name() { return MINNOW_BLAS ? "OpenBLAS" : "plain"; }

// ---------------------------------------------------------------- the plain GEMM
// C = op(A) op(B) + beta C in blocks of kKc terms of the sum by kNc columns.
// Each block of op(B) is first copied, whatever its transposition, into a
// row-major panel Bp [kc][nc], so the innermost loop always runs along a
// contiguous row: c[i][j..] += a[i][p] * Bp[p][j..], which the compiler
// vectorises (SSE/AVX natively, SIMD128 in WebAssembly). Four rows of C at a
// time share each load of Bp. Every term is added, zeros included, so a NaN
// or an infinity anywhere in a row of op(A) or a column of op(B) reaches the
// output as in BLAS. Rows of C are split over the threads when outside a
// parallel region (it is then as threaded as OpenBLAS would be).
namespace {

constexpr int64_t kKc = 256, kNc = 512;

// c_r[0..nc) += a_r * bp[p][0..nc) for the R rows r and the kc terms p.
template <int R>
void rows_times_panel(const float* const* a, const float* bp, int64_t kc, int64_t nc, float* const* c) {
    for (int64_t p = 0; p < kc; ++p) {
        const float* b = bp + p * nc;
        float ap[R];
        for (int r = 0; r < R; ++r) ap[r] = a[r][p];
        for (int64_t j = 0; j < nc; ++j) {
            const float bj = b[j];
            for (int r = 0; r < R; ++r) c[r][j] += ap[r] * bj;
        }
    }
}

}  // namespace

void sgemm_plain(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* A, int64_t lda, const float* B,
                 int64_t ldb, float beta, float* C, int64_t ldc) {
    if (m <= 0 || n <= 0) return;
    for (int64_t i = 0; i < m; ++i) {  // beta C first (beta 0: overwrite, as BLAS)
        float* c = C + i * ldc;
        if (beta == 0.f) std::fill(c, c + n, 0.f);
        else if (beta != 1.f)
            for (int64_t j = 0; j < n; ++j) c[j] *= beta;
    }
    [[maybe_unused]] const bool threaded = thread_index() == 0 && team_size() == 1 && get_num_threads() > 1 && m * n * k > (1 << 18);
    for (int64_t j0 = 0; j0 < n; j0 += kNc) {
        const int64_t nc = std::min(kNc, n - j0);
        for (int64_t p0 = 0; p0 < k; p0 += kKc) {
            const int64_t kc = std::min(kKc, k - p0);
            std::vector<float> bp(static_cast<size_t>(kc * nc));  // op(B)[p0.., j0..] row-major
            for (int64_t p = 0; p < kc; ++p)
                for (int64_t j = 0; j < nc; ++j)
                    bp[p * nc + j] = tb ? B[(j0 + j) * ldb + p0 + p] : B[(p0 + p) * ldb + j0 + j];
            const int64_t quads = (m + 3) / 4;
#pragma omp parallel for schedule(static) if (threaded)
            for (int64_t q = 0; q < quads; ++q) {
                const int64_t i0 = q * 4, rows = std::min<int64_t>(4, m - i0);
                // op(A)[i, p0..p0+kc) as a contiguous row: a copy when A is transposed
                float a_rows[4][kKc];
                const float* a[4];
                float* c[4];
                for (int64_t r = 0; r < rows; ++r) {
                    const int64_t i = i0 + r;
                    if (ta) {
                        for (int64_t p = 0; p < kc; ++p) a_rows[r][p] = A[(p0 + p) * lda + i];
                        a[r] = a_rows[r];
                    } else {
                        a[r] = A + i * lda + p0;
                    }
                    c[r] = C + i * ldc + j0;
                }
                if (rows == 4) rows_times_panel<4>(a, bp.data(), kc, nc, c);
                else
                    for (int64_t r = 0; r < rows; ++r) rows_times_panel<1>(a + r, bp.data(), kc, nc, c + r);
            }
        }
    }
}

}  // namespace minnow
