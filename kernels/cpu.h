// minnow/kernels/cpu.h: which instruction set the hand-written kernels use.
//
// minnow's hand-written kernels (the direct 3x3 convolution, the bfloat16
// GEMM, the int8 convolution) come in variants for instruction sets that not
// every x86-64 CPU has.
// The variant is chosen at run time, in one place, so that one binary (a
// portable build, -DMINNOW_NATIVE=OFF, as well as a native one) runs the
// fastest kernels the CPU has and never an instruction it lacks:
//
//   generic      plain C++ (the compiler vectorises for the build's target);
//                the 3x3 convolutions take im2col + GEMM, the bf16 GEMM its
//                portable kernel
//   avx2         AVX2 + FMA: the direct 3x3 convolution's AVX2 tiles, the
//                bf16 GEMM's AVX2 kernel (bf16 widened to fp32 in registers:
//                no faster than fp32, kernels/gemm_bf16.h)
//   avx512       AVX-512 F/BW/DQ/VL: the direct 3x3 convolution's AVX-512
//                tiles (the bf16 GEMM as at avx2)
//   avx512_bf16  avx512 + AVX512-BF16: the bf16 GEMM's VDPBF16PS kernel
//   amx          avx512_bf16 + AMX tiles (amx-tile, amx-bf16) that Linux lets
//                this process use: the bf16 GEMM's AMX kernel
//
// The int8 convolution (kernels/conv_int8.h) also looks at the CPU's VNNI
// flags, which are not levels of their own: AVX512-VNNI at level avx512 and
// above, AVX-VNNI at avx2 and above, else its AVX2 kernel at avx2 and above.
//
// Each level includes the ones before it. The level in use is, in order:
// set_isa() (or a ScopedIsa, for tests), the environment variable
// MINNOW_ISA=generic|avx2|avx512|avx512_bf16|amx (read once, at first use;
// a level the CPU lacks or a malformed value is an error), and otherwise the
// best the CPU supports (detected once with __builtin_cpu_supports).
//
// The kernels for a level are compiled with __attribute__((target(...))) on
// the innermost functions only, and entered only when active_isa() reaches
// that level; everything around them (layouts, packing, drivers) is
// ordinary code that runs on any x86-64 CPU. Plain loops that the compiler
// vectorises (max pooling) are compiled once per level the same way and
// entered at the level in use: kernels/per_isa.h.
#pragma once

#include <string>
#include <vector>

// Whether the x86-64 kernels exist in this build. On other targets
// (WebAssembly for the web page, ARM) their translation units are left out
// (CMakeLists.txt), detected_isa() is generic, and the code that calls them is
// compiled out with this switch, so only the plain C++ paths remain.
#if defined(__x86_64__)
#define MINNOW_X86 1
#else
#define MINNOW_X86 0
#endif

namespace minnow {

enum class Isa { generic = 0, avx2, avx512, avx512_bf16, amx };

// The best level this CPU (and, for amx, the operating system) supports.
Isa detected_isa();
// Whether the CPU can run the kernels of level `isa`: isa <= detected_isa().
bool isa_supported(Isa isa);
// The level the kernels use now (see the top).
Isa active_isa();
// Whether the kernels of level `isa` are in use: isa <= active_isa().
inline bool isa_active(Isa isa) { return static_cast<int>(isa) <= static_cast<int>(active_isa()); }
// Forces a level (an Error if the CPU lacks it). Not thread-safe against
// kernels running at the same time: set it between calls.
void set_isa(Isa isa);

// "generic", "avx2", "avx512", "avx512_bf16", "amx"; and back (an Error
// naming the choices for anything else).
const char* isa_name(Isa isa);
Isa parse_isa(const std::string& name);

// Every level up to detected_isa(), lowest first: what tests loop over.
std::vector<Isa> supported_isas();

// One line for logs: the level in use, how it was chosen, and the kernels it
// selects, e.g. "isa avx512_bf16 (detected): conv3x3 direct avx512, bf16 gemm
// avx512_bf16, int8 conv avx512_vnni"; a bf16 kernel without bf16 arithmetic is
// marked "no faster than fp32".
std::string kernels_info();

// Sets a level for its lifetime, then restores the one before (for tests).
class ScopedIsa {
public:
    explicit ScopedIsa(Isa isa);
    ~ScopedIsa();
    ScopedIsa(const ScopedIsa&) = delete;
    ScopedIsa& operator=(const ScopedIsa&) = delete;

private:
    Isa saved_;
    int saved_source_;
};

}  // namespace minnow
