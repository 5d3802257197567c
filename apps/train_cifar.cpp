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
//
// Data-parallel over MPI (dist/comm.h): `mpirun -np K train_cifar ...` runs K
// ranks, each on its slice of every batch (--batch-size is the whole batch's),
// with the gradients averaged every step (train/data_parallel.h) and, with
// --sync-bn, BatchNorm's statistics over the whole batch
// (layers/syncbatchnorm.h). Rank 0 alone prints and writes files, and reads
// the files of --init and --resume for the others.
#include <CLI/CLI.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <set>
#include <thread>

#include "apps/common.h"
#include "dist/comm.h"
#include "layers/norm_factory.h"
#include "layers/syncbatchnorm.h"
#include "core/random.h"
#include "data/io.h"
#include "kernels/cpu.h"
#include "optim/lr_scheduler.h"
#include "optim/sgd.h"
#include "train/data_parallel.h"

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
    bool no_shuffle = false, no_augment = false, resume = false, no_cache = false, progress = true, sync_bn = false;
    uint64_t seed = 0;
    std::set<std::string> given;  // the flags on the command line
};

// ---------------------------------------------------------------- the recipe
// What a checkpoint records of its run and a resumed run keeps: one row per
// flag. A resumed run takes each from the checkpoint; a flag given on the
// command line that says otherwise is refused (a run with another recipe is
// a new run, started from the checkpoint's weights with --init). --epochs and
// --steps may grow: continuing further is what a resume is for.
struct RecipeField {
    std::string flag;  // without the dashes; also the checkpoint's metadata key
    std::function<std::string(const Options&)> get;
    std::function<void(Options&, const std::string&)> set;
};
template <class T> RecipeField field(const char* flag, T Options::*member) {
    return {flag, [member](const Options& o) { return to_text(o.*member); },
            [member](Options& o, const std::string& s) { from_text(s, o.*member); }};
}
const std::vector<RecipeField>& recipe() {
    static const std::vector<RecipeField> fields{
        field("model", &Options::model),           field("norm", &Options::norm),
        field("batch-size", &Options::batch_size), field("lr", &Options::lr),
        field("momentum", &Options::momentum),     field("weight-decay", &Options::weight_decay),
        field("milestones", &Options::milestones), field("gamma", &Options::gamma),
        field("label-smoothing", &Options::label_smoothing),
        field("mean", &Options::mean),             field("std", &Options::std),
        field("no-augment", &Options::no_augment), field("no-shuffle", &Options::no_shuffle),
        field("seed", &Options::seed),             field("train-limit", &Options::train_limit),
        field("test-limit", &Options::test_limit), field("init", &Options::init),
        field("sync-bn", &Options::sync_bn),
    };
    return fields;
}

std::map<std::string, std::string> recipe_metadata(const Options& o) {
    std::map<std::string, std::string> m;
    for (const RecipeField& f : recipe()) m[f.flag] = f.get(o);
    return m;
}

// The recipe of the checkpoint being resumed, into `o`; a flag given with
// another value is a UsageError naming both.
void take_recipe(Options& o, const TrainingCheckpoint& ck, const std::string& path) {
    for (const RecipeField& f : recipe()) {
        auto it = ck.run.find(f.flag);
        if (it == ck.run.end()) {
            if (f.flag == "model" || f.flag == "norm")
                throw UsageError(path + ": not a train_cifar checkpoint (no '" + f.flag + "' in its metadata)");
            std::printf("note: %s does not record --%s; using %s\n", path.c_str(), f.flag.c_str(), f.get(o).c_str());
            continue;
        }
        const std::string mine = f.get(o);
        if (o.given.count("--" + f.flag) && mine != it->second)
            throw UsageError("--" + f.flag + " " + mine + " contradicts the run being resumed (" + path + ": " +
                             f.flag + " " + it->second + "). A resumed run keeps its recipe; to train on with "
                             "another, start a new run from these weights: --init " + path + " --out NEW_FOLDER");
        try {
            f.set(o, it->second);
        } catch (const Error& e) {
            throw Error(path + ": metadata '" + f.flag + "': " + e.what());
        }
    }
}

// Every rank must train with rank 0's recipe (mpirun can start ranks with
// different flags, and a rank with another --lr would silently train another
// model): a UsageError naming the first flag that differs.
void require_rank0_recipe(const Options& o) {
    if (dist::size() == 1) return;
    std::map<std::string, std::string> mine = recipe_metadata(o);
    mine["epochs"] = std::to_string(o.epochs);
    mine["steps"] = std::to_string(o.steps);
    std::string text;
    for (const auto& [flag, value] : mine) text += flag + '\0' + value + '\0';
    std::vector<uint8_t> bytes(text.begin(), text.end());
    dist::broadcast_bytes(bytes);
    std::map<std::string, std::string> rank0;
    for (size_t at = 0; at < bytes.size();) {
        const std::string flag(reinterpret_cast<const char*>(bytes.data() + at));
        at += flag.size() + 1;
        const std::string value(reinterpret_cast<const char*>(bytes.data() + at));
        at += value.size() + 1;
        rank0[flag] = value;
    }
    for (const auto& [flag, value] : mine)
        if (rank0[flag] != value)
            throw UsageError("--" + flag + " " + value + " on rank " + std::to_string(dist::rank()) + ", but --" +
                             flag + " " + rank0[flag] + " on rank 0: every rank must be given the same recipe");
}

// A safetensors file read by rank 0 and given to every rank (the others may
// run on machines that do not have it); `exists` false: there is none.
std::optional<SafetensorsFile> load_on_rank0(const std::string& path, bool must_exist) {
    std::vector<uint8_t> bytes;
    uint8_t exists = 1;
    if (dist::is_root()) {
        exists = must_exist || fs::exists(path);
        if (exists) bytes = read_file_bytes(path);
    }
    std::vector<uint8_t> flag{exists};
    dist::broadcast_bytes(flag);
    if (!flag[0]) return std::nullopt;
    dist::broadcast_bytes(bytes);
    return parse_safetensors(bytes.data(), bytes.size(), path);
}

// ---------------------------------------------------------------- the run
int run(Options o) {
    const int ranks = dist::size(), rank = dist::rank();
    // Every rank runs this same code; rank 0's lines are the run's, the
    // others' would repeat them. Their errors still go to stderr.
    if (rank != 0 && !std::freopen("/dev/null", "w", stdout)) throw Error("cannot silence stdout on rank " + std::to_string(rank));
    // The machine's cores are shared by its ranks unless told otherwise.
    if (ranks > 1 && o.threads == 0 && !std::getenv("MINNOW_NUM_THREADS"))
        o.threads = std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / dist::local_size());
    setup_threads(o.threads);
    const std::string out = o.out.empty() ? "results/" + o.model + "-" + o.norm : o.out;
    const std::string ckpt_path = out + "/checkpoint.safetensors";
    if (rank == 0) {
        require_writable_folder(out, "--out");
        require_writable_file(ckpt_path, "--out (its checkpoint.safetensors)");
        if (!o.save.empty()) require_writable_file(o.save, "--save");
    }
    if (o.batch_size < ranks)
        throw UsageError("--batch-size " + std::to_string(o.batch_size) + " is smaller than the " +
                         std::to_string(ranks) + " ranks: every rank needs at least one image of each batch");

    require_rank0_recipe(o);

    // A resumed run's recipe is the checkpoint's, before anything is built from it.
    std::optional<TrainingCheckpoint> ck;
    if (o.resume) {
        if (std::optional<SafetensorsFile> f = load_on_rank0(ckpt_path, false)) {
            ck = TrainingCheckpoint::from_file(*f);
            take_recipe(o, *ck, ckpt_path);
        } else {
            std::printf("--resume: no checkpoint in %s yet, starting afresh\n", out.c_str());
        }
    }

    // The model first: a batch that cannot fit is refused before the data loads.
    manual_seed(o.seed);
    auto model = make_model(o.model, o.norm);
    if (o.sync_bn && convert_sync_batchnorm(*model) == 0)
        throw UsageError("--sync-bn: the model has no BatchNorm to synchronise (--norm " + o.norm + ")");
    const int64_t per_rank = (o.train_limit > 0 ? std::min(o.batch_size, o.train_limit) : o.batch_size);
    require_batch_fits(*model, true, (per_rank + ranks - 1) / ranks, 32, "--batch-size");

    // Data
    const std::string root = find_cifar10(o.data);
    const std::string cache = o.no_cache ? "" : o.cache_dir;
    const auto t_data = Clock::now();
    auto train_set = load_split(root, true, o.train_limit, cache);
    auto test_set = load_split(root, false, o.test_limit, cache);
    std::printf("data: %s: %lld train, %lld test images (%.1f s)\n", root.c_str(),
                static_cast<long long>(train_set->n), static_cast<long long>(test_set->n),
                std::chrono::duration<double>(Clock::now() - t_data).count());
    if (const int64_t last = train_set->n % o.batch_size; ranks > 1 && last > 0 && last < ranks)
        throw UsageError("--batch-size " + std::to_string(o.batch_size) + ": the last batch of each epoch has " +
                         std::to_string(last) + " of the " + std::to_string(train_set->n) +
                         " training images, fewer than the " + std::to_string(ranks) +
                         " ranks; choose another --batch-size or --train-limit");
    LoaderOptions lo;
    lo.batch_size = o.batch_size;
    lo.shuffle = !o.no_shuffle;
    lo.seed = o.seed;
    lo.mean = o.mean;
    lo.std = o.std;
    lo.augment = !o.no_augment;
    lo.rank = rank;
    lo.ranks = ranks;
    DataLoader loader(train_set, lo);

    // Optimizer and schedule (PyTorch's MultiStepLR, stepped per epoch)
    if (!o.init.empty() && !ck) {
        model->load_state_dict(model_entries(*load_on_rank0(o.init, true)), true, o.init);
        std::printf("init: %s\n", o.init.c_str());
    }
    SGDOptions so(o.lr);
    so.momentum = o.momentum;
    so.weight_decay = o.weight_decay;
    SGD opt(model->named_parameters(), so);
    MultiStepLR sched(opt, o.milestones, o.gamma);

    TrainState state;
    if (ck) {
        state = ck->resume(*model, opt, &sched);
        std::printf("resumed from %s after epoch %lld (step %lld)\n", ckpt_path.c_str(),
                    static_cast<long long>(state.epochs_done), static_cast<long long>(state.step));
    }
    // Every rank starts from rank 0's weights and buffers (they are the same
    // already, from the same seed or file; this makes sure, as PyTorch's DDP does).
    for (TensorEntry& e : model->state_dict()) dist::broadcast(e.tensor.data(), e.tensor.numel());
    int64_t params = 0;
    for (const Tensor& p : model->parameters()) params += p.numel();
    std::printf("model: %s, norm %s, %lld parameters; %s\n", o.model.c_str(), o.norm.c_str(),
                static_cast<long long>(params), threading_info().c_str());
    std::printf("kernels: %s\n", kernels_info().c_str());
    if (ranks > 1)
        std::printf("data-parallel: %d ranks (%d on this machine), each %lld or %lld images of every batch of "
                    "%lld; BatchNorm statistics %s\n",
                    ranks, dist::local_size(), static_cast<long long>(o.batch_size / ranks),
                    static_cast<long long>((o.batch_size + ranks - 1) / ranks),
                    static_cast<long long>(o.batch_size),
                    o.sync_bn ? "over the whole batch (--sync-bn)" : "per rank, averaged after each epoch");
    std::printf("recipe: %d epochs, batch %lld, SGD lr %g momentum %g weight decay %g, lr x%g at epochs",
                o.epochs, static_cast<long long>(o.batch_size), o.lr, o.momentum, o.weight_decay, o.gamma);
    for (auto m : o.milestones) std::printf(" %lld", static_cast<long long>(m));
    std::printf("; label smoothing %g; augment %s, shuffle %s, seed %llu\n", o.label_smoothing,
                o.no_augment ? "off" : "crop+flip", o.no_shuffle ? "off" : "on",
                static_cast<unsigned long long>(o.seed));
    std::fflush(stdout);

    // The epoch loop (train/loop.h) with what each epoch leaves behind: the
    // terminal's line, OUT/metrics.{csv,jsonl}, the checkpoint and the figures.
    LoopOptions loop;
    loop.epochs = o.epochs;
    loop.max_steps = o.steps;
    loop.label_smoothing = static_cast<float>(o.label_smoothing);
    loop.test_set = test_set;
    loop.test_loader = test_loader_options(256, o.mean, o.std);  // normalised as the training batches
    loop.test_loader.rank = rank;
    loop.test_loader.ranks = ranks;
    // What the run leaves behind, written by rank 0 alone. One checkpoint
    // file holds the whole training state (train/checkpoint.h).
    std::optional<ProgressBar> progress;
    std::optional<EpochTable> table;
    std::optional<LayerGradNorms> layers;
    std::optional<MetricsLog> metrics;
    std::optional<SaveCheckpoint> checkpoint;
    std::optional<Figures> figures;
    std::vector<Callback*> callbacks;
    if (rank == 0) {
        progress.emplace(o.progress);
        table.emplace(" (stopped by --steps)");
        layers.emplace(*model);
        metrics.emplace(out + "/metrics.csv", out + "/metrics.jsonl", &*layers);
        if (ck && !ck->history.empty()) metrics->restore(ck->history);
        std::map<std::string, std::string> run = recipe_metadata(o);
        run["ranks"] = std::to_string(ranks);  // for the record: a resume may use any number
        checkpoint.emplace(ckpt_path, *model, opt, &sched, run, &*metrics);
        figures.emplace(out, metrics->csv_path(), fs::path(out).filename().string());
        callbacks = {&*progress, &*table, &*layers, &*metrics, &*checkpoint, &*figures};
    }
    const LoopResult r = train_epochs(*model, opt, &sched, loader, loop, state, callbacks);
    if (r.diverged && rank != 0) {
        // Every rank stops at the same step; the rank whose slice went
        // non-finite says what it found there, rank 0 says the rest.
        if (r.diverged->rank == rank)
            std::fprintf(stderr, "train_cifar (rank %d): %s\n", rank, r.diverged->reason.c_str());
        return kExitDiverged;
    }
    if (r.diverged) {
        const Divergence& d = *r.diverged;
        std::string kept;
        if (checkpoint->saved_epoch() > 0)
            kept = "The last checkpoint, of epoch " + std::to_string(checkpoint->saved_epoch()) + ", is in " + ckpt_path;
        else if (ck)
            kept = "The checkpoint resumed from (epoch " + std::to_string(state.epochs_done) + ") is left as it was in " +
                   ckpt_path;
        else if (fs::exists(ckpt_path))
            kept = "No checkpoint of this run was written (" + ckpt_path + " is from an earlier run)";
        else
            kept = "No checkpoint was written (one is written at the end of each whole epoch)";
        const std::string where =
            d.rank > 0 ? "the loss of rank " + std::to_string(d.rank) + "'s slice is not finite (that rank says why)"
                       : d.reason;
        std::fprintf(stderr, "train_cifar: diverged at step %lld (epoch %lld, batch %lld): %s.\n%s.\n",
                     static_cast<long long>(d.step), static_cast<long long>(d.epoch),
                     static_cast<long long>(d.batch), where.c_str(), kept.c_str());
        return kExitDiverged;
    }
    if (ranks > 1) {
        // Rank 0's own clock (train/data_parallel.h): what the step waited for
        // the gradients' sums after backward(); run with MINNOW_ALLREDUCE=blocking
        // to see the allreduce's whole time, which the overlap otherwise hides.
        const AllreduceTime t = allreduce_time();
        const char* mode = std::getenv("MINNOW_ALLREDUCE");
        if (t.steps > 0)
            std::printf("allreduce of the gradients (rank 0, %s): %.2f ms per step waited for after backward\n",
                        mode && *mode ? mode : "overlapped", 1e3 * t.waited_s / t.steps);
    }
    if (!o.save.empty() && rank == 0) {
        const std::vector<TensorEntry> state_dict = model->state_dict();
        if (const std::string bad = first_non_finite(state_dict); !bad.empty())
            throw Error("--save " + o.save + ": not saved, the model is not finite: " + bad);
        model->save(o.save, {{"model", o.model},
                             {"norm", o.norm},
                             {"mean", to_text(o.mean)},
                             {"std", to_text(o.std)},
                             {"step", std::to_string(r.state.step)}});
        std::printf("saved %s\n", o.save.c_str());
    }
    return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
    try {
        dist::init(&argc, &argv);  // one process unless started by mpirun
    } catch (const std::exception& e) {
        std::fprintf(stderr, "train_cifar: %s\n", e.what());
        return kExitFailed;
    }
    Options o;
    CLI::App app{"train_cifar: trains a reference network on CIFAR-10 (the BatchNorm experiment)"};
    app.add_option("--model", o.model, "network")->check(CLI::IsMember(model_names()))->capture_default_str();
    app.add_option("--norm", o.norm, norm2d_help())->check(CLI::IsMember(norm2d_kinds()))->capture_default_str();
    app.add_option("--data", o.data, "cifar-10-batches-bin folder or image folders with train/ and test/");
    app.add_option("--epochs", o.epochs, "epochs")->check(flag::whole(1, 100000))->capture_default_str();
    app.add_option("--batch-size", o.batch_size, "batch size")->check(flag::whole(1, 50000))->capture_default_str();
    app.add_option("--lr", o.lr, "learning rate")->check(flag::real(0, 1e30))->capture_default_str();
    app.add_option("--momentum", o.momentum, "SGD momentum")->check(flag::real(0, 1e30))->capture_default_str();
    app.add_option("--weight-decay", o.weight_decay, "SGD weight decay (L2, every parameter)")
        ->check(flag::real(0, 1e30))
        ->capture_default_str();
    app.add_option("--milestones", o.milestones, "epochs after which the lr is multiplied by --gamma")
        ->delimiter(',')
        ->check(flag::whole(1, 100000))
        ->capture_default_str();
    app.add_option("--gamma", o.gamma, "lr decay factor at each milestone")
        ->check(flag::real(0, 1e30, /*open_lo=*/true))
        ->capture_default_str();
    app.add_option("--label-smoothing", o.label_smoothing, "cross-entropy label smoothing")
        ->check(flag::real(0, 1))
        ->capture_default_str();
    app.add_option("--mean", o.mean, "per-channel mean for normalisation")
        ->delimiter(',')
        ->expected(3)
        ->check(flag::real(-1e30, 1e30));
    app.add_option("--std", o.std, "per-channel std for normalisation")
        ->delimiter(',')
        ->expected(3)
        ->check(flag::real(0, 1e30, /*open_lo=*/true));
    app.add_flag("--no-augment", o.no_augment, "no random crop and flip");
    app.add_flag("--no-shuffle", o.no_shuffle, "training batches in file order");
    app.add_flag("--sync-bn", o.sync_bn,
                 "under mpirun: BatchNorm statistics over the whole batch, not each rank's slice (SyncBatchNorm)");
    app.add_option("--steps", o.steps, "stop after this many optimizer steps (default: no limit)")
        ->check(flag::whole(1, int64_t{1000000000}));
    app.add_option("--train-limit", o.train_limit, "use N training images, evenly across the classes (0: all)")
        ->check(flag::whole(0, int64_t{1000000000}));
    app.add_option("--test-limit", o.test_limit, "use N test images, evenly across the classes (0: all)")
        ->check(flag::whole(0, int64_t{1000000000}));
    app.add_option("--init", o.init, "start from this safetensors state (e.g. written by PyTorch)");
    app.add_option("--save", o.save, "write the final model state here (safetensors, PyTorch names)");
    app.add_option("--out", o.out, "folder for logs and checkpoints (default results/MODEL-NORM)");
    app.add_flag("--resume", o.resume, "continue from OUT/checkpoint.safetensors if it exists, with its recipe");
    app.add_option("--threads", o.threads, "threads (default: MINNOW_NUM_THREADS or every core)")
        ->check(flag::threads());
    app.add_option("--seed", o.seed, "seed of initialisation, shuffling and augmentation")
        ->check(flag::whole(0, std::numeric_limits<int64_t>::max()))
        ->capture_default_str();
    app.add_option("--cache-dir", o.cache_dir, "where decoded image folders are cached")->capture_default_str();
    app.add_flag("--no-cache", o.no_cache, "do not cache decoded image folders");
    bool no_progress = false;
    app.add_flag("--no-progress", no_progress, "no progress output (on a terminal a bar, otherwise a line every tenth of an epoch)");
    return run_app(app, argc, argv, [&] {
        o.progress = !no_progress;
        for (const CLI::Option* opt : app.get_options())
            if (opt->count() > 0) o.given.insert(opt->get_name());
        return run(o);
    });
}
