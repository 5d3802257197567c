// Helpers shared by the tests/test_layers_*.cpp files: fixtures, gradcheck
// with a readable failure, and a relative-error report.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <numeric>
#include <string>
#include <vector>

#include "core/gradcheck.h"
#include "core/ops.h"
#include "core/random.h"
#include "core/safetensors.h"
#include "kernels/cpu.h"
#include "test_helpers.h"

namespace minnow::testing {

inline SafetensorsFile layer_fixture(const std::string& name) {
    return load_safetensors(source_path("tests/fixtures/" + name + ".safetensors"));
}

// A fixture tensor as a fresh leaf (its own copy) that requires grad.
inline Tensor leaf(const SafetensorsFile& f, const std::string& name, bool requires_grad = true) {
    Tensor t = f.get(name).clone().detach();
    if (requires_grad) t.requires_grad_();
    return t;
}

// Checks `actual` against a PyTorch value to 1e-4 relative (an absolute floor
// of 1e-6 times the largest magnitude keeps near-zero elements meaningful),
// and reports the largest relative error seen (relative to max |expected|).
inline void check_parity(const Tensor& actual, const Tensor& expected, const std::string& what) {
    REQUIRE_MESSAGE(actual.defined(), what << ": undefined");
    float scale = 0.f;
    for (int64_t i = 0; i < expected.numel(); ++i) scale = std::max(scale, std::fabs(expected.data()[i]));
    Tensor e = expected.numel() == actual.numel() ? expected.reshape(actual.shape()).detach() : expected;
    check_close(actual, e, 1e-4, 1e-6 * std::max(scale, 1.f), what);
    double worst = 0;
    for (int64_t i = 0; i < actual.numel() && actual.numel() == expected.numel(); ++i)
        worst = std::max(worst, std::fabs(double(actual.data()[i]) - e.data()[i]) / std::max(scale, 1e-30f));
    // MINNOW_PARITY_REPORT=1 prints the achieved parity of every fixture tensor.
    const char* report = std::getenv("MINNOW_PARITY_REPORT");
    if (report && *report) MESSAGE(what << ": max |error| / max |expected| = " << worst);
}

inline void expect_gradcheck(const TensorFn& f, const std::vector<Tensor>& xs, GradcheckOptions o = {}) {
    GradcheckResult r = gradcheck(f, xs, o);
    CHECK_MESSAGE(r.ok, r.message);
}

// The instruction-set levels that choose different convolution kernels on
// this CPU: generic (im2col + GEMM everywhere) and, where the CPU has them,
// avx2 and avx512 (the direct 3x3 kernels' AVX2 and AVX-512 tiles).
inline std::vector<Isa> conv_isas() {
    std::vector<Isa> out;
    for (Isa isa : {Isa::generic, Isa::avx2, Isa::avx512})
        if (isa_supported(isa)) out.push_back(isa);
    return out;
}
inline std::vector<Isa> direct_isas() {
    std::vector<Isa> out = conv_isas();
    out.erase(out.begin());  // generic
    return out;
}

inline Tensor rand_leaf(const Shape& s, Generator& g, float lo = -1.f, float hi = 1.f) {
    Tensor t = Tensor::uniform(s, lo, hi, &g);
    t.requires_grad_();
    return t;
}

// Every element distinct and at least `gap` from every other (so max-based
// ops have a clean finite difference): a scrambled arange times gap.
inline Tensor distinct_leaf(const Shape& s, float gap = 0.05f) {
    Tensor t = Tensor::empty(s);
    const int64_t n = t.numel();
    int64_t step = 7;
    while (std::gcd(step, n) != 1) ++step;
    for (int64_t i = 0; i < n; ++i) t.data()[i] = static_cast<float>((i * step) % n - n / 2) * gap;
    t.requires_grad_();
    return t;
}

// Runs the message-producing statement and returns the Error's text ("" if none).
template <class F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

}  // namespace minnow::testing
