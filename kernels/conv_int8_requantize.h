// minnow/kernels/conv_int8_requantize.h (internal): requantize_row's
// arithmetic (kernels/conv_int8.h) for 16 channels of one pixel in AVX-512,
// shared by requantize_row_avx512 (conv_int8_avx512vnni.cpp) and the AMX
// convolution's tile epilogue (conv_int8_amx.cpp), which both include it
// under a target that has avx512f, avx512bw and avx512vl (level avx512).
//
// The same bits as the plain loop, clamp(nearbyint(v), lo, 127) with NaN to lo:
//   * the FMAs are the same single roundings (std::fma);
//   * c = VCVTPS2DQ(MINPS(127, v)) rounds in the current rounding mode, as
//     nearbyint does, after the upper clamp (the same result for a clamp to
//     a whole number); MINPS gives its second operand v when v is NaN, and
//     VCVTPS2DQ turns a NaN (or a v below -2^31) into -2^31;
//   * max(c, lo) in int32 then gives lo for those, as the loop does; c is
//     in [lo, 127], so VPMOVUSDB (bytes, unsigned saturation) keeps it.
// Only the lanes set in `lanes` are loaded and stored (a layer's last
// channels when 16 does not divide O). The maskz forms throughout: the plain
// ones start from _mm512_undefined, which g++ 12 warns of.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "kernels/conv_int8.h"

#define MINNOW_REQUANTIZE_TARGET __attribute__((target("avx512f,avx512bw,avx512vl")))

namespace minnow::int8 {

// The lanes of the 16 channels from o on, of O.
MINNOW_REQUANTIZE_TARGET inline __mmask16 lanes_from(int64_t o, int64_t O) {
    return O - o >= 16 ? __mmask16(0xffff) : static_cast<__mmask16>((1u << (O - o)) - 1);
}

// What requantize16 needs of 16 channels, loaded once for all the pixels.
struct Requantize16 {
    __m512 multiplier, offset, residual_multiplier, high;
    __m512i low;
    __mmask16 lanes;
};
MINNOW_REQUANTIZE_TARGET inline Requantize16 requantize16_constants(const float* m, const float* b, float rm, int lo,
                                                                    __mmask16 lanes) {
    return {_mm512_maskz_loadu_ps(lanes, m), _mm512_maskz_loadu_ps(lanes, b), _mm512_set1_ps(rm),
            _mm512_set1_ps(float(kActivationMax)), _mm512_set1_epi32(lo), lanes};
}

// out[l] = clamp(nearbyint(fma(acc[l], m[l], b[l]) (+ residual[l] * rm)), lo, 127) for the lanes l
// set; residual: null for none. The bytes are stored by a masked byte store
// from a register: VPMOVUSDB's own masked store to memory is several times slower.
MINNOW_REQUANTIZE_TARGET inline void requantize16(const int32_t* acc, const uint8_t* residual, const Requantize16& k,
                                                  uint8_t* out) {
    const __mmask16 lanes = k.lanes;
    const __m512 a = _mm512_maskz_cvtepi32_ps(lanes, _mm512_maskz_loadu_epi32(lanes, acc));
    __m512 v = _mm512_fmadd_ps(a, k.multiplier, k.offset);
    if (residual) {
        const __m128i r = _mm_maskz_loadu_epi8(lanes, residual);
        v = _mm512_fmadd_ps(_mm512_maskz_cvtepi32_ps(lanes, _mm512_maskz_cvtepu8_epi32(lanes, r)),
                            k.residual_multiplier, v);
    }
    const __m512 clamped = _mm512_maskz_min_ps(lanes, k.high, v);
    const __m512i c = _mm512_maskz_max_epi32(lanes, _mm512_maskz_cvtps_epi32(lanes, clamped), k.low);
    _mm_mask_storeu_epi8(out, lanes, _mm512_maskz_cvtusepi32_epi8(lanes, c));
}

}  // namespace minnow::int8
