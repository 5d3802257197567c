// The AVX2 tiles of the int8 convolution: conv_int8_tiles.h for 8-lane
// vectors, for CPUs without VNNI. 16 ymm registers: 1 block of 16 output
// channels (2 vectors) x 4 pixels (8 accumulators), the 2 weight vectors, a
// broadcast, a product and the constant 1s.
//
// One VNNI multiply-add is three instructions here: VPMADDUBSW multiplies the
// unsigned activation bytes by the signed weight bytes and adds adjacent
// pairs into int16 (saturating: exact here, because activations are at most
// 127 and weights at most 127 in magnitude, so a pair is at most 32258;
// kernels/conv_int8.h), VPMADDWD by 1s adds adjacent int16 pairs into int32,
// and VPADDD adds that to the accumulator.
#define MINNOW_TILE_TARGET __attribute__((target("avx2")))
#include "kernels/conv_int8_tiles.h"

namespace minnow::int8 {

namespace {

struct Avx2 : Ymm {
    static constexpr int kPixels = 4;
    static constexpr int pixels(int64_t) { return kPixels; }
    MINNOW_TILE_TARGET static V dot(V acc, V a, V w) {
        const V pairs = _mm256_maddubs_epi16(a, w);                         // int16: a0 w0 + a1 w1, ...
        return _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));  // int32: 4 products
    }
};

}  // namespace

void row_avx2(const uint8_t* X, const ConvShape& s, const PackedWeights& w, int64_t oy, int32_t* acc) {
    row<Avx2>(X, s, w, oy, acc);
}

}  // namespace minnow::int8
