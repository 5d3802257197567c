// MaxPool2d, AvgPool2d, AdaptiveAvgPool2d: PyTorch parity (including max-pool
// ties and indices), gradcheck, errors.
#include <cmath>

#include "core/autograd.h"
#include "kernels/cpu.h"
#include "layers/pooling.h"
#include "test_layers_common.h"

using namespace minnow;
using namespace minnow::testing;

TEST_CASE("layers: MaxPool2d matches PyTorch, ties go to the first maximum") {
    SafetensorsFile f = layer_fixture("maxpool2d");
    for (const std::string n : {"rand", "ties", "odd"}) {
        CAPTURE(n);
        Tensor x = leaf(f, n + ".x");
        MaxPoolResult r = max_pool2d_with_indices(x, 2);
        check_parity(r.output, f.get(n + ".y"), n + " y");
        check_close(r.indices, f.get(n + ".indices"), 0, 1e-12, n + " indices");  // exactly
        r.output.backward(f.get(n + ".dy"));
        check_parity(x.grad(), f.get(n + ".dx"), n + " dx");
        // the module gives the same
        MaxPool2d pool(2);
        check_close(pool(x), f.get(n + ".y"), 0, 1e-12, n + " module y");
    }
}

TEST_CASE("layers: MaxPool2d gradcheck (overlapping windows, padding, stride 1)") {
    Tensor x = distinct_leaf({2, 2, 5, 5});
    expect_gradcheck([](auto& v) { return max_pool2d(v[0], 2); }, {x});
    expect_gradcheck([](auto& v) { return max_pool2d(v[0], 3, 2, 1); }, {x});
    expect_gradcheck([](auto& v) { return max_pool2d(v[0], 2, 1); }, {x});
    // padding is -inf: an all-negative input never picks the padding
    Tensor neg = Tensor::full({1, 1, 2, 2}, -5.f);
    CHECK(max_pool2d(neg, 2, 2, 1).to_vector() == std::vector<float>{-5.f, -5.f, -5.f, -5.f});
}

// The definition, window by window: the first maximum in row-major window
// order, or the last NaN (a NaN always takes over, as in PyTorch's kernel).
static MaxPoolResult naive_max_pool(const Tensor& x, int64_t k, int64_t s) {
    const int64_t planes = x.size(0) * x.size(1), H = x.size(2), W = x.size(3);
    const int64_t Ho = (H - k) / s + 1, Wo = (W - k) / s + 1;
    Tensor y = Tensor::empty({x.size(0), x.size(1), Ho, Wo}), idx = Tensor::empty(y.shape());
    for (int64_t pl = 0; pl < planes; ++pl)
        for (int64_t oh = 0; oh < Ho; ++oh)
            for (int64_t ow = 0; ow < Wo; ++ow) {
                float best = -INFINITY;
                int64_t at = oh * s * W + ow * s;
                for (int64_t ih = oh * s; ih < oh * s + k; ++ih)
                    for (int64_t iw = ow * s; iw < ow * s + k; ++iw) {
                        const float v = x.data()[pl * H * W + ih * W + iw];
                        if (v > best || std::isnan(v)) best = v, at = ih * W + iw;
                    }
                y.data()[(pl * Ho + oh) * Wo + ow] = best;
                idx.data()[(pl * Ho + oh) * Wo + ow] = static_cast<float>(at);
            }
    return {y, idx};
}

// At every instruction-set level (its loop is compiled per level,
// kernels/per_isa.h), on a narrow image and on one wide enough for whole
// AVX-512 vectors of outputs and a tail.
TEST_CASE("layers: MaxPool2d without padding against the window-by-window definition (ties, NaN, -inf)") {
    for (const Shape& shape : {Shape{2, 3, 13, 17}, Shape{1, 2, 7, 75}}) {
        // Values from a few levels, so windows have ties; some NaNs and -infs.
        Generator g(21);
        Tensor x = Tensor::uniform(shape, 0.f, 4.f, &g);
        float* px = x.data();
        for (int64_t i = 0; i < x.numel(); ++i) px[i] = std::floor(px[i]);
        for (int64_t i = 5; i < x.numel(); i += 37) px[i] = NAN;
        for (int64_t i = 11; i < x.numel(); i += 29) px[i] = -INFINITY;
        for (int64_t i = 200; i < 240; ++i) px[i] = -INFINITY;  // whole windows of -inf
        const int64_t ks[][2] = {{2, 2}, {3, 2}, {2, 1}, {3, 3}, {1, 1}};
        for (Isa isa : supported_isas()) {
            ScopedIsa scoped(isa);
            for (const auto& ksz : ks) {
                CAPTURE(shape_str(shape));
                CAPTURE(std::string(isa_name(isa)));
                CAPTURE(ksz[0]);
                CAPTURE(ksz[1]);
                MaxPoolResult r = max_pool2d_with_indices(x, ksz[0], ksz[1]);
                MaxPoolResult ref = naive_max_pool(x, ksz[0], ksz[1]);
                REQUIRE(r.output.shape() == ref.output.shape());
                CHECK(r.indices.to_vector() == ref.indices.to_vector());
                for (int64_t i = 0; i < ref.output.numel(); ++i) {
                    const float a = r.output.data()[i], b = ref.output.data()[i];
                    if (!(a == b || (std::isnan(a) && std::isnan(b))))
                        FAIL_CHECK("output " << i << ": " << a << " vs " << b);
                }
            }
        }
    }
}

TEST_CASE("layers: AvgPool2d matches PyTorch, gradcheck") {
    SafetensorsFile f = layer_fixture("avgpool2d");
    for (const std::string n : {"rand", "odd"}) {
        CAPTURE(n);
        Tensor x = leaf(f, n + ".x");
        AvgPool2d pool(2);
        Tensor y = pool(x);
        check_parity(y, f.get(n + ".y"), n + " y");
        y.backward(f.get(n + ".dy"));
        check_parity(x.grad(), f.get(n + ".dx"), n + " dx");
    }
    Generator g(8);
    Tensor x = rand_leaf({2, 2, 5, 5}, g);
    expect_gradcheck([](auto& v) { return avg_pool2d(v[0], 2); }, {x});
    expect_gradcheck([](auto& v) { return avg_pool2d(v[0], 3, 2, 1); }, {x});
    // count_include_pad: a corner window of ones with padding 1 averages 4 ones over 9
    CHECK(avg_pool2d(Tensor::ones({1, 1, 4, 4}), 3, 2, 1).at({0, 0, 0, 0}) == doctest::Approx(4.0 / 9.0));
}

TEST_CASE("layers: AdaptiveAvgPool2d(1) matches PyTorch, gradcheck") {
    SafetensorsFile f = layer_fixture("adaptive_avg_pool2d");
    for (const std::string n : {"sq", "rect"}) {
        CAPTURE(n);
        Tensor x = leaf(f, n + ".x");
        AdaptiveAvgPool2d pool(1);
        Tensor y = pool(x);
        check_parity(y, f.get(n + ".y"), n + " y");
        y.backward(f.get(n + ".dy"));
        check_parity(x.grad(), f.get(n + ".dx"), n + " dx");
    }
    Generator g(9);
    expect_gradcheck([](auto& v) { return adaptive_avg_pool2d(v[0], 1); }, {rand_leaf({2, 3, 3, 4}, g)});
}

TEST_CASE("layers: pooling errors name the layer and the shape") {
    const std::string m = error_of([] { MaxPool2d(2)(Tensor::zeros({3, 4, 4})); });
    CHECK(m.find("MaxPool2d") != std::string::npos);
    CHECK(m.find("[3, 4, 4]") != std::string::npos);
    CHECK(error_of([] { AvgPool2d(3)(Tensor::zeros({1, 1, 2, 2})); }).find("smaller than the window") !=
          std::string::npos);
    CHECK(error_of([] { AdaptiveAvgPool2d(2); }).find("output_size 1") != std::string::npos);
    CHECK(error_of([] { adaptive_avg_pool2d(Tensor::zeros({2, 3})); }).find("[2, 3]") != std::string::npos);
    CHECK(error_of([] { MaxPool2d(2, 2, 2); }).find("MaxPool2d") != std::string::npos);
    CHECK(MaxPool2d(3, 2, 1).repr() == "MaxPool2d(kernel_size=3, stride=2, padding=1)");
}
