// Helpers shared by the normalisation-layer tests (tests/test_norm_*.cpp).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/gradcheck.h"
#include "core/ops.h"
#include "core/random.h"
#include "core/safetensors.h"
#include "test_helpers.h"

namespace minnow::testing::norm {

// The fixture tolerance: 1e-4 relative, with a small absolute floor for the
// elements that are close to zero.
constexpr double kFixtureRtol = 1e-4;
constexpr double kFixtureAtol = 1e-6;

inline SafetensorsFile fixture(const std::string& file) {
    return load_safetensors(source_path("tests/fixtures/" + file));
}

// A fresh leaf holding a copy of t (the fixture tensors are never modified).
inline Tensor leaf(const Tensor& t, bool requires_grad = true) {
    Tensor x = t.detach().clone();
    if (requires_grad) x.requires_grad_();
    return x;
}

inline void expect_gradcheck(const TensorFn& f, const std::vector<Tensor>& xs, const std::string& what,
                             GradcheckOptions o = {}) {
    GradcheckResult r = gradcheck(f, xs, o);
    CHECK_MESSAGE(r.ok, what << ": " << r.message);
}

// x ~ N(0,1) * scale_c + offset_c per channel (dim 1), so every channel has
// its own non-trivial statistics.
inline Tensor channel_input(const Shape& shape, Generator& gen, bool requires_grad = true) {
    Tensor x = Tensor::normal(shape, 0.f, 1.f, &gen);
    const int64_t N = shape[0], C = shape[1], S = x.numel() / (N * C);
    std::vector<float> scale(C), offset(C);
    for (int64_t c = 0; c < C; ++c) {
        scale[c] = 0.5f + 1.5f * gen.uniform();
        offset[c] = 2.f * gen.uniform() - 1.f;
    }
    for (int64_t n = 0; n < N; ++n)
        for (int64_t c = 0; c < C; ++c)
            for (int64_t s = 0; s < S; ++s) {
                float& v = x.data()[(n * C + c) * S + s];
                v = v * scale[c] + offset[c];
            }
    if (requires_grad) x.requires_grad_();
    return x;
}

inline Tensor param(int64_t C, Generator& gen, float lo, float hi) {
    Tensor p = Tensor::uniform({C}, lo, hi, &gen);
    p.requires_grad_();
    return p;
}

}  // namespace minnow::testing::norm
