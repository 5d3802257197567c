// MaxPool2d, AvgPool2d, AdaptiveAvgPool2d: PyTorch parity (including max-pool
// ties and indices), gradcheck, errors.
#include "core/autograd.h"
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
