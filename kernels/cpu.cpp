// The instruction-set levels of kernels/cpu.h: detection, MINNOW_ISA, overrides.
#include "kernels/cpu.h"

#include <atomic>
#include <cstdlib>

#include "core/error.h"
#include "kernels/conv_int8.h"
#include "kernels/gemm_bf16.h"

#if MINNOW_X86
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace minnow {

namespace {

constexpr Isa kAll[] = {Isa::generic, Isa::avx2, Isa::avx512, Isa::avx512_bf16, Isa::amx};

#if MINNOW_X86
// Linux hands out the AMX tile registers (8 KB of state per thread) only to a
// process that asks: arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA).
// The permission is per process, so asking once covers every thread.
bool amx_permitted() {
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
}

// AMX-TILE and AMX-BF16 are bits 24 and 22 of EDX in CPUID leaf 7, subleaf 0.
// Asked of CPUID itself: clang before 16 has no "amx-*" names for
// __builtin_cpu_supports and refuses to compile them.
bool cpu_has_amx_bf16() {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    return (d >> 24 & 1) && (d >> 22 & 1);
}

Isa detect() {
    __builtin_cpu_init();
    if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) return Isa::generic;
    if (!(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
          __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")))
        return Isa::avx2;
    if (!__builtin_cpu_supports("avx512bf16")) return Isa::avx512;
    if (!(cpu_has_amx_bf16() && amx_permitted()))
        return Isa::avx512_bf16;
    return Isa::amx;
}
#else
Isa detect() { return Isa::generic; }
#endif

// How the level in use was chosen, for kernels_info().
enum class Source { detected, environment, set };

struct State {
    std::atomic<int> isa;
    std::atomic<int> source;
};

// The level from MINNOW_ISA, else the detected one: decided at first use.
State initial_state() {
    const char* env = std::getenv("MINNOW_ISA");
    if (!env || !*env) return State{{static_cast<int>(detected_isa())}, {static_cast<int>(Source::detected)}};
    const Isa isa = parse_isa(env);
    if (!isa_supported(isa))
        throw Error(std::string("MINNOW_ISA=") + env + ": this CPU supports at most " + isa_name(detected_isa()));
    return State{{static_cast<int>(isa)}, {static_cast<int>(Source::environment)}};
}

State& state() {
    static State s = initial_state();
    return s;
}

}  // namespace

Isa detected_isa() {
    static const Isa isa = detect();
    return isa;
}

bool isa_supported(Isa isa) { return static_cast<int>(isa) <= static_cast<int>(detected_isa()); }

Isa active_isa() { return static_cast<Isa>(state().isa.load(std::memory_order_relaxed)); }

void set_isa(Isa isa) {
    if (!isa_supported(isa))
        throw Error(std::string("set_isa(") + isa_name(isa) + "): this CPU supports at most " +
                    isa_name(detected_isa()));
    state().isa = static_cast<int>(isa);
    state().source = static_cast<int>(Source::set);
}

const char* isa_name(Isa isa) {
    switch (isa) {
        case Isa::generic: return "generic";
        case Isa::avx2: return "avx2";
        case Isa::avx512: return "avx512";
        case Isa::avx512_bf16: return "avx512_bf16";
        case Isa::amx: return "amx";
    }
    return "?";
}

Isa parse_isa(const std::string& name) {
    std::string choices;
    for (Isa isa : kAll) {
        if (name == isa_name(isa)) return isa;
        choices += std::string(choices.empty() ? "" : "|") + isa_name(isa);
    }
    throw Error("instruction set '" + name + "': expected one of " + choices);
}

std::vector<Isa> supported_isas() {
    std::vector<Isa> out;
    for (Isa isa : kAll)
        if (isa_supported(isa)) out.push_back(isa);
    return out;
}

std::string kernels_info() {
    const Isa isa = active_isa();
    const char* how[] = {"detected", "MINNOW_ISA", "set_isa"};
    return std::string("isa ") + isa_name(isa) + " (" + how[state().source.load()] + "): conv3x3 " +
           (isa_active(Isa::avx512) ? "direct avx512" : isa_active(Isa::avx2) ? "direct avx2" : "im2col + gemm") +
           ", bf16 gemm " +
           bf16::kernel_name(bf16::best_kernel()) +
           (bf16::kernel_has_bf16_arithmetic(bf16::best_kernel()) ? "" : " (widened to fp32: no faster than fp32)") +
           ", int8 conv " + int8::kernel_name(int8::best_kernel());
}

ScopedIsa::ScopedIsa(Isa isa) : saved_(active_isa()), saved_source_(state().source.load()) { set_isa(isa); }
ScopedIsa::~ScopedIsa() {
    state().isa = static_cast<int>(saved_);
    state().source = saved_source_;
}

}  // namespace minnow
