// BatchNorm1d / BatchNorm2d: parity with PyTorch 1.13 fixtures, gradcheck in
// training and eval mode at several batch sizes, PyTorch's conventions for the
// buffers, errors, and frozen statistics.
#include <cmath>
#include <memory>
#include <optional>

#include "layers/batchnorm.h"
#include "layers/conv2d.h"
#include "kernels/cpu.h"
#include "layers/linear.h"
#include "layers/pooling.h"
#include "test_norm_common.h"

using namespace minnow;
using namespace minnow::testing;
using namespace minnow::testing::norm;

namespace {

struct BnCase {
    const char* name;
    bool is2d;
    bool cma;   // momentum=None, two training passes
    bool eval;
};

const BnCase kBnCases[] = {
    {"bn2d_train", true, false, false},       {"bn2d_train_affine", true, false, false},
    {"bn2d_train_n2", true, false, false},    {"bn2d_cma", true, true, false},
    {"bn2d_eval", true, false, true},         {"bn1d_train", false, false, false},
    {"bn1d_train_affine", false, false, false}, {"bn1d_train_n2", false, false, false},
    {"bn1d_train_ncl", false, false, false},  {"bn1d_train_ncl_n2", false, false, false},
    {"bn1d_cma", false, true, false},         {"bn1d_eval", false, false, true},
    {"bn1d_eval_ncl", false, false, true},
};

std::shared_ptr<BatchNorm> make_bn(bool is2d, int64_t C, std::optional<float> momentum) {
    if (is2d) return std::make_shared<BatchNorm2d>(C, 1e-5f, momentum);
    return std::make_shared<BatchNorm1d>(C, 1e-5f, momentum);
}

void check_fixture(const Tensor& got, const SafetensorsFile& f, const std::string& key) {
    check_close(got, f.get(key), kFixtureRtol, kFixtureAtol, key);
}

}  // namespace

TEST_CASE("norm: BatchNorm matches PyTorch fixtures (outputs, gradients, running stats)") {
    const SafetensorsFile f = fixture("batchnorm.safetensors");
    for (const BnCase& tc : kBnCases) {
        const std::string c = tc.name;
        CAPTURE(c);
        const Tensor& x0 = f.get(c + ".x");
        const int64_t C = x0.size(1);
        auto bn = make_bn(tc.is2d, C, tc.cma ? std::nullopt : std::optional<float>(0.1f));
        // Load the "before" state the way a PyTorch checkpoint is loaded: by
        // name, with num_batches_tracked as I64.
        const TensorEntry& nbt = *f.find(c + ".num_batches_tracked.before");
        CHECK(nbt.dtype == DType::I64);
        std::vector<TensorEntry> state{{"weight", f.get(c + ".weight"), DType::F32},
                                       {"bias", f.get(c + ".bias"), DType::F32},
                                       {"running_mean", f.get(c + ".running_mean.before"), DType::F32},
                                       {"running_var", f.get(c + ".running_var.before"), DType::F32},
                                       {"num_batches_tracked", nbt.tensor, nbt.dtype}};
        bn->load_state_dict(state, true, c);
        if (tc.eval) bn->eval();

        if (tc.cma) {  // the first training pass, without a graph
            NoGradGuard no_grad;
            Tensor y1 = bn->forward(f.get(c + ".x.pass1"));
            check_fixture(y1, f, c + ".y.pass1");
            check_fixture(bn->running_mean, f, c + ".running_mean.pass1");
            check_fixture(bn->running_var, f, c + ".running_var.pass1");
            CHECK(bn->num_batches_tracked.item() == f.get(c + ".num_batches_tracked.pass1").item());
        }
        Tensor x = leaf(x0);
        Tensor y = bn->forward(x);
        check_fixture(y, f, c + ".y");
        y.backward(f.get(c + ".dy"));
        check_fixture(x.grad(), f, c + ".dx");
        check_fixture(bn->weight.grad(), f, c + ".dweight");
        check_fixture(bn->bias.grad(), f, c + ".dbias");
        check_fixture(bn->running_mean, f, c + ".running_mean");
        check_fixture(bn->running_var, f, c + ".running_var");
        CHECK(bn->num_batches_tracked.item() == f.get(c + ".num_batches_tracked").item());
    }
}

TEST_CASE("norm: BatchNorm gradcheck in training mode, batch sizes 2, 3, 16, 1d and 2d") {
    Generator gen(11);
    const std::vector<Shape> shapes{{2, 3}, {3, 4}, {16, 3}, {2, 3, 4}, {3, 2, 5}, {16, 2, 3},
                                    {2, 3, 2, 3}, {3, 2, 3, 3}, {16, 2, 2, 3}};
    for (const Shape& s : shapes) {
        CAPTURE(shape_str(s));
        const int64_t C = s[1];
        Tensor x = channel_input(s, gen);
        Tensor g = param(C, gen, 0.5f, 1.5f), b = param(C, gen, -0.5f, 0.5f);
        // the functional form, all three inputs
        expect_gradcheck([](auto& v) { return batch_norm(v[0], Tensor(), Tensor(), v[1], v[2], true); },
                         {x, g, b}, "batch_norm train " + shape_str(s));
        // without affine
        expect_gradcheck([](auto& v) { return batch_norm(v[0], Tensor(), Tensor(), Tensor(), Tensor(), true); },
                         {x}, "batch_norm train, no affine " + shape_str(s));
        // the module, through its own parameters (running stats update, output does not depend on them)
        std::shared_ptr<BatchNorm> bn = s.size() == 4 ? std::shared_ptr<BatchNorm>(std::make_shared<BatchNorm2d>(C))
                                                      : std::make_shared<BatchNorm1d>(C);
        copy_(bn->weight, g);
        copy_(bn->bias, b);
        expect_gradcheck([&](auto& v) { return bn->forward(v[0]); }, {x}, "module train " + shape_str(s));
    }
}

// A small BatchNorm network, the reference CNN in miniature: conv, BatchNorm,
// ReLU, conv, BatchNorm, ReLU, max-pool, linear, in training mode at batches
// 2 and 3, every input and parameter checked against finite differences. The
// second convolution (16 -> 16 channels, 4x4) takes the direct 3x3 kernels
// where the build has them (forward, input and weight gradient), and again
// with them switched off. Finite differences across a kink of ReLU or max-pool
// measure no derivative: the data keep clear of the kinks, and the few
// elements whose step still crosses one are skipped.
TEST_CASE("norm: gradcheck of a small BatchNorm network at batches 2 and 3") {
    Generator gen(21);
    for (int64_t n : {2, 3}) {
        CAPTURE(n);
        // The network, the smooth piece its last evaluation lay on (which ReLU
        // inputs were positive, which pixel each max-pool window took) and how
        // close it came to a kink (the smallest |ReLU input| and the smallest
        // gap between the two largest values of a window with a positive maximum).
        uint64_t piece = 0;
        double margin = 0;
        auto relu_piece = [&](const Tensor& a) {
            for (int64_t i = 0; i < a.numel(); ++i) {
                piece = (piece ^ uint64_t{a.data()[i] > 0.f}) * 1099511628211ull;  // FNV-1a
                margin = std::min(margin, std::fabs(static_cast<double>(a.data()[i])));
            }
        };
        auto pool_piece = [&](const Tensor& h, const Tensor& indices, const Tensor& out) {
            const int64_t planes = h.size(0) * h.size(1), in = h.size(2) * h.size(3), o = out.numel() / planes;
            for (int64_t i = 0; i < out.numel(); ++i) {
                const int64_t pl = i / o, oh = (i % o) / out.size(3), ow = i % out.size(3);
                piece = (piece ^ static_cast<uint64_t>(indices.data()[i])) * 1099511628211ull;
                if (!(out.data()[i] > 0.f)) continue;
                for (int64_t di = 0; di < 2; ++di)
                    for (int64_t dj = 0; dj < 2; ++dj) {
                        const int64_t at = (2 * oh + di) * h.size(3) + 2 * ow + dj;
                        if (at != static_cast<int64_t>(indices.data()[i]))
                            margin = std::min(margin, static_cast<double>(out.data()[i]) - h.data()[pl * in + at]);
                    }
            }
        };
        auto net = [&](const std::vector<Tensor>& v) {
            piece = 14695981039346656037ull;
            margin = 1e30;
            Tensor a1 = batch_norm(conv2d(v[0], v[1], v[2], 1, 1), Tensor(), Tensor(), v[5], v[6], true);
            Tensor a2 = batch_norm(conv2d(relu(a1), v[3], v[4], 1, 1), Tensor(), Tensor(), v[7], v[8], true);
            Tensor h = relu(a2);
            MaxPoolResult pooled = max_pool2d_with_indices(h, 2);
            relu_piece(a1), relu_piece(a2), pool_piece(h, pooled.indices, pooled.output);
            return linear(pooled.output.flatten(1), v[9], v[10]);
        };
        // Inputs and parameters whose forward keeps 2e-3 from every kink, so
        // that few steps of the finite differences (2e-3) cross one; a step
        // that large keeps their float rounding (~1e-6 / 2e-3) under atol.
        std::vector<Tensor> inputs;
        for (int attempt = 0; attempt < 200 && !(margin >= 2e-3); ++attempt) {
            inputs = {Tensor::normal({n, 3, 4, 4}, 0.f, 1.f, &gen).requires_grad_(),
                      Tensor::uniform({16, 3, 3, 3}, -0.3f, 0.3f, &gen).requires_grad_(),   // conv 1
                      Tensor::uniform({16}, -0.2f, 0.2f, &gen).requires_grad_(),
                      Tensor::uniform({16, 16, 3, 3}, -0.1f, 0.1f, &gen).requires_grad_(),  // conv 2
                      Tensor::uniform({16}, -0.1f, 0.1f, &gen).requires_grad_(),
                      param(16, gen, 0.5f, 1.5f), param(16, gen, -0.5f, 0.5f),              // BatchNorm 1
                      param(16, gen, 0.5f, 1.5f), param(16, gen, -0.5f, 0.5f),              // BatchNorm 2
                      Tensor::uniform({5, 64}, -0.2f, 0.2f, &gen).requires_grad_(),         // linear
                      Tensor::uniform({5}, -0.1f, 0.1f, &gen).requires_grad_()};
            NoGradGuard no_grad;
            net(inputs);
        }
        REQUIRE(margin >= 2e-3);
        GradcheckOptions o;
        o.eps = 2e-3;
        o.piece = [&piece] { return piece; };
        // Generic: im2col + GEMM; avx512 (where the CPU has it): the direct kernels.
        for (Isa isa : {Isa::generic, Isa::avx512}) {
            if (!isa_supported(isa)) continue;
            CAPTURE(isa_name(isa));
            ScopedIsa scoped(isa);
            GradcheckResult r = gradcheck(net, inputs, o);
            CHECK_MESSAGE(r.ok, r.message);
            CAPTURE(r.skipped);
            CHECK(r.checked >= 9 * (r.checked + r.skipped) / 10);  // nearly every element is compared
        }
    }
}

TEST_CASE("norm: BatchNorm gradcheck in eval mode") {
    Generator gen(12);
    for (const Shape& s : std::vector<Shape>{{1, 3}, {4, 3}, {2, 3, 4}, {1, 2, 3, 3}, {3, 2, 2, 3}}) {
        CAPTURE(shape_str(s));
        const int64_t C = s[1];
        Tensor x = channel_input(s, gen);
        Tensor g = param(C, gen, 0.5f, 1.5f), b = param(C, gen, -0.5f, 0.5f);
        Tensor rm = Tensor::uniform({C}, -0.5f, 0.5f, &gen), rv = Tensor::uniform({C}, 0.5f, 2.f, &gen);
        expect_gradcheck([&](auto& v) { return batch_norm(v[0], rm, rv, v[1], v[2], false); }, {x, g, b},
                         "batch_norm eval " + shape_str(s));
        expect_gradcheck([&](auto& v) { return batch_norm(v[0], rm, rv, Tensor(), Tensor(), false); }, {x},
                         "batch_norm eval, no affine " + shape_str(s));
    }
}

TEST_CASE("norm: BatchNorm buffers, parameters and state_dict follow PyTorch") {
    BatchNorm2d bn(4);
    CHECK(bn.type_name() == "BatchNorm2d");
    CHECK(bn.extra_repr() == "4, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True");
    auto params = bn.named_parameters();
    REQUIRE(params.size() == 2);
    CHECK(params[0].first == "weight");
    CHECK(params[1].first == "bias");
    auto sd = bn.state_dict();
    REQUIRE(sd.size() == 5);
    CHECK(sd[2].name == "running_mean");
    CHECK(sd[3].name == "running_var");
    CHECK(sd[4].name == "num_batches_tracked");
    CHECK(sd[4].dtype == DType::I64);
    CHECK(sd[4].tensor.dim() == 0);
    check_close(bn.weight, Tensor::ones({4}));
    check_close(bn.bias, Tensor::zeros({4}));
    check_close(bn.running_mean, Tensor::zeros({4}));
    check_close(bn.running_var, Tensor::ones({4}));
    for (const auto& [n, b] : bn.named_buffers()) CHECK_FALSE(b.requires_grad());

    // affine=false: no parameters; track_running_stats=false: no buffers.
    BatchNorm1d plain(3, 1e-5f, 0.1f, /*affine=*/false, /*track_running_stats=*/false);
    CHECK(plain.parameters().empty());
    CHECK(plain.state_dict().empty());
    CHECK(plain.extra_repr() == "3, eps=1e-05, momentum=0.1, affine=False, track_running_stats=False");
    CHECK(BatchNorm1d(3, 1e-5f, std::nullopt).extra_repr().find("momentum=None") != std::string::npos);
}

TEST_CASE("norm: BatchNorm momentum conventions and the unbiased running variance") {
    // x of one channel: 1, 2, 3, 6 -> mean 3, biased var 3.5, unbiased 14/3.
    Tensor x = T({1, 2, 3, 6}, {4, 1});
    BatchNorm1d bn(1);
    bn.forward(x);
    CHECK(bn.running_mean.item() == doctest::Approx(0.9 * 0 + 0.1 * 3));
    CHECK(bn.running_var.item() == doctest::Approx(0.9 * 1 + 0.1 * 14.0 / 3));
    CHECK(bn.num_batches_tracked.item() == 1);
    // normalised with the biased variance
    Tensor y = bn.forward(x);
    CHECK(y.data()[0] == doctest::Approx((1 - 3) / std::sqrt(3.5 + 1e-5)).epsilon(1e-5));

    // momentum = none: the plain average of every batch seen.
    BatchNorm1d cma(1, 1e-5f, std::nullopt);
    cma.forward(T({0, 2}, {2, 1}));  // mean 1, unbiased var 2
    cma.forward(T({4, 8}, {2, 1}));  // mean 6, unbiased var 8
    cma.forward(T({1, 1}, {2, 1}));  // mean 1, unbiased var 0
    CHECK(cma.running_mean.item() == doctest::Approx((1 + 6 + 1) / 3.0));
    CHECK(cma.running_var.item() == doctest::Approx((2 + 8 + 0) / 3.0));
    CHECK(cma.num_batches_tracked.item() == 3);

    // eval mode changes nothing and uses the running statistics.
    bn.eval();
    Tensor before = bn.running_mean.clone();
    Tensor ye = bn.forward(T({5}, {1, 1}));  // one value is fine in eval mode
    check_close(bn.running_mean, before);
    CHECK(bn.num_batches_tracked.item() == 2);
    const float rm = bn.running_mean.item(), rv = bn.running_var.item();
    CHECK(ye.item() == doctest::Approx((5 - rm) / std::sqrt(rv + 1e-5)).epsilon(1e-5));
}

TEST_CASE("norm: BatchNorm set_momentum changes the weight of the next batches") {
    // As assigning bn.momentum in PyTorch: the batches already folded in stay.
    BatchNorm1d bn(1);
    bn.forward(T({1, 2, 3, 6}, {4, 1}));  // mean 3: running_mean 0.3
    bn.set_momentum(0.5f);
    CHECK(bn.momentum() == 0.5f);
    bn.forward(T({0, 2}, {2, 1}));  // mean 1
    CHECK(bn.running_mean.item() == doctest::Approx(0.5 * 0.3 + 0.5 * 1));
    bn.set_momentum(std::nullopt);  // cumulative average from now on: factor 1 / num_batches_tracked
    bn.forward(T({4, 8}, {2, 1}));  // mean 6, third batch
    CHECK(bn.running_mean.item() == doctest::Approx(0.65 + (6 - 0.65) / 3));
    CHECK_THROWS_WITH_AS(bn.set_momentum(1.5f), doctest::Contains("momentum must be in [0, 1]"), Error);
}

TEST_CASE("norm: BatchNorm without running statistics uses batch statistics in eval mode too") {
    Generator gen(3);
    Tensor x = channel_input({4, 3, 2, 2}, gen, false);
    BatchNorm2d bn(3, 1e-5f, 0.1f, true, /*track_running_stats=*/false);
    Tensor yt = bn.forward(x);
    bn.eval();
    Tensor ye = bn.forward(x);
    check_close(ye, yt);
    CHECK_THROWS_AS(bn.forward(Tensor::zeros({1, 3, 1, 1})), Error);  // one value: still batch stats
    CHECK_THROWS_AS(bn.freeze_statistics(), Error);
}

TEST_CASE("norm: BatchNorm errors name the layer and the shapes") {
    BatchNorm2d bn(3);
    auto message = [&](const Tensor& x) {
        try {
            bn.forward(x);
        } catch (const Error& e) {
            return std::string(e.what());
        }
        return std::string("no error");
    };
    const std::string one = message(Tensor::zeros({1, 3, 1, 1}));
    CHECK(one.find("BatchNorm2d(3)") != std::string::npos);
    CHECK(one.find("more than 1 value per channel") != std::string::npos);
    CHECK(one.find("[1, 3, 1, 1]") != std::string::npos);
    const std::string dims = message(Tensor::zeros({2, 3}));
    CHECK(dims.find("4-d") != std::string::npos);
    CHECK(dims.find("[2, 3]") != std::string::npos);
    const std::string ch = message(Tensor::zeros({2, 4, 2, 2}));
    CHECK(ch.find("3 channels") != std::string::npos);
    CHECK(ch.find("[2, 4, 2, 2]") != std::string::npos);
    // a 1x1 spatial map with a batch of 2 is fine, as is batch 1 with 2 pixels
    CHECK_NOTHROW(bn.forward(Tensor::normal({2, 3, 1, 1}, 0, 1)));
    CHECK_NOTHROW(bn.forward(Tensor::normal({1, 3, 1, 2}, 0, 1)));
    CHECK(bn.num_batches_tracked.item() == 2);  // the failed calls counted nothing

    BatchNorm1d bn1(2);
    CHECK_THROWS_AS(bn1.forward(Tensor::zeros({1, 2})), Error);
    CHECK_THROWS_AS(bn1.forward(Tensor::zeros({2, 2, 2, 2})), Error);
    CHECK_NOTHROW(bn1.forward(Tensor::normal({1, 2, 3}, 0, 1)));
    CHECK_THROWS_AS(BatchNorm2d(0), Error);
    CHECK_THROWS_AS(batch_norm(Tensor::zeros({2, 3}), Tensor::zeros({4}), Tensor::ones({4}), Tensor(),
                               Tensor(), false),
                    Error);
    CHECK_THROWS_AS(batch_norm(Tensor::zeros({2, 3}), Tensor(), Tensor(), Tensor(), Tensor(), false), Error);
}

TEST_CASE("norm: BatchNorm frozen statistics behave like eval mode while training") {
    Generator gen(5);
    BatchNorm2d bn(3);
    for (int i = 0; i < 3; ++i) bn.forward(channel_input({4, 3, 2, 2}, gen, false));
    bn.freeze_statistics();
    CHECK(bn.statistics_frozen());
    CHECK(bn.is_training());
    const Tensor rm = bn.running_mean.clone(), rv = bn.running_var.clone();

    Tensor x = channel_input({4, 3, 2, 2}, gen);
    Tensor dy = Tensor::normal({4, 3, 2, 2}, 0, 1, &gen);
    Tensor y = bn.forward(x);
    y.backward(dy);
    check_close(bn.running_mean, rm);  // unchanged
    check_close(bn.running_var, rv);
    CHECK(bn.num_batches_tracked.item() == 3);
    const Tensor dx = x.grad(), dw = bn.weight.grad(), db = bn.bias.grad();
    REQUIRE(dw.defined());  // gamma and beta still train
    REQUIRE(db.defined());

    // the same as eval mode, output and every gradient
    bn.zero_grad();
    bn.freeze_statistics(false);
    bn.eval();
    Tensor x2 = leaf(x);
    Tensor y2 = bn.forward(x2);
    y2.backward(dy);
    check_close(y, y2);
    check_close(dx, x2.grad());
    check_close(dw, bn.weight.grad());
    check_close(db, bn.bias.grad());

    // and the backward treats the statistics as constants: gradcheck
    bn.train();
    bn.freeze_statistics();
    expect_gradcheck([&](auto& v) { return bn.forward(v[0]); }, {x}, "frozen BatchNorm2d");
    // a batch with one value per channel is fine once frozen
    CHECK_NOTHROW(bn.forward(Tensor::zeros({1, 3, 1, 1})));
}

TEST_CASE("norm: BatchNorm freeze_after_steps freezes after a warm-up") {
    Generator gen(6);
    BatchNorm2d bn(2);
    bn.freeze_after_steps(2);
    CHECK_FALSE(bn.statistics_frozen());
    bn.forward(channel_input({4, 2, 2, 2}, gen, false));
    bn.forward(channel_input({4, 2, 2, 2}, gen, false));
    CHECK(bn.statistics_frozen());
    const Tensor rm = bn.running_mean.clone();
    bn.forward(channel_input({4, 2, 2, 2}, gen, false));
    check_close(bn.running_mean, rm);
    CHECK(bn.num_batches_tracked.item() == 2);
    // decided from num_batches_tracked, so a reloaded checkpoint stays frozen
    BatchNorm2d fresh(2);
    fresh.freeze_after_steps(2);
    fresh.load_state_dict(bn.state_dict());
    CHECK(fresh.statistics_frozen());
    fresh.freeze_after_steps(std::nullopt);
    CHECK_FALSE(fresh.statistics_frozen());
    CHECK_THROWS_AS(bn.freeze_after_steps(-1), Error);
}

TEST_CASE("norm: BatchNorm saves only x and per-channel statistics, large tensors run in parallel") {
    // A larger 2d case exercising the OpenMP path against the reference formulas.
    Generator gen(8);
    const Shape s{8, 16, 16, 16};
    Tensor x = channel_input(s, gen);
    BatchNorm2d bn(16);
    Tensor y = bn.forward(x);
    Tensor dy = Tensor::normal(s, 0, 1, &gen);
    y.backward(dy);
    // direct double-precision formulas, per channel
    const int64_t N = 8, C = 16, S = 256;
    const double m = N * S;
    double worst = 0;
    for (int64_t c = 0; c < C; ++c) {
        double mu = 0, var = 0, sdy = 0, sdyx = 0;
        for (int64_t n = 0; n < N; ++n)
            for (int64_t i = 0; i < S; ++i) mu += x.data()[(n * C + c) * S + i];
        mu /= m;
        for (int64_t n = 0; n < N; ++n)
            for (int64_t i = 0; i < S; ++i) var += std::pow(x.data()[(n * C + c) * S + i] - mu, 2);
        var /= m;
        const double is = 1 / std::sqrt(var + 1e-5);
        for (int64_t n = 0; n < N; ++n)
            for (int64_t i = 0; i < S; ++i) {
                const int64_t k = (n * C + c) * S + i;
                sdy += dy.data()[k];
                sdyx += dy.data()[k] * (x.data()[k] - mu) * is;
            }
        for (int64_t n = 0; n < N; ++n)
            for (int64_t i = 0; i < S; ++i) {
                const int64_t k = (n * C + c) * S + i;
                const double xh = (x.data()[k] - mu) * is;
                worst = std::max(worst, std::fabs(y.data()[k] - xh));
                const double dx = is * (dy.data()[k] - sdy / m - xh * sdyx / m);
                worst = std::max(worst, std::fabs(x.grad().data()[k] - dx));
            }
        CHECK(bn.weight.grad().data()[c] == doctest::Approx(sdyx).epsilon(1e-4));
        CHECK(bn.bias.grad().data()[c] == doctest::Approx(sdy).epsilon(1e-4));
    }
    CHECK(worst < 1e-5);
    CHECK(std::string(y.grad_fn()->name()) == "BatchNormBackward");
    CHECK(y.grad_fn()->next_edges.size() == 3);
}
