// The AVX512-VNNI tiles of the int8 convolution: conv_int8_tiles.h for
// 16-lane vectors. 32 zmm registers: 4 blocks of 16 output channels x 6
// pixels (24 accumulators), the 4 weight vectors and a broadcast; with fewer
// channels, more pixels (1 or 2 blocks x 12, 3 x 8). VPDPBUSD
// multiplies 4 unsigned activation bytes by 4 signed weight bytes and adds
// the four products to an int32 lane, 64 multiply-adds per instruction.
#include <immintrin.h>

#include <cstring>

#define MINNOW_TILE_TARGET __attribute__((target("avx512f,avx512bw,avx512vnni")))
#include "kernels/conv_int8_tiles.h"
#include "kernels/conv_int8_requantize.h"

namespace minnow::int8 {

namespace {

struct Avx512Vnni {
    using V = __m512i;
    static constexpr int kLanes = 16, kBlocks = 4, kPixels = 12;
    static constexpr int pixels(int64_t blocks) { return blocks <= 2 ? 12 : blocks == 3 ? 8 : 6; }
    MINNOW_TILE_TARGET static V zero() { return _mm512_setzero_si512(); }
    MINNOW_TILE_TARGET static V load(const int8_t* p) { return _mm512_loadu_si512(p); }
    MINNOW_TILE_TARGET static V broadcast(const uint8_t* p) {
        int32_t word;
        std::memcpy(&word, p, 4);
        return _mm512_set1_epi32(word);
    }
    MINNOW_TILE_TARGET static void store(int32_t* p, V v) { _mm512_storeu_si512(p, v); }
    MINNOW_TILE_TARGET static V dot(V acc, V a, V w) { return _mm512_dpbusd_epi32(acc, a, w); }
};

}  // namespace

void row_avx512vnni(const uint8_t* X, const ConvShape& s, const PackedWeights& w, int64_t oy, int32_t* acc) {
    row<Avx512Vnni>(X, s, w, oy, acc);
}

// requantize_row (conv_int8.h) in 16-channel vectors, for level avx512 (no
// VNNI needed; the arithmetic and why it gives the plain loop's bits:
// conv_int8_requantize.h). The compiler's own vectorisation of the plain
// loop spent most of its time on mask bookkeeping for the bytes it stores:
// 0.33 ns per value, as long as the AMX convolution that produced them took
// (Intel Xeon, family 6 model 167).
MINNOW_REQUANTIZE_TARGET void requantize_row_avx512(const int32_t* acc, int64_t pixels, int64_t O, int64_t Op,
                                                    const float* multiplier, const float* offset,
                                                    const Residual& residual, int lo, uint8_t* out,
                                                    int64_t out_stride) {
    for (int64_t o = 0; o < O; o += 16) {
        const Requantize16 k = requantize16_constants(multiplier + o, offset + o, residual.multiplier, lo, lanes_from(o, O));
        for (int64_t p = 0; p < pixels; ++p)
            requantize16(acc + p * Op + o, residual.bytes ? residual.bytes + p * residual.stride + o : nullptr, k,
                         out + p * out_stride + o);
    }
}

}  // namespace minnow::int8
