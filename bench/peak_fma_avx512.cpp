// bench_peak.cpp's FMA chains in AVX-512 F: 16 chains of 16-float zmm FMAs.
#include <immintrin.h>

#define MINNOW_PEAK_TARGET __attribute__((target("avx512f")))
#include "bench/peak_fma.h"

namespace minnow::peak {

namespace {

struct Avx512 {
    using V = __m512;
    MINNOW_PEAK_TARGET static V set1(float x) { return _mm512_set1_ps(x); }
    MINNOW_PEAK_TARGET static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
    MINNOW_PEAK_TARGET static V add(V a, V b) { return _mm512_add_ps(a, b); }
    MINNOW_PEAK_TARGET static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
};

}  // namespace

const FmaKernel avx512_fma{Isa::avx512, 16, 16, fma_chains<Avx512, 16>};

}  // namespace minnow::peak
