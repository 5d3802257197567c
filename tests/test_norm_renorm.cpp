// BatchRenorm2d: the paper's r and d, the rmax/dmax ramp, gradcheck with r and
// d held constant, and agreement with BatchNorm2d where they must agree.
#include "layers/batchnorm.h"
#include "layers/batchrenorm.h"
#include "test_norm_common.h"

using namespace minnow;
using namespace minnow::testing;
using namespace minnow::testing::norm;

TEST_CASE("norm: batch_renorm gradcheck with r and d held constant") {
    Generator gen(31);
    for (const Shape& s : std::vector<Shape>{{2, 3, 2, 2}, {3, 2, 3, 3}, {16, 2, 2, 2}, {4, 3}}) {
        CAPTURE(shape_str(s));
        const int64_t C = s[1];
        Tensor x = channel_input(s, gen);
        Tensor w = param(C, gen, 0.5f, 1.5f), b = param(C, gen, -0.5f, 0.5f);
        Tensor r = Tensor::uniform({C}, 0.5f, 2.f, &gen), d = Tensor::uniform({C}, -1.f, 1.f, &gen);
        expect_gradcheck([&](auto& v) { return batch_renorm(v[0], r, d, v[1], v[2]); }, {x, w, b},
                         "batch_renorm " + shape_str(s));
        expect_gradcheck([&](auto& v) { return batch_renorm(v[0], r, d, Tensor(), Tensor()); }, {x},
                         "batch_renorm, no affine " + shape_str(s));
    }
}

TEST_CASE("norm: BatchRenorm2d gradcheck through the module, running stats and step fixed") {
    // Running statistics far from the batch's, so r and d sit at their clip
    // limits: then they are locally constant in x, the stop-gradient backward
    // is the exact gradient, and finite differences must agree with it.
    Generator gen(32);
    BatchRenormOptions o;
    o.rmax = 1.5f;
    o.dmax = 0.5f;
    o.warmup_steps = 0;
    BatchRenorm2d m(3, o);
    const Tensor rm0 = Tensor::full({3}, 10.f), rv0 = Tensor::full({3}, 100.f);
    Tensor x = channel_input({4, 3, 2, 2}, gen);
    auto f = [&](const std::vector<Tensor>& v) {
        copy_(m.running_mean, rm0);  // the same state for every evaluation
        copy_(m.running_var, rv0);
        fill_(m.num_batches_tracked, 0.f);
        return m.forward(v[0]);
    };
    expect_gradcheck(f, {x}, "BatchRenorm2d (clipped r, d)");
    f({x.detach()});
    for (int c = 0; c < 3; ++c) {
        CHECK(m.last_r().data()[c] == doctest::Approx(1 / 1.5));
        CHECK(m.last_d().data()[c] == doctest::Approx(-0.5));
    }
}

TEST_CASE("norm: BatchRenorm2d computes Algorithm 1 of the paper") {
    Generator gen(33);
    BatchRenormOptions o;
    o.warmup_steps = 0;  // the final limits at once
    o.momentum = 0.2f;
    BatchRenorm2d m(2, o);
    copy_(m.running_mean, T({0.5f, -0.25f}, {2}));
    copy_(m.running_var, T({1.5f, 0.8f}, {2}));
    copy_(m.weight, T({1.2f, 0.7f}, {2}));
    copy_(m.bias, T({0.1f, -0.3f}, {2}));
    Tensor x = channel_input({3, 2, 2, 2}, gen, false);
    const std::vector<float> rm = m.running_mean.to_vector(), rv = m.running_var.to_vector();
    Tensor y = m.forward(x);
    const int64_t N = 3, C = 2, S = 4, M = N * S;
    for (int64_t c = 0; c < C; ++c) {
        double mu = 0, var = 0;
        for (int64_t n = 0; n < N; ++n)
            for (int64_t i = 0; i < S; ++i) mu += x.data()[(n * C + c) * S + i];
        mu /= M;
        for (int64_t n = 0; n < N; ++n)
            for (int64_t i = 0; i < S; ++i) var += std::pow(x.data()[(n * C + c) * S + i] - mu, 2);
        var /= M;
        const double sb = std::sqrt(var + 1e-5), s = std::sqrt(rv[c] + 1e-5);
        const double r = std::clamp(sb / s, 1 / 3.0, 3.0), d = std::clamp((mu - rm[c]) / s, -5.0, 5.0);
        CHECK(m.last_r().data()[c] == doctest::Approx(r).epsilon(1e-5));
        CHECK(m.last_d().data()[c] == doctest::Approx(d).epsilon(1e-5));
        const double g = m.weight.data()[c], b = m.bias.data()[c];
        for (int64_t n = 0; n < N; ++n)
            for (int64_t i = 0; i < S; ++i) {
                const int64_t k = (n * C + c) * S + i;
                CHECK(y.data()[k] == doctest::Approx(g * ((x.data()[k] - mu) / sb * r + d) + b).epsilon(1e-5));
            }
        // BatchNorm's running-statistics rule
        CHECK(m.running_mean.data()[c] == doctest::Approx(0.8 * rm[c] + 0.2 * mu).epsilon(1e-5));
        CHECK(m.running_var.data()[c] == doctest::Approx(0.8 * rv[c] + 0.2 * var * M / (M - 1)).epsilon(1e-5));
    }
    CHECK(m.num_batches_tracked.item() == 1);
    // unclipped r, d: the training output is exactly the running-statistics normalisation
    // of the running stats as they were before the batch.
}

TEST_CASE("norm: BatchRenorm2d ramps rmax 1 -> rmax and dmax 0 -> dmax over warmup_steps") {
    BatchRenormOptions o;
    o.warmup_steps = 4;
    BatchRenorm2d m(2, o);
    CHECK(m.current_rmax() == 1.f);
    CHECK(m.current_dmax() == 0.f);
    Generator gen(34);
    std::vector<float> rmax, dmax;
    for (int i = 0; i < 6; ++i) {
        m.forward(channel_input({4, 2, 2, 2}, gen, false));
        rmax.push_back(m.current_rmax());
        dmax.push_back(m.current_dmax());
    }
    CHECK(rmax[0] == doctest::Approx(1.5));
    CHECK(dmax[0] == doctest::Approx(1.25));
    CHECK(rmax[1] == doctest::Approx(2.0));
    CHECK(rmax[3] == doctest::Approx(3.0));
    CHECK(rmax[5] == doctest::Approx(3.0));
    CHECK(dmax[5] == doctest::Approx(5.0));
    CHECK(m.extra_repr() == "2, eps=1e-05, momentum=0.1, rmax=3, dmax=5, warmup_steps=4, affine=True");
}

TEST_CASE("norm: BatchRenorm2d agrees with BatchNorm2d at step 0 and in eval mode") {
    Generator gen(35);
    BatchRenorm2d rn(3);  // step 0: rmax = 1, dmax = 0, so r = 1 and d = 0
    BatchNorm2d bn(3);
    Tensor w = Tensor::uniform({3}, 0.5f, 1.5f, &gen), b = Tensor::uniform({3}, -0.5f, 0.5f, &gen);
    copy_(rn.weight, w);
    copy_(bn.weight, w);
    copy_(rn.bias, b);
    copy_(bn.bias, b);
    Tensor x1 = channel_input({4, 3, 3, 3}, gen), x2 = leaf(x1);
    Tensor dy = Tensor::normal({4, 3, 3, 3}, 0, 1, &gen);
    Tensor y1 = rn.forward(x1), y2 = bn.forward(x2);
    check_close(y1, y2, 1e-5, 1e-6, "y");
    y1.backward(dy);
    y2.backward(dy);
    check_close(x1.grad(), x2.grad(), 1e-4, 1e-6, "dx");
    check_close(rn.weight.grad(), bn.weight.grad(), 1e-5, 1e-6, "dweight");
    check_close(rn.bias.grad(), bn.bias.grad(), 1e-5, 1e-6, "dbias");
    check_close(rn.running_mean, bn.running_mean, 1e-6, 1e-7, "running_mean");
    check_close(rn.running_var, bn.running_var, 1e-6, 1e-7, "running_var");

    // the same state_dict names and dtypes, so checkpoints move both ways; eval is BatchNorm's eval
    BatchNorm2d from_rn(3);
    from_rn.load_state_dict(rn.state_dict());
    rn.eval();
    from_rn.eval();
    Tensor x3 = channel_input({2, 3, 2, 2}, gen, false);
    check_close(rn.forward(x3), from_rn.forward(x3));
    CHECK_THROWS_AS(rn.forward(Tensor::zeros({2, 4, 2, 2})), Error);
    rn.train();
    CHECK_THROWS_AS(rn.forward(Tensor::zeros({1, 3, 1, 1})), Error);
    BatchRenormOptions bad;
    bad.rmax = 0.5f;
    CHECK_THROWS_AS(BatchRenorm2d(3, bad), Error);
}
