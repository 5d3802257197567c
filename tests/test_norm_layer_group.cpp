// LayerNorm and GroupNorm: parity with PyTorch 1.13 fixtures and gradcheck.
#include "layers/groupnorm.h"
#include "layers/layernorm.h"
#include "test_norm_common.h"

using namespace minnow;
using namespace minnow::testing;
using namespace minnow::testing::norm;

TEST_CASE("norm: LayerNorm matches PyTorch fixtures") {
    const SafetensorsFile f = fixture("layernorm.safetensors");
    struct Case { const char* name; Shape normalized; };
    for (const Case& tc : {Case{"last", {6}}, Case{"chw", {3, 4, 4}}}) {
        const std::string c = tc.name;
        CAPTURE(c);
        LayerNorm ln(tc.normalized);
        ln.load_state_dict({{"weight", f.get(c + ".weight"), DType::F32}, {"bias", f.get(c + ".bias"), DType::F32}});
        Tensor x = leaf(f.get(c + ".x"));
        Tensor y = ln.forward(x);
        check_close(y, f.get(c + ".y"), kFixtureRtol, kFixtureAtol, c + ".y");
        y.backward(f.get(c + ".dy"));
        check_close(x.grad(), f.get(c + ".dx"), kFixtureRtol, kFixtureAtol, c + ".dx");
        check_close(ln.weight.grad(), f.get(c + ".dweight"), kFixtureRtol, kFixtureAtol, c + ".dweight");
        check_close(ln.bias.grad(), f.get(c + ".dbias"), kFixtureRtol, kFixtureAtol, c + ".dbias");
    }
}

TEST_CASE("norm: GroupNorm matches PyTorch fixtures") {
    const SafetensorsFile f = fixture("groupnorm.safetensors");
    GroupNorm gn(2, 4);
    gn.load_state_dict({{"weight", f.get("g2.weight"), DType::F32}, {"bias", f.get("g2.bias"), DType::F32}});
    Tensor x = leaf(f.get("g2.x"));
    Tensor y = gn.forward(x);
    check_close(y, f.get("g2.y"), kFixtureRtol, kFixtureAtol, "g2.y");
    y.backward(f.get("g2.dy"));
    check_close(x.grad(), f.get("g2.dx"), kFixtureRtol, kFixtureAtol, "g2.dx");
    check_close(gn.weight.grad(), f.get("g2.dweight"), kFixtureRtol, kFixtureAtol, "g2.dweight");
    check_close(gn.bias.grad(), f.get("g2.dbias"), kFixtureRtol, kFixtureAtol, "g2.dbias");
}

TEST_CASE("norm: LayerNorm gradcheck") {
    Generator gen(21);
    struct Case { Shape x, normalized; };
    for (const Case& tc : {Case{{3, 5}, {5}}, Case{{2, 3, 4}, {4}}, Case{{2, 3, 2, 2}, {3, 2, 2}},
                           Case{{2, 3, 4}, {3, 4}}}) {
        CAPTURE(shape_str(tc.x));
        Tensor x = Tensor::normal(tc.x, 0.3f, 1.5f, &gen).requires_grad_();
        Tensor w = Tensor::uniform(tc.normalized, 0.5f, 1.5f, &gen).requires_grad_();
        Tensor b = Tensor::uniform(tc.normalized, -0.5f, 0.5f, &gen).requires_grad_();
        const Shape ns = tc.normalized;
        expect_gradcheck([&](auto& v) { return layer_norm(v[0], ns, v[1], v[2]); }, {x, w, b},
                         "layer_norm " + shape_str(tc.x));
        expect_gradcheck([&](auto& v) { return layer_norm(v[0], ns, Tensor(), Tensor()); }, {x},
                         "layer_norm, no affine " + shape_str(tc.x));
    }
    // a row longer than one column block of the weight gradient
    Tensor x = Tensor::normal({2, 300}, 0.f, 1.f, &gen).requires_grad_();
    Tensor w = Tensor::uniform({300}, 0.5f, 1.5f, &gen).requires_grad_();
    Tensor b = Tensor::uniform({300}, -0.5f, 0.5f, &gen).requires_grad_();
    expect_gradcheck([&](auto& v) { return layer_norm(v[0], {300}, v[1], v[2]); }, {x, w, b}, "layer_norm [2, 300]");
}

TEST_CASE("norm: GroupNorm gradcheck") {
    Generator gen(22);
    struct Case { Shape x; int64_t groups; };
    for (const Case& tc : {Case{{2, 4, 3, 3}, 2}, Case{{3, 6, 2, 2}, 3}, Case{{2, 4, 5}, 1}, Case{{2, 4, 2, 2}, 4},
                           Case{{3, 6}, 2}, Case{{1, 4, 3, 2}, 2}}) {
        CAPTURE(shape_str(tc.x));
        const int64_t C = tc.x[1], G = tc.groups;
        Tensor x = channel_input(tc.x, gen);
        Tensor w = param(C, gen, 0.5f, 1.5f), b = param(C, gen, -0.5f, 0.5f);
        expect_gradcheck([&](auto& v) { return group_norm(v[0], G, v[1], v[2]); }, {x, w, b},
                         "group_norm " + shape_str(tc.x));
        expect_gradcheck([&](auto& v) { return group_norm(v[0], G, Tensor(), Tensor()); }, {x},
                         "group_norm, no affine " + shape_str(tc.x));
    }
}

TEST_CASE("norm: LayerNorm and GroupNorm modules: names, modes, errors, parallel path") {
    LayerNorm ln({3, 4, 4});
    CHECK(ln.extra_repr() == "(3, 4, 4), eps=1e-05, elementwise_affine=True");
    CHECK(LayerNorm({6}).extra_repr() == "(6,), eps=1e-05, elementwise_affine=True");
    CHECK(ln.named_parameters().size() == 2);
    CHECK(ln.weight.shape() == Shape{3, 4, 4});
    CHECK(ln.state_dict().size() == 2);
    CHECK_THROWS_AS(ln.forward(Tensor::zeros({2, 3, 4, 5})), Error);
    CHECK(LayerNorm({6}, 1e-5f, false).parameters().empty());

    GroupNorm gn(2, 4);
    CHECK(gn.extra_repr() == "2, 4, eps=1e-05, affine=True");
    CHECK(gn.state_dict().size() == 2);
    CHECK_THROWS_AS(GroupNorm(3, 4), Error);
    CHECK_THROWS_AS(gn.forward(Tensor::zeros({2, 6, 2, 2})), Error);
    try {
        gn.forward(Tensor::zeros({2, 6, 2, 2}));
    } catch (const Error& e) {
        CHECK(std::string(e.what()).find("[2, 6, 2, 2]") != std::string::npos);
        CHECK(std::string(e.what()).find("GroupNorm(2, 4)") != std::string::npos);
    }

    // no running statistics: train and eval compute the same thing, batch size 1 is fine
    Generator gen(23);
    Tensor x = Tensor::normal({1, 4, 3, 3}, 0, 1, &gen);
    Tensor yt = gn.forward(x);
    gn.eval();
    check_close(gn.forward(x), yt);

    // a big input (OpenMP path) against double-precision formulas
    Tensor big = Tensor::normal({4, 64, 16, 16}, 1.f, 2.f, &gen);
    GroupNorm g32(32, 64);
    Tensor yb = g32.forward(big);
    LayerNorm lbig({64, 16, 16});
    Tensor yl = lbig.forward(big);
    const int64_t M = 2 * 256;
    double worst = 0;
    for (int64_t n = 0; n < 4; ++n) {
        for (int64_t g = 0; g < 32; ++g) {
            const float* p = big.data() + (n * 64 + g * 2) * 256;
            double mu = 0, var = 0;
            for (int64_t i = 0; i < M; ++i) mu += p[i];
            mu /= M;
            for (int64_t i = 0; i < M; ++i) var += (p[i] - mu) * (p[i] - mu);
            var /= M;
            for (int64_t i = 0; i < M; ++i)
                worst = std::max(worst, std::fabs(yb.data()[p - big.data() + i] - (p[i] - mu) / std::sqrt(var + 1e-5)));
        }
        const float* p = big.data() + n * 64 * 256;
        double mu = 0, var = 0;
        for (int64_t i = 0; i < 64 * 256; ++i) mu += p[i];
        mu /= 64 * 256;
        for (int64_t i = 0; i < 64 * 256; ++i) var += (p[i] - mu) * (p[i] - mu);
        var /= 64 * 256;
        for (int64_t i = 0; i < 64 * 256; ++i)
            worst = std::max(worst, std::fabs(yl.data()[n * 64 * 256 + i] - (p[i] - mu) / std::sqrt(var + 1e-5)));
    }
    CHECK(worst < 1e-5);
}

TEST_CASE("norm: GroupNorm(1, C) is LayerNorm over (C, H, W) with a per-channel affine") {
    Generator gen(24);
    Tensor x = Tensor::normal({2, 3, 4, 4}, 0.5f, 2.f, &gen).requires_grad_();
    Tensor w = param(3, gen, 0.5f, 1.5f), b = param(3, gen, -0.5f, 0.5f);
    Tensor yg = group_norm(x, 1, w, b);
    // LayerNorm's per-element affine built from the per-channel one
    Tensor we = broadcast_to(w.detach().reshape({3, 1, 1}), {3, 4, 4}).clone();
    Tensor be = broadcast_to(b.detach().reshape({3, 1, 1}), {3, 4, 4}).clone();
    Tensor yl = layer_norm(x.detach(), {3, 4, 4}, we, be);
    check_close(yg, yl, 1e-5, 1e-6);
}
