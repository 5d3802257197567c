// The int8 convolution (kernels/conv_int8.h): every kernel this machine has
// against the definition, bit for bit, over the shape classes the tiles
// split a row into; the extreme values that would saturate VPMADDUBSW with
// 8-bit activations; the loops around the convolution; and the convolution
// with its requantization in one call.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/error.h"
#include "kernels/conv_int8.h"
#include "kernels/cpu.h"

using namespace minnow;
namespace q8 = minnow::int8;

namespace {

// acc by the definition: x [C][H][W] bytes, zero-padded by `border`; W [O][C][kh][kw].
std::vector<int32_t> reference(const std::vector<uint8_t>& x, const std::vector<int8_t>& w, const q8::ConvShape& s,
                               uint8_t border) {
    std::vector<int32_t> acc(s.Ho() * s.Wo() * s.Op(), 0);
    for (int64_t oy = 0; oy < s.Ho(); ++oy)
        for (int64_t ox = 0; ox < s.Wo(); ++ox)
            for (int64_t o = 0; o < s.O; ++o) {
                int64_t sum = 0;
                for (int64_t c = 0; c < s.C; ++c)
                    for (int64_t i = 0; i < s.kh; ++i)
                        for (int64_t j = 0; j < s.kw; ++j) {
                            const int64_t y = oy * s.stride + i - s.pad, xx = ox * s.stride + j - s.pad;
                            const int v = y >= 0 && y < s.H && xx >= 0 && xx < s.W ? x[(c * s.H + y) * s.W + xx] : border;
                            sum += v * w[((o * s.C + c) * s.kh + i) * s.kw + j];
                        }
                acc[(oy * s.Wo() + ox) * s.Op() + o] = static_cast<int32_t>(sum);
            }
    return acc;
}

// x into the padded, channels-last layout, padding channels set to junk (their weights are 0).
std::vector<uint8_t> padded(const std::vector<uint8_t>& x, const q8::ConvShape& s, uint8_t border) {
    std::vector<uint8_t> X(s.input_bytes(), border);
    for (int64_t h = 0; h < s.Hp(); ++h)
        for (int64_t w = 0; w < s.Wp(); ++w)
            for (int64_t c = s.C; c < s.Cp(); ++c) X[(h * s.Wp() + w) * s.Cp() + c] = 99;
    for (int64_t c = 0; c < s.C; ++c)
        for (int64_t h = 0; h < s.H; ++h)
            for (int64_t w = 0; w < s.W; ++w)
                X[((h + s.edge()) * s.Wp() + w + s.edge()) * s.Cp() + c] = x[(c * s.H + h) * s.W + w];
    return X;
}

std::string describe(const q8::ConvShape& s) {
    return "C " + std::to_string(s.C) + " H " + std::to_string(s.H) + " W " + std::to_string(s.W) + " O " +
           std::to_string(s.O) + " k " + std::to_string(s.kh) + "x" + std::to_string(s.kw) + " stride " +
           std::to_string(s.stride) + " pad " + std::to_string(s.pad);
}

// Every kernel's rows [0, Ho) (and a middle range) against the definition; only channels < O are compared.
void check_all_kernels(const std::vector<uint8_t>& x, const std::vector<int8_t>& w, const q8::ConvShape& s,
                       uint8_t border) {
    const auto want = reference(x, w, s, border);
    const auto X = padded(x, s, border);
    const auto packed = q8::pack_weights(w.data(), s.O, s.C, s.kh, s.kw);
    for (q8::Kernel k : q8::available_kernels()) {
        CAPTURE(q8::kernel_name(k));
        CAPTURE(describe(s));
        std::vector<int32_t> got(s.Ho() * s.Wo() * s.Op(), -1);
        q8::conv(X.data(), s, packed, 0, s.Ho(), got.data(), k);
        int64_t wrong = 0;
        for (int64_t p = 0; p < s.Ho() * s.Wo(); ++p)
            for (int64_t o = 0; o < s.O; ++o) wrong += got[p * s.Op() + o] != want[p * s.Op() + o];
        CHECK(wrong == 0);
        if (s.Ho() > 2) {  // a row range starting inside the image writes from its first row
            std::vector<int32_t> part((s.Ho() - 2) * s.Wo() * s.Op(), -1);
            q8::conv(X.data(), s, packed, 1, s.Ho() - 1, part.data(), k);
            int64_t off = 0;
            for (int64_t p = 0; p < (s.Ho() - 2) * s.Wo(); ++p)
                for (int64_t o = 0; o < s.O; ++o) off += part[p * s.Op() + o] != want[(p + s.Wo()) * s.Op() + o];
            CHECK(off == 0);
        }
    }
}

// Every kernel's conv_requantize of rows [1, Ho) against conv, then
// requantize_row row by row (the portable kernel), with and without a
// residual; the bytes between pixels and rows that it must not write stay put.
void check_conv_requantize(const std::vector<uint8_t>& X, const std::vector<int8_t>& w, const q8::ConvShape& s,
                           std::mt19937& rng) {
    if (s.Ho() < 2) return;
    const auto packed = q8::pack_weights(w.data(), s.O, s.C, s.kh, s.kw);
    const int64_t rows = s.Ho() - 1, Wo = s.Wo(), stride = s.O + 3, row_stride = Wo * stride + 5;
    std::vector<float> m(s.O), b(s.O);
    std::uniform_real_distribution<float> scale(0.0005f, 0.004f), shift(-20.f, 60.f);
    for (int64_t o = 0; o < s.O; ++o) m[o] = scale(rng), b[o] = shift(rng);
    std::vector<uint8_t> residual(rows * row_stride);
    for (auto& v : residual) v = static_cast<uint8_t>(rng() % 128);
    std::vector<int32_t> acc(Wo * s.Op());
    for (bool with_residual : {false, true}) {
        const q8::Residual res = with_residual ? q8::Residual{residual.data(), stride, 0.37f} : q8::Residual{};
        std::vector<uint8_t> want(rows * row_stride, 200);
        for (int64_t y = 0; y < rows; ++y) {
            q8::conv(X.data(), s, packed, y + 1, y + 2, acc.data(), q8::Kernel::Portable);
            q8::Residual r = res;
            if (r.bytes) r.bytes += y * row_stride;
            q8::requantize_row(acc.data(), Wo, s.O, s.Op(), m.data(), b.data(), r, 5, want.data() + y * row_stride,
                               stride);
        }
        for (q8::Kernel k : q8::available_kernels()) {
            CAPTURE(q8::kernel_name(k));
            CAPTURE(describe(s));
            CAPTURE(with_residual);
            std::vector<uint8_t> got(rows * row_stride, 200);
            q8::conv_requantize(X.data(), s, packed, 1, s.Ho(),
                                {m.data(), b.data(), res, row_stride, 5, got.data(), stride, row_stride}, k);
            int64_t wrong = 0;
            for (size_t i = 0; i < got.size(); ++i) wrong += got[i] != want[i];
            CHECK(wrong == 0);
        }
    }
}

}  // namespace

TEST_CASE("int8: every kernel equals the definition, bit for bit, for every shape class") {
    std::mt19937 rng(7);
    std::uniform_int_distribution<int> act(0, q8::kActivationMax), wt(-q8::kWeightMax, q8::kWeightMax);
    // Channels that are and are not multiples of 4 (a word) and 16 (a block),
    // widths that fill whole tiles (6, 4 pixels) and leave every remainder,
    // 1x1 and 3x3, strides 1 and 2, padding 0 and 1, borders wider than the padding;
    // for AMX's tiles (16 pixels x 16 channels x up to 64 bytes of channels):
    // rows of 16, 32 and more pixels with and without a remainder, an odd
    // number of blocks, channels in 1, 2 and 3 equal steps (28: an image's
    // first conv as patches, 96 and 100 in steps of 48 and 100/5 = 20 bytes).
    const std::vector<q8::ConvShape> shapes = {
        {3, 8, 8, 64, 3, 3, 1, 1},    {64, 9, 13, 64, 3, 3, 1, 1}, {16, 5, 24, 16, 3, 3, 1, 1},
        {5, 7, 7, 24, 3, 3, 2, 1},    {32, 6, 11, 80, 1, 1, 2, 0}, {12, 4, 4, 256, 3, 3, 1, 1},
        {128, 4, 4, 128, 3, 3, 1, 1}, {7, 3, 1, 40, 3, 3, 1, 1},   {8, 6, 6, 17, 3, 3, 1, 0},
        {20, 5, 33, 48, 3, 3, 1, 1},
        {28, 3, 37, 64, 1, 1, 1, 0},  {64, 4, 16, 48, 3, 3, 1, 1}, {96, 3, 32, 32, 3, 3, 1, 1},
        {100, 3, 18, 16, 3, 3, 1, 1}, {64, 5, 35, 32, 3, 3, 2, 1},
        // a buffer with a wider border than the conv's padding (a ResNet block's 1x1 shortcut)
        {16, 8, 8, 32, 1, 1, 2, 0, 1},  {16, 7, 9, 16, 3, 3, 1, 1, 2},
    };
    for (const auto& s : shapes) {
        std::vector<uint8_t> x(s.C * s.H * s.W);
        std::vector<int8_t> w(s.O * s.C * s.kh * s.kw);
        for (auto& v : x) v = static_cast<uint8_t>(act(rng));
        for (auto& v : w) v = static_cast<int8_t>(wt(rng));
        const auto border = static_cast<uint8_t>(act(rng));
        check_all_kernels(x, w, s, border);
        check_conv_requantize(padded(x, s, border), w, s, rng);
    }
}

TEST_CASE("int8: the largest products do not saturate (activations 127, weights +-127)") {
    // VPMADDUBSW adds pairs into int16; at the limits a pair is 2*127*127 =
    // 32258 < 32767 (kernels/conv_int8.h). All 127 with all +127 (or -127)
    // weights gives the largest sums of either sign; alternating signs the
    // largest cancellation.
    const q8::ConvShape s{64, 6, 14, 32, 3, 3, 1, 1};
    std::vector<uint8_t> x(s.C * s.H * s.W, q8::kActivationMax);
    for (int sign : {1, -1, 0}) {
        std::vector<int8_t> w(s.O * s.C * 9);
        for (size_t i = 0; i < w.size(); ++i)
            w[i] = static_cast<int8_t>(sign != 0 ? sign * q8::kWeightMax : (i % 2 ? q8::kWeightMax : -q8::kWeightMax));
        CAPTURE(sign);
        check_all_kernels(x, w, s, q8::kActivationMax);
    }
    // and the sums are what they should be: 64 channels x 9 taps x 127 x 127 in the middle of the image
    std::vector<int8_t> w(s.O * s.C * 9, q8::kWeightMax);
    const auto X = padded(x, s, q8::kActivationMax);
    std::vector<int32_t> acc(s.Ho() * s.Wo() * s.Op());
    q8::conv(X.data(), s, q8::pack_weights(w.data(), s.O, s.C, 3, 3), 0, s.Ho(), acc.data());
    CHECK(acc[(2 * s.Wo() + 3) * s.Op()] == 64 * 9 * 127 * 127);
}

TEST_CASE("int8: the kernel follows the instruction-set level, and bad shapes and weights are refused") {
    for (Isa isa : supported_isas()) {
        ScopedIsa scoped(isa);
        const q8::Kernel k = q8::best_kernel();
        CAPTURE(isa_name(isa));
        CHECK(q8::kernel_available(k));
        if (isa == Isa::generic) CHECK(k == q8::Kernel::Portable);
        else CHECK(k != q8::Kernel::Portable);
        if (!isa_active(Isa::avx512)) CHECK(k != q8::Kernel::Avx512Vnni);
    }
    CHECK(q8::available_kernels().front() == q8::Kernel::Portable);
    const std::vector<int8_t> w(9, -128), ok(9, 1);
    CHECK_THROWS_WITH_AS(q8::pack_weights(w.data(), 1, 1, 3, 3), doctest::Contains("-128"), Error);
    const auto packed = q8::pack_weights(ok.data(), 1, 1, 3, 3);
    std::vector<uint8_t> X(64);
    std::vector<int32_t> acc(64);
    CHECK_THROWS_WITH_AS(q8::conv(X.data(), {1, 1, 1, 1, 3, 3, 1, 0}, packed, 0, 1, acc.data()),
                         doctest::Contains("smaller than the kernel"), Error);
    CHECK_THROWS_WITH_AS(q8::conv(X.data(), {2, 4, 4, 1, 3, 3, 1, 1}, packed, 0, 1, acc.data()),
                         doctest::Contains("does not match"), Error);
}

TEST_CASE("int8: quantize_image rounds half to even, clamps, pads, and reports NaN and infinity") {
    // C 2, H 1, W 3; scale 1/2 (inv 2), zero 10, pad 1: q = clamp(nearbyint(2x) + 10, 0, 127).
    const std::vector<float> x = {0.25f, 0.75f, -1.25f, 100.f, -100.f, 0.f};
    std::vector<uint8_t> out(3 * 5 * 4, 0xff);
    REQUIRE(q8::quantize_image(x.data(), 2, 1, 3, 2.f, 10, 1, out.data()));
    auto at = [&](int h, int w, int c) { return int(out[(h * 5 + w) * 4 + c]); };
    CHECK(at(1, 1, 0) == 10);   // 0.5 -> 0 (half to even)
    CHECK(at(1, 2, 0) == 12);   // 1.5 -> 2
    CHECK(at(1, 3, 0) == 8);    // -2.5 -> -2
    CHECK(at(1, 1, 1) == 127);  // clamped high
    CHECK(at(1, 2, 1) == 0);    // clamped low
    CHECK(at(1, 3, 1) == 10);
    CHECK(at(0, 0, 0) == 10);   // border: the zero point
    CHECK(at(2, 4, 1) == 10);
    CHECK(at(1, 2, 3) == 10);   // padding channel
    for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                      -std::numeric_limits<float>::infinity()}) {
        std::vector<float> y = x;
        y[4] = bad;
        CHECK_FALSE(q8::quantize_image(y.data(), 2, 1, 3, 2.f, 10, 1, out.data()));
    }
    // quantize_patches' row range must lie inside the image
    std::vector<uint8_t> patches(3 * 28);
    CHECK_THROWS_AS(q8::quantize_patches(x.data(), 2, 1, 3, 3, 2.f, 10, patches.data(), 0, 2), Error);
    CHECK_THROWS_AS(q8::quantize_patches(x.data(), 2, 1, 3, 3, 2.f, 10, patches.data(), 1, 0), Error);
}

TEST_CASE("int8: requantize_row and dequantize_row are the formula, with its clamps") {
    const std::vector<int32_t> acc = {100, -100, 7, 1000000, 5, 0};  // 2 pixels x 3 channels (Op 3 here)
    const std::vector<float> m = {0.5f, 0.25f, 0.1f}, b = {0.f, 30.f, -0.2f};
    std::vector<uint8_t> q(6);
    q8::requantize_row(acc.data(), 2, 3, 3, m.data(), b.data(), {}, 3, q.data(), 3);
    const std::vector<int> want = {50, 5, 3, 127, 31, 3};  // 50; 5; 0.5 -> 0, clamped to 3; 127; 31.25; -0.2 -> 3
    for (int i = 0; i < 6; ++i) CHECK(int(q[i]) == want[i]);
    std::vector<float> y(6);
    q8::dequantize_row(acc.data(), 2, 3, 3, m.data(), b.data(), {}, true, y.data(), 3);
    CHECK(y[0] == 50.f);
    CHECK(y[1] == 5.f);
    CHECK(y[5] == 0.f);  // relu(-0.2)
    q8::dequantize_row(acc.data(), 2, 3, 3, m.data(), b.data(), {}, false, y.data(), 3);
    CHECK(y[5] == -0.2f);
    CHECK(y[2] == std::fma(7.f, 0.1f, -0.2f));
    // with a residual: + 0.5 * r, r 4 bytes apart
    const std::vector<uint8_t> r = {10, 20, 30, 0, 1, 2, 3, 0};
    q8::requantize_row(acc.data(), 2, 3, 3, m.data(), b.data(), {r.data(), 4, 0.5f}, 0, q.data(), 3);
    CHECK(int(q[0]) == 55);  // 50 + 5
    CHECK(int(q[1]) == 15);  // 5 + 10
    CHECK(int(q[2]) == 16);  // 0.5 + 15 = 15.5: half to even
    CHECK(int(q[3]) == 127);
    CHECK(int(q[4]) == 32);  // 31.25 + 1
    CHECK(int(q[5]) == 1);   // -0.2 + 1.5 = 1.3
    q8::dequantize_row(acc.data(), 2, 3, 3, m.data(), b.data(), {r.data(), 4, 0.5f}, false, y.data(), 3);
    CHECK(y[5] == std::fma(3.f, 0.5f, -0.2f));
}
