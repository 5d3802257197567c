// minnow/kernels/conv3x3_kernels.h (internal): the tiles of the direct 3x3
// convolution, written once for any vector width. kernels/conv3x3.cpp has the
// derivation, the layouts, the register tiling and the drivers that call these.
//
// Included by one file per instruction set (conv3x3_avx512.cpp,
// conv3x3_avx2.cpp), which first defines
//   MINNOW_TILE_TARGET  the __attribute__((target(...))) of its instruction set
// and then instantiates the templates below with its vector traits T:
//   T::V                 the vector type (__m512, __m256)
//   T::kLanes            floats per vector (16, 8)
//   T::kTileRows         output channels per pass of a forward tile (8, 4):
//                        a panel of 8 takes 8 / kTileRows passes
//   T::kTileVectors      vectors of output pixels per forward tile (3, 3)
//   T::kGradChannels     input channels per weight-gradient block (4, 2), each
//                        against 2 vectors of output channels
//   T::zero, load, store, add, fma(a, b, c) = a*b + c, set1
// so that kTileRows x kTileVectors (forward) and kGradChannels x 3 x 2 (weight
// gradient) accumulators, plus the loads and a broadcast, fit the register
// file (32 zmm, 16 ymm).
//
// Only these functions are compiled for the instruction set, by the target
// attribute, not the whole file by -mavx512f or -mavx2: an inline function or
// template that the file shares with others (std::min, the layouts' members)
// is then compiled for the build's own target there too, so the linker cannot
// pick an AVX-512 copy of it for code that runs on any CPU. The templates sit
// in an anonymous namespace: each including file has its own.
//
// Rounding: every output's products are summed in one fixed order, whatever
// the vector width and tile shape: within a block of kBlockChannels input
// channels, from zero, over (c, i, j) in order by FMAs; the block's sum is then
// added to y, the bias after the last block. The weight gradient: over the
// pixels of kBlockPixels (whole rows) in order, then added to a total, then
// to dw. So the AVX2 and the AVX-512 tiles give the same bits.
#pragma once

#ifndef MINNOW_TILE_TARGET
#error "define MINNOW_TILE_TARGET before including kernels/conv3x3_kernels.h"
#endif

#include <algorithm>
#include <cstdint>

#include "kernels/conv3x3_tiles.h"

namespace minnow::conv3x3 {
namespace {

// One tile: the 8 output channels of the packed panel wp x NV vectors of
// output pixels starting at output position p0 (vector v covers p0 +
// kLanes*v ..), in passes of kTileRows channels. y points at the panel's
// first channel; P floats between channels.
template <class T, int NV, class Layout>
MINNOW_TILE_TARGET void tile(const float* input, const Layout& L, int64_t C, const float* wp, const float* bias,
                             int64_t p0, int64_t P, float* y) {
    using V = typename T::V;
    constexpr int R = T::kTileRows, lanes = T::kLanes;
    int64_t off[NV];
    for (int v = 0; v < NV; ++v) off[v] = L.offset(p0 + lanes * v);
    for (int r0 = 0; r0 < kRows; r0 += R) {
        const float* w = wp + r0;  // w[r] = w[8*ob + r0 + r, c, i, j], advancing kRows a weight
        V acc[R][NV];
        for (int64_t c0 = 0; c0 < C; c0 += kBlockChannels) {
            // The 9 * kBlockChannels products of a block of input channels are
            // summed in registers, then added to the tile's sum so far in y
            // (see "rounding" in conv3x3.cpp).
            for (int r = 0; r < R; ++r)
                for (int v = 0; v < NV; ++v) acc[r][v] = T::zero();
            for (int64_t c = c0; c < std::min(C, c0 + kBlockChannels); ++c)
                for (int i = 0; i < 3; ++i)
                    for (int j = 0; j < 3; ++j, w += kRows) {
                        const float* s = input + c * L.c_stride + i * L.i_stride + j * L.j_stride;  // + off[v]
                        V b[NV];
                        for (int v = 0; v < NV; ++v) b[v] = T::load(s + off[v]);
                        for (int r = 0; r < R; ++r) {
                            const V a = T::set1(w[r]);
                            for (int v = 0; v < NV; ++v) acc[r][v] = T::fma(a, b[v], acc[r][v]);
                        }
                    }
            // y = (earlier blocks) + this block (+ the bias after the last one,
            // as a GEMM with beta = 1 adds it: it does not enter the partial sums).
            const bool first = c0 == 0, last = c0 + kBlockChannels >= C;
            for (int r = 0; r < R; ++r)
                for (int v = 0; v < NV; ++v) {
                    float* out = y + (r0 + r) * P + p0 + lanes * v;
                    V sum = first ? acc[r][v] : T::add(T::load(out), acc[r][v]);
                    if (last && bias) sum = T::add(sum, T::set1(bias[r0 + r]));
                    T::store(out, sum);
                }
        }
    }
}

// The last tile of an image: the `left` (< kTileVectors) vectors of pixels left.
template <class T, int NV, class Layout>
void last_tile(int64_t left, const float* input, const Layout& L, int64_t C, const float* wp, const float* bias,
               int64_t p0, int64_t P, float* y) {
    if constexpr (NV > 0) {
        if (left == NV) return tile<T, NV>(input, L, C, wp, bias, p0, P, y);
        last_tile<T, NV - 1>(left, input, L, C, wp, bias, p0, P, y);
    }
}

// The image, kTileVectors vectors of pixels at a time, then the vectors left
// (P is a multiple of 16, so of kLanes).
template <class T, class Layout>
void panel(const float* input, const Layout& L, int64_t C, const float* wp, const float* bias, float* y) {
    constexpr int NV = T::kTileVectors;
    const int64_t P = L.H * L.W, step = NV * T::kLanes;
    int64_t p0 = 0;
    for (; p0 + step <= P; p0 += step) tile<T, NV>(input, L, C, wp, bias, p0, P, y);
    last_tile<T, NV - 1>((P - p0) / T::kLanes, input, L, C, wp, bias, p0, P, y);
}

// total += acc, acc = 0 (a function, not a lambda: a lambda would not carry
// the target attribute).
template <class T, int CB, int OV>
MINNOW_TILE_TARGET inline void fold(float* total, typename T::V (&acc)[CB][3][OV]) {
    for (int cc = 0; cc < CB; ++cc)
        for (int j = 0; j < 3; ++j)
            for (int v = 0; v < OV; ++v) {
                float* t = total + ((cc * 3 + j) * OV + v) * T::kLanes;
                T::store(t, T::add(T::load(t), acc[cc][j][v]));
                acc[cc][j][v] = T::zero();
            }
}

// One weight-gradient block: output channels o0..o0 + OV*kLanes - 1 (OV
// vectors), input channels c0..c0+CB-1, kernel row i, over the run's images.
// xps: the padded images; gt: their Gt [p][O]. Each broadcast input value
// serves OV vectors.
template <class T, int CB, int OV>
MINNOW_TILE_TARGET void grad_block(const Padded& L, const float* xps, const float* gt, int64_t images, int64_t C,
                                   int64_t O, int64_t o0, int64_t c0, int64_t i, float* dw) {
    using V = typename T::V;
    constexpr int lanes = T::kLanes;
    const int64_t H = L.H, W = L.W, P = H * W, K = 9 * C, xsize = C * L.c_stride;
    // acc sums the products of a block of about kBlockPixels pixels (whole
    // rows) from zero; total, in memory, the blocks so far (see "rounding").
    // total is a plain array, not vectors: the compiler then keeps only acc
    // in registers (with both as vector arrays it kept part of total there
    // and spilled accumulators to the stack, a store and a reload on every
    // pixel's chain: 131-144 against 155-176 GFLOP/s, one thread, AVX-512,
    // 64 -> 64 channels at 32x32, alternating runs). The same additions in
    // the same order: the same bits.
    V acc[CB][3][OV];
    alignas(64) float total[CB * 3 * OV * lanes] = {};
    for (int cc = 0; cc < CB; ++cc)
        for (int j = 0; j < 3; ++j)
            for (int v = 0; v < OV; ++v) acc[cc][j][v] = T::zero();
    const int64_t rows_per_block = std::max<int64_t>(1, kBlockPixels / W);
    int64_t rows = 0;
    for (int64_t n = 0; n < images; ++n) {
        const float* g = gt + n * P * O + o0;  // Gt[n][p][o0..]
        const float* xs[CB];                   // xp[n, c0 + cc, i, :]
        for (int cc = 0; cc < CB; ++cc) xs[cc] = xps + n * xsize + (c0 + cc) * L.c_stride + i * L.i_stride;
        for (int64_t oh = 0; oh < H; ++oh) {
            for (int64_t ow = 0; ow < W; ++ow) {
                V gp[OV];  // G[n, o0 + kLanes*v.., oh, ow]
                for (int v = 0; v < OV; ++v) gp[v] = T::load(g + (oh * W + ow) * O + lanes * v);
                const int64_t q = oh * L.i_stride + ow;  // xp[n, c, oh + i, ow + j] = xs[cc][q + j]
                for (int cc = 0; cc < CB; ++cc)
                    for (int j = 0; j < 3; ++j) {
                        const V xv = T::set1(xs[cc][q + j]);
                        for (int v = 0; v < OV; ++v) acc[cc][j][v] = T::fma(gp[v], xv, acc[cc][j][v]);
                    }
            }
            if (++rows % rows_per_block == 0) fold<T, CB, OV>(total, acc);
        }
    }
    fold<T, CB, OV>(total, acc);
    for (int cc = 0; cc < CB; ++cc)
        for (int j = 0; j < 3; ++j)
            for (int v = 0; v < OV; ++v) {  // lane l holds dw[o0 + kLanes*v + l, c0 + cc, i, j]
                const float* out = total + ((cc * 3 + j) * OV + v) * lanes;
                const int64_t k = ((c0 + cc) * 3 + i) * 3 + j;
                for (int l = 0; l < lanes; ++l) dw[(o0 + lanes * v + l) * K + k] += out[l];
            }
}

// grad_block<T, n, OV> for a block of n <= CB input channels known only at
// run time (the last block of a layer).
template <class T, int CB, int OV>
void grad_blocks(int64_t n, const Padded& L, const float* xps, const float* gt, int64_t images, int64_t C, int64_t O,
                 int64_t o0, int64_t c0, int64_t i, float* dw) {
    if constexpr (CB > 1)
        if (n < CB) return grad_blocks<T, CB - 1, OV>(n, L, xps, gt, images, C, O, o0, c0, i, dw);
    grad_block<T, CB, OV>(L, xps, gt, images, C, O, o0, c0, i, dw);
}

// The weight gradient of a run: blocks of 2 vectors of output channels x
// kGradChannels input channels x 3 taps where O allows (each broadcast then
// feeds 2 FMAs), else 1 vector x 2 kGradChannels; the last block of input
// channels takes what is left.
template <class T>
void weight_grad(const Padded& L, const float* xps, const float* gt, int64_t images, int64_t C, int64_t O, float* dw) {
    const bool two = O % (2 * T::kLanes) == 0;
    const int64_t ob = two ? 2 * T::kLanes : T::kLanes, cb = two ? T::kGradChannels : 2 * T::kGradChannels;
    for (int64_t o0 = 0; o0 < O; o0 += ob)
        for (int64_t c0 = 0; c0 < C; c0 += cb)
            for (int64_t i = 0; i < 3; ++i) {
                const int64_t n = std::min(cb, C - c0);
                if (two) grad_blocks<T, T::kGradChannels, 2>(n, L, xps, gt, images, C, O, o0, c0, i, dw);
                else grad_blocks<T, 2 * T::kGradChannels, 1>(n, L, xps, gt, images, C, O, o0, c0, i, dw);
            }
}

// The table conv3x3.cpp calls through.
template <class T>
constexpr Tiles tiles() {
    return Tiles{&panel<T, Padded>, &panel<T, Shifted>, &weight_grad<T>, T::kLanes};
}

}  // namespace
}  // namespace minnow::conv3x3
