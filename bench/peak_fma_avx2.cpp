// bench_peak.cpp's FMA chains in AVX2 + FMA: 12 chains of 8-float ymm FMAs.
// Compiled with -mno-avx512f (bench/CMakeLists.txt), so that on an AVX-512
// machine built with -march=native it is still the code an AVX2 CPU runs.
#include <immintrin.h>

#define MINNOW_PEAK_TARGET __attribute__((target("avx2,fma")))
#include "bench/peak_fma.h"

namespace minnow::peak {

namespace {

struct Avx2 {
    using V = __m256;
    MINNOW_PEAK_TARGET static V set1(float x) { return _mm256_set1_ps(x); }
    MINNOW_PEAK_TARGET static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
    MINNOW_PEAK_TARGET static V add(V a, V b) { return _mm256_add_ps(a, b); }
    MINNOW_PEAK_TARGET static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
};

}  // namespace

const FmaKernel avx2_fma{Isa::avx2, 8, 12, fma_chains<Avx2, 12>};

}  // namespace minnow::peak
