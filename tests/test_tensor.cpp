// Tensor basics: creation, views, broadcasting and reduction shape rules,
// values against hand-computed results.
#include "core/ops.h"
#include "core/random.h"
#include "test_helpers.h"

using namespace minnow;
using minnow::testing::check_close;
using minnow::testing::T;

TEST_CASE("creation") {
    CHECK(Tensor::zeros({2, 3}).to_vector() == std::vector<float>(6, 0.f));
    CHECK(Tensor::ones({4}).to_vector() == std::vector<float>(4, 1.f));
    CHECK(Tensor::full({2}, 7.f).to_vector() == std::vector<float>{7.f, 7.f});
    CHECK(Tensor::arange(4).to_vector() == std::vector<float>{0, 1, 2, 3});
    CHECK(Tensor::scalar(3.f).dim() == 0);
    CHECK(Tensor::scalar(3.f).item() == 3.f);
    CHECK_THROWS_AS(T({1, 2, 3}, {2, 2}), Error);
    CHECK_THROWS_AS(Tensor::ones({3}).item(), Error);
}

TEST_CASE("random tensors are reproducible from a seed and have the right moments") {
    Generator g1(42), g2(42);
    CHECK(Tensor::normal({100}, 0, 1, &g1).to_vector() == Tensor::normal({100}, 0, 1, &g2).to_vector());
    Generator g(7);
    Tensor u = Tensor::uniform({100000}, -2.f, 3.f, &g);
    CHECK(mean(u).item() == doctest::Approx(0.5).epsilon(0.02));
    CHECK(max(u).item() < 3.f);
    CHECK(max(neg(u)).item() <= 2.f);
    Tensor n = Tensor::normal({100000}, 1.f, 2.f, &g);
    CHECK(mean(n).item() == doctest::Approx(1.0).epsilon(0.03));
    CHECK(std::sqrt(var(n).item()) == doctest::Approx(2.0).epsilon(0.02));
}

TEST_CASE("generator state round-trips exactly") {
    Generator g(3);
    g.normal();  // leaves a spare normal cached
    auto st = g.state();
    std::vector<float> a{g.normal(), g.uniform(), g.normal()};
    Generator h(99);
    h.set_state(st);
    std::vector<float> b{h.normal(), h.uniform(), h.normal()};
    CHECK(a == b);
}

TEST_CASE("reshape is a view, flatten, errors name the shapes") {
    Tensor x = Tensor::arange(6);
    Tensor y = x.reshape({2, -1});
    CHECK(y.shape() == Shape{2, 3});
    y.data()[0] = 42.f;
    CHECK(x.data()[0] == 42.f);  // shares storage
    CHECK(Tensor::zeros({2, 3, 4}).flatten(1).shape() == Shape{2, 12});
    try {
        x.reshape({4, 2});
        FAIL("no error");
    } catch (const Error& e) {
        CHECK(std::string(e.what()).find("[6]") != std::string::npos);
        CHECK(std::string(e.what()).find("[4, 2]") != std::string::npos);
    }
}

TEST_CASE("broadcasting follows NumPy") {
    CHECK(broadcast_shapes({2, 1, 4}, {3, 1}, "t") == Shape{2, 3, 4});
    CHECK(broadcast_shapes({}, {5}, "t") == Shape{5});
    CHECK_THROWS_AS(broadcast_shapes({2, 3}, {4, 3}, "t"), Error);
    Tensor a = T({1, 2, 3}, {3, 1});
    Tensor b = T({10, 20}, {2});
    check_close(add(a, b), T({11, 21, 12, 22, 13, 23}, {3, 2}));
    check_close(mul(a, b), T({10, 20, 20, 40, 30, 60}, {3, 2}));
    check_close(sub(b, a), T({9, 19, 8, 18, 7, 17}, {3, 2}));
    check_close(div(b, a), T({10, 20, 5, 10, 10.f / 3, 20.f / 3}, {3, 2}));
    try {
        add(Tensor::zeros({2, 3}), Tensor::zeros({4, 3}));
        FAIL("no error");
    } catch (const Error& e) {
        const std::string msg = e.what();
        CHECK(msg.find("add") != std::string::npos);
        CHECK(msg.find("[2, 3]") != std::string::npos);
        CHECK(msg.find("[4, 3]") != std::string::npos);
    }
}

TEST_CASE("reductions over chosen axes, with and without keepdim") {
    Tensor x = T({1, 2, 3, 4, 5, 6}, {2, 3});
    check_close(sum(x), Tensor::scalar(21));
    check_close(sum(x, {0}), T({5, 7, 9}, {3}));
    check_close(sum(x, {1}, true), T({6, 15}, {2, 1}));
    check_close(mean(x, {-1}), T({2, 5}, {2}));
    check_close(var(x, {1}), T({1, 1}, {2}));                 // unbiased
    check_close(var(x, {1}, false), T({2.f / 3, 2.f / 3}, {2}));  // biased
    check_close(max(x, 0), T({4, 5, 6}, {3}));
    check_close(argmax(T({1, 3, 3, 0}, {4}), 0), Tensor::scalar(1));  // the first maximum
    Tensor y = Tensor::arange(24).reshape({2, 3, 4});
    CHECK(sum(y, {0, 2}).shape() == Shape{3});
    CHECK(sum(y, {0, 2}, true).shape() == Shape{1, 3, 1});
    std::vector<float> want(3, 0.f);
    for (int i = 0; i < 24; ++i) want[(i / 4) % 3] += i;
    check_close(sum(y, {0, 2}), T(want, {3}));
    CHECK_THROWS_AS(sum(x, {2}), Error);
}

TEST_CASE("unary math against hand values") {
    Tensor x = T({0.25f, 1.f, 4.f}, {3});
    check_close(sqrt(x), T({0.5f, 1.f, 2.f}, {3}));
    check_close(rsqrt(x), T({2.f, 1.f, 0.5f}, {3}));
    check_close(log(exp(x)), x);
    check_close(relu(T({-1, 0, 2}, {3})), T({0, 0, 2}, {3}));
    check_close(tanh(Tensor::scalar(0.5f)), Tensor::scalar(std::tanh(0.5f)));
    check_close(sigmoid(Tensor::scalar(0.f)), Tensor::scalar(0.5f));
    check_close(pow(x, 3.f), T({1.f / 64, 1.f, 64.f}, {3}));
    check_close(abs(T({-2, 3}, {2})), T({2, 3}, {2}));
}

TEST_CASE("matmul, transpose, permute, slice, cat") {
    Tensor a = T({1, 2, 3, 4, 5, 6}, {2, 3});
    Tensor b = T({1, 0, 0, 1, 1, 1}, {3, 2});
    check_close(matmul(a, b), T({4, 5, 10, 11}, {2, 2}));
    check_close(transpose(a, 0, 1), T({1, 4, 2, 5, 3, 6}, {3, 2}));
    Tensor c = Tensor::arange(24).reshape({2, 3, 4});
    Tensor p = permute(c, {2, 0, 1});
    CHECK(p.shape() == Shape{4, 2, 3});
    CHECK(p.at({3, 1, 2}) == c.at({1, 2, 3}));
    check_close(slice(a, 1, 1, 3), T({2, 3, 5, 6}, {2, 2}));
    check_close(slice(a, 1, 0, 3, 2), T({1, 3, 4, 6}, {2, 2}));
    check_close(cat({a, a}, 0), T({1, 2, 3, 4, 5, 6, 1, 2, 3, 4, 5, 6}, {4, 3}));
    check_close(cat({a, slice(a, 1, 0, 1)}, 1), T({1, 2, 3, 1, 4, 5, 6, 4}, {2, 4}));
    CHECK_THROWS_AS(matmul(a, a), Error);
    Tensor bb = Tensor::arange(12).reshape({2, 2, 3});
    Tensor bm = matmul(bb, permute(bb, {0, 2, 1}));
    CHECK(bm.shape() == Shape{2, 2, 2});
    CHECK(bm.at({1, 0, 1}) == doctest::Approx(6 * 9 + 7 * 10 + 8 * 11));
}

TEST_CASE("log_softmax is stable for large logits") {
    Tensor x = T({1000, 1001, 1002}, {1, 3});
    Tensor y = log_softmax(x, 1);
    Tensor ref = log_softmax(T({0, 1, 2}, {1, 3}), 1);
    check_close(y, ref, 1e-5, 1e-5);
    CHECK(sum(exp(y)).item() == doctest::Approx(1.0));
}
