// The engine: accumulation, graph release, no-grad scope, deep graphs,
// user-written nodes.
#include "core/autograd.h"
#include "core/ops.h"
#include "test_helpers.h"

using namespace minnow;
using minnow::testing::check_close;
using minnow::testing::T;

TEST_CASE("backward of a small expression matches hand derivatives") {
    // L = sum(a * b + a), dL/da = b + 1, dL/db = a
    Tensor a = T({1, 2, 3}, {3}), b = T({4, 5, 6}, {3});
    a.requires_grad_();
    b.requires_grad_();
    sum(add(mul(a, b), a)).backward();
    check_close(a.grad(), T({5, 6, 7}, {3}));
    check_close(b.grad(), T({1, 2, 3}, {3}));
}

TEST_CASE("gradients accumulate across backward calls until zero_grad") {
    Tensor w = T({2}, {1});
    w.requires_grad_();
    sum(mul(w, 3.f)).backward();
    sum(mul(w, 3.f)).backward();
    check_close(w.grad(), T({6}, {1}));
    w.zero_grad();
    CHECK_FALSE(w.grad().defined());
}

TEST_CASE("a leaf used twice receives both contributions") {
    Tensor x = T({3}, {1});
    x.requires_grad_();
    sum(mul(x, x)).backward();  // d(x^2)/dx = 2x
    check_close(x.grad(), T({6}, {1}));
}

TEST_CASE("broadcast inputs get gradients summed back to their shape") {
    Tensor a = Tensor::ones({2, 3}), b = T({1, 2, 3}, {3});
    a.requires_grad_();
    b.requires_grad_();
    sum(mul(a, b)).backward();
    CHECK(b.grad().shape() == Shape{3});
    check_close(b.grad(), T({2, 2, 2}, {3}));
    check_close(a.grad(), T({1, 2, 3, 1, 2, 3}, {2, 3}));
}

TEST_CASE("the graph is released after backward") {
    Tensor x = T({1, 2}, {2});
    x.requires_grad_();
    Tensor y = sum(exp(x));
    y.backward();
    CHECK_THROWS_AS(y.backward(), Error);  // like PyTorch without retain_graph
}

TEST_CASE("no-grad scope records nothing") {
    Tensor x = T({1, 2}, {2});
    x.requires_grad_();
    {
        NoGradGuard ng;
        Tensor y = mul(exp(x), 2.f);
        CHECK_FALSE(y.requires_grad());
        CHECK((y.grad_fn() == nullptr));
        CHECK_FALSE(GradMode::is_enabled());
    }
    CHECK(GradMode::is_enabled());
    Tensor z = mul(x, 2.f);
    CHECK(z.requires_grad());
    CHECK((z.grad_fn() != nullptr));
    CHECK(std::string(z.grad_fn()->name()) == "MulScalarBackward");
}

TEST_CASE("detach cuts the graph, tensors without requires_grad record nothing") {
    Tensor x = T({1, 2}, {2});
    x.requires_grad_();
    Tensor d = mul(x, 2.f).detach();
    CHECK_FALSE(d.requires_grad());
    CHECK(d.is_leaf());
    Tensor c = T({1}, {1});
    CHECK((mul(c, 2.f).grad_fn() == nullptr));
    CHECK_THROWS_AS(sum(mul(c, 2.f)).backward(), Error);
}

TEST_CASE("a graph 100000 nodes deep does not overflow the stack") {
    Tensor x = T({1}, {1});
    x.requires_grad_();
    Tensor y = x;
    for (int i = 0; i < 100000; ++i) y = add(y, 0.f);
    sum(y).backward();
    check_close(x.grad(), T({1}, {1}));
}

TEST_CASE("non-leaf tensors do not keep grads, only inputs that need grad get one") {
    Tensor a = T({1, 2}, {2}), b = T({3, 4}, {2});
    a.requires_grad_();
    Tensor h = mul(a, b);
    sum(h).backward();
    CHECK_FALSE(h.grad().defined());
    CHECK_FALSE(b.grad().defined());
    check_close(a.grad(), b);
}

// A user-written node plugs in through the public interface (attach).
struct TimesThreeBackward : Node {
    std::vector<Tensor> backward(const Tensor& dy) override { return {mul(dy, 3.f)}; }
    const char* name() const override { return "TimesThreeBackward"; }
};

TEST_CASE("a user-written node joins the graph") {
    Tensor x = T({1, 2}, {2});
    x.requires_grad_();
    Tensor y = attach(mul(x.detach(), 3.f), std::make_shared<TimesThreeBackward>(), {x});
    CHECK(std::string(y.grad_fn()->name()) == "TimesThreeBackward");
    sum(square(y)).backward();  // d/dx (3x)^2 = 18x
    check_close(x.grad(), T({18, 36}, {2}));
}

struct WrongCountBackward : Node {
    std::vector<Tensor> backward(const Tensor& dy) override { return {dy, dy}; }
    const char* name() const override { return "WrongCountBackward"; }
};

TEST_CASE("a node returning the wrong number of gradients is a clear error") {
    Tensor x = T({1}, {1});
    x.requires_grad_();
    Tensor y = attach(x.detach().clone(), std::make_shared<WrongCountBackward>(), {x});
    try {
        sum(y).backward();
        FAIL("no error");
    } catch (const Error& e) {
        CHECK(std::string(e.what()).find("WrongCountBackward") != std::string::npos);
    }
}
