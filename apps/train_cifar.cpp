// train_cifar: trains a reference network on CIFAR-10 (the BatchNorm experiment).
//
//     train_cifar --model cnn --norm batch --out results/cnn-batch
//
// One training step, top to bottom (follow it into the library; train/step.h):
//     logits = model(images)              layers/models.cpp -> conv2d.cpp (its plan picks the direct
//                                         3x3 kernels of kernels/conv3x3.h or im2col + kernels/gemm.h),
//                                         batchnorm.cpp, activation.cpp, pooling.cpp, linear.cpp
//     loss = cross_entropy(logits, y)     layers/loss.cpp
//     loss.backward()                     core/autograd.cpp: each layer's hand-written backward
//     optimizer.step()                    optim/sgd.cpp
// Each epoch (train/loop.h): evaluation on the test set, a line of metrics
// (terminal, CSV, JSON lines), an atomic checkpoint of everything a resume
// needs and the figures (train/callbacks.h).
#include <CLI/CLI.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>

#include "apps/common.h"
#include "layers/norm_factory.h"
#include "core/random.h"
#include "kernels/cpu.h"
#include "optim/lr_scheduler.h"
#include "optim/sgd.h"

using namespace minnow;
using namespace minnow::app;
using Clock = std::chrono::steady_clock;

namespace {

struct Options {
    std::string model = "cnn", norm = "batch", data, out, init, save, cache_dir = default_cache_dir();
    int epochs = 20, threads = 0;
    int64_t batch_size = 128, steps = 0, train_limit = 0, test_limit = 0;
    double lr = 0.1, momentum = 0.9, weight_decay = 5e-4, label_smoothing = 0;
    std::vector<int64_t> milestones{10, 15};
    double gamma = 0.1;
    std::vector<float> mean = kCifarMean, std = kCifarStd;
    bool no_shuffle = false, no_augment = false, resume = false, no_cache = false, progress = true;
    uint64_t seed = 0;
};

// ---------------------------------------------------------------- the run
int run(const Options& o) {
    setup_threads(o.threads);
    const std::string out = o.out.empty() ? "results/" + o.model + "-" + o.norm : o.out;
    fs::create_directories(out);
    const std::string ckpt_path = out + "/checkpoint.safetensors";

    // Data
    const std::string root = find_cifar10(o.data);
    const std::string cache = o.no_cache ? "" : o.cache_dir;
    const auto t_data = Clock::now();
    auto train_set = load_split(root, true, o.train_limit, cache);
    auto test_set = load_split(root, false, o.test_limit, cache);
    std::printf("data: %s: %lld train, %lld test images (%.1f s)\n", root.c_str(),
                static_cast<long long>(train_set->n), static_cast<long long>(test_set->n),
                std::chrono::duration<double>(Clock::now() - t_data).count());
    LoaderOptions lo;
    lo.batch_size = o.batch_size;
    lo.shuffle = !o.no_shuffle;
    lo.seed = o.seed;
    lo.mean = o.mean;
    lo.std = o.std;
    lo.augment = !o.no_augment;
    DataLoader loader(train_set, lo);

    // Model, optimizer, schedule (PyTorch's MultiStepLR, stepped per epoch)
    manual_seed(o.seed);
    auto model = make_model(o.model, o.norm);
    if (!o.init.empty()) {
        model->load(o.init);
        std::printf("init: %s\n", o.init.c_str());
    }
    SGDOptions so(o.lr);
    so.momentum = o.momentum;
    so.weight_decay = o.weight_decay;
    SGD opt(model->named_parameters(), so);
    MultiStepLR sched(opt, o.milestones, o.gamma);

    // One checkpoint file holds the whole training state (train/checkpoint.h).
    const std::map<std::string, std::string> run_meta{{"model", o.model}, {"norm", o.norm}};
    TrainState state;
    if (o.resume && fs::exists(ckpt_path)) {
        const TrainingCheckpoint ck = TrainingCheckpoint::load(ckpt_path);
        auto meta = [&](const std::string& k) {
            auto it = ck.run.find(k);
            if (it == ck.run.end())
                throw Error(ckpt_path + ": not a train_cifar checkpoint (no '" + k + "' in its metadata)");
            return it->second;
        };
        if (meta("model") != o.model || meta("norm") != o.norm)
            throw Error(ckpt_path + ": checkpoint of --model " + meta("model") + " --norm " + meta("norm") +
                        ", but this run is --model " + o.model + " --norm " + o.norm);
        state = ck.resume(*model, opt, &sched);
        std::printf("resumed from %s after epoch %lld (step %lld)\n", ckpt_path.c_str(),
                    static_cast<long long>(state.epochs_done), static_cast<long long>(state.step));
    } else if (o.resume) {
        std::printf("--resume: no checkpoint in %s yet, starting afresh\n", out.c_str());
    }
    int64_t params = 0;
    for (const Tensor& p : model->parameters()) params += p.numel();
    std::printf("model: %s, norm %s, %lld parameters; %s\n", o.model.c_str(), o.norm.c_str(),
                static_cast<long long>(params), threading_info().c_str());
    std::printf("kernels: %s\n", kernels_info().c_str());
    std::printf("recipe: %d epochs, batch %lld, SGD lr %g momentum %g weight decay %g, lr x%g at epochs",
                o.epochs, static_cast<long long>(o.batch_size), o.lr, o.momentum, o.weight_decay, o.gamma);
    for (auto m : o.milestones) std::printf(" %lld", static_cast<long long>(m));
    std::printf("; augment %s, shuffle %s, seed %llu\n", o.no_augment ? "off" : "crop+flip",
                o.no_shuffle ? "off" : "on", static_cast<unsigned long long>(o.seed));
    std::fflush(stdout);

    // The epoch loop (train/loop.h) with what each epoch leaves behind: the
    // terminal's line, OUT/metrics.{csv,jsonl}, the checkpoint and the figures.
    LoopOptions loop;
    loop.epochs = o.epochs;
    loop.max_steps = o.steps;
    loop.label_smoothing = static_cast<float>(o.label_smoothing);
    loop.test_set = test_set;
    loop.test_loader = test_loader_options(256);  // the CIFAR normalisation, whatever --mean and --std say
    ProgressBar progress(o.progress);
    EpochTable table(" (stopped by --steps)");
    LayerGradNorms layers(*model);
    MetricsLog metrics(out + "/metrics.csv", out + "/metrics.jsonl", &layers);
    SaveCheckpoint checkpoint(ckpt_path, *model, opt, &sched, run_meta);
    Figures figures(out, metrics.csv_path(), fs::path(out).filename().string());
    const LoopResult r = train_epochs(*model, opt, &sched, loader, loop, state,
                                      {&progress, &table, &layers, &metrics, &checkpoint, &figures});
    if (r.diverged) {
        const Divergence& d = *r.diverged;
        const bool loss_finite = std::isfinite(d.result.loss);
        std::fprintf(stderr,
                     "train_cifar: stopped at step %lld (epoch %lld, batch %lld): the %s is %s; %s.\n"
                     "The last good checkpoint (end of epoch %lld) is left as it was in %s\n",
                     static_cast<long long>(d.step), static_cast<long long>(d.epoch),
                     static_cast<long long>(d.batch), loss_finite ? "gradient norm" : "loss",
                     std::to_string(loss_finite ? d.result.grad_norm : d.result.loss).c_str(), d.reason.c_str(),
                     static_cast<long long>(d.epoch - 1), ckpt_path.c_str());
        return 3;
    }
    if (!o.save.empty()) {
        model->save(o.save, {{"model", o.model}, {"norm", o.norm}, {"step", std::to_string(r.state.step)}});
        std::printf("saved %s\n", o.save.c_str());
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    CLI::App app{"train_cifar: trains a reference network on CIFAR-10 (the BatchNorm experiment)"};
    app.add_option("--model", o.model, "cnn or resnet20")->check(CLI::IsMember(model_names()));
    app.add_option("--norm", o.norm, norm2d_help())->check(CLI::IsMember(norm2d_kinds()));
    app.add_option("--data", o.data, "cifar-10-batches-bin folder or image folders with train/ and test/");
    app.add_option("--epochs", o.epochs, "epochs")->capture_default_str();
    app.add_option("--batch-size", o.batch_size, "batch size")->capture_default_str();
    app.add_option("--lr", o.lr, "learning rate")->capture_default_str();
    app.add_option("--momentum", o.momentum, "SGD momentum")->capture_default_str();
    app.add_option("--weight-decay", o.weight_decay, "SGD weight decay (L2, every parameter)")->capture_default_str();
    app.add_option("--milestones", o.milestones, "epochs after which the lr is multiplied by --gamma")
        ->delimiter(',')
        ->capture_default_str();
    app.add_option("--gamma", o.gamma, "lr decay factor at each milestone")->capture_default_str();
    app.add_option("--label-smoothing", o.label_smoothing, "cross-entropy label smoothing")->capture_default_str();
    app.add_option("--mean", o.mean, "per-channel mean for normalisation")->delimiter(',')->expected(3);
    app.add_option("--std", o.std, "per-channel std for normalisation")->delimiter(',')->expected(3);
    app.add_flag("--no-augment", o.no_augment, "no random crop and flip");
    app.add_flag("--no-shuffle", o.no_shuffle, "training batches in file order");
    app.add_option("--steps", o.steps, "stop after this many optimizer steps (0: no limit)");
    app.add_option("--train-limit", o.train_limit, "use N training images, evenly across the classes");
    app.add_option("--test-limit", o.test_limit, "use N test images, evenly across the classes");
    app.add_option("--init", o.init, "start from this safetensors state (e.g. written by PyTorch)");
    app.add_option("--save", o.save, "write the final model state here (safetensors, PyTorch names)");
    app.add_option("--out", o.out, "folder for logs and checkpoints (default results/MODEL-NORM)");
    app.add_flag("--resume", o.resume, "continue from OUT/checkpoint.safetensors if it exists");
    app.add_option("--threads", o.threads, "threads (default: MINNOW_NUM_THREADS or every core)");
    app.add_option("--seed", o.seed, "seed of initialisation, shuffling and augmentation")->capture_default_str();
    app.add_option("--cache-dir", o.cache_dir, "where decoded image folders are cached")->capture_default_str();
    app.add_flag("--no-cache", o.no_cache, "do not cache decoded image folders");
    bool no_progress = false;
    app.add_flag("--no-progress", no_progress, "no progress output (on a terminal a bar, otherwise a line every tenth of an epoch)");
    CLI11_PARSE(app, argc, argv);
    o.progress = !no_progress;
    try {
        return run(o);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "train_cifar: %s\n", e.what());
        return 1;
    }
}
