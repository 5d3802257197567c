// train/: one step, the diagnosis of a non-finite one, the epoch loop with
// its callbacks, the training checkpoint (round trip and resume) and the
// metrics files and figures it leaves behind.
#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "layers/activation.h"
#include "layers/flatten.h"
#include "layers/linear.h"
#include "layers/module.h"
#include "optim/lr_scheduler.h"
#include "optim/sgd.h"
#include "test_data_helpers.h"
#include "train/callbacks.h"
#include "train/checkpoint.h"
#include "train/evaluate.h"
#include "train/loop.h"
#include "train/plot.h"
#include "train/step.h"

using namespace minnow;
using namespace minnow::testing;

namespace {

// 3 classes of 3x4x4 images; Flatten, Linear, ReLU, Linear (names "0".."3").
std::shared_ptr<Module> tiny_model(uint64_t seed) {
    manual_seed(seed);
    return std::make_shared<Sequential>(std::vector<std::shared_ptr<Module>>{
        std::make_shared<Flatten>(), std::make_shared<Linear>(48, 8), std::make_shared<ReLU>(),
        std::make_shared<Linear>(8, 3)});
}

std::shared_ptr<const ImageSet> tiny_set(int64_t n, uint64_t seed) {
    return std::make_shared<ImageSet>(synthetic_set(n, 3, 4, 4, 3, seed));
}

LoaderOptions loader_options() {
    LoaderOptions lo;
    lo.batch_size = 8;
    lo.seed = 7;
    lo.augment = true;  // crop and flip: the loader's randomness is part of what a resume must repeat
    lo.crop_padding = 1;
    lo.mean = {0.5f, 0.5f, 0.5f};
    lo.std = {0.25f, 0.25f, 0.25f};
    return lo;
}

std::vector<uint8_t> weight_bytes(const Module& m) {
    std::vector<uint8_t> out;
    for (const TensorEntry& e : m.state_dict()) {
        const auto* p = reinterpret_cast<const uint8_t*>(e.tensor.data());
        out.insert(out.end(), p, p + e.tensor.numel() * sizeof(float));
    }
    return out;
}

SGDOptions sgd_options() {
    SGDOptions so(0.05);
    so.momentum = 0.9;
    so.weight_decay = 5e-4;
    return so;
}

// A model, its optimizer and the first batch of 8.
struct OneBatch {
    std::shared_ptr<Module> model = tiny_model(1);
    SGD opt{model->named_parameters(), sgd_options()};
    Batch batch;
    OneBatch() {
        DataLoader loader(tiny_set(16, 2), loader_options());
        loader.start_epoch(0);
        REQUIRE(loader.next(batch));
    }
};

// Two epochs of 3 steps, tested on 9 images, no schedule.
struct TwoEpochs {
    std::shared_ptr<Module> model = tiny_model(4);
    SGD opt{model->named_parameters(), sgd_options()};
    DataLoader loader{tiny_set(24, 5), loader_options()};
    LoopOptions lo;
    TwoEpochs() {
        lo.epochs = 2;
        lo.test_set = tiny_set(9, 6);
        lo.test_loader = loader_options();
    }
    LoopResult train(const std::vector<Callback*>& callbacks) {
        return train_epochs(*model, opt, nullptr, loader, lo, {}, callbacks);
    }
};

}  // namespace

TEST_CASE("train_step changes the weights and reports loss, gradient norm and correct count") {
    OneBatch one;
    Module& model = *one.model;
    SGD& opt = one.opt;
    const Batch& b = one.batch;
    const auto before = weight_bytes(model);
    bool looked = false;
    const StepResult r = train_step(model, opt, b, 0.f, [&] { looked = true; });
    CHECK(r.finite());
    CHECK(r.loss > 0);
    CHECK(r.grad_norm > 0);
    CHECK(r.correct >= 0);
    CHECK(r.correct <= 8);
    CHECK(looked);
    CHECK(weight_bytes(model) != before);
}

TEST_CASE("a non-finite step changes no weight, and the diagnosis names the layer") {
    OneBatch one;
    Module& model = *one.model;
    SGD& opt = one.opt;
    const Batch& b = one.batch;
    REQUIRE(train_step(model, opt, b).finite());  // a momentum buffer exists now
    // "1.weight" [8, 48]: finite, but each row of the size of a float's
    // largest with the signs of the first image's 48 inputs, so that image's
    // 48 products are all positive and their sum overflows whatever order a
    // GEMM adds them in.
    Tensor w = model.named_parameters()[0].second;
    const float* x0 = b.images.data();
    for (int64_t i = 0; i < w.numel(); ++i) w.data()[i] = (x0[i % 48] < 0 ? -1 : 1) * 3e38f;
    const auto before = weight_bytes(model);
    bool looked = false;
    const StepResult r = train_step(model, opt, b, 0.f, [&] { looked = true; });
    CHECK_FALSE(r.finite());
    CHECK_FALSE(looked);
    CHECK(weight_bytes(model) == before);
    const std::string why = diagnose_non_finite(model, b.images, std::isfinite(r.loss));
    CHECK_MESSAGE(why.find("1 (Linear)") != std::string::npos, why);
}

TEST_CASE("a step whose update overflows a weight is non-finite, naming the parameter") {
    OneBatch one;
    SGDOptions so(1e30);  // the decay term lr * weight_decay * w is past float's range
    so.weight_decay = 1e30;
    SGD opt(one.model->named_parameters(), so);
    const StepResult r = train_step(*one.model, opt, one.batch);
    CHECK(std::isfinite(r.loss));
    CHECK(std::isfinite(r.grad_norm));
    CHECK_FALSE(r.finite());
    CHECK_MESSAGE(r.non_finite_after_step.find(".weight (element ") != std::string::npos, r.non_finite_after_step);
    // The diagnosis of what is left names the parameter first.
    const std::string why = diagnose_non_finite(*one.model, one.batch.images, true);
    CHECK_MESSAGE(why.find("is not finite (element") != std::string::npos, why);
}

TEST_CASE("evaluate: loss, accuracy and a confusion matrix over the whole set") {
    auto model = tiny_model(3);
    auto set = tiny_set(21, 4);
    LoaderOptions lo = loader_options();
    lo.batch_size = 5;
    model->train();
    const EvalResult r = evaluate(*model, set, lo, true);
    CHECK(r.n == 21);
    CHECK(model->is_training());
    int64_t total = 0, diagonal = 0;
    for (size_t i = 0; i < r.confusion.size(); ++i)
        for (size_t j = 0; j < r.confusion.size(); ++j) {
            total += r.confusion[i][j];
            if (i == j) diagonal += r.confusion[i][j];
        }
    CHECK(total == 21);
    CHECK(r.accuracy == doctest::Approx(100.0 * diagonal / 21));
    CHECK(r.logits.size(0) == 21);
}

TEST_CASE("evaluate: a NaN logit is the prediction (torch.argmax's choice) and the loss is NaN") {
    auto model = tiny_model(3);
    auto set = tiny_set(21, 4);
    LoaderOptions lo = loader_options();
    lo.batch_size = 5;
    for (auto& [name, p] : model->named_parameters())
        if (name == "3.bias") const_cast<Tensor&>(p).data()[1] = std::nanf("");  // logit 1 of every image
    const EvalResult r = evaluate(*model, set, lo, true);
    int64_t label1 = 0;
    for (int64_t i = 0; i < r.n; ++i) label1 += r.labels.data()[i] == 1.f;
    CHECK(std::isnan(r.loss));
    CHECK(r.accuracy == doctest::Approx(100.0 * label1 / 21));
    for (size_t t = 0; t < r.confusion.size(); ++t)
        for (size_t q = 0; q < r.confusion.size(); ++q)
            if (q != 1) CHECK(r.confusion[t][q] == 0);
}

TEST_CASE("the epoch loop: a checkpoint round trip and a resume give the weights of an uninterrupted run") {
    TempDir dir;
    auto train_set = tiny_set(40, 5), test_set = tiny_set(12, 6);
    LoopOptions lo;
    lo.epochs = 3;
    lo.test_set = test_set;
    lo.test_loader = loader_options();

    // Uninterrupted: 3 epochs.
    auto straight = tiny_model(11);
    SGD opt_s(straight->named_parameters(), sgd_options());
    MultiStepLR sched_s(opt_s, {1, 2}, 0.5);
    DataLoader loader_s(train_set, loader_options());
    const LoopResult rs = train_epochs(*straight, opt_s, &sched_s, loader_s, lo);
    CHECK(rs.state.epochs_done == 3);
    CHECK(rs.state.step == 15);
    CHECK(rs.epochs.size() == 3);
    CHECK_FALSE(rs.diverged);

    // 1 epoch, checkpointed by the callback; then a fresh process-like start.
    {
        auto first = tiny_model(11);
        SGD opt(first->named_parameters(), sgd_options());
        MultiStepLR sched(opt, {1, 2}, 0.5);
        DataLoader loader(train_set, loader_options());
        SaveCheckpoint save(dir / "ck.safetensors", *first, opt, &sched, {{"what", "tiny"}});
        LoopOptions one = lo;
        one.epochs = 1;
        CHECK(train_epochs(*first, opt, &sched, loader, one, {}, {&save}).state.epochs_done == 1);
    }
    manual_seed(999);  // the checkpoint brings the generator back
    auto resumed = tiny_model(12);  // other initial weights: the checkpoint replaces them
    SGD opt_r(resumed->named_parameters(), sgd_options());
    MultiStepLR sched_r(opt_r, {1, 2}, 0.5);
    DataLoader loader_r(train_set, loader_options());
    const TrainingCheckpoint ck = TrainingCheckpoint::load(dir / "ck.safetensors");
    CHECK(ck.run.at("what") == "tiny");
    CHECK(ck.run.count("rng") == 0);
    CHECK(ck.run.count("optim.type") == 0);
    const TrainState state = ck.resume(*resumed, opt_r, &sched_r);
    CHECK(state.epochs_done == 1);
    CHECK(state.step == 5);
    CHECK(opt_r.param_groups()[0].lr == doctest::Approx(0.025));
    const LoopResult rr = train_epochs(*resumed, opt_r, &sched_r, loader_r, lo, state);
    CHECK(rr.state.step == 15);
    CHECK(weight_bytes(*resumed) == weight_bytes(*straight));
    CHECK(rr.epochs.back().test_loss == rs.epochs.back().test_loss);

    // Saving what was loaded gives the same file.
    ck.save(dir / "again.safetensors");
    CHECK(read_bytes(dir / "again.safetensors") == read_bytes(dir / "ck.safetensors"));
    CHECK_THROWS_WITH_AS(TrainingCheckpoint::load(dir / "nowhere.safetensors"),
                         doctest::Contains("nowhere.safetensors"), Error);
}

TEST_CASE("a checkpoint with edited metadata is refused with the file, the key and what is wrong") {
    auto model = tiny_model(3);
    SGD opt(model->named_parameters(), sgd_options());
    MultiStepLR sched(opt, {1, 2}, 0.5);
    DataLoader loader(tiny_set(16, 2), loader_options());
    LoopOptions one;
    one.epochs = 1;
    train_epochs(*model, opt, &sched, loader, one);
    const TrainingCheckpoint good = TrainingCheckpoint::capture(*model, opt, &sched, {1, 2});
    TempDir dir;
    good.save(dir / "ck.safetensors");
    const SafetensorsFile file = load_safetensors(dir / "ck.safetensors");
    TrainingCheckpoint::from_file(file);  // as saved: fine

    // `file` with metadata `key` set to `value` (or removed, for "<none>"), then
    // TrainingCheckpoint::from_file and a resume into a fresh run.
    auto edited = [&](const std::string& key, const std::string& value) {
        SafetensorsFile f = file;
        if (value == "<none>") f.metadata.erase(key);
        else f.metadata[key] = value;
        return [f] {
            auto m = tiny_model(4);
            SGD o(m->named_parameters(), sgd_options());
            MultiStepLR s(o, {1, 2}, 0.5);
            TrainingCheckpoint::from_file(f).resume(*m, o, &s);
        };
    };
    const std::string ck = dir / "ck.safetensors";
    check_error(edited("format", "pt"), {ck, "metadata 'format' is 'pt', not 'minnow-train-checkpoint'"});
    check_error(edited("epochs_done", "<none>"), {ck, "no 'epochs_done'"});
    for (const std::string bad : {"x", "-1", "1.5", " 1", "+1", "1e3", "", "9223372036854775808",
                                  "99999999999999999999999"})
        check_error(edited("epochs_done", bad), {ck, "metadata 'epochs_done' is '" + bad + "', not a whole number >= 0"});
    check_error(edited("step", "-5"), {ck, "metadata 'step' is '-5', not a whole number >= 0"});
    check_error(edited("step", std::string(500, '7')), {ck, "metadata 'step' is '7777", "...', not a whole number"});
    CHECK_NOTHROW(edited("step", "9223372036854775807")());  // the largest: fine

    const std::string rng = file.metadata.at("rng");
    const std::vector<std::string> bad_rngs = {
        "1 2 3 4", rng + " 5", "0 0 0 0 0", "1  2 3 4 0", "1 2 3 4 x", "1 2 3 4 -1", "1 2 3 4 18446744073709551616",
        "1 2 3 4 7", "1 2 3 4 8589934592", "1 2 3 4 " + std::to_string((uint64_t{1} << 32) | 0x7fc00000)};  // spare NaN
    for (const std::string& bad : bad_rngs)
        check_error(edited("rng", bad), {ck, "metadata 'rng' is ", "not the generator's state"});
    CHECK_NOTHROW(edited("rng", "1 2 3 4 " + std::to_string((uint64_t{1} << 32) | 0x3f800000))());  // spare 1.0

    // The optimizer's and the schedule's metadata, read by resume.
    check_error(edited("optim.state.1.weight.step", "+2"), {ck, "optim.state.1.weight.step: '+2' is not a step count"});
    std::string groups = file.metadata.at("optim.param_groups");
    const size_t lr_at = groups.find("\"lr\":");
    REQUIRE(lr_at != std::string::npos);
    groups.insert(lr_at + 5, "-");
    check_error(edited("optim.param_groups", groups), {ck, "param group 0: SGD: invalid learning rate: -"});
    check_error(edited("lr_scheduler.last_epoch", "1.0"), {ck, "metadata 'lr_scheduler.last_epoch' is '1.0'"});
    check_error(edited("lr_scheduler.base_lrs", "[-0.05]"),
                {ck, "metadata 'lr_scheduler.base_lrs' holds -0.05", "not a learning rate"});
    check_error(edited("lr_scheduler.base_lrs", "{}"), {ck, "metadata 'lr_scheduler.base_lrs' is not a list of numbers"});
}

TEST_CASE("the epoch loop stops at max_steps (a partial epoch) and on a non-finite step") {
    auto train_set = tiny_set(40, 5);
    auto model = tiny_model(2);
    SGD opt(model->named_parameters(), sgd_options());
    DataLoader loader(train_set, loader_options());
    LoopOptions lo;
    lo.epochs = 4;
    lo.max_steps = 7;
    int64_t steps_seen = 0;
    CallbackFunctions count;
    count.step = [&](const StepInfo&) { ++steps_seen; };
    const LoopResult r = train_epochs(*model, opt, nullptr, loader, lo, {}, {&count});
    CHECK(r.stopped_by_max_steps);
    CHECK(r.state.step == 7);
    CHECK(r.state.epochs_done == 1);
    CHECK(steps_seen == 7);
    REQUIRE(r.epochs.size() == 2);
    CHECK(r.epochs[1].partial);
    CHECK(std::isnan(r.epochs[1].test_acc));  // no test set

    Tensor w = model->named_parameters()[0].second;
    for (int64_t i = 0; i < w.numel(); ++i) w.data()[i] = (i % 2 ? -1 : 1) * 3e38f;
    std::string reason;
    CallbackFunctions watch;
    watch.diverged = [&](const Divergence& d) { reason = d.reason; };
    lo.max_steps = 0;
    const LoopResult d = train_epochs(*model, opt, nullptr, loader, lo, r.state, {&watch});
    REQUIRE(d.diverged);
    CHECK(d.diverged->step == 8);
    CHECK(d.diverged->epoch == 2);
    CHECK(d.diverged->batch == 1);
    CHECK(reason == d.diverged->reason);
    CHECK(reason.find("1 (Linear)") != std::string::npos);
}

TEST_CASE("the epoch loop stops on a non-finite weight after a step, and on a non-finite test loss") {
    {
        TwoEpochs run;
        SGDOptions so(1e30);
        so.weight_decay = 1e30;
        SGD opt(run.model->named_parameters(), so);
        const LoopResult r = train_epochs(*run.model, opt, nullptr, run.loader, run.lo);
        REQUIRE(r.diverged);
        CHECK(r.diverged->step == 1);
        CHECK(r.state.epochs_done == 0);
        CHECK_MESSAGE(r.diverged->reason.find("after the step") != std::string::npos, r.diverged->reason);
    }
    {
        // Finite training; the test images, normalised by a std so small
        // that they overflow, give a non-finite test loss.
        TwoEpochs run;
        run.lo.test_loader.std = {1e-44f, 1e-44f, 1e-44f};
        int64_t epochs_ended = 0;
        CallbackFunctions count;
        count.epoch_end = [&](const EpochStats&) { ++epochs_ended; };
        const LoopResult r = run.train({&count});
        REQUIRE(r.diverged);
        CHECK(r.diverged->epoch == 1);
        CHECK(r.diverged->step == 3);
        CHECK_FALSE(std::isfinite(r.diverged->result.loss));
        CHECK(r.diverged->in_test);
        CHECK(r.state.epochs_done == 0);  // the epoch is not done: no checkpoint callback saw it
        CHECK(epochs_ended == 0);
        CHECK_MESSAGE(r.diverged->reason.find("test loss") != std::string::npos, r.diverged->reason);
    }
}

TEST_CASE("a training checkpoint holding a non-finite tensor is not saved, and the previous file stays") {
    TempDir dir;
    OneBatch one;
    REQUIRE(train_step(*one.model, one.opt, one.batch).finite());
    const std::string path = dir / "ck.safetensors";
    TrainingCheckpoint::capture(*one.model, one.opt, nullptr, {1, 1}).save(path);
    const auto before = read_bytes(path);
    one.model->named_parameters()[1].second.data()[3] = NAN;  // "1.bias"
    CHECK_THROWS_WITH_AS(TrainingCheckpoint::capture(*one.model, one.opt, nullptr, {2, 2}).save(path),
                         doctest::Contains("1.bias (element 3 is nan)"), Error);
    CHECK(read_bytes(path) == before);
    CHECK(first_non_finite(one.model->state_dict()) == "1.bias (element 3 is nan)");
    // A file that holds one all the same (edited, or written elsewhere) is not resumed.
    TrainingCheckpoint edited = TrainingCheckpoint::load(path);
    edited.model[1].tensor.data()[0] = INFINITY;
    CHECK_THROWS_WITH_AS(edited.resume(*one.model, one.opt, nullptr), doctest::Contains("cannot be resumed"), Error);
}

TEST_CASE("MetricsLog: a resume rewrites the logs from the checkpoint's history, whatever the files hold") {
    TempDir dir;
    TwoEpochs run;
    MetricsLog log(dir / "metrics.csv", dir / "metrics.jsonl");
    SaveCheckpoint save(dir / "ck.safetensors", *run.model, run.opt, nullptr, {}, &log);
    run.lo.epochs = 1;
    run.train({&log, &save});
    CHECK(save.saved_epoch() == 1);
    const auto csv_after_1 = read_bytes(dir / "metrics.csv");
    const auto jsonl_after_1 = read_bytes(dir / "metrics.jsonl");
    const TrainingCheckpoint ck = TrainingCheckpoint::load(dir / "ck.safetensors");
    CHECK(ck.history == log.history());
    CHECK(ck.run.count("metrics_jsonl") == 0);

    // A torn JSON line, a garbage CSV row, a second epoch that the checkpoint does not have.
    {
        std::ofstream(dir / "metrics.csv", std::ios::app) << "garbage,,\n2,0.05,1\n";
        std::ofstream(dir / "metrics.jsonl", std::ios::app) << "{\"epoch\": 2, \"lr\n";
    }
    MetricsLog again(dir / "metrics.csv", dir / "metrics.jsonl");
    again.restore(ck.history);
    again.on_train_begin({1, 3});
    CHECK(read_bytes(dir / "metrics.csv") == csv_after_1);
    CHECK(read_bytes(dir / "metrics.jsonl") == jsonl_after_1);

    // Without a history (an older checkpoint): the lines that parse, up to the epoch.
    std::ofstream(dir / "metrics.jsonl", std::ios::app) << "not json\n{\"epoch\": 2}\n";
    MetricsLog old(dir / "metrics.csv", dir / "metrics.jsonl");
    old.on_train_begin({1, 3});
    CHECK(read_bytes(dir / "metrics.jsonl") == jsonl_after_1);
    CHECK(read_bytes(dir / "metrics.csv") == csv_after_1);
}

TEST_CASE("MetricsLog: a log that cannot be written is an error naming the file") {
    TempDir dir;
    fs::create_directories(dir / "metrics.csv");  // a folder where the file should be
    MetricsLog log(dir / "metrics.csv", dir / "metrics.jsonl");
    CHECK_THROWS_WITH_AS(log.on_train_begin({}), doctest::Contains("metrics.csv"), Error);
}

TEST_CASE("MetricsLog: metrics.csv and metrics.jsonl, kept up to the resumed epoch") {
    TempDir dir;
    TwoEpochs run;
    LayerGradNorms layers(*run.model);
    MetricsLog log(dir / "metrics.csv", dir / "metrics.jsonl", &layers);
    run.train({&layers, &log});

    std::ifstream csv(dir / "metrics.csv");
    std::vector<std::string> rows;
    for (std::string line; std::getline(csv, line);) rows.push_back(line);
    REQUIRE(rows.size() == 3);
    CHECK(rows[0] == "epoch,lr,train_loss,train_acc,test_loss,test_acc,grad_norm_mean,grad_norm_max,img_per_s,"
                     "epoch_time_s,steps");
    CHECK(rows[1].rfind("1,0.05,", 0) == 0);
    CHECK(rows[2].substr(rows[2].rfind(',') + 1) == "6");
    std::ifstream jsonl(dir / "metrics.jsonl");
    std::vector<nlohmann::json> objects;
    for (std::string line; std::getline(jsonl, line);) objects.push_back(nlohmann::json::parse(line));
    REQUIRE(objects.size() == 2);
    for (const char* key : {"epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "grad_norm_mean",
                            "grad_norm_max", "img_per_s", "epoch_time_s", "steps", "partial_epoch",
                            "layer_grad_norm"})
        CHECK_MESSAGE(objects[1].contains(key), key);
    CHECK(objects[1]["epoch"] == 2);
    CHECK(objects[1]["layer_grad_norm"].size() == 2);  // layers "1" and "3"
    CHECK(objects[1]["layer_grad_norm"]["1"].get<double>() > 0);

    // A resume after epoch 1 keeps the header, epoch 1's row and its object.
    MetricsLog again(dir / "metrics.csv", dir / "metrics.jsonl");
    again.on_train_begin({1, 3});
    std::ifstream csv2(dir / "metrics.csv");
    rows.clear();
    for (std::string line; std::getline(csv2, line);) rows.push_back(line);
    CHECK(rows.size() == 2);
    std::ifstream jsonl2(dir / "metrics.jsonl");
    int n = 0;
    for (std::string line; std::getline(jsonl2, line);) ++n;
    CHECK(n == 1);
}

TEST_CASE("Figures: training loss, test accuracy and gradient norm as PNGs beside the logs") {
    if (!gnuplot_found()) {
        MESSAGE("gnuplot not found (apt-get install gnuplot-nox): figures not tested");
        return;
    }
    TempDir dir;
    TwoEpochs run;
    MetricsLog log(dir / "metrics.csv", dir / "metrics.jsonl");
    Figures figures(dir.path.string(), log.csv_path(), "tiny");
    run.train({&log, &figures});
    for (const char* name : {"train_loss", "test_accuracy", "grad_norm"}) {
        CHECK_MESSAGE(fs::file_size(dir / (std::string(name) + ".png")) > 0, name);
        CHECK(fs::exists(dir / (std::string(name) + ".gp")));
        CHECK_FALSE(fs::exists(dir / (std::string(name) + ".gp.err")));
    }
    // A figure whose script cannot be written is an error naming the file.
    Figures nowhere((dir / "no/such/folder"), log.csv_path(), "tiny");
    CHECK_THROWS_WITH_AS(nowhere.draw(), doctest::Contains("no/such/folder/train_loss.gp"), Error);
}
