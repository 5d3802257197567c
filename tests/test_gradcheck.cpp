// Every differentiable op in core/ops.h passes gradcheck, and the checker
// catches a deliberately wrong backward.
#include "core/autograd.h"
#include "core/gradcheck.h"
#include "core/ops.h"
#include "core/random.h"
#include "test_helpers.h"

using namespace minnow;

namespace {

Generator gen(2024);

Tensor input(const Shape& s, float lo = -1.f, float hi = 1.f) {
    Tensor t = Tensor::uniform(s, lo, hi, &gen);
    t.requires_grad_();
    return t;
}

// Values kept away from zero (for kinks like relu/abs/max ties).
Tensor away_from_zero(const Shape& s) {
    Tensor t = Tensor::uniform(s, 0.2f, 1.f, &gen);
    for (int64_t i = 0; i < t.numel(); ++i)
        if (gen.uniform() < 0.5f) t.data()[i] = -t.data()[i];
    t.requires_grad_();
    return t;
}

void expect_ok(const TensorFn& f, const std::vector<Tensor>& xs, GradcheckOptions o = {}) {
    GradcheckResult r = gradcheck(f, xs, o);
    CHECK_MESSAGE(r.ok, r.message);
}

}  // namespace

TEST_CASE("gradcheck: broadcasting binary ops") {
    auto a = input({2, 3, 4}), b = input({3, 1});
    expect_ok([](auto& x) { return add(x[0], x[1]); }, {a, b});
    expect_ok([](auto& x) { return sub(x[0], x[1]); }, {a, b});
    expect_ok([](auto& x) { return mul(x[0], x[1]); }, {a, b});
    auto pos = input({3, 1}, 0.5f, 2.f);
    expect_ok([](auto& x) { return div(x[0], x[1]); }, {a, pos});
    expect_ok([](auto& x) { return div(x[1], x[0]); }, {pos, input({4}, 0.5f, 2.f)});
    auto c = away_from_zero({2, 3, 4});
    expect_ok([](auto& x) { return maximum(x[0], x[1]); }, {c, Tensor::zeros({4}).requires_grad_()});
}

TEST_CASE("gradcheck: scalar ops and unary math") {
    auto x = input({3, 4});
    auto pos = input({3, 4}, 0.5f, 2.f);
    auto nz = away_from_zero({3, 4});
    expect_ok([](auto& v) { return add(v[0], 2.5f); }, {x});
    expect_ok([](auto& v) { return mul(v[0], -1.5f); }, {x});
    expect_ok([](auto& v) { return neg(v[0]); }, {x});
    expect_ok([](auto& v) { return exp(v[0]); }, {x});
    expect_ok([](auto& v) { return log(v[0]); }, {pos});
    expect_ok([](auto& v) { return sqrt(v[0]); }, {pos});
    expect_ok([](auto& v) { return rsqrt(v[0]); }, {pos});
    expect_ok([](auto& v) { return pow(v[0], 2.5f); }, {pos});
    expect_ok([](auto& v) { return tanh(v[0]); }, {x});
    expect_ok([](auto& v) { return sigmoid(v[0]); }, {x});
    expect_ok([](auto& v) { return relu(v[0]); }, {nz});
    expect_ok([](auto& v) { return abs(v[0]); }, {nz});
    expect_ok([](auto& v) { return square(v[0]); }, {x});
}

TEST_CASE("gradcheck: reductions") {
    auto x = input({2, 3, 4});
    expect_ok([](auto& v) { return sum(v[0]); }, {x});
    expect_ok([](auto& v) { return sum(v[0], {0, 2}); }, {x});
    expect_ok([](auto& v) { return sum(v[0], {1}, true); }, {x});
    expect_ok([](auto& v) { return mean(v[0], {-1}); }, {x});
    expect_ok([](auto& v) { return var(v[0], {0, 2}); }, {x});
    expect_ok([](auto& v) { return var(v[0], {1}, false, true); }, {x});
    // distinct values so the maximum is unique and the difference quotient is clean
    Tensor d = Tensor::arange(24).reshape({2, 3, 4});
    for (int64_t i = 0; i < 24; ++i) d.data()[i] = static_cast<float>((i * 7) % 24) * 0.1f;
    d.requires_grad_();
    expect_ok([](auto& v) { return max(v[0], 1); }, {d});
    expect_ok([](auto& v) { return max(v[0], -1, true); }, {d});
    expect_ok([](auto& v) { return max(v[0]); }, {d});
    expect_ok([](auto& v) { return log_softmax(v[0], 1); }, {x});
    expect_ok([](auto& v) { return log_softmax(v[0], -1); }, {x});
}

TEST_CASE("gradcheck: matmul and layout ops") {
    expect_ok([](auto& v) { return matmul(v[0], v[1]); }, {input({3, 5}), input({5, 2})});
    expect_ok([](auto& v) { return matmul(v[0], v[1]); }, {input({2, 3, 4}), input({2, 4, 3})});
    auto x = input({2, 3, 4});
    expect_ok([](auto& v) { return transpose(v[0], 0, 2); }, {x});
    expect_ok([](auto& v) { return permute(v[0], {1, 2, 0}); }, {x});
    expect_ok([](auto& v) { return slice(v[0], 2, 1, 4, 2); }, {x});
    expect_ok([](auto& v) { return slice(v[0], 0, -1, 2); }, {x});
    expect_ok([](auto& v) { return cat({v[0], v[1]}, 1); }, {x, input({2, 2, 4})});
    expect_ok([](auto& v) { return v[0].reshape({4, -1}); }, {x});
    expect_ok([](auto& v) { return v[0].flatten(1); }, {x});
    expect_ok([](auto& v) { return v[0].clone(); }, {x});
    expect_ok([](auto& v) { return broadcast_to(v[0], {2, 3, 4}); }, {input({3, 1})});
    expect_ok([](auto& v) { return sum_to(v[0], {3, 1}); }, {x});
}

TEST_CASE("gradcheck: a composite function (softmax cross-entropy by hand)") {
    expect_ok(
        [](auto& v) {
            Tensor lp = log_softmax(v[0], 1);
            return neg(mean(sum(mul(lp, v[1]), {1})));
        },
        {input({4, 5}), Tensor::uniform({4, 5}, 0, 1, &gen)});
}

// ---- the checker bites ----------------------------------------------------
// y = x^2 with a backward that forgets the factor 2: dx = x dy.
struct ForgotFactorBackward : Node {
    Tensor x;
    std::vector<Tensor> backward(const Tensor& dy) override { return {mul(x, dy)}; }
    const char* name() const override { return "ForgotFactorBackward"; }
};
// y = a * b with a backward that drops the term for b entirely.
struct MissingTermBackward : Node {
    Tensor a, b;
    std::vector<Tensor> backward(const Tensor& dy) override { return {mul(b, dy), Tensor()}; }
    const char* name() const override { return "MissingTermBackward"; }
};
// y = x + rev(x): a backward that returns dy unpermuted misses the mixing.
struct WrongOrderBackward : Node {
    std::vector<Tensor> backward(const Tensor& dy) override { return {mul(dy, 2.f)}; }
    const char* name() const override { return "WrongOrderBackward"; }
};

TEST_CASE("gradcheck fails on deliberately wrong backwards") {
    auto x = input({5}, 0.5f, 1.5f);
    GradcheckResult r1 = gradcheck(
        [](auto& v) {
            auto node = std::make_shared<ForgotFactorBackward>();
            node->x = v[0].detach();
            return attach(square(v[0].detach()), node, {v[0]});
        },
        {x});
    CHECK_FALSE(r1.ok);
    CHECK(r1.message.find("input 0") != std::string::npos);

    auto a = input({4}), b = input({4});
    GradcheckResult r2 = gradcheck(
        [](auto& v) {
            auto node = std::make_shared<MissingTermBackward>();
            node->a = v[0].detach();
            node->b = v[1].detach();
            return attach(mul(v[0].detach(), v[1].detach()), node, {v[0], v[1]});
        },
        {a, b});
    CHECK_FALSE(r2.ok);
    CHECK(r2.message.find("input 1") != std::string::npos);

    GradcheckResult r3 = gradcheck(
        [](auto& v) {
            Tensor xd = v[0].detach();
            Tensor rev = slice(xd, 0, 0, 5);
            for (int i = 0; i < 5; ++i) rev.data()[i] = xd.data()[4 - i];
            return attach(add(xd, rev), std::make_shared<WrongOrderBackward>(), {v[0]});
        },
        {input({5})});
    CHECK_FALSE(r3.ok);

    // A small error hidden in one element is still caught: 5% off on element 2.
    struct SlightlyOffBackward : Node {
        std::vector<Tensor> backward(const Tensor& dy) override {
            Tensor g = mul(dy, 3.f);
            g.data()[2] *= 1.05f;
            return {g};
        }
        const char* name() const override { return "SlightlyOffBackward"; }
    };
    GradcheckResult r4 = gradcheck(
        [](auto& v) { return attach(mul(v[0].detach(), 3.f), std::make_shared<SlightlyOffBackward>(), {v[0]}); },
        {input({5})});
    CHECK_FALSE(r4.ok);
    CHECK(r4.message.find("element 2") != std::string::npos);
}
