// The AVX-512 tiles of the direct 3x3 convolution: conv3x3_kernels.h for
// 16-float vectors (conv3x3.cpp has the derivation, the layouts and the
// drivers). 32 zmm registers: forward tiles of 8 output channels x 3 vectors
// of pixels (24 accumulators, 3 loads, a broadcast); weight-gradient blocks
// of 4 input channels x 3 taps x 2 vectors of output channels (24).
#include <immintrin.h>

#define MINNOW_TILE_TARGET __attribute__((target("avx512f")))
#include "kernels/conv3x3_kernels.h"

namespace minnow::conv3x3 {

namespace {

struct Avx512 {
    using V = __m512;
    static constexpr int kLanes = 16, kTileRows = 8, kTileVectors = 3, kGradChannels = 4;
    MINNOW_TILE_TARGET static V zero() { return _mm512_setzero_ps(); }
    MINNOW_TILE_TARGET static V load(const float* p) { return _mm512_loadu_ps(p); }
    MINNOW_TILE_TARGET static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
    MINNOW_TILE_TARGET static V add(V a, V b) { return _mm512_add_ps(a, b); }
    MINNOW_TILE_TARGET static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
    MINNOW_TILE_TARGET static V set1(float x) { return _mm512_set1_ps(x); }
};

}  // namespace

const Tiles avx512_tiles = tiles<Avx512>();

}  // namespace minnow::conv3x3
