// Linear: PyTorch parity, gradcheck, errors.
#include "core/autograd.h"
#include "layers/linear.h"
#include "test_layers_common.h"

using namespace minnow;
using namespace minnow::testing;

TEST_CASE("layers: Linear matches PyTorch (output and every gradient)") {
    SafetensorsFile f = layer_fixture("linear");
    Linear fc(5, 3);
    copy_(fc.weight, f.get("fc.weight"));
    copy_(fc.bias, f.get("fc.bias"));
    Tensor x = leaf(f, "fc.x");
    Tensor y = fc(x);
    check_parity(y, f.get("fc.y"), "linear y");
    y.backward(f.get("fc.dy"));
    check_parity(x.grad(), f.get("fc.dx"), "linear dx");
    check_parity(fc.weight.grad(), f.get("fc.dweight"), "linear dweight");
    check_parity(fc.bias.grad(), f.get("fc.dbias"), "linear dbias");
}

TEST_CASE("layers: Linear gradcheck, with and without bias, with leading dims") {
    Generator g(11);
    Tensor x = rand_leaf({4, 5}, g), w = rand_leaf({3, 5}, g), b = rand_leaf({3}, g);
    expect_gradcheck([](auto& v) { return linear(v[0], v[1], v[2]); }, {x, w, b});
    expect_gradcheck([](auto& v) { return linear(v[0], v[1]); }, {x, w});
    expect_gradcheck([](auto& v) { return linear(v[0], v[1], v[2]); }, {rand_leaf({2, 3, 5}, g), w, b});
}

TEST_CASE("layers: Linear module names, shapes and errors") {
    Linear fc(4, 2);
    auto params = fc.named_parameters();
    REQUIRE(params.size() == 2);
    CHECK(params[0].first == "weight");
    CHECK(params[0].second.shape() == Shape{2, 4});
    CHECK(params[1].first == "bias");
    CHECK(Linear(4, 2, false).named_parameters().size() == 1);
    CHECK(fc(Tensor::zeros({7, 4})).shape() == Shape{7, 2});
    CHECK(fc.repr() == "Linear(in_features=4, out_features=2, bias=True)");
    const std::string msg = error_of([&] { fc(Tensor::zeros({7, 3})); });
    CHECK(msg.find("Linear(4, 2)") != std::string::npos);
    CHECK(msg.find("[7, 3]") != std::string::npos);
    CHECK(msg.find("[*, 4]") != std::string::npos);
}
