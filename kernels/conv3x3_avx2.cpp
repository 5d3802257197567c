// The AVX2 + FMA tiles of the direct 3x3 convolution: conv3x3_kernels.h for
// 8-float vectors (conv3x3.cpp has the derivation, the layouts and the
// drivers). 16 ymm registers: forward tiles of 4 output channels x 3 vectors
// of pixels (12 accumulators, 3 loads, a broadcast), two passes per panel of
// 8; weight-gradient blocks of 2 input channels x 3 taps x 2 vectors of
// output channels (12 accumulators, 2 loads, a broadcast).
#include <immintrin.h>

#define MINNOW_TILE_TARGET __attribute__((target("avx2,fma")))
#include "kernels/conv3x3_kernels.h"

namespace minnow::conv3x3 {

namespace {

struct Avx2 {
    using V = __m256;
    static constexpr int kLanes = 8, kTileRows = 4, kTileVectors = 3, kGradChannels = 2;
    MINNOW_TILE_TARGET static V zero() { return _mm256_setzero_ps(); }
    MINNOW_TILE_TARGET static V load(const float* p) { return _mm256_loadu_ps(p); }
    MINNOW_TILE_TARGET static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
    MINNOW_TILE_TARGET static V add(V a, V b) { return _mm256_add_ps(a, b); }
    MINNOW_TILE_TARGET static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
    MINNOW_TILE_TARGET static V set1(float x) { return _mm256_set1_ps(x); }
};

}  // namespace

const Tiles avx2_tiles = tiles<Avx2>();

}  // namespace minnow::conv3x3
