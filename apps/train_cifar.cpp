// train_cifar: trains a reference network on CIFAR-10 (the BatchNorm experiment).
//
//     train_cifar --model cnn --norm batch --out results/cnn-batch
//
// One training step, top to bottom (follow it into the library):
//     logits = model(images)              layers/models.cpp -> conv2d.cpp (im2col + cblas_sgemm),
//                                         batchnorm.cpp, activation.cpp, pooling.cpp, linear.cpp
//     loss = cross_entropy(logits, y)     layers/loss.cpp
//     loss.backward()                     core/autograd.cpp: each layer's hand-written backward
//     optimizer.step()                    optim/sgd.cpp
// Each epoch: evaluation on the test set, a line of metrics (terminal, CSV,
// JSON lines) and an atomic checkpoint of everything a resume needs.
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cmath>
#include <fstream>
#include <iostream>
#include <sstream>

#include "apps/common.h"
#include "core/random.h"
#include "optim/grad_utils.h"
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

std::string csv_header() {
    return "epoch,lr,train_loss,train_acc,test_loss,test_acc,grad_norm_mean,grad_norm_max,img_per_s,epoch_time_s,steps";
}

// ---------------------------------------------------------------- checkpoints
// One safetensors file holds the whole training state: the model under its
// PyTorch names (so the file also loads straight into PyTorch with
// strict=False, or into evaluate), the optimizer under "optim.", the
// schedule under "lr_scheduler.", and in the metadata the epoch, the step,
// the random generator's state and the options.
void save_checkpoint(const std::string& path, const Module& model, const Optimizer& opt,
                     const LRScheduler& sched, const Options& o, int64_t epochs_done, int64_t step) {
    std::vector<TensorEntry> entries = model.state_dict();
    std::map<std::string, std::string> meta{{"format", "minnow-train-checkpoint"},
                                            {"model", o.model},
                                            {"norm", o.norm},
                                            {"epochs_done", std::to_string(epochs_done)},
                                            {"step", std::to_string(step)}};
    for (const SafetensorsFile& part : {opt.state_dict("optim."), sched.state_dict("lr_scheduler.")}) {
        entries.insert(entries.end(), part.tensors.begin(), part.tensors.end());
        meta.insert(part.metadata.begin(), part.metadata.end());
    }
    std::string rng;
    for (uint64_t w : default_generator().state()) rng += (rng.empty() ? "" : " ") + std::to_string(w);
    meta["rng"] = rng;
    save_safetensors(path, entries, meta);
}

struct Resumed {
    int64_t epochs_done = 0, step = 0;
};

Resumed load_checkpoint(const std::string& path, Module& model, Optimizer& opt, LRScheduler& sched,
                        const Options& o) {
    SafetensorsFile f = load_safetensors(path);
    auto meta = [&](const std::string& k) {
        auto it = f.metadata.find(k);
        if (it == f.metadata.end()) throw Error(path + ": not a train_cifar checkpoint (no '" + k + "' in its metadata)");
        return it->second;
    };
    if (meta("model") != o.model || meta("norm") != o.norm)
        throw Error(path + ": checkpoint of --model " + meta("model") + " --norm " + meta("norm") +
                    ", but this run is --model " + o.model + " --norm " + o.norm);
    model.load_state_dict(model_entries(f), true, path);
    opt.load_state_dict(f, "optim.");
    sched.load_state_dict(f, "lr_scheduler.");
    Generator::State st{};
    std::istringstream rng(meta("rng"));
    for (auto& w : st) rng >> w;
    default_generator().set_state(st);
    return {std::stoll(meta("epochs_done")), std::stoll(meta("step"))};
}

// Keeps the lines of a log that belong to epochs 1..epochs_done (a resumed
// run rewrites the rest).
void truncate_log(const std::string& path, int64_t epochs_done, bool has_header) {
    std::ifstream in(path);
    if (!in) return;
    std::vector<std::string> kept;
    std::string line;
    bool first = true;
    while (std::getline(in, line)) {
        if (first && has_header) {
            kept.push_back(line);
        } else if (!line.empty()) {
            int64_t epoch = -1;
            if (has_header) epoch = std::stoll(line.substr(0, line.find(',')));
            else epoch = nlohmann::json::parse(line).value("epoch", int64_t{-1});
            if (epoch >= 1 && epoch <= epochs_done) kept.push_back(line);
        }
        first = false;
    }
    in.close();
    std::ofstream out(path, std::ios::trunc);
    for (const auto& l : kept) out << l << "\n";
}

// ---------------------------------------------------------------- progress
class Progress {
public:
    Progress(int64_t total, int epoch, int epochs, bool enabled)
        : total_(total), epoch_(epoch), epochs_(epochs), tty_(stdout_is_terminal()), enabled_(enabled),
          start_(Clock::now()) {}
    void update(int64_t done, double running_loss, int64_t images) {
        if (!enabled_) return;
        const double t = std::chrono::duration<double>(Clock::now() - start_).count();
        const double ips = t > 0 ? images / t : 0;
        const double eta = done > 0 ? t / done * (total_ - done) : 0;
        if (!tty_) {  // a log file: a plain line at every tenth of the epoch
            const int64_t tenth = std::max<int64_t>(total_ / 10, 1);
            if (done % tenth == 0 && done < total_) {
                std::printf("  epoch %d/%d: %lld/%lld batches, loss %.4f, %.0f img/s, ETA %s\n", epoch_, epochs_,
                            static_cast<long long>(done), static_cast<long long>(total_), running_loss, ips,
                            format_duration(eta).c_str());
                std::fflush(stdout);
            }
            return;
        }
        if (t - last_ < 0.25 && done != total_) return;
        last_ = t;
        const int width = 24, filled = static_cast<int>(width * done / std::max<int64_t>(total_, 1));
        std::printf("\repoch %d/%d [%s%s] %lld/%lld loss %.4f  %.0f img/s  ETA %s   ", epoch_, epochs_,
                    std::string(filled, '#').c_str(), std::string(width - filled, '.').c_str(),
                    static_cast<long long>(done), static_cast<long long>(total_), running_loss, ips,
                    format_duration(eta).c_str());
        std::fflush(stdout);
    }
    void finish() {
        if (tty_ && enabled_) std::printf("\r%*s\r", 100, "");
    }

private:
    int64_t total_;
    int epoch_, epochs_;
    bool tty_, enabled_;
    Clock::time_point start_;
    double last_ = -1;
};

// ---------------------------------------------------------------- the run
int run(const Options& o) {
    setup_threads(o.threads);
    const std::string out = o.out.empty() ? "results/" + o.model + "-" + o.norm : o.out;
    fs::create_directories(out);
    const std::string ckpt_path = out + "/checkpoint.safetensors", csv_path = out + "/metrics.csv",
                      jsonl_path = out + "/metrics.jsonl";

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

    Resumed state;
    if (o.resume && fs::exists(ckpt_path)) {
        state = load_checkpoint(ckpt_path, *model, opt, sched, o);
        std::printf("resumed from %s after epoch %lld (step %lld)\n", ckpt_path.c_str(),
                    static_cast<long long>(state.epochs_done), static_cast<long long>(state.step));
        truncate_log(csv_path, state.epochs_done, true);
        truncate_log(jsonl_path, state.epochs_done, false);
    } else {
        if (o.resume) std::printf("--resume: no checkpoint in %s yet, starting afresh\n", out.c_str());
        std::ofstream(csv_path, std::ios::trunc) << csv_header() << "\n";
        std::ofstream(jsonl_path, std::ios::trunc);
    }
    int64_t params = 0;
    for (const Tensor& p : model->parameters()) params += p.numel();
    std::printf("model: %s, norm %s, %lld parameters; %s\n", o.model.c_str(), o.norm.c_str(),
                static_cast<long long>(params), threading_info().c_str());
    std::printf("recipe: %d epochs, batch %lld, SGD lr %g momentum %g weight decay %g, lr x%g at epochs",
                o.epochs, static_cast<long long>(o.batch_size), o.lr, o.momentum, o.weight_decay, o.gamma);
    for (auto m : o.milestones) std::printf(" %lld", static_cast<long long>(m));
    std::printf("; augment %s, shuffle %s, seed %llu\n", o.no_augment ? "off" : "crop+flip",
                o.no_shuffle ? "off" : "on", static_cast<unsigned long long>(o.seed));
    std::fflush(stdout);
    std::printf("%5s %9s %10s %9s %9s %8s %9s %9s %7s %7s\n", "epoch", "lr", "train_loss", "train_acc",
                "test_loss", "test_acc", "|g| mean", "|g| max", "img/s", "time");

    const auto params_named = model->named_parameters();
    int64_t step = state.step;
    bool step_limit_hit = false;
    for (int64_t epoch = state.epochs_done; epoch < o.epochs && !step_limit_hit; ++epoch) {
        model->train();
        loader.start_epoch(epoch);
        const double lr = opt.param_groups()[0].lr;
        Progress progress(loader.num_batches(), static_cast<int>(epoch + 1), o.epochs, o.progress);
        double loss_sum = 0, gn_sum = 0, gn_max = 0;
        int64_t seen = 0, correct = 0, steps_this_epoch = 0;
        std::map<std::string, double> layer_gn_sum;  // per layer: its gradient norm, summed over steps
        const auto t0 = Clock::now();
        Batch b;
        int64_t batch_index = 0;
        while (loader.next(b)) {
            std::map<std::string, double> layer_sq;  // this step: squared gradient norm per layer
            const StepResult r = train_step(*model, opt, b, static_cast<float>(o.label_smoothing), [&] {
                for (const auto& [name, n] : per_parameter_grad_norms(params_named))
                    layer_sq[name.substr(0, name.rfind('.'))] += n * n;
            });
            if (!r.finite()) {
                progress.finish();
                const std::string why = diagnose_non_finite(*model, b.images, std::isfinite(r.loss));
                std::fprintf(stderr,
                             "train_cifar: stopped at step %lld (epoch %lld, batch %lld): the %s is %s; %s.\n"
                             "The last good checkpoint (end of epoch %lld) is left as it was in %s\n",
                             static_cast<long long>(step + 1), static_cast<long long>(epoch + 1),
                             static_cast<long long>(batch_index + 1),
                             std::isfinite(r.loss) ? "gradient norm" : "loss",
                             std::to_string(std::isfinite(r.loss) ? r.grad_norm : r.loss).c_str(), why.c_str(),
                             static_cast<long long>(epoch), ckpt_path.c_str());
                nlohmann::json j{{"epoch", epoch + 1}, {"diverged_at_step", step + 1}, {"reason", why}};
                std::ofstream(jsonl_path, std::ios::app) << j.dump() << "\n";
                return 3;
            }
            for (const auto& [layer, sq] : layer_sq) layer_gn_sum[layer] += std::sqrt(sq);
            ++step;
            ++steps_this_epoch;
            ++batch_index;
            const int64_t bs = b.labels.numel();
            loss_sum += static_cast<double>(r.loss) * bs;
            seen += bs;
            correct += r.correct;
            gn_sum += r.grad_norm;
            gn_max = std::max(gn_max, r.grad_norm);
            progress.update(batch_index, loss_sum / seen, seen);
            if (o.steps > 0 && step >= o.steps) {
                step_limit_hit = true;
                break;
            }
        }
        progress.finish();
        const double train_time = std::chrono::duration<double>(Clock::now() - t0).count();
        EvalResult ev = evaluate(*model, test_set, 256);
        const double epoch_time = std::chrono::duration<double>(Clock::now() - t0).count();
        sched.step();

        const double train_loss = seen ? loss_sum / seen : 0, train_acc = seen ? 100.0 * correct / seen : 0;
        const double gn_mean = steps_this_epoch ? gn_sum / steps_this_epoch : 0, ips = seen / train_time;
        std::printf("%5lld %9.4g %10.4f %8.2f%% %9.4f %7.2f%% %9.4f %9.4f %7.0f %7s%s\n",
                    static_cast<long long>(epoch + 1), lr, train_loss, train_acc, ev.loss, ev.accuracy, gn_mean, gn_max,
                    ips, format_duration(epoch_time).c_str(), step_limit_hit ? " (stopped by --steps)" : "");
        std::fflush(stdout);
        std::ofstream(csv_path, std::ios::app)
            << epoch + 1 << "," << lr << "," << train_loss << "," << train_acc << "," << ev.loss << "," << ev.accuracy
            << "," << gn_mean << "," << gn_max << "," << ips << "," << epoch_time << "," << step << "\n";
        nlohmann::json layers;
        for (const auto& [layer, s] : layer_gn_sum) layers[layer] = s / std::max<int64_t>(steps_this_epoch, 1);
        nlohmann::json j{{"epoch", epoch + 1},       {"lr", lr},           {"train_loss", train_loss},
                         {"train_acc", train_acc},   {"test_loss", ev.loss}, {"test_acc", ev.accuracy},
                         {"grad_norm_mean", gn_mean}, {"grad_norm_max", gn_max}, {"img_per_s", ips},
                         {"epoch_time_s", epoch_time}, {"steps", step},
                         {"partial_epoch", step_limit_hit},
                         // per layer (weight and bias together): the gradient's L2 norm,
                         // averaged over the epoch's steps
                         {"layer_grad_norm", layers}};
        std::ofstream(jsonl_path, std::ios::app) << j.dump() << "\n";
        // A checkpoint marks whole epochs; a run cut short by --steps keeps the last one.
        if (!step_limit_hit) save_checkpoint(ckpt_path, *model, opt, sched, o, epoch + 1, step);
    }
    if (!o.save.empty()) {
        model->save(o.save, {{"model", o.model}, {"norm", o.norm}, {"step", std::to_string(step)}});
        std::printf("saved %s\n", o.save.c_str());
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    CLI::App app{"train_cifar: trains a reference network on CIFAR-10 (the BatchNorm experiment)"};
    app.add_option("--model", o.model, "cnn or resnet20")->check(CLI::IsMember(model_names()));
    app.add_option("--norm", o.norm, "batch, none, renorm, group or layer");
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
