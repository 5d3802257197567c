// BatchNorm + ReLU fused (batch_norm_relu, Module::call_relu, Sequential):
// the same bits as relu(batch_norm(x)) in every mode, forward and backward,
// and used only where nothing can see the output before the ReLU.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <memory>

#include "layers/activation.h"
#include "layers/batchnorm.h"
#include "layers/batchnorm_reference.h"
#include "layers/gated_batchnorm.h"
#include "layers/models.h"
#include "test_norm_common.h"

using namespace minnow;
using namespace minnow::testing::norm;

namespace {

using minnow::testing::same_bits_any_nan;

// A BatchNorm with non-trivial gamma, beta and running statistics, and an
// identical copy of it.
std::pair<std::shared_ptr<BatchNorm>, std::shared_ptr<BatchNorm>> twin_batchnorms(int64_t C, Generator& gen) {
    auto a = std::make_shared<BatchNorm>(C), b = std::make_shared<BatchNorm>(C);
    copy_(a->weight, param(C, gen, -1.5f, 1.5f));
    copy_(a->bias, param(C, gen, -1.f, 1.f));
    copy_(a->running_mean, param(C, gen, -0.5f, 0.5f));
    copy_(a->running_var, param(C, gen, 0.5f, 2.f));
    b->load_state_dict(a->state_dict());
    return {a, b};
}

enum class Mode { train, eval, frozen };

}  // namespace

TEST_CASE("norm: BatchNorm + ReLU fused gives relu(batch_norm(x))'s bits, forward and backward") {
    const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
    // [N, C], [N, C, L], [N, C, H, W], and one big enough for the parallel kernels.
    for (const Shape& shape : {Shape{6, 5}, Shape{4, 3, 7}, Shape{8, 16, 9, 9}, Shape{16, 32, 32, 32}}) {
        for (Mode mode : {Mode::train, Mode::eval, Mode::frozen}) {
            for (bool special : {false, true}) {
                CAPTURE(shape_str(shape));
                CAPTURE(static_cast<int>(mode));
                CAPTURE(special);
                Generator gen(11);
                const int64_t C = shape[1];
                auto [fused, plain] = twin_batchnorms(C, gen);
                Tensor x = channel_input(shape, gen, /*requires_grad=*/false);
                Tensor dy = Tensor::normal(shape, 0.f, 1.f, &gen);
                // Values at the running mean (z near 0 in eval mode), and in
                // channel 0 a NaN, a +inf and a -inf; dy with exact zeros.
                const int64_t S = x.numel() / (shape[0] * C);
                for (int64_t n = 0; n < shape[0]; n += 2) x.data()[(n * C + 1 % C) * S] = plain->running_mean.data()[1 % C];
                if (special) {
                    x.data()[0] = nan;
                    x.data()[S > 1 ? 1 : C] = inf;
                    x.data()[C * S] = -inf;
                }
                for (int64_t i = 0; i < dy.numel(); i += 7) dy.data()[i] = 0.f;
                for (auto& bn : {fused, plain}) {
                    if (mode == Mode::eval) bn->eval();
                    if (mode == Mode::frozen) bn->freeze_statistics();
                }
                Tensor x1 = leaf(x), x2 = leaf(x);
                Tensor y1 = fused->call_relu(x1);
                Tensor y2 = relu((*plain)(x2));
                CHECK(std::string(y1.grad_fn()->name()) == "BatchNormReluBackward");
                CHECK(same_bits_any_nan(y1, y2));
                y1.backward(dy);
                y2.backward(dy);
                CHECK(same_bits_any_nan(x1.grad(), x2.grad()));
                CHECK(same_bits_any_nan(fused->weight.grad(), plain->weight.grad()));
                CHECK(same_bits_any_nan(fused->bias.grad(), plain->bias.grad()));
                CHECK(same_bits_any_nan(fused->running_mean, plain->running_mean));
                CHECK(same_bits_any_nan(fused->running_var, plain->running_var));
                CHECK(fused->num_batches_tracked.item() == plain->num_batches_tracked.item());
            }
        }
    }
}

TEST_CASE("norm: batch_norm_relu is one node over x, whatever needs a gradient") {
    Generator gen(3);
    Tensor x = channel_input({4, 3, 5, 5}, gen);
    Tensor w = param(3, gen, 0.5f, 1.5f).requires_grad_(), b = param(3, gen, -1.f, 1.f).requires_grad_();
    Tensor y = batch_norm_relu(x, Tensor(), Tensor(), w, b, /*training=*/true);
    // No ReLU node and no tensor between: the node's inputs are x, w and b.
    CHECK(std::string(y.grad_fn()->name()) == "BatchNormReluBackward");
    CHECK(y.grad_fn()->next_edges.size() == 3);
    for (int64_t i = 0; i < y.numel(); ++i) CHECK(y.data()[i] >= 0.f);
    // Only x needing a gradient (gamma = 1, beta = 0), and only gamma.
    Tensor x1 = leaf(x), x2 = leaf(x);
    Tensor dy = Tensor::normal(x.shape(), 0.f, 1.f, &gen);
    batch_norm_relu(x1, Tensor(), Tensor(), Tensor(), Tensor(), true).backward(dy);
    relu(batch_norm(x2, Tensor(), Tensor(), Tensor(), Tensor(), true)).backward(dy);
    CHECK(same_bits_any_nan(x1.grad(), x2.grad()));
    Tensor w1 = leaf(w), w2 = leaf(w);
    batch_norm_relu(x.detach(), Tensor(), Tensor(), w1, Tensor(), true).backward(dy);
    relu(batch_norm(x.detach(), Tensor(), Tensor(), w2, Tensor(), true)).backward(dy);
    CHECK(same_bits_any_nan(w1.grad(), w2.grad()));
}

TEST_CASE("norm: Sequential fuses BatchNorm + ReLU only where nothing sees the output in between") {
    Generator gen(5);
    auto make = [](std::shared_ptr<Module> norm) {
        return std::make_shared<Sequential>(std::vector<std::shared_ptr<Module>>{norm, std::make_shared<ReLU>()});
    };
    Tensor x = channel_input({4, 8, 6, 6}, gen, false);
    auto name_of = [&](Sequential& s) { return std::string(s(leaf(x)).grad_fn()->name()); };

    auto bn = std::make_shared<BatchNorm2d>(8);
    auto seq = make(bn);
    CHECK(name_of(*seq) == "BatchNormReluBackward");

    // A hook on the BatchNorm sees its own output, negative values and all.
    float seen_min = 0.f;
    bn->register_forward_hook([&](Module&, const Tensor& y) {
        for (int64_t i = 0; i < y.numel(); ++i) seen_min = std::min(seen_min, y.data()[i]);
    });
    CHECK(name_of(*seq) == "ReluBackward");
    CHECK(seen_min < 0.f);
    bn->clear_forward_hooks();

    // A hook on the ReLU, or a forward timer: each module runs on its own.
    int relu_calls = 0;
    (*seq)[1]->register_forward_hook([&](Module&, const Tensor&) { ++relu_calls; });
    CHECK(name_of(*seq) == "ReluBackward");
    CHECK(relu_calls == 1);
    (*seq)[1]->clear_forward_hooks();
    int timed = 0;
    Module::set_forward_timer([&](Module&, const Tensor&, double) { ++timed; });
    CHECK(name_of(*seq) == "ReluBackward");
    Module::set_forward_timer(nullptr);
    CHECK(timed == 3);  // the Sequential, the BatchNorm and the ReLU

    // Subclasses with a forward of their own are not fused into BatchNorm's pass.
    CHECK(name_of(*make(std::make_shared<GatedBatchNorm2d>(8))) == "ReluBackward");
    CHECK(name_of(*make(std::make_shared<BatchNormReference>(8))) == "ReluBackward");
}

TEST_CASE("norm: cnn and resnet20 with BatchNorm + ReLU fused train to the same bits as unfused") {
    for (const char* model : {"cnn", "resnet20"}) {
        CAPTURE(model);
        Generator gen(7);
        auto fused = make_model(model, "batch", 10), plain = make_model(model, "batch", 10);
        plain->load_state_dict(fused->state_dict());
        // A hook on every module keeps each one running on its own.
        for (auto& [name, m] : plain->named_modules()) m->register_forward_hook([](Module&, const Tensor&) {});
        Tensor x = Tensor::normal({3, 3, 32, 32}, 0.f, 1.f, &gen);
        Tensor y1 = fused->forward(x), y2 = plain->forward(x);
        CHECK(same_bits_any_nan(y1, y2));
        sum(y1).backward();
        sum(y2).backward();
        const auto p1 = fused->named_parameters(), p2 = plain->named_parameters();
        for (size_t i = 0; i < p1.size(); ++i) {
            CAPTURE(p1[i].first);
            CHECK(same_bits_any_nan(p1[i].second.grad(), p2[i].second.grad()));
        }
        const auto b1 = fused->named_buffers(), b2 = plain->named_buffers();
        for (size_t i = 0; i < b1.size(); ++i) {
            CAPTURE(b1[i].first);
            CHECK(same_bits_any_nan(b1[i].second, b2[i].second));
        }
    }
}
