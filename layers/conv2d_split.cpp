// Conv2d by im2col + GEMM with fewer images than threads (inference at batch
// 1): one image at a time, each image's GEMMs split over all the threads.
//
// With fewer images than threads there is no batch to split, so the images go
// one after another and each one's GEMMs are split over the threads, every
// thread calling a single-threaded GEMM on its block. (Letting OpenBLAS
// thread each GEMM was slower than one thread alone in every measurement on
// this project's 2-core machine: the reference CNN at batch 1 took 11.8 ms a
// forward with 2 threads that way, 4-5 ms with one, about 2 ms split as here.)
// Two ways to cut Y_n [O, P]:
// * By columns: thread t takes a band of output rows (a block of Y_n's
//   columns), im2cols only that band into its own col and runs its GEMM on it:
//       Y_n[:, band] = W col_band + b
//   The threads never wait for each other inside an image. Used while each
//   band keeps at least kSplitMinCols columns (plan() in conv2d.cpp), below
//   which the GEMM slows down.
// * By rows (output channels), for small images (8x8: P = 64): the threads
//   fill one shared col_n (each the rows of its own input channels), wait for
//   each other once, then each computes a block of output channels:
//       Y_n[o0:o1, :] = W[o0:o1, :] col_n + b[o0:o1]
//   Blocks are cut at multiples of 16 rows, the width of OpenBLAS's kernel.
// (The 3x3 "same" convolutions that the direct kernel handles are cut by
// output channels too: conv2d_direct3x3.cpp.)
// The backward cuts by rows both ways: dW[o0:o1, :] = G[o0:o1, :] col_n^T
// (each thread whole rows of dW: no partial sums to add up), and
// dcol[rows of channels c0..c1] = W[:, those rows]^T G, which col2im turns
// into planes c0..c1 of dx alone.

#include <algorithm>

#include "core/parallel.h"
#include "kernels/gemm.h"
#include "kernels/im2col.h"
#include "layers/conv2d_paths.h"

namespace minnow::conv2d_detail {

namespace {
constexpr int64_t kRowAlign = 16;  // rows of Y_n per block when cut by rows
}  // namespace

void forward_split(const Plan& p, const ConvGeometry& g, const float* X, const float* Wt, const float* b, float* Y) {
    const int threads = p.threads;
    const int64_t K = g.K(), P = g.P(), O = g.O, CHW = g.C * g.H * g.W, rows = p.band_rows;
    const bool by_columns = p.by_columns;
    // By columns: a col band per thread. By rows: one col_n that all share.
    std::vector<float*> col = g.pointwise() ? scratch_buffers(Scratch::col, 1, 0)
                              : by_columns  ? scratch_buffers(Scratch::col, threads, K * rows * g.Wo)
                                            : scratch_buffers(Scratch::col, 1, K * P);
    const float beta = b ? 1.f : 0.f;  // Y starts as b and the GEMM adds W col (as in conv2d_gemm.cpp)
#pragma omp parallel num_threads(threads)
    {
        // The team may be smaller than asked (a nested region gets one thread).
        const int t = thread_index(), team = team_size();
        for (int64_t n = 0; n < g.N; ++n) {
            const float* xn = X + n * CHW;
            float* Yn = Y + n * O * P;
            if (by_columns) {
                int64_t r0, r1;  // this thread's output rows
                share(g.Ho, team, t, 1, &r0, &r1);
                if (b)
                    for (int64_t o = 0; o < O; ++o) std::fill(Yn + o * P + r0 * g.Wo, Yn + o * P + r1 * g.Wo, b[o]);
                for (int64_t oh0 = r0; oh0 < r1; oh0 += rows) {  // in bands that fit the cache
                    const int64_t oh1 = std::min(r1, oh0 + rows), cols = (oh1 - oh0) * g.Wo;
                    if (g.pointwise()) {
                        sgemm(false, false, O, cols, K, Wt, K, xn + oh0 * g.Wo, P, beta, Yn + oh0 * g.Wo, P);
                        continue;
                    }
                    im2col(xn, g, oh0, oh1, col[t], cols);
                    sgemm(false, false, O, cols, K, Wt, K, col[t], cols, beta, Yn + oh0 * g.Wo, P);
                }
                continue;
            }
            const float* col_n = xn;  // x[n] itself for a 1x1 kernel
            if (!g.pointwise()) {
                int64_t c0, c1;
                share(g.C, team, t, 1, &c0, &c1);
                if (n > 0) {
#pragma omp barrier
                }  // the previous image's GEMMs have finished reading col
                im2col(xn, g, 0, g.Ho, col[0], P, c0, c1);
#pragma omp barrier
                col_n = col[0];
            }
            int64_t o0, o1;
            share(O, team, t, kRowAlign, &o0, &o1);
            if (b)
                for (int64_t o = o0; o < o1; ++o) std::fill(Yn + o * P, Yn + (o + 1) * P, b[o]);
            if (o1 > o0) sgemm(false, false, o1 - o0, P, K, Wt + o0 * K, K, col_n, P, beta, Yn + o0 * P, P);
        }
    }
}

// dx, dw, db: null where no gradient is wanted. Derivation: see Conv2dBackward.
void backward_split(const Plan& p, const ConvGeometry& g, const float* X, const float* Wt, const float* dY, float* dx,
                    float* dw, float* db) {
    [[maybe_unused]] const int threads = p.threads;  // read by the `#pragma omp` lines only
    const int64_t K = g.K(), P = g.P(), O = g.O, HW = g.H * g.W, CHW = g.C * HW, kk = g.kh * g.kw;
    const bool use_col = (dw || dx) && !g.pointwise();
    float* col = scratch_buffers(Scratch::col, 1, use_col ? K * P : 0)[0];  // col_n, then dcol_n
#pragma omp parallel num_threads(threads)
    {
        const int t = thread_index(), team = team_size();
        int64_t o0, o1, c0, c1;  // this thread's output channels (dW, db) and input channels (dx)
        share(O, team, t, kRowAlign, &o0, &o1);
        share(g.C, team, t, 1, &c0, &c1);
        for (int64_t n = 0; n < g.N; ++n) {
            const float* xn = X + n * CHW;
            const float* Gn = dY + n * O * P;
            const float beta = n == 0 ? 0.f : 1.f;  // dW and db sum over the images
            if (n > 0 && use_col) {
#pragma omp barrier
            }  // the previous image is done with col
            if (db)  // db[o] (+)= sum_q G_n[o, q]
                for (int64_t o = o0; o < o1; ++o) {
                    const float* Gno = Gn + o * P;
                    float s = 0.f;
#pragma omp simd reduction(+ : s)
                    for (int64_t q = 0; q < P; ++q) s += Gno[q];
                    db[o] = n == 0 ? s : db[o] + s;
                }
            if (dw) {  // dW[o0:o1, :] (+)= G_n[o0:o1, :] col_n^T
                const float* col_n = xn;
                if (!g.pointwise()) {
                    im2col(xn, g, 0, g.Ho, col, P, c0, c1);
#pragma omp barrier
                    col_n = col;
                }
                if (o1 > o0) sgemm(false, true, o1 - o0, K, P, Gn + o0 * P, P, col_n, P, beta, dw + o0 * K, K);
            }
            if (dx) {  // dcol_n[rows of c0..c1] = W[:, rows of c0..c1]^T G_n, then col2im into planes c0..c1
                float* dxn = dx + n * CHW;
                if (g.pointwise()) {  // dx[n] is dcol_n
                    if (c1 > c0) sgemm(true, false, c1 - c0, P, O, Wt + c0, K, Gn, P, 0.f, dxn + c0 * HW, P);
                    continue;
                }
                if (dw) {
#pragma omp barrier
                }  // every thread's dW GEMM has finished reading col_n
                if (c1 > c0) {
                    sgemm(true, false, (c1 - c0) * kk, P, O, Wt + c0 * kk, K, Gn, P, 0.f, col + c0 * kk * P, P);
                    std::fill(dxn + c0 * HW, dxn + c1 * HW, 0.f);
                    col2im(col, g, 0, g.Ho, dxn, P, c0, c1);
                }
            }
        }
    }
}

}  // namespace minnow::conv2d_detail
