// minnow/kernels/per_isa.h (internal): a plain C++ loop compiled once per
// instruction-set level and run at the level in use (kernels/cpu.h).
//
// Most loops of minnow are not hand-written kernels but plain C++ that the
// compiler vectorises (max pooling, layout copies). It vectorises them for
// the build's target: the building CPU in a native build, baseline x86-64
// (SSE2, 4 floats a vector, no blends) in a portable one (-DMINNOW_NATIVE=OFF),
// where such a loop ran up to 8x slower on the same CPU. per_isa::run()
// compiles one loop three times, inside functions with the target attributes
// of levels avx512 and avx2 (as the direct 3x3 tiles are) and without, and
// calls the copy active_isa() chooses, so MINNOW_ISA and ScopedIsa choose
// here too and a CPU never meets an instruction it lacks.
//
// A loop is a struct with one static member `run`, marked MINNOW_LOOP_BODY
// (always inlined: its body becomes part of each target function and is
// vectorised there, for that target):
//
//   struct Copy {
//       MINNOW_LOOP_BODY static void run(const float* x, int64_t n, float* y) {
//           for (int64_t i = 0; i < n; ++i) y[i] = x[i];
//       }
//   };
//   per_isa::run<Copy>(x, n, y);
//
// Keep OpenMP's parallel regions outside (call run() from inside one): the
// function GCC outlines for a region is not the target function. Arithmetic
// may round differently per level (an avx2 copy may contract a*b + c into an
// FMA): a loop whose bits must not depend on the level should only compare
// and move values, as the ones using this do.
#pragma once

#include "kernels/cpu.h"

#define MINNOW_LOOP_BODY __attribute__((always_inline)) inline

namespace minnow::per_isa {

#if MINNOW_X86
// The instruction sets of levels avx512 and avx2 (what detect() in cpu.cpp
// checks for them).
template <class Body, class... Args>
__attribute__((target("avx2,fma,avx512f,avx512bw,avx512dq,avx512vl"))) void run_avx512(Args... args) {
    Body::run(args...);
}
template <class Body, class... Args>
__attribute__((target("avx2,fma"))) void run_avx2(Args... args) {
    Body::run(args...);
}
#endif

template <class Body, class... Args>
void run(Args... args) {
#if MINNOW_X86
    if (isa_active(Isa::avx512)) return run_avx512<Body>(args...);
    if (isa_active(Isa::avx2)) return run_avx2<Body>(args...);
#endif
    Body::run(args...);
}

}  // namespace minnow::per_isa
