// The AVX-VNNI tiles of the int8 convolution: conv_int8_tiles.h for 8-lane
// vectors. 16 ymm registers: 1 block of 16 output channels (2 vectors) x 6
// pixels (12 accumulators), the 2 weight vectors and a broadcast. VPDPBUSD
// (the VEX form) does 32 multiply-adds per instruction.
#define MINNOW_TILE_TARGET __attribute__((target("avx2,avxvnni")))
#include "kernels/conv_int8_tiles.h"

namespace minnow::int8 {

namespace {

struct AvxVnni : Ymm {
    static constexpr int kPixels = 6;
    static constexpr int pixels(int64_t) { return kPixels; }
    MINNOW_TILE_TARGET static V dot(V acc, V a, V w) { return _mm256_dpbusd_avx_epi32(acc, a, w); }
};

}  // namespace

void row_avxvnni(const uint8_t* X, const ConvShape& s, const PackedWeights& w, int64_t oy, int32_t* acc) {
    row<AvxVnni>(X, s, w, oy, acc);
}

}  // namespace minnow::int8
