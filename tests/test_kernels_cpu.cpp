// The instruction-set levels of kernels/cpu.h: names, overrides, what they
// switch (the direct 3x3 kernels, the bf16 GEMM's kernel), and MINNOW_ISA.
#include <cstdlib>
#include <string>

#include "core/error.h"
#include "kernels/conv3x3.h"
#include "kernels/cpu.h"
#include "kernels/gemm_bf16.h"
#include "test_helpers.h"

using namespace minnow;

TEST_CASE("kernels: instruction-set names go both ways, and a wrong one names the choices") {
    for (Isa isa : {Isa::generic, Isa::avx2, Isa::avx512, Isa::avx512_bf16, Isa::amx})
        CHECK(parse_isa(isa_name(isa)) == isa);
    CHECK_THROWS_WITH_AS(parse_isa("sse9"), doctest::Contains("generic|avx2|avx512|avx512_bf16|amx"), Error);
}

TEST_CASE("kernels: the supported levels run from generic up to the detected one") {
    const std::vector<Isa> isas = supported_isas();
    REQUIRE(!isas.empty());
    CHECK(isas.front() == Isa::generic);
    CHECK(isas.back() == detected_isa());
    for (Isa isa : isas) CHECK(isa_supported(isa));
    MESSAGE("detected: " << isa_name(detected_isa()) << "; " << kernels_info());
}

TEST_CASE("kernels: set_isa and ScopedIsa choose the kernels, and a level the CPU lacks is an error") {
    const Isa before = active_isa();
    for (Isa isa : supported_isas()) {
        CAPTURE(isa_name(isa));
        {
            ScopedIsa scoped(isa);
            CHECK(active_isa() == isa);
            CHECK(kernels_info().find(isa_name(isa)) != std::string::npos);
            CHECK(direct3x3_supported(8, 16, 16) == isa_active(Isa::avx512));
            CHECK(direct3x3_weight_grad_supported(16, 16, 16) == isa_active(Isa::avx512));
            CHECK(bf16::best_kernel() == (isa_active(Isa::amx) ? bf16::Kernel::Amx : bf16::Kernel::Portable));
        }
        CHECK(active_isa() == before);
    }
    if (detected_isa() != Isa::amx) {
        const Isa above = static_cast<Isa>(static_cast<int>(detected_isa()) + 1);
        CHECK_THROWS_WITH_AS(set_isa(above), doctest::Contains("this CPU supports at most"), Error);
        CHECK(active_isa() == before);
    }
}

// Run by itself with MINNOW_ISA set (tests/CMakeLists.txt: kernels_isa_env):
// the level comes from the environment. Without it, the detected level.
TEST_CASE("kernels: MINNOW_ISA chooses the level at start") {
    const char* env = std::getenv("MINNOW_ISA");
    if (!env) {
        CHECK(active_isa() == detected_isa());
        return;
    }
    CHECK(active_isa() == parse_isa(env));
    CHECK(kernels_info().find("MINNOW_ISA") != std::string::npos);
}
