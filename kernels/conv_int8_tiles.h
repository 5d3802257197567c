// minnow/kernels/conv_int8_tiles.h (internal): the register tiles of the int8
// convolution (kernels/conv_int8.h), written once for any vector width.
//
// Included by one file per instruction set (conv_int8_avx512vnni.cpp,
// conv_int8_avxvnni.cpp, conv_int8_avx2.cpp), which first defines
//   MINNOW_TILE_TARGET  the __attribute__((target(...))) of its instruction set
// and defines its row function (declared in conv_int8.cpp) as row<T>() with its
// vector traits T:
//   T::V          the vector type (__m512i, __m256i) of int32 lanes
//   T::kLanes     int32 per vector (16, 8); a packed block of 16 output
//                 channels is 16 / kLanes vectors
//   T::kBlocks    blocks of 16 output channels per tile (at most)
//   T::kPixels    output pixels per tile (at most)
//   T::pixels(nb) output pixels per tile of nb blocks: fewer channels, more
//                 pixels, so that a tile has enough independent sums to
//                 hide the multiply-add's latency (about 10 on current CPUs)
//   T::zero(), load(const int8_t*) (kLanes x 4 weights), broadcast(const uint8_t*)
//   (4 activations, repeated in every lane), store(int32_t*, V), and
//   dot(acc, a, w): acc[l] += a[4l]*w[4l] + ... + a[4l+3]*w[4l+3] (a unsigned, w signed)
// so that kBlocks * 16/kLanes * kPixels accumulators, the weight vectors and a
// broadcast fit the register file (32 zmm, 16 ymm).
//
// A tile holds the accumulators of kBlocks*16 output channels x kPixels
// consecutive pixels of one output row. For each tap (i, j) and group of 4
// input channels it loads the weight vectors once and, pixel by pixel,
// broadcasts that pixel's 4 input bytes (one 32-bit word, channels last) and
// multiply-adds them into the pixel's accumulators. Integer sums are exact, so
// the order does not matter: every kernel gives the same bits.
//
// As in kernels/conv3x3_kernels.h, only these functions get the target
// attribute, and they sit in an anonymous namespace: each including file has
// its own, and nothing here is shared with code that runs on any CPU.
#pragma once

#ifndef MINNOW_TILE_TARGET
#error "define MINNOW_TILE_TARGET before including kernels/conv_int8_tiles.h"
#endif

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <utility>

#include "kernels/conv_int8.h"

namespace minnow::int8 {
namespace {

// What the two 256-bit instruction sets (AVX2, AVX-VNNI) share: everything
// but the multiply-add, dot().
struct Ymm {
    using V = __m256i;
    static constexpr int kLanes = 8, kBlocks = 1;
    MINNOW_TILE_TARGET static V zero() { return _mm256_setzero_si256(); }
    MINNOW_TILE_TARGET static V load(const int8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
    MINNOW_TILE_TARGET static V broadcast(const uint8_t* p) {
        int32_t word;
        std::memcpy(&word, p, 4);
        return _mm256_set1_epi32(word);
    }
    MINNOW_TILE_TARGET static void store(int32_t* p, V v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
};

using TileFn = void (*)(const uint8_t* X, const ConvShape& s, const int8_t* w, int64_t oy, int64_t ox0,
                        int32_t* acc);

// NB blocks of output channels (from w, the first block's packed weights) x
// NP pixels from (oy, ox0); acc points at pixel ox0, channel of w's first block,
// of the output row ([Wo][Op]).
template <class T, int NB, int NP>
MINNOW_TILE_TARGET void tile(const uint8_t* X, const ConvShape& s, const int8_t* w, int64_t oy, int64_t ox0,
                             int32_t* acc) {
    using V = typename T::V;
    constexpr int per_block = static_cast<int>(kOutputBlock) / T::kLanes, NV = NB * per_block;
    const int64_t Cp = s.Cp(), groups = Cp / kChannelGroup, Op = s.Op(), Wp = s.Wp(), org = s.origin();
    const int64_t block_stride = s.kh * s.kw * groups * kChannelGroup * kOutputBlock;  // bytes per packed block
    V a[NV][NP];
    for (int v = 0; v < NV; ++v)
        for (int p = 0; p < NP; ++p) a[v][p] = T::zero();
    for (int64_t i = 0; i < s.kh; ++i)
        for (int64_t j = 0; j < s.kw; ++j) {
            const uint8_t* x[NP];
            for (int p = 0; p < NP; ++p)
                x[p] = X + ((oy * s.stride + i + org) * Wp + (ox0 + p) * s.stride + j + org) * Cp;
            const int8_t* wt = w + (i * s.kw + j) * groups * kChannelGroup * kOutputBlock;
            for (int64_t g = 0; g < groups; ++g) {
                V wv[NV];
                for (int v = 0; v < NV; ++v)
                    wv[v] = T::load(wt + (v / per_block) * block_stride + g * kChannelGroup * kOutputBlock +
                                    (v % per_block) * T::kLanes * kChannelGroup);
                for (int p = 0; p < NP; ++p) {
                    const V b = T::broadcast(x[p] + g * kChannelGroup);
                    for (int v = 0; v < NV; ++v) a[v][p] = T::dot(a[v][p], b, wv[v]);
                }
            }
        }
    for (int v = 0; v < NV; ++v)
        for (int p = 0; p < NP; ++p)
            T::store(acc + p * Op + (v / per_block) * kOutputBlock + (v % per_block) * T::kLanes, a[v][p]);
}

// Every tile shape a row needs: table[NB-1][NP-1], for the last blocks and
// pixels of a row that do not fill a whole tile.
template <class T, int NB, int... P>
constexpr std::array<TileFn, sizeof...(P)> tiles_of(std::integer_sequence<int, P...>) {
    return {&tile<T, NB, P + 1>...};
}
template <class T, int... B>
constexpr std::array<std::array<TileFn, T::kPixels>, sizeof...(B)> tile_table(std::integer_sequence<int, B...>) {
    return {tiles_of<T, B + 1>(std::make_integer_sequence<int, T::kPixels>{})...};
}

// One output row oy of the convolution: acc [Wo][Op].
template <class T>
void row(const uint8_t* X, const ConvShape& s, const PackedWeights& w, int64_t oy, int32_t* acc) {
    static constexpr auto table = tile_table<T>(std::make_integer_sequence<int, T::kBlocks>{});
    const int64_t blocks = s.Op() / kOutputBlock, Wo = s.Wo(), Op = s.Op();
    const int64_t block_stride = s.kh * s.kw * s.Cp() * kOutputBlock;
    for (int64_t b0 = 0; b0 < blocks; b0 += T::kBlocks) {
        const int64_t nb = std::min<int64_t>(T::kBlocks, blocks - b0), pixels = T::pixels(nb);
        for (int64_t ox = 0; ox < Wo; ox += pixels) {
            const int64_t np = std::min<int64_t>(pixels, Wo - ox);
            table[nb - 1][np - 1](X, s, w.values.data() + b0 * block_stride, oy, ox,
                                  acc + ox * Op + b0 * kOutputBlock);
        }
    }
}

}  // namespace
}  // namespace minnow::int8
