// The AVX-VNNI tiles of the int8 convolution: conv_int8_tiles.h for 8-lane
// vectors. 16 ymm registers: 1 block of 16 output channels (2 vectors) x 6
// pixels (12 accumulators), the 2 weight vectors and a broadcast. VPDPBUSD
// (the VEX form) does 32 multiply-adds per instruction.
#include <immintrin.h>

#include <cstring>

#define MINNOW_TILE_TARGET __attribute__((target("avx2,avxvnni")))
#include "kernels/conv_int8_tiles.h"

namespace minnow::int8 {

namespace {

struct AvxVnni {
    using V = __m256i;
    static constexpr int kLanes = 8, kBlocks = 1, kPixels = 6;
    static constexpr int pixels(int64_t) { return kPixels; }
    MINNOW_TILE_TARGET static V zero() { return _mm256_setzero_si256(); }
    MINNOW_TILE_TARGET static V load(const int8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
    MINNOW_TILE_TARGET static V broadcast(const uint8_t* p) {
        int32_t word;
        std::memcpy(&word, p, 4);
        return _mm256_set1_epi32(word);
    }
    MINNOW_TILE_TARGET static void store(int32_t* p, V v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
    MINNOW_TILE_TARGET static V dot(V acc, V a, V w) { return _mm256_dpbusd_avx_epi32(acc, a, w); }
};

}  // namespace

void row_avxvnni(const uint8_t* X, const ConvShape& s, const PackedWeights& w, int64_t oy, int32_t* acc) {
    row<AvxVnni>(X, s, w, oy, acc);
}

}  // namespace minnow::int8
