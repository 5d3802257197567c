// The instruction-set levels of kernels/cpu.h: names, overrides, what they
// switch (the direct 3x3 kernels, the bf16 GEMM's kernel), and MINNOW_ISA.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/random.h"
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
    MESSAGE("detected: " << std::string(isa_name(detected_isa())) << "; " << kernels_info());
}

TEST_CASE("kernels: set_isa and ScopedIsa choose the kernels, and a level the CPU lacks is an error") {
    const Isa before = active_isa();
    for (Isa isa : supported_isas()) {
        const std::string isa_text = isa_name(isa);
        CAPTURE(isa_text);
        {
            ScopedIsa scoped(isa);
            CHECK(active_isa() == isa);
            CHECK(kernels_info().find(isa_name(isa)) != std::string::npos);
            CHECK(direct3x3_supported(8, 16, 16) == isa_active(Isa::avx2));
            CHECK(direct3x3_weight_grad_supported(16, 16, 16) == isa_active(Isa::avx2));
            CHECK(direct3x3_weight_grad_supported(8, 16, 16) == (isa == Isa::avx2));  // one vector of 8
            const bf16::Kernel expected = isa == Isa::amx           ? bf16::Kernel::Amx
                                          : isa == Isa::avx512_bf16 ? bf16::Kernel::Avx512Bf16
                                          : isa == Isa::generic     ? bf16::Kernel::Portable
                                                                    : bf16::Kernel::Avx2;
            CHECK(bf16::best_kernel() == expected);
            CHECK(bf16::kernel_available(expected));
            // Where the bf16 GEMM widens to float32, kernels_info says it is no faster.
            CHECK((kernels_info().find("no faster than fp32") != std::string::npos) ==
                  !bf16::kernel_has_bf16_arithmetic(expected));
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

namespace {

// The direct 3x3 kernels' outputs for one problem at the active level: the
// forward of image 0 of x [N, C, H, W], its input gradient (the transposed
// packing, from dy [N, O, H, W]) and, where the level takes O, the weight
// gradient over the N images (else dw is empty).
struct DirectOut {
    std::vector<float> y, dx, dw;
};
DirectOut run_direct(const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& b,
                     const std::vector<float>& dy, int64_t N, int64_t C, int64_t H, int64_t W, int64_t O) {
    DirectOut out{std::vector<float>(O * H * W), std::vector<float>(C * H * W), {}};
    std::vector<float> packed(direct3x3_packed_floats(O, C));
    std::vector<float> scratch(std::max(direct3x3_scratch_floats(C, H, W), direct3x3_scratch_floats(O, H, W)));
    pack3x3_weights(w.data(), O, C, false, packed.data());
    conv3x3_direct(x.data(), C, H, W, packed.data(), O, b.data(), out.y.data(), scratch.data());
    pack3x3_weights(w.data(), O, C, true, packed.data());
    conv3x3_direct(dy.data(), O, H, W, packed.data(), C, nullptr, out.dx.data(), scratch.data());
    if (!direct3x3_weight_grad_supported(O, H, W)) return out;
    out.dw.assign(O * C * 9, 0.f);
    const int64_t run = direct3x3_weight_grad_images(H, W);
    std::vector<float> wscratch(direct3x3_weight_grad_scratch_floats(C, O, H, W));
    for (int64_t n0 = 0; n0 < N; n0 += run)
        conv3x3_direct_weight_grad(x.data() + n0 * C * H * W, dy.data() + n0 * O * H * W, std::min(run, N - n0), C, H,
                                   W, O, out.dw.data(), wscratch.data());
    return out;
}

}  // namespace

// The kernels themselves (kernels/conv3x3.h), without Conv2d's plan: at each
// level with direct kernels, against the definition in double, for widths
// 32, 16, 8, 4 (padded and shifted layouts), input channels in several
// blocks of 16 with a short last one (40), output channels of 3 panels of 8
// (24: one AVX2 vector of 8 a weight-gradient block) and of 32; and the AVX2
// and the AVX-512 tiles give the same bits.
TEST_CASE("kernels: the direct 3x3 kernels of each level against the definition, bit for bit across levels") {
    std::vector<Isa> levels;
    for (Isa isa : {Isa::avx2, Isa::avx512})
        if (isa_supported(isa)) levels.push_back(isa);
    if (levels.empty()) {
        MESSAGE("this CPU has no AVX2: no direct 3x3 kernels to test");
        return;
    }
    Generator gen(21);
    for (int64_t W : {32, 16, 8, 4})
        for (int64_t O : {24, 32}) {
            const int64_t N = 3, C = 40, H = W == 4 ? 4 : 8;
            CAPTURE(W);
            CAPTURE(O);
            std::vector<float> x(N * C * H * W), w(O * C * 9), b(O), dy(N * O * H * W);
            for (float& v : x) v = gen.uniform();
            for (float& v : w) v = gen.uniform() - 0.5f;
            for (float& v : b) v = gen.uniform();
            for (float& v : dy) v = gen.uniform() - 0.5f;
            auto X = [&](int64_t n, int64_t c, int64_t h, int64_t ww) -> double {
                return h < 0 || h >= H || ww < 0 || ww >= W ? 0.0 : x[((n * C + c) * H + h) * W + ww];
            };
            auto G = [&](int64_t n, int64_t o, int64_t h, int64_t ww) -> double {
                return h < 0 || h >= H || ww < 0 || ww >= W ? 0.0 : dy[((n * O + o) * H + h) * W + ww];
            };
            std::vector<DirectOut> outs;
            for (Isa isa : levels) {
                const std::string isa_text = isa_name(isa);
                CAPTURE(isa_text);
                ScopedIsa scoped(isa);
                REQUIRE(direct3x3_supported(O, H, W));
                REQUIRE(direct3x3_supported(C, H, W));
                // O = 24 is no multiple of the AVX-512 vectors of 16 output channels
                CHECK(direct3x3_weight_grad_supported(O, H, W) == (isa == Isa::avx2 || O % 16 == 0));
                outs.push_back(run_direct(x, w, b, dy, N, C, H, W, O));
                const DirectOut& d = outs.back();
                // |got - exact| / its bound: n terms summed in float err by at most
                // n * 2^-24 * (sum of |terms|); a wrong index errs by about the sum.
                const double eps = std::ldexp(1.0, -24);
                double worst = 0;
                for (int64_t o = 0; o < O; ++o)
                    for (int64_t h = 0; h < H; ++h)
                        for (int64_t ww = 0; ww < W; ++ww) {
                            double sum = b[o], mag = std::fabs(b[o]);
                            for (int64_t c = 0; c < C; ++c)
                                for (int i = 0; i < 3; ++i)
                                    for (int j = 0; j < 3; ++j) {
                                        const double t =
                                            w[((o * C + c) * 3 + i) * 3 + j] * X(0, c, h - 1 + i, ww - 1 + j);
                                        sum += t, mag += std::fabs(t);
                                    }
                            worst = std::max(worst,
                                             std::fabs(d.y[(o * H + h) * W + ww] - sum) / (mag * (9 * C + 1) * eps));
                        }
                for (int64_t c = 0; c < C; ++c)
                    for (int64_t h = 0; h < H; ++h)
                        for (int64_t ww = 0; ww < W; ++ww) {
                            double sum = 0, mag = 1e-30;
                            for (int64_t o = 0; o < O; ++o)
                                for (int i = 0; i < 3; ++i)
                                    for (int j = 0; j < 3; ++j) {
                                        const double t =
                                            w[((o * C + c) * 3 + i) * 3 + j] * G(0, o, h + 1 - i, ww + 1 - j);
                                        sum += t, mag += std::fabs(t);
                                    }
                            worst = std::max(worst, std::fabs(d.dx[(c * H + h) * W + ww] - sum) / (mag * 9 * O * eps));
                        }
                for (int64_t o = 0; o < O && !d.dw.empty(); ++o)
                    for (int64_t c = 0; c < C; ++c)
                        for (int i = 0; i < 3; ++i)
                            for (int j = 0; j < 3; ++j) {
                                double sum = 0, mag = 1e-30;
                                for (int64_t n = 0; n < N; ++n)
                                    for (int64_t h = 0; h < H; ++h)
                                        for (int64_t ww = 0; ww < W; ++ww) {
                                            const double t = G(n, o, h, ww) * X(n, c, h - 1 + i, ww - 1 + j);
                                            sum += t, mag += std::fabs(t);
                                        }
                                worst = std::max(worst, std::fabs(d.dw[((o * C + c) * 3 + i) * 3 + j] - sum) /
                                                           (mag * N * H * W * eps));
                            }
                INFO("worst error / bound " << worst);
                CHECK(worst <= 1.0);
            }
            if (outs.size() == 2) {
                CHECK(outs[0].y == outs[1].y);
                CHECK(outs[0].dx == outs[1].dx);
                if (!outs[0].dw.empty() && !outs[1].dw.empty()) CHECK(outs[0].dw == outs[1].dw);
            }
        }
}
