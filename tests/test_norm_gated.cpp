// GatedBatchNorm2d: gradcheck of the hand-derived backward at batch sizes 1, 2
// and 8, equality with the same formula built from autograd primitives, the
// limits g -> 1 (BatchNorm2d training) and g -> 0 (BatchNorm2d eval), eval
// mode, the running statistics by hand, errors, and the state_dict.
#include <algorithm>
#include <cmath>
#include <memory>

#include "layers/batchnorm.h"
#include "layers/gated_batchnorm.h"
#include "layers/models.h"
#include "layers/norm_factory.h"
#include "test_norm_common.h"

using namespace minnow;
using namespace minnow::testing;
using namespace minnow::testing::norm;

namespace {

// The layer's training-mode formula from core/ops.h primitives; the autograd
// engine derives its backward. rm / rv are constants (not part of the graph).
Tensor gated_reference(const Tensor& x, const Tensor& rm, const Tensor& rv, const Tensor& weight,
                       const Tensor& bias, const Tensor& gate_logit, float eps = 1e-5f) {
    const int64_t C = x.size(1);
    const Shape pc{1, C, 1, 1};
    const std::vector<int64_t> dims{0, 2, 3};
    Tensor g = sigmoid(gate_logit).reshape(pc);
    Tensor mu_b = mean(x, dims, /*keepdim=*/true);
    Tensor var_b = mean(square(x - mu_b), dims, /*keepdim=*/true);
    Tensor mu = g * mu_b + (1.f - g) * rm.detach().reshape(pc);
    Tensor var_ = g * var_b + (1.f - g) * rv.detach().reshape(pc);
    Tensor xhat = (x - mu) * rsqrt(var_ + eps);
    return xhat * weight.reshape(pc) + bias.reshape(pc);
}

// Running statistics unlike any batch's, so the gate has something to mix.
void set_running(BatchNorm& bn, Generator& gen) {
    const int64_t C = bn.num_features();
    copy_(bn.running_mean, Tensor::uniform({C}, -1.f, 1.f, &gen));
    copy_(bn.running_var, Tensor::uniform({C}, 0.3f, 3.f, &gen));
}

}  // namespace

TEST_CASE("norm: gated_batch_norm gradcheck in training mode (x, weight, bias, gate), batch 1, 2, 8") {
    Generator gen(41);
    const std::vector<Shape> shapes{{1, 3, 2, 2}, {1, 2, 3, 4}, {1, 2, 1, 2}, {2, 3, 2, 3},
                                    {2, 2, 1, 1}, {2, 2, 3, 2}, {8, 2, 2, 2}, {8, 3, 1, 3}};
    for (const Shape& s : shapes) {
        CAPTURE(shape_str(s));
        const int64_t C = s[1];
        Tensor x = channel_input(s, gen);
        Tensor w = param(C, gen, 0.5f, 1.5f), b = param(C, gen, -0.5f, 0.5f);
        Tensor a = param(C, gen, -2.f, 2.f);  // g in [0.12, 0.88]: both sides matter
        Tensor rm = Tensor::uniform({C}, -1.f, 1.f, &gen), rv = Tensor::uniform({C}, 0.3f, 3.f, &gen);
        // momentum 0: the running statistics stay put between the evaluations
        expect_gradcheck([&](auto& v) { return gated_batch_norm(v[0], rm, rv, v[1], v[2], v[3], 0.f); },
                         {x, w, b, a}, "gated_batch_norm " + shape_str(s));
        expect_gradcheck([&](auto& v) { return gated_batch_norm(v[0], rm, rv, Tensor(), Tensor(), v[1], 0.f); },
                         {x, a}, "gated_batch_norm, no affine " + shape_str(s));
        // the gradient being checked is not trivially zero
        Tensor a2 = leaf(a), x2 = leaf(x);
        gated_batch_norm(x2, rm, rv, w.detach(), b.detach(), a2, 0.f).backward(Tensor::normal(s, 0, 1, &gen));
        CHECK(max_abs(a2.grad()) > 1e-3);
        CHECK(max_abs(x2.grad()) > 1e-3);
    }
}

TEST_CASE("norm: GatedBatchNorm2d gradcheck through the module at batch size 1, running stats reset") {
    Generator gen(42);
    GatedBatchNorm2d m(3);
    copy_(m.gate, T({-1.f, 0.5f, 2.f}, {3}));
    copy_(m.weight, T({1.2f, 0.7f, 1.f}, {3}));
    set_running(m, gen);
    const Tensor rm0 = m.running_mean.clone(), rv0 = m.running_var.clone();
    auto f = [&](const std::vector<Tensor>& v) {
        copy_(m.running_mean, rm0);  // the same state for every evaluation
        copy_(m.running_var, rv0);
        return m.forward(v[0]);
    };
    expect_gradcheck(f, {channel_input({1, 3, 3, 3}, gen)}, "GatedBatchNorm2d batch 1");
    expect_gradcheck(f, {channel_input({8, 3, 2, 1}, gen)}, "GatedBatchNorm2d batch 8");
}

TEST_CASE("norm: GatedBatchNorm2d equals the formula from autograd primitives (outputs, all gradients)") {
    Generator gen(43);
    // the last shape is big enough for the multi-threaded kernels
    for (const Shape& s : std::vector<Shape>{{1, 3, 4, 4}, {2, 4, 3, 5}, {8, 3, 2, 2}, {4, 16, 32, 32}}) {
        CAPTURE(shape_str(s));
        const int64_t C = s[1];
        GatedBatchNorm2d m(C);
        copy_(m.gate, Tensor::uniform({C}, -3.f, 3.f, &gen));
        copy_(m.weight, Tensor::uniform({C}, 0.5f, 1.5f, &gen));
        copy_(m.bias, Tensor::uniform({C}, -0.5f, 0.5f, &gen));
        set_running(m, gen);
        const Tensor rm = m.running_mean.clone(), rv = m.running_var.clone();  // before the batch
        Tensor x1 = channel_input(s, gen), x2 = leaf(x1);
        Tensor w = leaf(m.weight), b = leaf(m.bias), a = leaf(m.gate);
        Tensor dy = Tensor::normal(s, 0, 1, &gen);

        Tensor y1 = m.forward(x1);
        Tensor y2 = gated_reference(x2, rm, rv, w, b, a);
        CHECK(std::string(y1.grad_fn()->name()) == "GatedBatchNormBackward");
        CHECK(y1.grad_fn()->next_edges.size() == 4);
        check_close(y1, y2, 1e-4, 1e-5, "y");
        y1.backward(dy);
        y2.backward(dy);
        check_close(x1.grad(), x2.grad(), 1e-3, 1e-5, "dx");
        check_close(m.weight.grad(), w.grad(), 1e-3, 1e-4, "dweight");
        check_close(m.bias.grad(), b.grad(), 1e-4, 1e-4, "dbias");
        check_close(m.gate.grad(), a.grad(), 1e-3, 1e-4, "dgate");
        CHECK(max_abs(m.gate.grad()) > 1e-2);
    }
}

TEST_CASE("norm: GatedBatchNorm2d with a saturated gate is BatchNorm2d (train: g = 1, eval function: g = 0)") {
    Generator gen(44);
    GatedBatchNormOptions open;
    open.initial_gate_logit = 40.f;  // sigmoid(40) = 1 in float and double
    GatedBatchNorm2d gated(3, open);
    BatchNorm2d bn(3);
    Tensor w = Tensor::uniform({3}, 0.5f, 1.5f, &gen), b = Tensor::uniform({3}, -0.5f, 0.5f, &gen);
    for (Tensor* p : {&gated.weight, &bn.weight}) copy_(*p, w);
    for (Tensor* p : {&gated.bias, &bn.bias}) copy_(*p, b);
    for (const Shape& s : std::vector<Shape>{{4, 3, 3, 3}, {1, 3, 2, 5}, {2, 3, 4, 4}}) {  // three steps
        CAPTURE(shape_str(s));
        gated.zero_grad();
        bn.zero_grad();
        Tensor x1 = channel_input(s, gen), x2 = leaf(x1);
        Tensor dy = Tensor::normal(s, 0, 1, &gen);
        Tensor y1 = gated.forward(x1), y2 = bn.forward(x2);
        check_close(y1, y2, 1e-5, 1e-6, "y");
        y1.backward(dy);
        y2.backward(dy);
        check_close(x1.grad(), x2.grad(), 1e-4, 1e-6, "dx");
        check_close(gated.weight.grad(), bn.weight.grad(), 1e-5, 1e-6, "dweight");
        check_close(gated.bias.grad(), bn.bias.grad(), 1e-5, 1e-6, "dbias");
        check_close(gated.gate.grad(), Tensor::zeros({3}), 0, 0, "dgate");  // g (1 - g) = 0 exactly
        check_close(gated.running_mean, bn.running_mean, 1e-6, 1e-7, "running_mean");
        check_close(gated.running_var, bn.running_var, 1e-6, 1e-7, "running_var");
        CHECK(gated.num_batches_tracked.item() == bn.num_batches_tracked.item());
    }
    CHECK(gated.num_batches_tracked.item() == 3);

    // g = 0: training mode normalises with the running statistics as they were
    // before the batch, which is BatchNorm2d's eval-mode function (outputs and
    // gradients), while the running statistics still learn from the batch.
    GatedBatchNormOptions closed;
    closed.initial_gate_logit = -40.f;
    GatedBatchNorm2d shut(3, closed);
    BatchNorm2d bn_eval(3), bn_train(3);
    for (BatchNorm* m : {static_cast<BatchNorm*>(&shut), static_cast<BatchNorm*>(&bn_eval),
                         static_cast<BatchNorm*>(&bn_train)}) {
        copy_(m->weight, w);
        copy_(m->bias, b);
        copy_(m->running_mean, T({0.3f, -0.2f, 1.f}, {3}));
        copy_(m->running_var, T({0.5f, 2.f, 1.5f}, {3}));
    }
    bn_eval.eval();
    Tensor x1 = channel_input({1, 3, 3, 4}, gen), x2 = leaf(x1);
    Tensor dy = Tensor::normal({1, 3, 3, 4}, 0, 1, &gen);
    Tensor y1 = shut.forward(x1), y2 = bn_eval.forward(x2);
    check_close(y1, y2, 1e-5, 1e-6, "y (g = 0)");
    y1.backward(dy);
    y2.backward(dy);
    check_close(x1.grad(), x2.grad(), 1e-5, 1e-6, "dx (g = 0)");
    check_close(shut.weight.grad(), bn_eval.weight.grad(), 1e-5, 1e-6, "dweight (g = 0)");
    check_close(shut.bias.grad(), bn_eval.bias.grad(), 1e-5, 1e-6, "dbias (g = 0)");
    {
        NoGradGuard no_grad;
        bn_train.forward(x1.detach());
    }
    check_close(shut.running_mean, bn_train.running_mean, 1e-6, 1e-7, "running_mean (g = 0)");
    check_close(shut.running_var, bn_train.running_var, 1e-6, 1e-7, "running_var (g = 0)");
}

TEST_CASE("norm: GatedBatchNorm2d eval mode equals BatchNorm2d eval mode with the same buffers") {
    Generator gen(45);
    GatedBatchNorm2d gated(3);
    copy_(gated.gate, T({-1.f, 0.f, 1.f}, {3}));
    copy_(gated.weight, T({1.3f, 0.6f, 0.9f}, {3}));
    copy_(gated.bias, T({0.2f, -0.1f, 0.4f}, {3}));
    for (int i = 0; i < 3; ++i) gated.forward(channel_input({2, 3, 4, 4}, gen, false));
    BatchNorm2d bn(3);
    bn.load_state_dict(gated.state_dict(), /*strict=*/false);  // all but the gate
    check_close(bn.running_mean, gated.running_mean, 0, 0);
    CHECK(bn.num_batches_tracked.item() == 3);
    gated.eval();
    bn.eval();
    const Tensor rm = gated.running_mean.clone(), rv = gated.running_var.clone();
    for (const Shape& s : std::vector<Shape>{{4, 3, 2, 2}, {1, 3, 1, 1}}) {  // one value is fine in eval
        CAPTURE(shape_str(s));
        gated.zero_grad();
        bn.zero_grad();
        Tensor x1 = channel_input(s, gen), x2 = leaf(x1);
        Tensor dy = Tensor::normal(s, 0, 1, &gen);
        Tensor y1 = gated.forward(x1), y2 = bn.forward(x2);
        check_close(y1, y2, 0, 0, "y");  // the very same code path
        y1.backward(dy);
        y2.backward(dy);
        check_close(x1.grad(), x2.grad(), 0, 0, "dx");
        check_close(gated.weight.grad(), bn.weight.grad(), 0, 0, "dweight");
        check_close(gated.bias.grad(), bn.bias.grad(), 0, 0, "dbias");
        CHECK_FALSE(gated.gate.grad().defined());  // the gate takes no part in eval mode
    }
    check_close(gated.running_mean, rm, 0, 0, "running_mean unchanged");
    check_close(gated.running_var, rv, 0, 0, "running_var unchanged");
    CHECK(gated.num_batches_tracked.item() == 3);
}

TEST_CASE("norm: GatedBatchNorm2d running statistics and outputs by hand") {
    // One channel, gate logit 0 (g = 1/2), gamma 1, beta 0.
    GatedBatchNormOptions o;
    o.initial_gate_logit = 0.f;
    GatedBatchNorm2d m(1, o);
    const double eps = 1e-5;

    // Batch size 1, values 1, 2, 3, 6: mu_B = 3, var_B = 3.5 (unbiased 14/3).
    // Running stats before: 0 and 1, so mu = 1.5 and var = 2.25.
    Tensor x1 = T({1, 2, 3, 6}, {1, 1, 2, 2});
    x1.requires_grad_();
    Tensor y1 = m.forward(x1);
    const double s1 = std::sqrt(2.25 + eps);
    const float v1[] = {1, 2, 3, 6};
    for (int i = 0; i < 4; ++i) CHECK(y1.data()[i] == doctest::Approx((v1[i] - 1.5) / s1).epsilon(1e-6));
    CHECK(m.running_mean.item() == doctest::Approx(0.9 * 0 + 0.1 * 3).epsilon(1e-6));
    CHECK(m.running_var.item() == doctest::Approx(0.9 * 1 + 0.1 * 14.0 / 3).epsilon(1e-6));
    CHECK(m.num_batches_tracked.item() == 1);
    // dL/da for L = sum y: L(g) = 4 (mu_B - mu) / sigma = 12 (1 - g) / sqrt(1 + 2.5 g + eps),
    // dL/dg = 12 (-1/sigma - 1.25 (1 - g) / sigma^3), dL/da = dL/dg * g (1 - g).
    y1.backward(Tensor::ones({1, 1, 2, 2}));
    const double dLdg = 12 * (-1 / s1 - 1.25 * 0.5 / (s1 * s1 * s1));
    CHECK(m.gate.grad().item() == doctest::Approx(dLdg * 0.25).epsilon(1e-5));
    CHECK(m.bias.grad().item() == doctest::Approx(4));
    CHECK(m.weight.grad().item() == doctest::Approx(4 * 1.5 / s1).epsilon(1e-5));  // sum xhat
    // unlike BatchNorm's, dx sums to (1 - g) gamma invstd S over the channel, not to 0
    double sum_dx = 0;
    for (float v : x1.grad().to_vector()) sum_dx += v;
    CHECK(sum_dx == doctest::Approx(0.5 * 4 / s1).epsilon(1e-5));

    // Batch size 2 (1x2 images), values 0, 0 | 4, 4: mu_B = 2, var_B = 4 (unbiased 16/3),
    // mixed with the running stats after batch 1 (0.3, 0.9 + 1.4/3).
    Tensor y2 = m.forward(T({0, 0, 4, 4}, {2, 1, 1, 2}));
    const double rm1 = 0.3, rv1 = 0.9 + 1.4 / 3;
    const double mu2 = 0.5 * 2 + 0.5 * rm1, s2 = std::sqrt(0.5 * 4 + 0.5 * rv1 + eps);
    CHECK(y2.data()[0] == doctest::Approx((0 - mu2) / s2).epsilon(1e-6));
    CHECK(y2.data()[3] == doctest::Approx((4 - mu2) / s2).epsilon(1e-6));
    CHECK(m.running_mean.item() == doctest::Approx(0.9 * rm1 + 0.1 * 2).epsilon(1e-6));  // 0.47
    CHECK(m.running_var.item() == doctest::Approx(0.9 * rv1 + 0.1 * 16.0 / 3).epsilon(1e-6));
    CHECK(m.num_batches_tracked.item() == 2);

    // momentum = none: the cumulative average of the batch statistics.
    o.momentum = std::nullopt;
    GatedBatchNorm2d cma(1, o);
    cma.forward(T({1, 2, 3, 6}, {1, 1, 2, 2}));
    CHECK(cma.running_mean.item() == doctest::Approx(3));
    CHECK(cma.running_var.item() == doctest::Approx(14.0 / 3));
    Tensor y3 = cma.forward(T({0, 0, 4, 4}, {2, 1, 1, 2}));  // mixes with 3 and 14/3
    CHECK(y3.data()[0] == doctest::Approx((0 - 2.5) / std::sqrt(2 + 7.0 / 3 + eps)).epsilon(1e-6));
    CHECK(cma.running_mean.item() == doctest::Approx(2.5));
    CHECK(cma.running_var.item() == doctest::Approx(5));
    CHECK(cma.num_batches_tracked.item() == 2);
}

TEST_CASE("norm: GatedBatchNorm2d rejects one value per channel and bad shapes, naming the layer") {
    GatedBatchNorm2d m(3);
    auto message = [&](const Tensor& x) {
        try {
            m.forward(x);
        } catch (const Error& e) {
            return std::string(e.what());
        }
        return std::string("no error");
    };
    const std::string one = message(Tensor::zeros({1, 3, 1, 1}));
    CHECK(one.find("GatedBatchNorm2d(3)") != std::string::npos);
    CHECK(one.find("more than 1 value per channel") != std::string::npos);
    CHECK(one.find("[1, 3, 1, 1]") != std::string::npos);
    CHECK(message(Tensor::zeros({2, 3})).find("4-d") != std::string::npos);
    CHECK(message(Tensor::zeros({2, 4, 2, 2})).find("3 channels") != std::string::npos);
    CHECK(m.num_batches_tracked.item() == 0);  // the failed calls counted nothing
    // batch size 1 with H*W > 1, and a 1x1 map with a batch of 2, are fine
    CHECK_NOTHROW(m.forward(Tensor::normal({1, 3, 1, 2}, 0, 1)));
    CHECK_NOTHROW(m.forward(Tensor::normal({2, 3, 1, 1}, 0, 1)));
    CHECK(m.num_batches_tracked.item() == 2);

    // the functional form
    const Tensor rm = Tensor::zeros({3}), rv = Tensor::ones({3}), a = Tensor::zeros({3});
    CHECK_THROWS_AS(gated_batch_norm(Tensor::zeros({1, 3, 1, 1}), rm, rv, Tensor(), Tensor(), a), Error);
    CHECK_THROWS_AS(gated_batch_norm(Tensor::zeros({2, 3, 2, 2}), rm, rv, Tensor(), Tensor(), Tensor::zeros({4})),
                    Error);
    CHECK_THROWS_AS(gated_batch_norm(Tensor::zeros({2, 3, 2, 2}), Tensor(), rv, Tensor(), Tensor(), a), Error);
    GatedBatchNormOptions bad;
    bad.initial_gate_logit = NAN;
    CHECK_THROWS_AS(GatedBatchNorm2d(3, bad), Error);
    CHECK_THROWS_AS(GatedBatchNorm2d(0), Error);
}

TEST_CASE("norm: GatedBatchNorm2d parameters, state_dict names and the factory kind gated") {
    GatedBatchNorm2d m(4);
    CHECK(m.type_name() == "GatedBatchNorm2d");
    CHECK(m.extra_repr() == "4, eps=1e-05, momentum=0.1, affine=True, initial_gate_logit=4");
    auto params = m.named_parameters();
    REQUIRE(params.size() == 3);
    CHECK(params[2].first == "gate");
    auto sd = m.state_dict();
    REQUIRE(sd.size() == 6);
    const char* names[] = {"weight", "bias", "gate", "running_mean", "running_var", "num_batches_tracked"};
    for (int i = 0; i < 6; ++i) CHECK(sd[i].name == names[i]);
    CHECK(sd[2].dtype == DType::F32);
    CHECK(sd[5].dtype == DType::I64);
    check_close(m.gate, Tensor::full({4}, 4.f), 0, 0, "initial gate logit");
    check_close(m.gate_probability(), Tensor::full({4}, 0.98201379f), 1e-6, 0, "sigmoid(4)");
    CHECK(m.gate.requires_grad());

    // a state_dict round trip carries the gate
    copy_(m.gate, T({-1, 0, 1, 2}, {4}));
    GatedBatchNorm2d fresh(4);
    fresh.load_state_dict(m.state_dict());
    check_close(fresh.gate, m.gate, 0, 0);

    // affine = false: the gate is the only parameter
    GatedBatchNormOptions o;
    o.affine = false;
    o.initial_gate_logit = 2.f;
    GatedBatchNorm2d plain(2, o);
    REQUIRE(plain.named_parameters().size() == 1);
    CHECK(plain.named_parameters()[0].first == "gate");
    CHECK(plain.state_dict().size() == 4);
    CHECK(plain.extra_repr() == "2, eps=1e-05, momentum=0.1, affine=False, initial_gate_logit=2");

    // make_norm2d("gated") and a model built with it
    CHECK(make_norm2d("gated", 16)->type_name() == "GatedBatchNorm2d");
    CHECK(std::find(norm2d_kinds().begin(), norm2d_kinds().end(), "gated") != norm2d_kinds().end());
    auto cnn = make_model("cnn", "gated");
    int gates = 0;
    for (const auto& e : cnn->state_dict()) gates += e.name.size() > 5 && e.name.substr(e.name.size() - 5) == ".gate";
    CHECK(gates == 5);
    bool found = false;
    for (const auto& e : cnn->state_dict()) found = found || e.name == "features.1.gate";
    CHECK(found);
    Tensor logits = cnn->forward(Tensor::normal({1, 3, 8, 8}, 0, 1));  // batch size 1 trains
    CHECK(logits.shape() == Shape{1, 10});
}
