// BatchNorm folded into the preceding conv (layers/fold_batchnorm.h): the
// folded model computes what the eval-mode model does, for the cnn and resnet20.
#include <doctest/doctest.h>

#include <cmath>
#include <map>

#include "core/autograd.h"
#include "core/ops.h"
#include "core/random.h"
#include "layers/activation.h"
#include "layers/batchnorm.h"
#include "layers/conv2d_bf16.h"
#include "layers/conv2d.h"
#include "layers/flatten.h"
#include "layers/linear.h"
#include "layers/fold_batchnorm.h"
#include "layers/model_surgery.h"
#include "layers/models.h"
#include "layers/pooling.h"
#include "test_helpers.h"

using namespace minnow;
using minnow::testing::max_abs;
using minnow::testing::max_abs_diff;

namespace {

// Gives every BatchNorm of `model` statistics and affine parameters far from
// their defaults (mean 0, var 1, gamma 1, beta 0), from a formula of the
// channel and the layer, so folding has something to fold.
void set_nontrivial_batchnorm(Module& model) {
    int layer = 0;
    for (auto& [name, m] : model.named_modules()) {
        auto* bn = dynamic_cast<BatchNorm*>(m);
        if (!bn) continue;
        ++layer;
        for (int64_t c = 0; c < bn->num_features(); ++c) {
            const float t = static_cast<float>(c + 3 * layer);
            bn->running_mean.data()[c] = 0.3f * std::sin(0.7f * t);
            bn->running_var.data()[c] = 0.2f + 0.15f * (1.f + std::cos(1.3f * t));  // 0.2 .. 0.5
            bn->weight.data()[c] = 0.6f + 0.5f * std::sin(0.9f * t + 1.f) * std::sin(0.9f * t + 1.f);
            bn->bias.data()[c] = 0.1f * std::cos(0.4f * t);
        }
    }
}

// A second model with the same state (make_model draws weights from the
// default generator; load_state_dict then overwrites them all).
std::shared_ptr<Module> copy_of(const Module& model, const std::string& name) {
    auto copy = make_model(name, "batch");
    copy->load_state_dict(model.state_dict());
    copy->eval();
    return copy;
}

Tensor run(Module& model, const Tensor& x) {
    NoGradGuard no_grad;
    return model(x);
}


int count_of(Module& model, const std::string& type) {
    int n = 0;
    for (auto& [name, m] : model.named_modules()) n += m->type_name() == type;
    return n;
}

// Folds a copy of `name` (weights from seed 1, BatchNorm from the formula) and
// checks its outputs against the unfolded eval-mode model's, for each input size.
void check_folding(const std::string& name, int expected_pairs, const std::vector<Shape>& inputs) {
    manual_seed(1);
    auto original = make_model(name, "batch");
    set_nontrivial_batchnorm(*original);
    original->eval();
    const auto state_before = original->state_dict();
    std::vector<std::vector<float>> values_before;
    for (const auto& e : state_before) values_before.push_back(e.tensor.to_vector());

    auto folded = copy_of(*original, name);
    const int batchnorms = count_of(*folded, "BatchNorm2d");
    CHECK(fold_batchnorm(*folded) == expected_pairs);
    CHECK(count_of(*folded, "BatchNorm2d") == 0);
    CHECK(count_of(*folded, "Identity") == batchnorms);

    for (const Shape& shape : inputs) {
        Tensor x = Tensor::normal(shape, 0.f, 1.f);
        Tensor expected = run(*original, x), got = run(*folded, x);
        const double scale = max_abs(expected), diff = max_abs_diff(got, expected);
        INFO(name << " on " << shape_str(shape) << ": max |folded - unfolded| = " << diff << ", output scale "
                  << scale);
        CHECK(scale > 0.1);  // the comparison means something
        CHECK(diff <= 1e-5 * scale);
    }

    // The original is untouched: same tensors, same values, still its BatchNorms.
    const auto state_after = original->state_dict();
    REQUIRE(state_after.size() == state_before.size());
    for (size_t i = 0; i < state_after.size(); ++i) {
        CHECK(state_after[i].name == state_before[i].name);
        CHECK(state_after[i].tensor.same(state_before[i].tensor));
        CHECK(state_after[i].tensor.to_vector() == values_before[i]);
    }
    CHECK(count_of(*original, "BatchNorm2d") == batchnorms);
}

}  // namespace

TEST_CASE("fold_batchnorm: cnn folded equals cnn in eval mode (32x32 and other sizes)") {
    check_folding("cnn", 5, {{2, 3, 32, 32}, {1, 3, 20, 28}});
}

TEST_CASE("fold_batchnorm: resnet20 folded equals resnet20 in eval mode (blocks and shortcuts)") {
    // conv1/bn1, 9 blocks x (conv1/bn1, conv2/bn2), and the 2 projection shortcuts.
    check_folding("resnet20", 1 + 9 * 2 + 2, {{2, 3, 32, 32}});
}

TEST_CASE("fold_batchnorm: names and indices stay, the conv gains a bias") {
    manual_seed(2);
    auto model = make_model("cnn", "batch");
    model->eval();
    fold_batchnorm(*model);
    auto& features = *std::dynamic_pointer_cast<ReferenceCNN>(model)->features;
    CHECK(features[0]->type_name() == "Conv2d");
    CHECK(features[1]->type_name() == "Identity");
    CHECK(features[2]->type_name() == "ReLU");
    CHECK(features[15]->type_name() == "Identity");
    std::vector<std::string> keys;
    for (const auto& e : model->state_dict()) keys.push_back(e.name);
    const std::vector<std::string> expected{"features.0.weight",  "features.0.bias",  "features.3.weight",
                                            "features.3.bias",    "features.7.weight", "features.7.bias",
                                            "features.10.weight", "features.10.bias", "features.14.weight",
                                            "features.14.bias",   "classifier.weight", "classifier.bias"};
    CHECK(keys == expected);
    CHECK(!model->is_training());  // the new modules are in eval mode too
    for (auto& [name, m] : model->named_modules()) CHECK_MESSAGE(!m->is_training(), name);
}

TEST_CASE("fold_batchnorm: resnet20's bias-free convs get the folded bias and the blocks call them") {
    manual_seed(3);
    auto model = make_model("resnet20", "batch");
    set_nontrivial_batchnorm(*model);
    model->eval();
    fold_batchnorm(*model);
    auto resnet = std::dynamic_pointer_cast<ResNet20>(model);
    auto block = std::dynamic_pointer_cast<BasicBlock>((*resnet->layer2)[0]);
    REQUIRE(block.get() != nullptr);
    // The handles forward() calls through are the registered modules.
    CHECK(block->bn1->type_name() == "Identity");
    CHECK(block->conv1->type_name() == "Conv2d");
    CHECK(std::dynamic_pointer_cast<Conv2d>(block->conv1.ptr())->bias.defined());
    CHECK((*block->shortcut)[1]->type_name() == "Identity");
    for (auto& [name, m] : block->named_modules())
        if (name == "conv1") CHECK(m == block->conv1.get());
    CHECK(resnet->bn1->type_name() == "Identity");
}

TEST_CASE("fold_batchnorm: refuses a model in training mode and changes nothing") {
    manual_seed(4);
    auto model = make_model("cnn", "batch");
    model->train();
    CHECK_THROWS_WITH_AS(fold_batchnorm(*model), doctest::Contains("training mode"), Error);
    CHECK(count_of(*model, "BatchNorm2d") == 5);
    // One submodule left in training mode is refused too, naming it.
    model->eval();
    std::dynamic_pointer_cast<ReferenceCNN>(model)->features->operator[](4)->train();
    CHECK_THROWS_WITH_AS(fold_batchnorm(*model), doctest::Contains("features.4"), Error);
    CHECK(count_of(*model, "BatchNorm2d") == 5);
}

TEST_CASE("fold_batchnorm: refuses a BatchNorm without running statistics") {
    Sequential seq;
    seq.push_back(std::make_shared<Conv2d>(3, 4, 3, 1, 1));
    seq.push_back(std::make_shared<BatchNorm2d>(4, 1e-5f, 0.1f, true, /*track_running_stats=*/false));
    seq.eval();
    CHECK_THROWS_WITH_AS(fold_batchnorm(seq), doctest::Contains("track_running_stats"), Error);
    CHECK(seq[1]->type_name() == "BatchNorm2d");
}

TEST_CASE("fold_batchnorm: does not draw from the default random generator") {
    manual_seed(5);
    auto model = make_model("cnn", "batch");
    model->eval();
    manual_seed(6);
    fold_batchnorm(*model);
    const float after_fold = Tensor::uniform({1}, 0.f, 1.f).item();
    manual_seed(6);
    CHECK(Tensor::uniform({1}, 0.f, 1.f).item() == after_fold);
}

TEST_CASE("model surgery: replace_submodule updates the registry the handles read, refuses what cannot fit") {
    manual_seed(7);
    auto model = make_model("cnn", "batch");
    auto cnn = std::dynamic_pointer_cast<ReferenceCNN>(model);
    // A Sequential child: the registry is what forward() uses.
    replace_submodule(*model, "features.2", std::make_shared<Identity>());
    CHECK((*cnn->features)[2]->type_name() == "Identity");
    // A typed handle (Linear) takes only a Linear; the model is left as it was.
    CHECK_THROWS_WITH_AS(replace_submodule(*model, "classifier", std::make_shared<Identity>()),
                         doctest::Contains("held as a Linear"), Error);
    CHECK(cnn->classifier->type_name() == "Linear");
    for (auto& [name, m] : model->named_modules())
        if (name == "classifier") CHECK(m == static_cast<Module*>(cnn->classifier.get()));
    auto linear = std::make_shared<Linear>(256, 10);
    replace_submodule(*model, "classifier", linear);  // one that fits
    CHECK(cnn->classifier.get() == linear.get());
    CHECK((cnn->classifier.ptr() == linear));
    CHECK_THROWS_WITH_AS(replace_submodule(*model, "features.99", std::make_shared<Identity>()),
                         doctest::Contains("no module 'features.99'"), Error);
    CHECK_THROWS_WITH_AS(replace_submodule(*model, "nothing.0", std::make_shared<Identity>()),
                         doctest::Contains("no module 'nothing'"), Error);
}

namespace {

// A model of one's own that calls its children through member handles, as
// the reference models do: surgery must reach it without knowing its class.
struct UserNet : Module {
    Child<Module> conv1, bn1;  // swapped by fold_batchnorm and to_bf16_inference
    Child<Sequential> body;    // conv, BatchNorm, ReLU
    Child<Linear> head;
    UserNet() {
        conv1 = register_module("conv1", std::make_shared<Conv2d>(3, 8, 3, 1, 1, false));
        bn1 = register_module("bn1", std::make_shared<BatchNorm2d>(8));
        body = register_module("body", std::make_shared<Sequential>(std::vector<std::shared_ptr<Module>>{
                                           std::make_shared<Conv2d>(8, 6, 3, 1, 1), std::make_shared<BatchNorm2d>(6),
                                           std::make_shared<ReLU>()}));
        head = register_module("head", std::make_shared<Linear>(6, 4));
    }
    Tensor forward(const Tensor& x) override {
        Tensor h = (*body)(relu((*bn1)((*conv1)(x))));
        return (*head)(adaptive_avg_pool2d(h, 1).flatten(1));
    }
    std::string type_name() const override { return "UserNet"; }
};

// The output of `model` on x, and the type of every module its forward called.
Tensor run_recording(Module& model, const Tensor& x, std::map<std::string, int>& called) {
    Module::set_forward_timer([&](Module& m, const Tensor&, double) { ++called[m.type_name()]; });
    Tensor y = run(model, x);
    Module::set_forward_timer(nullptr);
    return y;
}

}  // namespace

TEST_CASE("model surgery: fold_batchnorm and to_bf16_inference reach a user model's member handles") {
    manual_seed(21);
    UserNet net;
    set_nontrivial_batchnorm(net);
    net.eval();
    const std::vector<TensorEntry> state = net.state_dict();
    Tensor x = Tensor::normal({2, 3, 8, 8}, 0.f, 1.f);
    std::map<std::string, int> before, after;
    const Tensor y0 = run_recording(net, x, before);
    CHECK(before["BatchNorm2d"] == 2);

    CHECK(fold_batchnorm(net) == 2);  // conv1/bn1 by name, body.0/body.1 in the Sequential
    CHECK(net.bn1->type_name() == "Identity");
    CHECK(dynamic_cast<Conv2d&>(*net.conv1).bias.defined());  // the folded conv, seen through the handle
    const Tensor y1 = run_recording(net, x, after);
    CHECK(after["BatchNorm2d"] == 0);  // forward calls the folded layers, not the old ones
    CHECK(after["Conv2d"] == 2);
    CHECK(after["Identity"] == 2);
    CHECK(max_abs_diff(y1, y0) <= 1e-5 * max_abs(y0));

    UserNet fast;
    fast.load_state_dict(state);
    fast.eval();
    CHECK(to_bf16_inference(fast) == 2);
    std::map<std::string, int> bf16_called;
    const Tensor y2 = run_recording(fast, x, bf16_called);
    CHECK(bf16_called["Bf16Conv2d"] == 2);
    CHECK(bf16_called["Conv2d"] == 0);
    CHECK(max_abs_diff(y2, y0) <= 0.05 * max_abs(y0));

    // A handle of a narrower type refuses what is not one, and the model stays as it was.
    CHECK_THROWS_WITH_AS(replace_submodule(net, "head", std::make_shared<Identity>()),
                         doctest::Contains("held as a Linear"), Error);
    CHECK(net.head->type_name() == "Linear");
    CHECK(max_abs_diff(run(net, x), y1) == 0.0);
}
