// The AVX-512 tiles of the direct 3x3 convolution (kernels/conv3x3.cpp has
// the derivation, the layouts and the drivers that call these).
//
// Only the functions marked MINNOW_AVX512 are compiled for AVX-512, by
// __attribute__((target)), not the whole file by -mavx512f: an inline
// function or template that this file shares with others (std::min, the
// layouts' members) is then compiled for the build's own target here too, so
// the linker cannot pick an AVX-512 copy of it for code that runs on any CPU.
// conv3x3.cpp calls these only when active_isa() reaches avx512.
#include <immintrin.h>

#include "kernels/conv3x3_tiles.h"

#define MINNOW_AVX512 __attribute__((target("avx512f")))

namespace minnow::conv3x3::avx512 {

namespace {

// One tile: 8 output channels (the packed panel wp) x NV*16 output pixels
// starting at output position p0 (vector v covers p0 + 16v ..). y points at
// the tile's first channel; P floats between channels.
template <int NV, class Layout>
MINNOW_AVX512 void tile_nv(const float* input, const Layout& L, int64_t C, const float* wp, const float* bias, int64_t p0,
                           int64_t P, float* y) {
    int64_t off[NV];
    for (int v = 0; v < NV; ++v) off[v] = L.offset(p0 + 16 * v);
    __m512 acc[kRows][NV];
    for (int64_t c0 = 0; c0 < C; c0 += kBlockChannels) {
        // The 9 * kBlockChannels products of a block of input channels are
        // summed in registers, then added to the tile's sum so far in y (see
        // "rounding" at the top).
        for (int r = 0; r < kRows; ++r)
            for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
        for (int64_t c = c0; c < std::min(C, c0 + kBlockChannels); ++c)
            for (int i = 0; i < 3; ++i)
                for (int j = 0; j < 3; ++j, wp += kRows) {
                    const float* s = input + c * L.c_stride + i * L.i_stride + j * L.j_stride;  // tap (i, j) at + off[v]
                    __m512 b[NV];
                    for (int v = 0; v < NV; ++v) b[v] = _mm512_loadu_ps(s + off[v]);
                    for (int r = 0; r < kRows; ++r) {
                        const __m512 a = _mm512_set1_ps(wp[r]);  // w[8*ob + r, c, i, j]
                        for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(a, b[v], acc[r][v]);
                    }
                }
        // y = (earlier blocks) + this block (+ the bias after the last one, as
        // a GEMM with beta = 1 adds it: it does not enter the partial sums).
        const bool first = c0 == 0, last = c0 + kBlockChannels >= C;
        for (int r = 0; r < kRows; ++r)
            for (int v = 0; v < NV; ++v) {
                float* out = y + r * P + p0 + 16 * v;
                __m512 sum = first ? acc[r][v] : _mm512_add_ps(_mm512_loadu_ps(out), acc[r][v]);
                if (last && bias) sum = _mm512_add_ps(sum, _mm512_set1_ps(bias[r]));
                _mm512_storeu_ps(out, sum);
            }
    }
}

// total += acc, acc = 0 (a function, not a lambda: a lambda would not carry
// the target attribute).
template <int CB, int OV>
MINNOW_AVX512 inline void fold(__m512 (&total)[CB][3][OV], __m512 (&acc)[CB][3][OV]) {
    for (int cc = 0; cc < CB; ++cc)
        for (int j = 0; j < 3; ++j)
            for (int v = 0; v < OV; ++v) {
                total[cc][j][v] = _mm512_add_ps(total[cc][j][v], acc[cc][j][v]);
                acc[cc][j][v] = _mm512_setzero_ps();
            }
}

// One block: output channels o0..o0+16*OV-1 (OV vectors), input channels
// c0..c0+CB-1, kernel row i, over the run's images. xps: the padded images;
// gt: their Gt [p][O]. Each broadcast input value serves OV vectors.
template <int CB, int OV>
MINNOW_AVX512 void block(const Padded& L, const float* xps, const float* gt, int64_t images, int64_t C, int64_t O,
                       int64_t o0, int64_t c0, int64_t i, float* dw) {
    const int64_t H = L.H, W = L.W, P = H * W, K = 9 * C, xsize = C * L.c_stride;
    // acc sums the products of a block of about kBlockPixels pixels (whole
    // rows) from zero; total, in memory, the blocks so far (see "rounding").
    __m512 acc[CB][3][OV], total[CB][3][OV];
    for (int cc = 0; cc < CB; ++cc)
        for (int j = 0; j < 3; ++j)
            for (int v = 0; v < OV; ++v) acc[cc][j][v] = total[cc][j][v] = _mm512_setzero_ps();
    const int64_t rows_per_block = std::max<int64_t>(1, kBlockPixels / W);
    int64_t rows = 0;
    for (int64_t n = 0; n < images; ++n) {
        const float* g = gt + n * P * O + o0;  // Gt[n][p][o0..]
        const float* xs[CB];                   // xp[n, c0 + cc, i, :]
        for (int cc = 0; cc < CB; ++cc) xs[cc] = xps + n * xsize + (c0 + cc) * L.c_stride + i * L.i_stride;
        for (int64_t oh = 0; oh < H; ++oh) {
            for (int64_t ow = 0; ow < W; ++ow) {
                __m512 gp[OV];  // G[n, o0 + 16v.., oh, ow]
                for (int v = 0; v < OV; ++v) gp[v] = _mm512_loadu_ps(g + (oh * W + ow) * O + 16 * v);
                const int64_t q = oh * L.i_stride + ow;  // xp[n, c, oh + i, ow + j] = xs[cc][q + j]
                for (int cc = 0; cc < CB; ++cc)
                    for (int j = 0; j < 3; ++j) {
                        const __m512 xv = _mm512_set1_ps(xs[cc][q + j]);
                        for (int v = 0; v < OV; ++v) acc[cc][j][v] = _mm512_fmadd_ps(gp[v], xv, acc[cc][j][v]);
                    }
            }
            if (++rows % rows_per_block == 0) fold<CB, OV>(total, acc);
        }
    }
    fold<CB, OV>(total, acc);
    for (int cc = 0; cc < CB; ++cc)
        for (int j = 0; j < 3; ++j)
            for (int v = 0; v < OV; ++v) {  // lane l holds dw[o0 + 16v + l, c0 + cc, i, j]
                alignas(64) float lanes[16];
                _mm512_store_ps(lanes, total[cc][j][v]);
                const int64_t k = ((c0 + cc) * 3 + i) * 3 + j;
                for (int l = 0; l < 16; ++l) dw[(o0 + 16 * v + l) * K + k] += lanes[l];
            }
}

// block<n, OV> for a block of n <= CB input channels known only at
// run time (the last block of a layer).
template <int CB, int OV>
MINNOW_AVX512 void blocks(int64_t n, const Padded& L, const float* xps, const float* gt, int64_t images, int64_t C,
                        int64_t O, int64_t o0, int64_t c0, int64_t i, float* dw) {
    if constexpr (CB > 1)
        if (n < CB) return blocks<CB - 1, OV>(n, L, xps, gt, images, C, O, o0, c0, i, dw);
    block<CB, OV>(L, xps, gt, images, C, O, o0, c0, i, dw);
}

}  // namespace

void tile(int nv, const float* input, const Padded& L, int64_t C, const float* wp, const float* bias, int64_t p0,
          int64_t P, float* y) {
    if (nv == 3) tile_nv<3>(input, L, C, wp, bias, p0, P, y);
    else if (nv == 2) tile_nv<2>(input, L, C, wp, bias, p0, P, y);
    else tile_nv<1>(input, L, C, wp, bias, p0, P, y);
}

void tile(int nv, const float* input, const Shifted& L, int64_t C, const float* wp, const float* bias, int64_t p0,
          int64_t P, float* y) {
    if (nv == 3) tile_nv<3>(input, L, C, wp, bias, p0, P, y);
    else if (nv == 2) tile_nv<2>(input, L, C, wp, bias, p0, P, y);
    else tile_nv<1>(input, L, C, wp, bias, p0, P, y);
}

void weight_grad_block(bool two, int64_t n, const Padded& L, const float* xps, const float* gt, int64_t images,
                       int64_t C, int64_t O, int64_t o0, int64_t c0, int64_t i, float* dw) {
    if (two) blocks<4, 2>(n, L, xps, gt, images, C, O, o0, c0, i, dw);
    else blocks<8, 1>(n, L, xps, gt, images, C, O, o0, c0, i, dw);
}

}  // namespace minnow::conv3x3::avx512
