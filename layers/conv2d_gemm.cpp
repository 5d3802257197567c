// Conv2d by im2col + GEMM, the batch spread over the threads: each thread
// works through its images in chunks (a band of one image, one image, or a
// group of images side by side: see "chunks" in conv2d.cpp) and calls
// single-threaded GEMMs on them. Without enough work for the threads
// (Plan::parallel false) the same loops run in one thread and OpenBLAS may
// thread each GEMM.

#include <algorithm>

#include "core/parallel.h"
#include "kernels/gemm.h"
#include "kernels/im2col.h"
#include "layers/conv2d_paths.h"

namespace minnow::conv2d_detail {

// Per chunk:
//   a group   Y_grp [O, gn*P] = W col_grp, then each image's columns to y (+ b)
//   a band    Y_n[:, oh0*Wo : oh1*Wo] = W col_band + b
//   1x1       Y_n = W x[n] + b   (x[n] is already col_n = [C, H*W] = [K, P])
void forward_gemm(const Plan& p, const ConvGeometry& g, const float* X, const float* Wt, const float* b, float* Y) {
    const int64_t K = g.K(), P = g.P(), O = g.O, CHW = g.C * g.H * g.W, G = p.group, rows = p.band_rows;
    std::vector<float*> col = scratch_buffers(Scratch::col, p.threads, g.pointwise() ? 0 : K * G * rows * g.Wo);
    std::vector<float*> grp = scratch_buffers(Scratch::group_output, p.threads, G > 1 ? O * G * P : 0);
#pragma omp parallel for num_threads(p.threads) schedule(static) if (p.parallel)
    for (int64_t ch = 0; ch < p.chunks; ++ch) {
        const int t = thread_index();
        const int64_t n0 = ch * G, gn = std::min(G, g.N - n0);  // images n0 .. n0+gn-1
        if (G > 1) {  // a group
            const int64_t ld = gn * P;
            for (int64_t m = 0; m < gn; ++m) im2col(X + (n0 + m) * CHW, g, 0, g.Ho, col[t] + m * P, ld);
            sgemm(false, false, O, ld, K, Wt, K, col[t], ld, 0.f, grp[t], ld);
            for (int64_t m = 0; m < gn; ++m)
                for (int64_t o = 0; o < O; ++o) {
                    const float* src = grp[t] + o * ld + m * P;
                    float* dst = Y + ((n0 + m) * O + o) * P;
                    const float bo = b ? b[o] : 0.f;
                    for (int64_t q = 0; q < P; ++q) dst[q] = src[q] + bo;
                }
            continue;
        }
        const float* xn = X + n0 * CHW;  // one image, in bands
        float* Yn = Y + n0 * O * P;
        // With a bias, Y_n starts as b in every column and the GEMMs add W col_n
        // to it (beta = 1): the bias costs no extra pass. Without, beta = 0.
        if (b)
            for (int64_t o = 0; o < O; ++o) std::fill(Yn + o * P, Yn + (o + 1) * P, b[o]);
        const float beta = b ? 1.f : 0.f;
        if (g.pointwise()) {
            sgemm(false, false, O, P, K, Wt, K, xn, P, beta, Yn, P);
            continue;
        }
        for (int64_t oh0 = 0; oh0 < g.Ho; oh0 += rows) {
            const int64_t oh1 = std::min(g.Ho, oh0 + rows), cols = (oh1 - oh0) * g.Wo;
            im2col(xn, g, oh0, oh1, col[t], cols);
            sgemm(false, false, O, cols, K, Wt, K, col[t], cols, beta, Yn + oh0 * g.Wo, P);
        }
    }
}

// Per chunk, with G_n = dL/dY_n (the derivation is at Conv2dBackward):
//   dW_t   += G_chunk col_chunk^T        into the thread's partial (part)
//   dcol    = W^T G_chunk, then dx = col2im(dcol)
// a group as [O, gn*P] (its images' gradients gathered side by side), a band
// as the band's columns of G_n; a 1x1 kernel needs no im2col or col2im.
void backward_gemm(const Plan& p, const ConvGeometry& g, const float* X, const float* Wt, const float* dY, float* dx,
                   const std::vector<float*>* part) {
    const int64_t K = g.K(), P = g.P(), O = g.O, CHW = g.C * g.H * g.W, G = p.group, rows = p.band_rows;
    const bool need_dx = dx != nullptr, need_dw = part != nullptr;
    std::vector<float*> col = scratch_buffers(Scratch::col, p.threads, g.pointwise() ? 0 : K * G * rows * g.Wo);
    std::vector<float*> grp = scratch_buffers(Scratch::group_output, p.threads, G > 1 ? O * G * P : 0);
#pragma omp parallel for num_threads(p.threads) schedule(static) if (p.parallel)
    for (int64_t ch = 0; ch < p.chunks; ++ch) {
        const int t = thread_index();
        float* dw_t = need_dw ? (*part)[t] : nullptr;
        const int64_t n0 = ch * G, gn = std::min(G, g.N - n0);  // images n0 .. n0+gn-1
        if (need_dx && !g.pointwise())  // col2im adds into dx
            std::fill(dx + n0 * CHW, dx + (n0 + gn) * CHW, 0.f);
        if (G > 1) {  // a group: G_grp = [G_n0 | G_n0+1 | ...] as [O, gn*P], col likewise
            const int64_t ld = gn * P;
            float* Gg = grp[t];
            for (int64_t m = 0; m < gn; ++m)
                for (int64_t o = 0; o < O; ++o)
                    std::copy(dY + ((n0 + m) * O + o) * P, dY + ((n0 + m) * O + o + 1) * P, Gg + o * ld + m * P);
            if (need_dw) {  // dW += G_grp col_grp^T
                for (int64_t m = 0; m < gn; ++m) im2col(X + (n0 + m) * CHW, g, 0, g.Ho, col[t] + m * P, ld);
                sgemm(false, true, O, K, ld, Gg, ld, col[t], ld, 1.f, dw_t, K);
            }
            if (need_dx) {  // dcol_grp = W^T G_grp, then col2im image by image
                sgemm(true, false, K, ld, O, Wt, K, Gg, ld, 0.f, col[t], ld);
                for (int64_t m = 0; m < gn; ++m) col2im(col[t] + m * P, g, 0, g.Ho, dx + (n0 + m) * CHW, ld);
            }
            continue;
        }
        const float* xn = X + n0 * CHW;  // one image, in bands
        const float* Gn = dY + n0 * O * P;
        float* dxn = need_dx ? dx + n0 * CHW : nullptr;
        if (g.pointwise()) {  // col_n = x[n] and dx[n] = dcol_n: no im2col, no col2im
            if (need_dw) sgemm(false, true, O, K, P, Gn, P, xn, P, 1.f, dw_t, K);
            if (need_dx) sgemm(true, false, K, P, O, Wt, K, Gn, P, 0.f, dxn, P);
            continue;
        }
        for (int64_t oh0 = 0; oh0 < g.Ho; oh0 += rows) {
            const int64_t oh1 = std::min(g.Ho, oh0 + rows), cols = (oh1 - oh0) * g.Wo;
            const float* Gb = Gn + oh0 * g.Wo;  // the band's columns of G_n, ld P
            if (need_dw) {  // dW += G_band col_band^T
                im2col(xn, g, oh0, oh1, col[t], cols);
                sgemm(false, true, O, K, cols, Gb, P, col[t], cols, 1.f, dw_t, K);
            }
            if (need_dx) {  // dcol_band = W^T G_band (overwrites col_band, used), then col2im
                sgemm(true, false, K, cols, O, Wt, K, Gb, P, 0.f, col[t], cols);
                col2im(col[t], g, oh0, oh1, dxn, cols);
            }
        }
    }
}

}  // namespace minnow::conv2d_detail
