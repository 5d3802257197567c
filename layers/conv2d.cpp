// Conv2d: im2col + GEMM, forward and backward side by side.
//
// ---------------------------------------------------------------- layouts
// All tensors are contiguous row-major:
//   x   [N, C, H, W]          input
//   w   [O, C, kh, kw]        weight, read as the matrix W [O, K], K = C*kh*kw
//   y   [N, O, Ho, Wo]        output; y[n] is the matrix Y_n [O, P], P = Ho*Wo
//   col [K, P]                the im2col matrix of ONE image:
//       col[(c*kh + i)*kw + j][oh*Wo + ow] = x[n, c, oh*s - p + i, ow*s - p + j]
//       (0 where that pixel falls in the zero padding)
// Row k of col lists, for every output position, the input pixel that weight
// element k multiplies, so the whole convolution of image n is one GEMM:
//       Y_n = W col_n + b            [O, P] = [O, K] x [K, P]
// and Y_n lands directly in y's NCHW layout (no transpose).
//
// A 1x1 kernel with stride 1 and no padding needs no im2col: col_n is x[n]
// itself, read as [C, H*W].
//
// ---------------------------------------------------------------- threads
// The batch is split over the OpenMP threads, image by image (or in the
// chunks below), and each thread calls single-threaded GEMMs (OpenBLAS runs single-threaded inside an
// OpenMP parallel region); each thread sums its own partial dW and db, and
// the partials are added in a fixed order at the end (deterministic for a
// given thread count). The threads never synchronise inside a layer and each
// keeps its im2col buffer in its own cache. On this project's 2-core machine
// this beat one multi-threaded GEMM per image by far (OpenBLAS's threads
// synchronise on every call, which collapses when the cores are shared) and,
// as a colleague measured, a batch-folded GEMM by up to 15%. With fewer images
// than threads (inference at batch 1), each image's GEMMs are split over the
// threads instead ("one image, every thread" below). With too little work,
// the images are done one after another and OpenBLAS may thread each GEMM.
//
// ---------------------------------------------------------------- chunks
// How many columns one GEMM gets is a matter of cache sizes:
// * Bands. For a big image the col of a whole image (K x P floats: 2.4 MB for
//   the reference CNN's second conv) outgrows a core's L2 cache between being
//   written by im2col and read by the GEMM. So such an image is done in bands
//   of output rows oh0 <= oh < oh1: im2col of the band, then a GEMM on the
//   band's columns of Y_n (ldc = P). A band is just a narrower GEMM:
//       Y_n[:, oh0*Wo : oh1*Wo] = W col_band + b
// * Groups. For a small image (8x8: P = 64) a GEMM per image spends much of
//   its time packing W, which it reuses for only P columns. So several whole
//   images go side by side into one col, [K, G*P], and one GEMM; its output
//   [O, G*P] is then copied to the G images' places in y (adding the bias),
//   and in the backward the G images' gradients are gathered the same way.
// Each thread works through its images in such chunks (a band of one image,
// or G images); images of medium size are one chunk each.
//
// ---------------------------------------------------------------- direct kernels
// Most 3x3 convolutions with stride 1 and padding 1 (every one of the
// reference CNN) skip im2col and the GEMM altogether: kernels/conv3x3.h computes
// their output, input gradient and weight gradient straight from the images
// (see direct_forward() and its two siblings for which ones). Everything
// below is the general path, and the path of every CPU without AVX-512.
//
// Scratch memory (the col buffers, the per-thread partial dW and db)
// is kept between calls and grown, never shrunk: a training loop allocates
// no big scratch buffer after its first step.
#include "layers/conv2d.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstring>

#include "core/autograd.h"
#include "kernels/conv3x3.h"
#include "layers/init.h"

namespace minnow {

namespace {

struct ConvGeometry {
    int64_t N, C, H, W;  // input
    int64_t O, kh, kw;   // weight [O, C, kh, kw]
    int64_t s, p;        // stride, padding
    int64_t Ho, Wo;      // output
    int64_t K() const { return C * kh * kw; }  // rows of col
    int64_t P() const { return Ho * Wo; }      // columns of col
    bool pointwise() const { return kh == 1 && kw == 1 && s == 1 && p == 0; }
    // The chunks (see the top). A col holds at most kColFloats (2 MB, about
    // one core's L2 cache); a group aims at kMinCols GEMM columns.
    static constexpr int64_t kColFloats = int64_t{1} << 19, kMinCols = 256;
    // Output rows per band: the fewest equal bands whose col fits. The
    // pointwise case has no col: one band.
    int64_t band_rows() const {
        if (pointwise()) return Ho;
        const int64_t bands = std::max<int64_t>(1, (K() * P() + kColFloats - 1) / kColFloats);
        return (Ho + bands - 1) / bands;
    }
    // Whole images per GEMM, at most an equal share of each of `threads`.
    int64_t images_per_chunk(int threads) const {
        if (pointwise() || K() * P() > kColFloats / 2) return 1;
        const int64_t want = (kMinCols + P() - 1) / P(), fits = kColFloats / (K() * P());
        const int64_t share = (N + threads - 1) / threads;
        return std::max<int64_t>(1, std::min({want, fits, share}));
    }
};

// Images spread over threads (true), or done in turn with threaded GEMMs.
bool parallel_over_images(const ConvGeometry& g) {
    const int threads = omp_get_max_threads();
    const int64_t flops_per_image = 2 * g.O * g.K() * g.P();
    return threads > 1 && g.N >= threads && g.N * flops_per_image > (int64_t{1} << 22);
}

// The 3x3 "same" convolutions (stride 1, padding 1) whose output (forward),
// input gradient or weight gradient the direct kernels of kernels/conv3x3.h
// compute without im2col.
bool same3x3(const ConvGeometry& g) { return g.kh == 3 && g.kw == 3 && g.s == 1 && g.p == 1; }
bool direct_forward(const ConvGeometry& g) { return same3x3(g) && direct3x3_supported(g.O, g.H, g.W); }
bool direct_input_grad(const ConvGeometry& g) { return same3x3(g) && direct3x3_supported(g.C, g.H, g.W); }
// (With fewer than 8 input channels, as the first layer's 3, the kernel has
// too few accumulators to keep the FMA units busy: the reference CNN's first
// layer took 12-15 ms forward + backward that way against 7-8 with im2col + GEMM.)
bool direct_weight_grad(const ConvGeometry& g) {
    return same3x3(g) && g.C >= 8 && direct3x3_weight_grad_supported(g.O, g.H, g.W);
}

// Fewer images than threads (inference at batch 1): each image's convolution
// is split over all the threads instead (see "one image, every thread" below).
// Below kSplitMinFlops per image the parallel region costs more than it saves.
constexpr int64_t kSplitMinFlops = int64_t{1} << 21;
bool split_each_image(const ConvGeometry& g) {
    const int threads = omp_get_max_threads();
    return threads > 1 && g.N < threads && 2 * g.O * g.K() * g.P() > kSplitMinFlops;
}

// Part t of `parts` near-equal parts of [0, n), cut at multiples of `align`:
// its range [*begin, *end) (empty when there is not enough to go round).
void share(int64_t n, int parts, int t, int64_t align, int64_t* begin, int64_t* end) {
    const int64_t units = (n + align - 1) / align;
    *begin = std::min(n, units * t / parts * align);
    *end = std::min(n, units * (t + 1) / parts * align);
}

// `threads` buffers of at least `floats` floats each, kept per calling thread
// and per `slot` (0: col buffers, 1: per-thread partial dW and db, 2: the
// output or gradient of a group of images, [O, G*P], 3: packed weights and
// 4: padded images of the direct 3x3 kernel).
std::vector<float*> scratch_buffers(int slot, int threads, int64_t floats) {
    thread_local std::vector<Tensor> pool[5];
    std::vector<Tensor>& bufs = pool[slot];
    if (static_cast<int>(bufs.size()) < threads) bufs.resize(threads);
    std::vector<float*> out(threads);
    for (int t = 0; t < threads; ++t) {
        if (!bufs[t].defined() || bufs[t].numel() < floats) bufs[t] = Tensor::empty({std::max<int64_t>(floats, 1)});
        out[t] = bufs[t].data();
    }
    return out;
}

// The weights packed for the direct kernel (kernels/conv3x3.h), in scratch slot 3:
// as they are for the forward, flipped and transposed for the input gradient.
const float* packed_weights(const ConvGeometry& g, const float* Wt, bool transposed) {
    float* packed = scratch_buffers(3, 1, direct3x3_packed_floats(g.O, g.C))[0];
    pack3x3_weights(Wt, g.O, g.C, transposed, packed);
    return packed;
}

int64_t ceil_div(int64_t a, int64_t b) { return a >= 0 ? (a + b - 1) / b : -((-a) / b); }

// The output positions o in [0, n_out) whose input position o*s - p + k lies
// inside [0, n_in): they form the range [*lo, *hi).
//   o*s - p + k >= 0     <=>  o >= ceil((p - k) / s)
//   o*s - p + k <  n_in  <=>  o <  ceil((n_in + p - k) / s)
void valid_range(int64_t k, int64_t s, int64_t p, int64_t n_in, int64_t n_out, int64_t* lo, int64_t* hi) {
    *lo = std::clamp<int64_t>(ceil_div(p - k, s), 0, n_out);
    *hi = std::clamp<int64_t>(ceil_div(n_in + p - k, s), *lo, n_out);
}

// One row (c, i, j) of im2col when the stride is 1 and the output is as wide
// as the input (padding p = (kw - 1) / 2, "same"): then output rows a..b-1
// read input rows a+i-p.. shifted by d = j - p columns, and since rows of
// width W follow each other in memory, the whole block is ONE flat copy
// out[t] = in[t + d]. The few entries that thereby came from the
// neighbouring input row are exactly the padding columns (ow < ow_lo or
// ow >= ow_hi), which are set to 0 afterwards. (Much faster than a copy
// per output row when rows are short: 16 or 8 floats in the reference CNN.)
void im2col_same_row(const float* plane, const ConvGeometry& g, int64_t i, int64_t j, int64_t oh0, int64_t oh1,
                     int64_t oh_lo, int64_t oh_hi, int64_t ow_lo, int64_t ow_hi, float* row) {
    const int64_t W = g.W, a = std::max(oh0, oh_lo), b = std::max(a, std::min(oh1, oh_hi));
    for (int64_t t = 0; t < (a - oh0) * W; ++t) row[t] = 0.f;                   // padding rows above
    for (int64_t t = (b - oh0) * W; t < (oh1 - oh0) * W; ++t) row[t] = 0.f;     // and below
    float* out = row + (a - oh0) * W;
    const float* in = plane + (a - g.p + i) * W;  // the input row that output row a reads
    const int64_t d = j - g.p, n = (b - a) * W;
#pragma omp simd
    for (int64_t t = std::max<int64_t>(0, -d); t < n - std::max<int64_t>(0, d); ++t) out[t] = in[t + d];
    for (int64_t r = 0; r < b - a; ++r) {  // the padding columns of every copied row
        for (int64_t ow = 0; ow < ow_lo; ++ow) out[r * W + ow] = 0.f;
        for (int64_t ow = ow_hi; ow < W; ++ow) out[r * W + ow] = 0.f;
    }
}

// im2col of the band of output rows oh0 <= oh < oh1 of one image x [C, H, W]:
//   col[(c*kh + i)*kw + j][(oh - oh0)*Wo + ow] = x[c, oh*s - p + i, ow*s - p + j]   (0 in the padding)
// col is [K, (oh1 - oh0) * Wo] with rows `ld` floats apart: ld = (oh1 - oh0) * Wo
// for one image alone, more when images sit side by side in one col.
// Only the rows of channels c0 <= c < c1 are written (all of them by default):
// threads that share one col each fill their own channels' rows.
void im2col(const float* x, const ConvGeometry& g, int64_t oh0, int64_t oh1, float* col, int64_t ld,
            int64_t c0 = 0, int64_t c1 = -1) {
    if (c1 < 0) c1 = g.C;
    for (int64_t c = c0; c < c1; ++c)
        for (int64_t i = 0; i < g.kh; ++i)
            for (int64_t j = 0; j < g.kw; ++j) {
                float* row = col + ((c * g.kh + i) * g.kw + j) * ld;
                int64_t oh_lo, oh_hi, ow_lo, ow_hi;
                valid_range(i, g.s, g.p, g.H, g.Ho, &oh_lo, &oh_hi);
                valid_range(j, g.s, g.p, g.W, g.Wo, &ow_lo, &ow_hi);
                if (g.s == 1 && g.Wo == g.W) {  // the common 3x3, stride 1, padding 1 case, see below
                    im2col_same_row(x + c * g.H * g.W, g, i, j, oh0, oh1, oh_lo, oh_hi, ow_lo, ow_hi, row);
                    continue;
                }
                for (int64_t oh = oh0; oh < oh1; ++oh) {
                    float* out = row + (oh - oh0) * g.Wo;
                    if (oh < oh_lo || oh >= oh_hi) {  // the whole row is padding
                        for (int64_t ow = 0; ow < g.Wo; ++ow) out[ow] = 0.f;
                        continue;
                    }
                    const float* in = x + (c * g.H + oh * g.s - g.p + i) * g.W;
                    for (int64_t ow = 0; ow < ow_lo; ++ow) out[ow] = 0.f;  // left padding
#pragma omp simd
                    for (int64_t ow = ow_lo; ow < ow_hi; ++ow) out[ow] = in[ow * g.s - g.p + j];
                    for (int64_t ow = ow_hi; ow < g.Wo; ++ow) out[ow] = 0.f;  // right padding
                }
            }
}

// The adjoint of im2col_same_row: the flat copy becomes a flat add
// in[t + d] += out[t]. The padding entries of the col row are first set to 0
// (the caller's col is scratch), so that adding them into the neighbouring
// input row adds nothing.
void col2im_same_row(float* row, const ConvGeometry& g, int64_t i, int64_t j, int64_t oh0, int64_t oh1,
                     int64_t oh_lo, int64_t oh_hi, int64_t ow_lo, int64_t ow_hi, float* plane) {
    const int64_t W = g.W, a = std::max(oh0, oh_lo), b = std::max(a, std::min(oh1, oh_hi));
    float* in = row + (a - oh0) * W;               // col entries of output rows a..b-1
    float* out = plane + (a - g.p + i) * W;        // the input rows they were copied from
    for (int64_t r = 0; r < b - a; ++r) {
        for (int64_t ow = 0; ow < ow_lo; ++ow) in[r * W + ow] = 0.f;
        for (int64_t ow = ow_hi; ow < W; ++ow) in[r * W + ow] = 0.f;
    }
    const int64_t d = j - g.p, n = (b - a) * W;
#pragma omp simd
    for (int64_t t = std::max<int64_t>(0, -d); t < n - std::max<int64_t>(0, d); ++t) out[t + d] += in[t];
}

// The adjoint of im2col: every entry of col is added back to the pixel it was
// copied from (padding entries are dropped). dx is one image [C, H, W];
// col holds the band of output rows [oh0, oh1), laid out as in im2col (rows
// `ld` floats apart), and is used as scratch (col2im_same_row zeroes its
// padding entries).
//   dx[c, ih, iw] += col[(c*kh + i)*kw + j][(oh - oh0)*Wo + ow]  for oh*s - p + i = ih, ow*s - p + j = iw
// Only channels c0 <= c < c1 (all by default): the rows of channel c add into
// plane c of dx alone, so threads given disjoint channels never write the same pixel.
void col2im(float* col, const ConvGeometry& g, int64_t oh0, int64_t oh1, float* dx, int64_t ld, int64_t c0 = 0,
            int64_t c1 = -1) {
    if (c1 < 0) c1 = g.C;
    for (int64_t c = c0; c < c1; ++c)
        for (int64_t i = 0; i < g.kh; ++i)
            for (int64_t j = 0; j < g.kw; ++j) {
                float* row = col + ((c * g.kh + i) * g.kw + j) * ld;
                int64_t oh_lo, oh_hi, ow_lo, ow_hi;
                valid_range(i, g.s, g.p, g.H, g.Ho, &oh_lo, &oh_hi);
                valid_range(j, g.s, g.p, g.W, g.Wo, &ow_lo, &ow_hi);
                if (g.s == 1 && g.Wo == g.W) {
                    col2im_same_row(row, g, i, j, oh0, oh1, oh_lo, oh_hi, ow_lo, ow_hi, dx + c * g.H * g.W);
                    continue;
                }
                for (int64_t oh = std::max(oh0, oh_lo); oh < std::min(oh1, oh_hi); ++oh) {
                    float* out = dx + (c * g.H + oh * g.s - g.p + i) * g.W;
                    const float* in = row + (oh - oh0) * g.Wo;
#pragma omp simd
                    for (int64_t ow = ow_lo; ow < ow_hi; ++ow) out[ow * g.s - g.p + j] += in[ow];
                }
            }
}

// C [m, n] = alpha op(A) op(B) + beta C, row-major, single precision.
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float* A, int64_t lda, const float* B,
          int64_t ldb, float beta, float* C, int64_t ldc) {
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, 1.f, A,
                lda, B, ldb, beta, C, ldc);
}

// ---------------------------------------------------------------- one image, every thread
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
//   band keeps at least kSplitMinCols columns, below which the GEMM slows down.
// * By rows (output channels), for small images (8x8: P = 64): the threads
//   fill one shared col_n (each the rows of its own input channels), wait for
//   each other once, then each computes a block of output channels:
//       Y_n[o0:o1, :] = W[o0:o1, :] col_n + b[o0:o1]
//   Blocks are cut at multiples of 16 rows, the width of OpenBLAS's kernel.
// The 3x3 "same" convolutions that the direct kernel handles (kernels/conv3x3.h)
// are cut by output channels too, in panels of 8, each thread padding its own
// copy of the image: no im2col and no waiting at all.
// The backward cuts by rows both ways: dW[o0:o1, :] = G[o0:o1, :] col_n^T
// (each thread whole rows of dW: no partial sums to add up), and
// dcol[rows of channels c0..c1] = W[:, those rows]^T G, which col2im turns
// into planes c0..c1 of dx alone.
constexpr int64_t kSplitMinCols = 128, kRowAlign = 16;

bool split_by_columns(const ConvGeometry& g, int threads) {
    return g.Ho >= threads && g.P() / threads >= kSplitMinCols;
}

void forward_split_each_image(const ConvGeometry& g, const float* X, const float* Wt, const float* b, float* Y) {
    const int threads = omp_get_max_threads();
    if (direct_forward(g)) {  // by output channels, each thread on its panels of 8 (kernels/conv3x3.h)
        const float* packed = packed_weights(g, Wt, /*transposed=*/false);
        std::vector<float*> pad = scratch_buffers(4, threads, direct3x3_scratch_floats(g.C, g.H, g.W));
        const int64_t K = g.K(), P = g.P();
#pragma omp parallel num_threads(threads)
        {
            const int t = omp_get_thread_num();
            int64_t o0, o1;  // this thread's output channels, whole panels of 8
            share(g.O, omp_get_num_threads(), t, 8, &o0, &o1);
            for (int64_t n = 0; n < g.N && o1 > o0; ++n)  // each thread pads the image for itself: no waiting
                conv3x3_direct(X + n * g.C * g.H * g.W, g.C, g.H, g.W, packed + o0 * K, o1 - o0, b ? b + o0 : nullptr,
                               Y + (n * g.O + o0) * P, pad[t]);
        }
        return;
    }
    const int64_t K = g.K(), P = g.P(), O = g.O, CHW = g.C * g.H * g.W, rows = g.band_rows();
    const bool by_columns = split_by_columns(g, threads);
    // By columns: a col band per thread. By rows: one col_n that all share.
    std::vector<float*> col = g.pointwise() ? scratch_buffers(0, 1, 0)
                              : by_columns  ? scratch_buffers(0, threads, K * rows * g.Wo)
                                            : scratch_buffers(0, 1, K * P);
    const float beta = b ? 1.f : 0.f;  // Y starts as b and the GEMM adds W col (as in conv2d below)
#pragma omp parallel num_threads(threads)
    {
        // The team may be smaller than asked (a nested region gets one thread).
        const int t = omp_get_thread_num(), team = omp_get_num_threads();
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
                        gemm(false, false, O, cols, K, Wt, K, xn + oh0 * g.Wo, P, beta, Yn + oh0 * g.Wo, P);
                        continue;
                    }
                    im2col(xn, g, oh0, oh1, col[t], cols);
                    gemm(false, false, O, cols, K, Wt, K, col[t], cols, beta, Yn + oh0 * g.Wo, P);
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
            if (o1 > o0) gemm(false, false, o1 - o0, P, K, Wt + o0 * K, K, col_n, P, beta, Yn + o0 * P, P);
        }
    }
}

// dx, dw, db: null where no gradient is wanted. Derivation: see Conv2dBackward.
void backward_split_each_image(const ConvGeometry& g, const float* X, const float* Wt, const float* dY, float* dx,
                               float* dw, float* db) {
    const int threads = omp_get_max_threads();
    const int64_t K = g.K(), P = g.P(), O = g.O, HW = g.H * g.W, CHW = g.C * HW, kk = g.kh * g.kw;
    const bool use_col = (dw || dx) && !g.pointwise();
    float* col = scratch_buffers(0, 1, use_col ? K * P : 0)[0];  // col_n, then dcol_n
#pragma omp parallel num_threads(threads)
    {
        const int t = omp_get_thread_num(), team = omp_get_num_threads();
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
                if (o1 > o0) gemm(false, true, o1 - o0, K, P, Gn + o0 * P, P, col_n, P, beta, dw + o0 * K, K);
            }
            if (dx) {  // dcol_n[rows of c0..c1] = W[:, rows of c0..c1]^T G_n, then col2im into planes c0..c1
                float* dxn = dx + n * CHW;
                if (g.pointwise()) {  // dx[n] is dcol_n
                    if (c1 > c0) gemm(true, false, c1 - c0, P, O, Wt + c0, K, Gn, P, 0.f, dxn + c0 * HW, P);
                    continue;
                }
                if (dw) {
#pragma omp barrier
                }  // every thread's dW GEMM has finished reading col_n
                if (c1 > c0) {
                    gemm(true, false, (c1 - c0) * kk, P, O, Wt + c0 * kk, K, Gn, P, 0.f, col + c0 * kk * P, P);
                    std::fill(dxn + c0 * HW, dxn + c1 * HW, 0.f);
                    col2im(col, g, 0, g.Ho, dxn, P, c0, c1);
                }
            }
        }
    }
}

}  // namespace

// ================================================================ backward
// Per image n (dropping n):  Y = W col + b 1^T, i.e.
//   Y[o, q] = sum_k W[o, k] col[k, q] + b[o].
// With G = dL/dY [O, P]:
//   dL/dW[o, k]   = sum_q G[o, q] col[k, q]     ->  dW  = sum_n G_n col_n^T   [O, P] x [P, K]
//   dL/db[o]      = sum_q G[o, q]               ->  db  = sum over n, q of G_n
//   dL/dcol[k, q] = sum_o W[o, k] G[o, q]       ->  dcol_n = W^T G_n          [K, O] x [O, P]
// and since col_n is x[n] copied (im2col), dx[n] = col2im(dcol_n): each pixel
// collects the gradient of every col entry that was copied from it.
// col_n is recomputed from x rather than kept from the forward (it would be
// K/C = kh*kw times the size of x for the whole batch).
struct Conv2dBackward : Node {
    Tensor x, weight;
    ConvGeometry g{};
    std::vector<Tensor> backward(const Tensor& dy) override {
        const int64_t K = g.K(), P = g.P(), O = g.O, CHW = g.C * g.H * g.W;
        const bool need_dx = needs_grad(0), need_dw = needs_grad(1), need_db = needs_grad(2);
        Tensor dx, dw, db;
        if (need_dx) dx = Tensor::empty(x.shape());
        if (need_dw) dw = Tensor::empty(weight.shape());
        if (need_db) db = Tensor::empty({O});
        const float* X = x.data();
        const float* Wt = weight.data();
        const float* dY = dy.data();
        if (split_each_image(g)) {
            backward_split_each_image(g, X, Wt, dY, need_dx ? dx.data() : nullptr, need_dw ? dw.data() : nullptr,
                                      need_db ? db.data() : nullptr);
            return {dx, dw, db};
        }

        const bool par = parallel_over_images(g);
        const int threads = par ? omp_get_max_threads() : 1;
        // dx and dW by the direct kernels (after the loop below), or by GEMMs in it.
        const bool direct_dx = need_dx && direct_input_grad(g), gemm_dx = need_dx && !direct_dx;
        const bool direct_dw = need_dw && direct_weight_grad(g), gemm_dw = need_dw && !direct_dw;
        const bool need_col = (gemm_dw || gemm_dx) && !g.pointwise();
        const int64_t G = g.images_per_chunk(threads), rows = g.band_rows(), chunks = (g.N + G - 1) / G;
        std::vector<float*> col = scratch_buffers(0, threads, need_col ? K * G * rows * g.Wo : 0);
        // Per-thread partial sums, [O*K] for dW then [O] for db, summed at the end.
        std::vector<float*> part = scratch_buffers(1, threads, O * K + O);
        std::vector<float*> grp = scratch_buffers(2, threads, G > 1 && (gemm_dw || gemm_dx) ? O * G * P : 0);
        std::vector<float*> pad = scratch_buffers(
            4, threads,
            direct_dw ? direct3x3_weight_grad_scratch_floats(g.C, O, g.H, g.W) : 0);

#pragma omp parallel num_threads(threads) if (par)
        {
            const int t = omp_get_thread_num();
            float* dw_t = part[t];
            float* db_t = part[t] + O * K;
            std::fill(part[t], part[t] + O * K + O, 0.f);
#pragma omp for schedule(static)
            for (int64_t ch = 0; ch < chunks; ++ch) {
                const int64_t n0 = ch * G, gn = std::min(G, g.N - n0);  // images n0 .. n0+gn-1
                if (need_db)  // db += row sums of G_n
                    for (int64_t n = n0; n < n0 + gn; ++n)
                        for (int64_t o = 0; o < O; ++o) {
                            const float* Gno = dY + (n * O + o) * P;
                            float s = 0.f;
#pragma omp simd reduction(+ : s)
                            for (int64_t q = 0; q < P; ++q) s += Gno[q];
                            db_t[o] += s;
                        }
                if (gemm_dx && !g.pointwise())  // col2im adds into dx
                    std::fill(dx.data() + n0 * CHW, dx.data() + (n0 + gn) * CHW, 0.f);

                if (!gemm_dw && !gemm_dx) continue;  // the direct kernels below do dW and dx
                if (G > 1) {  // a group: G_grp = [G_n0 | G_n0+1 | ...] as [O, gn*P], col likewise
                    const int64_t ld = gn * P;
                    float* Gg = grp[t];
                    for (int64_t m = 0; m < gn; ++m)
                        for (int64_t o = 0; o < O; ++o)
                            std::copy(dY + ((n0 + m) * O + o) * P, dY + ((n0 + m) * O + o + 1) * P, Gg + o * ld + m * P);
                    if (gemm_dw) {  // dW += G_grp col_grp^T
                        for (int64_t m = 0; m < gn; ++m) im2col(X + (n0 + m) * CHW, g, 0, g.Ho, col[t] + m * P, ld);
                        gemm(false, true, O, K, ld, Gg, ld, col[t], ld, 1.f, dw_t, K);
                    }
                    if (gemm_dx) {  // dcol_grp = W^T G_grp, then col2im image by image
                        gemm(true, false, K, ld, O, Wt, K, Gg, ld, 0.f, col[t], ld);
                        for (int64_t m = 0; m < gn; ++m) col2im(col[t] + m * P, g, 0, g.Ho, dx.data() + (n0 + m) * CHW, ld);
                    }
                    continue;
                }

                const int64_t n = n0;  // one image, in bands
                const float* xn = X + n * CHW;
                const float* Gn = dY + n * O * P;
                float* dxn = gemm_dx ? dx.data() + n * CHW : nullptr;
                if (g.pointwise()) {  // col_n = x[n] and dx[n] = dcol_n: no im2col, no col2im
                    if (gemm_dw) gemm(false, true, O, K, P, Gn, P, xn, P, 1.f, dw_t, K);
                    if (gemm_dx) gemm(true, false, K, P, O, Wt, K, Gn, P, 0.f, dxn, P);
                    continue;
                }
                for (int64_t oh0 = 0; oh0 < g.Ho; oh0 += rows) {
                    const int64_t oh1 = std::min(g.Ho, oh0 + rows), cols = (oh1 - oh0) * g.Wo;
                    const float* Gb = Gn + oh0 * g.Wo;  // the band's columns of G_n, ld P
                    if (gemm_dw) {  // dW += G_band col_band^T
                        im2col(xn, g, oh0, oh1, col[t], cols);
                        gemm(false, true, O, K, cols, Gb, P, col[t], cols, 1.f, dw_t, K);
                    }
                    if (gemm_dx) {  // dcol_band = W^T G_band (overwrites col_band, used), then col2im
                        gemm(true, false, K, cols, O, Wt, K, Gb, P, 0.f, col[t], cols);
                        col2im(col[t], g, oh0, oh1, dxn, cols);
                    }
                }
            }
            if (direct_dw) {  // dW += sum_n G_n (x) x_n by the direct kernel, a run of images at a time
                const int64_t run = direct3x3_weight_grad_images(g.H, g.W), runs = (g.N + run - 1) / run;
#pragma omp for schedule(static)
                for (int64_t r = 0; r < runs; ++r) {
                    const int64_t n0 = r * run, m = std::min(run, g.N - n0);
                    conv3x3_direct_weight_grad(X + n0 * CHW, dY + n0 * O * P, m, g.C, g.H, g.W, O, dw_t, pad[t]);
                }
            }
            // Sum the threads' partials in a fixed order (deterministic).
            if (need_dw) {
#pragma omp for schedule(static)
                for (int64_t e = 0; e < O * K; ++e) {
                    float s = 0.f;
                    for (int u = 0; u < threads; ++u) s += part[u][e];
                    dw.data()[e] = s;
                }
            }
            if (need_db) {
#pragma omp for schedule(static)
                for (int64_t o = 0; o < O; ++o) {
                    float s = 0.f;
                    for (int u = 0; u < threads; ++u) s += part[u][O * K + o];
                    db.data()[o] = s;
                }
            }
        }
        if (direct_dx) {  // dx[n] = conv(G_n, W flipped and transposed): see kernels/conv3x3.cpp
            const float* packed = packed_weights(g, Wt, /*transposed=*/true);
            pad = scratch_buffers(4, threads, direct3x3_scratch_floats(O, g.H, g.W));
#pragma omp parallel for num_threads(threads) schedule(static) if (par)
            for (int64_t n = 0; n < g.N; ++n)
                conv3x3_direct(dY + n * O * P, O, g.H, g.W, packed, g.C, nullptr, dx.data() + n * CHW,
                               pad[omp_get_thread_num()]);
        }
        return {dx, dw, db};
    }
    void release_saved() override { x = weight = Tensor(); }
    const char* name() const override { return "Conv2dBackward"; }
};

// ================================================================ forward
static ConvGeometry conv_geometry(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t s,
                                  int64_t p) {
    auto fail = [&](const std::string& why) {
        return Error("conv2d: " + why + " (input " + shape_str(x.shape()) + ", weight " +
                     shape_str(weight.shape()) + ", stride " + std::to_string(s) + ", padding " +
                     std::to_string(p) + ")");
    };
    if (weight.dim() != 4) throw fail("weight must be [out_channels, in_channels, kh, kw]");
    if (s < 1 || p < 0) throw fail("stride must be >= 1 and padding >= 0");
    if (x.dim() != 4 || x.size(1) != weight.size(1))
        throw fail("expected input [N, " + std::to_string(weight.size(1)) + ", H, W]");
    if (bias.defined() && bias.shape() != Shape{weight.size(0)})
        throw fail("bias must be [" + std::to_string(weight.size(0)) + "], got " + shape_str(bias.shape()));
    ConvGeometry g{};
    g.N = x.size(0), g.C = x.size(1), g.H = x.size(2), g.W = x.size(3);
    g.O = weight.size(0), g.kh = weight.size(2), g.kw = weight.size(3);
    g.s = s, g.p = p;
    if (g.H + 2 * p < g.kh || g.W + 2 * p < g.kw) throw fail("the padded input is smaller than the kernel");
    g.Ho = (g.H + 2 * p - g.kh) / s + 1;
    g.Wo = (g.W + 2 * p - g.kw) / s + 1;
    return g;
}

// The batch split over the threads (or done serially): y = conv(x) into Y.
static void forward_over_images(const ConvGeometry& g, const float* X, const float* Wt, const float* b, float* Y) {
    const int64_t K = g.K(), P = g.P(), O = g.O, CHW = g.C * g.H * g.W;
    const bool par = parallel_over_images(g);
    const int threads = par ? omp_get_max_threads() : 1;
    const int64_t G = g.images_per_chunk(threads), rows = g.band_rows(), chunks = (g.N + G - 1) / G;
    std::vector<float*> col = scratch_buffers(0, threads, g.pointwise() ? 0 : K * G * rows * g.Wo);
    std::vector<float*> grp = scratch_buffers(2, threads, G > 1 ? O * G * P : 0);
#pragma omp parallel for num_threads(threads) schedule(static) if (par)
    for (int64_t ch = 0; ch < chunks; ++ch) {
        const int t = omp_get_thread_num();
        const int64_t n0 = ch * G, gn = std::min(G, g.N - n0);  // images n0 .. n0+gn-1
        if (G > 1) {  // a group: Y_grp [O, gn*P] = W col_grp, then each image's columns to y (+ b)
            const int64_t ld = gn * P;
            for (int64_t m = 0; m < gn; ++m) im2col(X + (n0 + m) * CHW, g, 0, g.Ho, col[t] + m * P, ld);
            gemm(false, false, O, ld, K, Wt, K, col[t], ld, 0.f, grp[t], ld);
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
        if (g.pointwise()) {  // x[n] is already col_n = [C, H*W] = [K, P]
            gemm(false, false, O, P, K, Wt, K, xn, P, beta, Yn, P);
            continue;
        }
        for (int64_t oh0 = 0; oh0 < g.Ho; oh0 += rows) {
            const int64_t oh1 = std::min(g.Ho, oh0 + rows), cols = (oh1 - oh0) * g.Wo;
            im2col(xn, g, oh0, oh1, col[t], cols);
            gemm(false, false, O, cols, K, Wt, K, col[t], cols, beta, Yn + oh0 * g.Wo, P);
        }
    }
}

// The 3x3 "same" convolutions by the direct kernel, image by image over the threads.
static void forward_direct(const ConvGeometry& g, const float* X, const float* Wt, const float* b, float* Y) {
    const bool par = parallel_over_images(g);
    const int threads = par ? omp_get_max_threads() : 1;
    const float* packed = packed_weights(g, Wt, /*transposed=*/false);
    std::vector<float*> pad = scratch_buffers(4, threads, direct3x3_scratch_floats(g.C, g.H, g.W));
#pragma omp parallel for num_threads(threads) schedule(static) if (par)
    for (int64_t n = 0; n < g.N; ++n)
        conv3x3_direct(X + n * g.C * g.H * g.W, g.C, g.H, g.W, packed, g.O, b, Y + n * g.O * g.P(),
                       pad[omp_get_thread_num()]);
}

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t stride, int64_t padding) {
    const ConvGeometry g = conv_geometry(x, weight, bias, stride, padding);
    Tensor y = Tensor::empty({g.N, g.O, g.Ho, g.Wo});
    const float* b = bias.defined() ? bias.data() : nullptr;
    if (split_each_image(g)) forward_split_each_image(g, x.data(), weight.data(), b, y.data());
    else if (direct_forward(g)) forward_direct(g, x.data(), weight.data(), b, y.data());
    else forward_over_images(g, x.data(), weight.data(), b, y.data());

    if (!any_requires_grad({x, weight, bias})) return y;
    auto node = std::make_shared<Conv2dBackward>();
    node->x = x.detach();
    node->weight = weight.detach();
    node->g = g;
    return attach(y, node, {x, weight, bias});
}

// ================================================================ module
Conv2d::Conv2d(int64_t in_c, int64_t out_c, int64_t k, int64_t s, int64_t p, bool has_bias, Generator* gen)
    : in_channels(in_c), out_channels(out_c), kernel_size(k), stride(s), padding(p) {
    if (in_c < 1 || out_c < 1 || k < 1 || s < 1 || p < 0)
        throw Error("Conv2d(" + std::to_string(in_c) + ", " + std::to_string(out_c) + ", kernel_size=" +
                    std::to_string(k) + ", stride=" + std::to_string(s) + ", padding=" + std::to_string(p) +
                    "): channels, kernel_size and stride must be >= 1 and padding >= 0");
    Tensor w = Tensor::empty({out_c, in_c, k, k});
    Tensor b = has_bias ? Tensor::empty({out_c}) : Tensor();
    init::default_linear_init_(w, b, gen);
    weight = register_parameter("weight", w);
    if (has_bias) bias = register_parameter("bias", b);
}

Tensor Conv2d::forward(const Tensor& x) {
    if (x.dim() != 4 || x.size(1) != in_channels)
        throw Error("Conv2d(" + extra_repr() + "): expected input of shape [N, " + std::to_string(in_channels) +
                    ", H, W], got " + shape_str(x.shape()));
    return conv2d(x, weight, bias, stride, padding);
}

std::string Conv2d::extra_repr() const {
    std::string s = std::to_string(in_channels) + ", " + std::to_string(out_channels) +
                    ", kernel_size=" + std::to_string(kernel_size);
    if (stride != 1) s += ", stride=" + std::to_string(stride);
    if (padding != 0) s += ", padding=" + std::to_string(padding);
    if (!bias.defined()) s += ", bias=False";
    return s;
}

}  // namespace minnow
