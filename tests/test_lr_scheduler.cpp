// Learning-rate schedules against PyTorch's (tests/fixtures/schedules.safetensors),
// composition, per-group lrs, and checkpoints of their state.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>

#include "core/safetensors.h"
#include "optim/adam.h"
#include "optim/lr_scheduler.h"
#include "optim/sgd.h"
#include "test_helpers.h"

using namespace minnow;

namespace {

const SafetensorsFile& fixture() {
    static const SafetensorsFile f =
        load_safetensors(minnow::testing::source_path("tests/fixtures/schedules.safetensors"));
    return f;
}

Tensor param() { return Tensor::zeros({1}).requires_grad_(); }

// The fixture's optimizer: SGD(lr=0.1, momentum=0.9) over one parameter.
std::unique_ptr<SGD> fixture_optimizer() {
    SGDOptions o(0.1);
    o.momentum = 0.9;
    return std::make_unique<SGD>(std::vector<Tensor>{param()}, o);
}

// lrs[0] after construction, then after each of `steps` (opt.step(); sched.step()) pairs.
std::vector<double> run(Optimizer& opt, LRScheduler& sched, int steps,
                        std::vector<double>* momenta = nullptr) {
    std::vector<double> lrs{opt.param_groups()[0].lr};
    if (momenta) momenta->push_back(opt.param_groups()[0].momentum);
    for (int i = 0; i < steps; ++i) {
        opt.step();
        sched.step();
        lrs.push_back(opt.param_groups()[0].lr);
        CHECK(sched.get_last_lr()[0] == lrs.back());
        CHECK(sched.last_epoch() == i + 1);
        if (momenta) momenta->push_back(opt.param_groups()[0].momentum);
    }
    return lrs;
}

// PyTorch computes in double and the fixture holds the values rounded to
// float: minnow's doubles must round to the same floats (the closed forms
// differ from PyTorch's recursive ones only in the last bits of a double).
void check_matches(const std::vector<double>& got, const std::string& name) {
    const Tensor& expected = fixture().get(name);
    REQUIRE(static_cast<int64_t>(got.size()) == expected.numel());
    for (size_t i = 0; i < got.size(); ++i)
        CHECK_MESSAGE(static_cast<float>(got[i]) == expected.data()[i],
                      name << "[" << i << "] is " << got[i] << ", PyTorch " << expected.data()[i]);
}

void check_doubles(const std::vector<double>& got, const std::vector<double>& expected, const char* what) {
    REQUIRE(got.size() == expected.size());
    for (size_t i = 0; i < got.size(); ++i)
        CHECK_MESSAGE(std::fabs(got[i] - expected[i]) <= 1e-15 * std::fabs(expected[i]) + 1e-18,
                      what << "[" << i << "] is " << got[i] << ", PyTorch " << expected[i]);
}

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    return "(no error)";
}

}  // namespace

TEST_CASE("optim: MultiStepLR, CosineAnnealingLR and LinearLR match PyTorch") {
    {
        auto opt = fixture_optimizer();
        MultiStepLR s(*opt, {10, 15}, 0.1);
        check_matches(run(*opt, s, 30), "multistep.lr");
    }
    {
        auto opt = fixture_optimizer();
        CosineAnnealingLR s(*opt, 30, 0.0);
        const auto lrs = run(*opt, s, 30);
        check_matches(lrs, "cosine.lr");
        CHECK(lrs[30] == 0.0);
    }
    {
        auto opt = fixture_optimizer();
        LinearLR s(*opt, 0.1, 1.0, 5);
        check_matches(run(*opt, s, 30), "linear_warmup.lr");
    }
}

TEST_CASE("optim: OneCycleLR matches PyTorch, momentum included") {
    auto opt = fixture_optimizer();
    OneCycleLR s(*opt, 0.1, 30);
    CHECK(opt->param_groups()[0].momentum == 0.95);  // already at construction, overriding 0.9
    std::vector<double> momenta;
    const auto lrs = run(*opt, s, 29, &momenta);
    check_matches(lrs, "onecycle.lr");
    check_matches(momenta, "onecycle.momentum");
    // As PyTorch 1.13: one more step is allowed (past the end), the next is an error.
    s.step();
    const std::string msg = error_of([&] { s.step(); });
    CHECK_MESSAGE(msg.find("OneCycleLR: tried to step 32 times; total_steps is 30") != std::string::npos, msg);
    CHECK(s.last_epoch() == 30);  // the failed step changed nothing
}

TEST_CASE("optim: OneCycleLR cycles Adam's beta1, for every param group") {
    // Values from PyTorch 1.13: torch.optim.Adam([{'params': [p]}, {'params': [q], 'lr': 0.5}],
    // lr=0.01) with OneCycleLR(max_lr=0.2, total_steps=10, pct_start=0.25,
    // anneal_strategy='linear', div_factor=10, final_div_factor=100).
    const std::vector<double> lr = {0.02, 0.14, 0.18668, 0.16004000000000002, 0.13340000000000002,
                                    0.10676000000000001, 0.08012000000000001, 0.05348000000000003,
                                    0.026840000000000003, 0.00020000000000000573};
    const std::vector<double> beta1 = {0.95, 0.8833333333333333, 0.8566666666666667, 0.87, 0.8833333333333333,
                                       0.8966666666666666, 0.9099999999999999, 0.9233333333333333,
                                       0.9366666666666666, 0.95};
    ParamGroupSpec other({param()});
    other.lr = 0.5;
    Adam opt(std::vector<ParamGroupSpec>{ParamGroupSpec({param()}), other}, AdamOptions(0.01));
    OneCycleOptions o;
    o.pct_start = 0.25;
    o.anneal_strategy = OneCycleOptions::Anneal::Linear;
    o.div_factor = 10;
    o.final_div_factor = 100;
    OneCycleLR s(opt, 0.2, 10, o);
    std::vector<double> got_lr, got_lr2, got_beta1;
    for (int i = 0; i < 10; ++i) {
        got_lr.push_back(opt.param_groups()[0].lr);
        got_lr2.push_back(opt.param_groups()[1].lr);
        got_beta1.push_back(opt.param_groups()[0].beta1);
        CHECK(opt.param_groups()[1].beta1 == opt.param_groups()[0].beta1);
        CHECK(opt.param_groups()[0].momentum == 0.0);  // Adam's momentum is beta1
        if (i < 9) s.step();
    }
    check_doubles(got_lr, lr, "lr");
    check_doubles(got_lr2, lr, "lr of group 1");
    check_doubles(got_beta1, beta1, "beta1");
}

TEST_CASE("optim: SequentialLR runs a warm-up, then another schedule") {
    // Values from PyTorch 1.13: SGD(lr=0.1) with SequentialLR([LinearLR(start_factor=0.1,
    // total_iters=3), CosineAnnealingLR(T_max=5, eta_min=0.001)], milestones=[3]).
    const std::vector<double> expected = {0.010000000000000002, 0.04, 0.07, 0.1, 0.0905463412215599,
                                          0.06579634122155989, 0.035203658778440096, 0.010453658778440105,
                                          0.001, 0.010453658778440102, 0.03520365877844012};
    auto opt = fixture_optimizer();
    auto warmup = std::make_shared<LinearLR>(*opt, 0.1, 1.0, 3);
    auto cosine = std::make_shared<CosineAnnealingLR>(*opt, 5, 0.001);
    SequentialLR s(*opt, {warmup, cosine}, {3});
    check_doubles(run(*opt, s, 10), expected, "lr");

    auto other = fixture_optimizer();
    auto elsewhere = std::make_shared<LinearLR>(*other, 0.1, 1.0, 3);
    const std::string msg = error_of([&] { SequentialLR(*opt, {warmup, elsewhere}, {3}); });
    CHECK_MESSAGE(msg.find("made on another optimizer") != std::string::npos, msg);
    const std::string msg2 = error_of([&] { SequentialLR(*opt, {warmup, cosine}, {}); });
    CHECK_MESSAGE(msg2.find("one milestone fewer than schedulers") != std::string::npos, msg2);
}

TEST_CASE("optim: every param group is scheduled from its own base lr") {
    ParamGroupSpec slow({param()});
    slow.lr = 0.01;
    SGD opt(std::vector<ParamGroupSpec>{ParamGroupSpec({param()}), slow}, SGDOptions(0.1));
    MultiStepLR s(opt, {2}, 0.1);
    CHECK(s.base_lrs() == std::vector<double>{0.1, 0.01});
    s.step();
    s.step();
    CHECK(s.get_last_lr() == std::vector<double>{0.1 * 0.1, 0.01 * 0.1});
    CHECK(opt.param_groups()[1].initial_lr == 0.01);
}

TEST_CASE("optim: a scheduler resumed from a checkpoint continues exactly") {
    for (const std::string kind : {"cosine", "onecycle", "sequential"}) {
        CAPTURE(kind);
        std::vector<std::shared_ptr<LRScheduler>> keep;  // SequentialLR's parts
        auto make = [&](Optimizer& opt) -> std::unique_ptr<LRScheduler> {
            if (kind == "cosine") return std::make_unique<CosineAnnealingLR>(opt, 12, 1e-4);
            if (kind == "onecycle") return std::make_unique<OneCycleLR>(opt, 0.3, 12);
            auto w = std::make_shared<LinearLR>(opt, 0.25, 1.0, 4);
            auto c = std::make_shared<CosineAnnealingLR>(opt, 8);
            keep = {w, c};
            return std::make_unique<SequentialLR>(opt, keep, std::vector<int64_t>{4});
        };
        auto opt = fixture_optimizer();
        auto sched = make(*opt);
        std::vector<double> straight = run(*opt, *sched, 11);

        auto opt1 = fixture_optimizer();
        auto sched1 = make(*opt1);
        run(*opt1, *sched1, 5);
        SafetensorsFile o = opt1->state_dict(), s = sched1->state_dict();
        o.metadata.insert(s.metadata.begin(), s.metadata.end());
        const std::string path = (std::filesystem::temp_directory_path() /
                                  ("minnow_lr_" + std::to_string(::getpid()) + "_" + kind + ".safetensors"))
                                     .string();
        save_safetensors(path, o.tensors, o.metadata);
        const SafetensorsFile file = load_safetensors(path);
        std::remove(path.c_str());

        auto opt2 = fixture_optimizer();
        auto sched2 = make(*opt2);
        opt2->load_state_dict(file);
        sched2->load_state_dict(file);
        CHECK(sched2->last_epoch() == 5);
        std::vector<double> resumed = {opt2->param_groups()[0].lr};
        CHECK(opt2->param_groups()[0].momentum == opt1->param_groups()[0].momentum);
        for (int i = 0; i < 6; ++i) {
            opt2->step();
            sched2->step();
            resumed.push_back(opt2->param_groups()[0].lr);
        }
        CHECK(resumed == std::vector<double>(straight.begin() + 5, straight.end()));
    }
}

TEST_CASE("optim: scheduler errors") {
    auto opt = fixture_optimizer();
    MultiStepLR multi(*opt, {10});
    CosineAnnealingLR cosine(*opt, 10);
    const std::string wrong = error_of([&] { cosine.load_state_dict(multi.state_dict()); });
    CHECK_MESSAGE(wrong.find("saved by MultiStepLR and cannot be loaded into CosineAnnealingLR") != std::string::npos,
                  wrong);
    const std::string none = error_of([&] { cosine.load_state_dict(SafetensorsFile{}); });
    CHECK_MESSAGE(none.find("metadata 'lr_scheduler.type' is missing") != std::string::npos, none);
    CHECK(error_of([&] { CosineAnnealingLR(*opt, 0); }).find("T_max must be positive") != std::string::npos);
    CHECK(error_of([&] { LinearLR(*opt, 1.5); }).find("start_factor must be between 0 and 1") != std::string::npos);
    CHECK(error_of([&] { OneCycleLR(*opt, 0.1, 0); }).find("total_steps must be positive") != std::string::npos);

    // the state of a longer OneCycleLR cannot resume a shorter one
    OneCycleLR longer(*opt, 0.1, 50);
    for (int i = 0; i < 40; ++i) longer.step();
    auto opt2 = fixture_optimizer();
    OneCycleLR shorter(*opt2, 0.1, 20);
    const std::string past = error_of([&] { shorter.load_state_dict(longer.state_dict()); });
    CHECK_MESSAGE(past.find("cannot resume OneCycleLR at epoch 40") != std::string::npos, past);
    CHECK(shorter.last_epoch() == 0);
}
