// ReLU, Flatten, Identity, Dropout, residual add, init: PyTorch parity,
// gradcheck, train/eval behaviour, init statistics.
#include <algorithm>
#include <cmath>

#include "core/autograd.h"
#include "layers/activation.h"
#include "layers/conv2d.h"
#include "layers/dropout.h"
#include "layers/flatten.h"
#include "layers/init.h"
#include "layers/linear.h"
#include "test_layers_common.h"

using namespace minnow;
using namespace minnow::testing;

TEST_CASE("layers: ReLU matches PyTorch (gradient 0 at exactly 0)") {
    SafetensorsFile f = layer_fixture("relu");
    Tensor x = leaf(f, "relu.x");
    ReLU act;
    Tensor y = act(x);
    check_parity(y, f.get("relu.y"), "relu y");
    y.backward(f.get("relu.dy"));
    check_parity(x.grad(), f.get("relu.dx"), "relu dx");
    CHECK(x.grad().data()[0] == 0.f);  // x[0] is exactly 0
}

TEST_CASE("layers: Flatten matches PyTorch, Identity passes through") {
    SafetensorsFile f = layer_fixture("flatten");
    Tensor x = leaf(f, "flatten.x");
    Flatten flat;
    Tensor y = flat(x);
    check_parity(y, f.get("flatten.y"), "flatten y");
    y.backward(f.get("flatten.dy"));
    check_parity(x.grad(), f.get("flatten.dx"), "flatten dx");
    CHECK(Flatten(1, 2)(Tensor::zeros({2, 3, 4, 5})).shape() == Shape{2, 12, 5});
    CHECK(Flatten(0)(Tensor::zeros({2, 3, 4})).shape() == Shape{24});

    Identity id;
    Tensor z = Tensor::ones({2, 3});
    CHECK(id(z).same(z));
    CHECK(id.named_parameters().empty());
}

TEST_CASE("layers: residual add on [N, C, H, W] (and with a broadcast bias)") {
    Generator g(21);
    Tensor a = rand_leaf({2, 3, 4, 4}, g), b = rand_leaf({2, 3, 4, 4}, g);
    expect_gradcheck([](auto& v) { return relu(add(v[0], v[1])); }, {a, b});
    expect_gradcheck([](auto& v) { return add(v[0], v[1]); }, {a, rand_leaf({3, 1, 1}, g)});
}

TEST_CASE("layers: Dropout scales in train mode, is the identity in eval mode") {
    Generator g(7);
    Dropout drop(0.25f, &g);
    Tensor x = Tensor::full({100, 100}, 2.f);
    x.requires_grad_();
    Tensor y = drop(x);
    int64_t zeros = 0, others = 0;
    for (float v : y.to_vector()) {
        if (v == 0.f) ++zeros;
        else if (v != 2.f / 0.75f) ++others;
    }
    CHECK(others == 0);
    CHECK(std::fabs(zeros / 1e4 - 0.25) < 0.02);  // 10000 Bernoulli(0.25) draws: sd 0.0043
    // backward: the same mask, the same scale
    y.backward(Tensor::ones(y.shape()));
    int64_t mismatches = 0;
    for (int64_t i = 0; i < y.numel(); ++i) mismatches += x.grad().data()[i] != y.data()[i] / 2.f;
    CHECK(mismatches == 0);

    // a generator reseeded gives the same mask
    Generator g1(5), g2(5);
    CHECK(dropout(x, 0.5f, true, &g1).to_vector() == dropout(x, 0.5f, true, &g2).to_vector());

    drop.eval();
    CHECK(drop(x).same(x));
    drop.train();
    CHECK_FALSE(drop(x).same(x));
    CHECK(dropout(x, 0.f, true).same(x));
    Tensor all = dropout(x, 1.f, true, &g);
    const std::vector<float> dropped = all.to_vector();
    CHECK(std::count(dropped.begin(), dropped.end(), 0.f) == all.numel());
    CHECK(error_of([] { Dropout(1.5f); }).find("p must be in [0, 1]") != std::string::npos);

    // gradcheck with a fixed mask: reseed the generator on every call
    Generator gc(1);
    expect_gradcheck(
        [&](auto& v) {
            gc.manual_seed(42);
            return dropout(v[0], 0.3f, true, &gc);
        },
        {rand_leaf({4, 5}, g)});
    // a Dropout inside a Sequential follows the model's train()/eval()
    Sequential seq({std::make_shared<Dropout>(0.5f, &g)});
    seq.eval();
    CHECK(seq(x).same(x));
}

TEST_CASE("layers: init formulas (fans, gains) and statistics of the defaults") {
    using namespace minnow::init;
    Tensor w = Tensor::empty({64, 3, 3, 3});
    CHECK(calculate_fan_in_and_fan_out(w).fan_in == 27);
    CHECK(calculate_fan_in_and_fan_out(w).fan_out == 576);
    CHECK(calculate_gain("relu") == doctest::Approx(std::sqrt(2.0)));
    CHECK(calculate_gain("tanh") == doctest::Approx(5.0 / 3.0));
    CHECK(calculate_gain("conv2d") == 1.f);
    CHECK(calculate_gain("leaky_relu") == doctest::Approx(std::sqrt(2.0 / (1 + 1e-4))));
    CHECK(calculate_gain("leaky_relu", std::sqrt(5.f)) == doctest::Approx(std::sqrt(1.0 / 3.0)));
    CHECK(error_of([] { calculate_gain("swish"); }).find("swish") != std::string::npos);
    CHECK(error_of([] {
              Tensor b = Tensor::empty({4});
              kaiming_uniform_(b);
          }).find("[4]") != std::string::npos);

    // mean, variance and range of n samples against U(-b, b): var b^2/3
    auto check_uniform = [](const Tensor& t, double bound) {
        double s = 0, s2 = 0, mx = 0;
        for (float v : t.to_vector()) {
            s += v;
            s2 += double(v) * v;
            mx = std::max(mx, std::fabs(double(v)));
        }
        const double n = static_cast<double>(t.numel());
        CHECK(mx <= bound);
        CHECK(mx > 0.98 * bound);
        CHECK(std::fabs(s / n) < 0.02 * bound);
        CHECK(s2 / n == doctest::Approx(bound * bound / 3).epsilon(0.03));
    };
    auto check_normal = [](const Tensor& t, double std) {
        double s = 0, s2 = 0;
        for (float v : t.to_vector()) {
            s += v;
            s2 += double(v) * v;
        }
        const double n = static_cast<double>(t.numel());
        CHECK(std::fabs(s / n) < 0.02 * std);
        CHECK(std::sqrt(s2 / n) == doctest::Approx(std).epsilon(0.02));
    };
    Generator g(77);
    Conv2d conv(64, 32, 3, 1, 1, true, &g);  // fan_in 576: PyTorch bound 1/sqrt(576) = 1/24
    check_uniform(conv.weight, 1.0 / 24);
    for (float v : conv.bias.to_vector()) CHECK(std::fabs(v) <= 1.0 / 24);  // only 32 values: just the range
    Linear fc(400, 300, true, &g);
    check_uniform(fc.weight, 1.0 / 20);

    Tensor t = Tensor::empty({200, 300});
    check_uniform(kaiming_uniform_(t, 0.f, "fan_in", "relu", &g), std::sqrt(2.0) * std::sqrt(3.0 / 300));
    check_uniform(kaiming_uniform_(t, 0.f, "fan_out", "relu", &g), std::sqrt(2.0) * std::sqrt(3.0 / 200));
    check_normal(kaiming_normal_(t, 0.f, "fan_out", "relu", &g), std::sqrt(2.0 / 200));
    check_uniform(xavier_uniform_(t, 1.f, &g), std::sqrt(6.0 / 500));
    check_normal(xavier_normal_(t, 2.f, &g), 2 * std::sqrt(2.0 / 500));
    check_normal(normal_(t, 0.f, 0.5f, &g), 0.5);
    check_uniform(uniform_(t, -3.f, 3.f, &g), 3.0);
    const std::vector<float> z = zeros_(t).to_vector(), c = constant_(t, 1.5f).to_vector();
    CHECK(std::count(z.begin(), z.end(), 0.f) == t.numel());
    CHECK(std::count(c.begin(), c.end(), 1.5f) == t.numel());
    CHECK(error_of([&] { kaiming_normal_(t, 0.f, "fan_avg"); }).find("fan_avg") != std::string::npos);
}
