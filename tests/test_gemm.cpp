// The plain GEMM (kernels/gemm.h: sgemm without OpenBLAS, as the WebAssembly
// page runs it) against the definition and against OpenBLAS's.
#include <cmath>
#include <tuple>
#include <vector>

#include "core/parallel.h"
#include "core/random.h"
#include "kernels/gemm.h"
#include "test_helpers.h"

using namespace minnow;

namespace {

// C = op(A) op(B) + beta C, summed in double.
std::vector<float> definition(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const std::vector<float>& A,
                              int64_t lda, const std::vector<float>& B, int64_t ldb, float beta,
                              std::vector<float> C, int64_t ldc) {
    for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
            double s = 0;
            for (int64_t p = 0; p < k; ++p)
                s += static_cast<double>(ta ? A[p * lda + i] : A[i * lda + p]) * (tb ? B[j * ldb + p] : B[p * ldb + j]);
            C[i * ldc + j] = static_cast<float>(s + (beta == 0.f ? 0.0 : static_cast<double>(beta) * C[i * ldc + j]));
        }
    return C;
}

std::vector<float> random_values(size_t n, Generator& g) {
    std::vector<float> v(n);
    for (float& x : v) x = g.normal();
    return v;
}

}  // namespace

TEST_CASE("gemm: the plain GEMM against the definition and OpenBLAS, every transposition, odd shapes, 1 and 2 threads") {
    Generator g(3);
    const int threads_before = get_num_threads();
    for (int threads : {1, 2}) {
        set_num_threads(threads);
        // Shapes across the blocks of 4 rows, 256 terms and 512 columns.
        for (auto [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{1, 1, 1}, {3, 5, 7}, {4, 513, 9}, {37, 70, 300},
                               {130, 600, 257}, {5, 3, 0}})
            for (bool ta : {false, true})
                for (bool tb : {false, true})
                    for (float beta : {0.f, 1.f, 0.5f}) {
                        INFO("threads " << threads << ", m " << m << ", n " << n << ", k " << k << ", ta " << ta
                                        << ", tb " << tb << ", beta " << beta);
                        const int64_t lda = (ta ? m : k) + 2, ldb = (tb ? k : n) + 1, ldc = n + 3;
                        const auto A = random_values(static_cast<size_t>((ta ? k : m) * lda), g);
                        const auto B = random_values(static_cast<size_t>((tb ? n : k) * ldb), g);
                        const auto C0 = random_values(static_cast<size_t>(m * ldc), g);
                        auto plain = C0, blas = C0;
                        sgemm_plain(ta, tb, m, n, k, A.data(), lda, B.data(), ldb, beta, plain.data(), ldc);
                        sgemm(ta, tb, m, n, k, A.data(), lda, B.data(), ldb, beta, blas.data(), ldc);
                        const auto want = definition(ta, tb, m, n, k, A, lda, B, ldb, beta, C0, ldc);
                        double worst = 0, worst_blas = 0;
                        for (int64_t i = 0; i < m; ++i)
                            for (int64_t j = 0; j < n; ++j) {
                                // float32 sums of k terms of size ~1: within k eps sqrt(k)-ish; bound by k eps * 4
                                const double tol = 4e-7 * (k + 1) + 1e-6;
                                worst = std::max(worst, std::fabs(plain[i * ldc + j] - want[i * ldc + j]) / tol);
                                worst_blas = std::max(worst_blas, std::fabs(blas[i * ldc + j] - want[i * ldc + j]) / tol);
                            }
                        CHECK(worst <= 1.0);
                        CHECK(worst_blas <= 1.0);
                        // The padding between rows is never written.
                        for (int64_t i = 0; i < m; ++i)
                            for (int64_t j = n; j < ldc; ++j) CHECK(plain[i * ldc + j] == C0[i * ldc + j]);
                    }
    }
    set_num_threads(threads_before);
}

TEST_CASE("gemm: the plain GEMM propagates NaN and infinity as BLAS does, and beta 0 forgets what C held") {
    const float nan = std::nanf(""), inf = INFINITY;
    // A [2, 2] with a NaN in row 0 and an infinity in row 1; B all zeros but one.
    const std::vector<float> A{nan, 1.f, inf, 1.f}, B{0.f, 0.f, 0.f, 2.f};
    std::vector<float> C{nan, nan, nan, nan};  // beta 0: never read
    sgemm_plain(false, false, 2, 2, 2, A.data(), 2, B.data(), 2, 0.f, C.data(), 2);
    CHECK(std::isnan(C[0]));  // NaN * 0
    CHECK(std::isnan(C[1]));
    CHECK(std::isnan(C[2]));  // inf * 0
    CHECK(std::isnan(C[3]));  // inf * 0 + 1 * 2
    const std::vector<float> A2{1.f, 2.f, 3.f, 4.f};
    sgemm_plain(false, false, 2, 2, 2, A2.data(), 2, B.data(), 2, 0.f, C.data(), 2);
    CHECK(C == std::vector<float>{0.f, 4.f, 0.f, 8.f});
}
