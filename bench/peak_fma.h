// The FMA-throughput kernels of bench_peak.cpp, one per instruction-set level
// with vector FMA (kernels/cpu.h): peak_fma_avx2.cpp (AVX2 + FMA, ymm) and
// peak_fma_avx512.cpp (AVX-512 F, zmm), each compiled for its own
// instructions only and entered only when the CPU has them.
//
// A kernel runs `rounds` rounds of kChains independent chains
// acc = acc * a + b. An FMA's result is ready only after its latency (4
// cycles on Zen 3-5 and on Intel since Skylake) and a core starts up to two
// per cycle, so at least 8 chains in flight are needed to keep both FMA
// pipes busy; the kernels run 12 (ymm: 12 + 2 constants fill 14 of the 16
// registers) and 16 (zmm, of 32). With a = 1 - 1e-6 and b = 1e-6 every chain
// tends to 1: no overflow, no subnormals (which are slow on some CPUs).
#pragma once

#include <cstdint>

#include "kernels/cpu.h"

namespace minnow::peak {

struct FmaKernel {
    Isa isa;              // the level it needs
    int lanes, chains;    // floats per vector, independent accumulators
    float (*run)(int64_t rounds);  // the sum of the accumulators, so the work is not optimised away
    double flops_per_round() const { return 2.0 * lanes * chains; }  // an FMA is 2 FLOPs per lane
};

extern const FmaKernel avx2_fma;    // peak_fma_avx2.cpp
extern const FmaKernel avx512_fma;  // peak_fma_avx512.cpp

#if defined(MINNOW_PEAK_TARGET)
// The chains for one vector type, Ops as in kernels/conv3x3_avx2.cpp.
template <class Ops, int kChains>
MINNOW_PEAK_TARGET float fma_chains(int64_t rounds) {
    using V = typename Ops::V;
    const V a = Ops::set1(1.f - 1e-6f), b = Ops::set1(1e-6f);
    V acc[kChains];
    for (int i = 0; i < kChains; ++i) acc[i] = Ops::set1(static_cast<float>(i));
    for (int64_t r = 0; r < rounds; ++r) {
#pragma GCC unroll 16
        for (int i = 0; i < kChains; ++i) acc[i] = Ops::fma(acc[i], a, b);
    }
    for (int i = 1; i < kChains; ++i) acc[0] = Ops::add(acc[0], acc[i]);
    float lanes[sizeof(V) / sizeof(float)];
    Ops::store(lanes, acc[0]);
    float sum = 0;
    for (float x : lanes) sum += x;
    return sum;
}
#endif

}  // namespace minnow::peak
