// studies/study.h: what the BatchNorm studies (studies/study_*.cpp) share: the
// flags every study has, a short training run that records its curves and
// treats divergence as a result, CSV files, gnuplot figures and markdown
// tables. Header-only, like apps/common.h.
//
// A study writes everything into one folder (--out): one CSV per run and per
// table, PNG figures with the gnuplot script that drew each (so a figure can
// be restyled without rerunning), and summary.md saying what was run and
// what it measured.
#pragma once

#include <CLI/CLI.hpp>

#include <cerrno>
#include <cstring>
#include <limits>

#include <deque>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iomanip>
#include <sstream>
#include <string>
#include <vector>

#include "apps/common.h"
#include "data/io.h"
#include "layers/norm_factory.h"
#include "studies/summary.h"
#include "train/plot.h"
#include "core/random.h"
#include "optim/lr_scheduler.h"
#include "optim/sgd.h"

namespace minnow::app {

// ---------------------------------------------------------------- flags
// The data and budget flags of every training study. Studies default to a
// short budget (the full 20-epoch recipe takes hours per run on two cores);
// each summary states the budget it ran with.
struct StudyOptions {
    std::string data, out, cache_dir = default_cache_dir();
    int epochs = 4, threads = 0;
    int64_t train_limit = 10000, test_limit = 2000, batch_size = 128;
    uint64_t seed = 0;
};

inline void add_study_flags(CLI::App& app, StudyOptions& o) {
    app.add_option("--data", o.data, "cifar-10-batches-bin folder or image folders with train/ and test/");
    app.add_option("--out", o.out, "folder for the CSVs, figures and summary.md")->capture_default_str();
    app.add_option("--epochs", o.epochs, "epochs per run")->check(flag::whole(1, 100000))->capture_default_str();
    app.add_option("--batch-size", o.batch_size, "batch size")->check(flag::whole(1, 50000))->capture_default_str();
    app.add_option("--train-limit", o.train_limit, "training images, evenly across the classes (0: all 50000)")
        ->check(flag::whole(0, int64_t{1000000000}))
        ->capture_default_str();
    app.add_option("--test-limit", o.test_limit, "test images, evenly across the classes (0: all 10000)")
        ->check(flag::whole(0, int64_t{1000000000}))
        ->capture_default_str();
    app.add_option("--threads", o.threads, "threads (default: MINNOW_NUM_THREADS or every core)")
        ->check(flag::threads());
    app.add_option("--seed", o.seed, "seed of initialisation, shuffling and augmentation")
        ->check(flag::whole(0, std::numeric_limits<int64_t>::max()))
        ->capture_default_str();
}

// --norms: the normalisations a study compares (kinds of make_norm2d).
inline void add_norms_flag(CLI::App& app, std::vector<std::string>& norms) {
    app.add_option("--norms", norms, "normalisations: " + norm2d_help())
        ->delimiter(',')
        ->check(CLI::IsMember(norm2d_kinds()))
        ->capture_default_str();
}

// "4 epochs on 10000 of the 50000 training images (1000 per class), tested on 2000 ...".
inline std::string budget_text(const StudyOptions& o, int64_t train_n, int64_t test_n) {
    std::ostringstream s;
    s << o.epochs << " epochs at batch " << o.batch_size << " on " << train_n << " training images";
    if (train_n < 50000) s << " (" << train_n / 10 << " per class, the same on every run)";
    s << ", tested on " << test_n << " test images; seed " << o.seed;
    return s.str();
}

// The start of every training study: threads, the output folder (with runs/),
// the training and test images of the budget, and a first line saying what
// was loaded.
struct StudyData {
    std::shared_ptr<ImageSet> train, test;
    std::string root;  // where CIFAR-10 was found
};

inline StudyData start_study(const StudyOptions& o, const std::string& study) {
    setup_threads(o.threads);
    require_writable_folder(o.out + "/runs", "--out");
    {
        manual_seed(o.seed);
        auto model = make_model("cnn", "batch");
        require_batch_fits(*model, true, o.batch_size, 32, "--batch-size");
    }
    StudyData d;
    d.root = find_cifar10(o.data);
    d.train = load_split(d.root, true, o.train_limit, o.cache_dir);
    d.test = load_split(d.root, false, o.test_limit, o.cache_dir);
    std::printf("%s: %s; %s\n", study.c_str(), budget_text(o, d.train->n, d.test->n).c_str(),
                threading_info().c_str());
    std::fflush(stdout);
    return d;
}

// ---------------------------------------------------------------- a training run
// One run of a study: SGD with momentum and weight decay (PyTorch semantics),
// an optional MultiStepLR, crop+flip augmentation, the CIFAR normalisation.
struct RunSpec {
    std::string label;  // names the run in logs and figures
    std::string model = "cnn", norm = "batch";
    int epochs = 4;
    int64_t batch_size = 128;
    double lr = 0.1, momentum = 0.9, weight_decay = 5e-4;
    std::vector<int64_t> milestones;  // epochs after which lr *= 0.1 (none: constant lr)
    bool augment = true, shuffle = true;
    uint64_t seed = 0;
    // Called once on the freshly initialised model, before the optimizer is
    // made: e.g. rescale the initial weights or change BatchNorm's momentum.
    std::function<void(Module&)> prepare;
    // Parameter groups with their own lr / weight decay (unset: one group
    // with every parameter, as torch.optim.SGD(model.parameters())).
    std::function<std::vector<ParamGroupSpec>(const NamedTensors&)> param_groups;
};

struct EpochRecord {
    int epoch = 0;
    double lr = 0, train_loss = 0, train_acc = 0, test_loss = 0, test_acc = 0;
    double grad_norm_mean = 0, grad_norm_max = 0, seconds = 0;
};

struct RunRecord {
    std::string label;
    std::vector<EpochRecord> epochs;  // whole epochs completed
    std::vector<float> step_loss;     // the loss of every step, divergence included
    int64_t steps = 0;
    int64_t diverged_at_step = 0;     // 0: it did not
    std::string diverged_reason;      // which layer went non-finite first
    std::shared_ptr<Module> model;    // the trained model (as it was when the run stopped)
    bool diverged() const { return diverged_at_step > 0; }
    double final_test_acc() const { return epochs.empty() ? 0 : epochs.back().test_acc; }
};

inline const char* yes_no(bool b) { return b ? "yes" : "no"; }

// Trains `spec` on train_set, testing after each epoch. A non-finite loss or
// gradient ends the run (recorded, not thrown): for a sweep it is a result.
// on_epoch (optional) sees each finished epoch and the model, e.g. to
// evaluate it on a second test set or to record its running statistics.
inline RunRecord train_run(const RunSpec& spec, std::shared_ptr<const ImageSet> train_set,
                           std::shared_ptr<const ImageSet> test_set,
                           const std::function<void(const EpochRecord&, Module&)>& on_epoch = {}) {
    RunRecord rec;
    rec.label = spec.label;
    manual_seed(spec.seed);
    rec.model = make_model(spec.model, spec.norm);
    Module& model = *rec.model;
    if (spec.prepare) spec.prepare(model);
    SGDOptions so(spec.lr);
    so.momentum = spec.momentum;
    so.weight_decay = spec.weight_decay;
    SGD opt(spec.param_groups ? spec.param_groups(model.named_parameters())
                              : std::vector<ParamGroupSpec>{ParamGroupSpec(model.named_parameters())},
            so);
    MultiStepLR sched(opt, spec.milestones, 0.1);

    LoaderOptions lo;
    lo.batch_size = spec.batch_size;
    lo.shuffle = spec.shuffle;
    lo.augment = spec.augment;
    lo.seed = spec.seed;
    lo.mean = kCifarMean;
    lo.std = kCifarStd;
    DataLoader loader(train_set, lo);

    // The library's epoch loop (train/loop.h); this run records what it reports.
    LoopOptions loop;
    loop.epochs = spec.epochs;
    loop.test_set = test_set;
    loop.test_loader = test_loader_options(256);
    CallbackFunctions record;
    record.step = [&](const StepInfo& s) { rec.step_loss.push_back(s.result.loss); };
    record.diverged = [&](const Divergence& d) {
        if (!d.in_test) rec.step_loss.push_back(d.result.loss);
        rec.diverged_at_step = d.step;
        rec.diverged_reason = d.reason;
        std::printf("  %s: diverged at step %lld (epoch %lld): %s\n", spec.label.c_str(),
                    static_cast<long long>(d.step), static_cast<long long>(d.epoch), d.reason.c_str());
        std::fflush(stdout);
    };
    record.epoch_end = [&](const EpochStats& s) {
        EpochRecord e;
        e.epoch = static_cast<int>(s.epoch);
        e.lr = s.lr;
        e.train_loss = s.train_loss;
        e.train_acc = s.train_acc;
        e.test_loss = s.test_loss;
        e.test_acc = s.test_acc;
        e.grad_norm_mean = s.grad_norm_mean;
        e.grad_norm_max = s.grad_norm_max;
        e.seconds = s.epoch_time_s;
        rec.epochs.push_back(e);
        std::printf("  %s: epoch %d  train loss %.4f acc %.2f%%  test loss %.4f acc %.2f%%  |g| %.3f  %.0f s\n",
                    spec.label.c_str(), e.epoch, e.train_loss, e.train_acc, e.test_loss, e.test_acc,
                    e.grad_norm_mean, e.seconds);
        std::fflush(stdout);
        if (on_epoch) on_epoch(e, model);
    };
    rec.steps = train_epochs(model, opt, &sched, loader, loop, {}, {&record}).state.step;
    if (rec.diverged()) rec.steps = rec.diverged_at_step;
    return rec;
}

// ---------------------------------------------------------------- files
// Numbers as text: enough digits to plot and compare, no trailing noise.
inline std::string num(double v, int precision = 6) {
    if (std::isnan(v)) return "nan";
    std::ostringstream s;
    s << std::setprecision(precision) << v;
    return s.str();
}

// A CSV file written row by row (the header first). Fields are written as
// given: callers pass numbers through num() and keep commas out of text.
class CsvFile {
public:
    CsvFile(const std::string& path, const std::vector<std::string>& header) : path_(path), out_(path) {
        if (!out_) throw Error(path + ": cannot write");
        row(header);
    }
    void row(const std::vector<std::string>& fields) {
        for (size_t i = 0; i < fields.size(); ++i) out_ << (i ? "," : "") << fields[i];
        out_ << "\n";
        if (!out_.flush()) throw Error(path_ + ": write error (" + std::strerror(errno) + ")");
    }
    const std::string& path() const { return path_; }

private:
    std::string path_;
    std::ofstream out_;
};

// A run's epochs as a CSV (the columns of train_cifar's metrics.csv that apply).
inline void write_epochs_csv(const std::string& path, const RunRecord& r) {
    CsvFile f(path, {"epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "grad_norm_mean",
                     "grad_norm_max", "epoch_time_s"});
    for (const auto& e : r.epochs)
        f.row({std::to_string(e.epoch), num(e.lr), num(e.train_loss), num(e.train_acc), num(e.test_loss),
               num(e.test_acc), num(e.grad_norm_mean), num(e.grad_norm_max), num(e.seconds, 4)});
}

// A run's per-step losses as a CSV: step, loss (non-finite as "nan"), and
// the running mean over the last `window` finite losses (plots read better).
inline void write_step_loss_csv(const std::string& path, const RunRecord& r, size_t window = 50) {
    CsvFile f(path, {"step", "loss", "loss_mean" + std::to_string(window)});
    std::deque<double> last;
    double sum = 0;
    for (size_t i = 0; i < r.step_loss.size(); ++i) {
        const double l = r.step_loss[i];
        if (std::isfinite(l)) {
            last.push_back(l);
            sum += l;
            if (last.size() > window) {
                sum -= last.front();
                last.pop_front();
            }
        }
        f.row({std::to_string(i + 1), num(l), std::isfinite(l) ? num(sum / last.size()) : "nan"});
    }
}

// ---------------------------------------------------------------- figures
// Figure, Series, csv_column and plot (gnuplot) are the library's: train/plot.h.

// ---------------------------------------------------------------- summaries
// A markdown table.
inline std::string md_table(const std::vector<std::string>& header,
                            const std::vector<std::vector<std::string>>& rows) {
    std::ostringstream s;
    auto line = [&](const std::vector<std::string>& cells) {
        s << "|";
        for (const auto& c : cells) s << " " << c << " |";
        s << "\n";
    };
    line(header);
    s << "|";
    for (size_t i = 0; i < header.size(); ++i) s << "---|";
    s << "\n";
    for (const auto& r : rows) line(r);
    return s.str();
}

// The command line that ran the study, for its summary (the program as it is
// built: build/<name>).
inline std::string command_line(int argc, char** argv) {
    std::string s = "build/" + fs::path(argv[0]).filename().string();
    for (int i = 1; i < argc; ++i) s += " " + std::string(argv[i]);
    return s;
}

inline void write_text(const std::string& path, const std::string& text) { write_text_atomically(path, text); }

// A run of the study's budget (epochs, batch size, seed) and the default recipe.
inline RunSpec study_run(const StudyOptions& o, std::string label, std::string norm) {
    RunSpec spec;
    spec.label = std::move(label);
    spec.norm = std::move(norm);
    spec.epochs = o.epochs;
    spec.batch_size = o.batch_size;
    spec.seed = o.seed;
    return spec;
}

// Table cells of a run: its test accuracy per epoch ("71.2, 80.1", "-" if
// none) and where it diverged ("step 12: <reason>", or "no").
inline std::string accuracy_per_epoch(const RunRecord& r) {
    std::string s;
    for (const auto& e : r.epochs) s += (s.empty() ? "" : ", ") + num(e.test_acc, 3);
    return s.empty() ? "-" : s;
}

inline std::string divergence_cell(const RunRecord& r) {
    return r.diverged() ? "step " + std::to_string(r.diverged_at_step) + ": " + r.diverged_reason : "no";
}

// The values every summary template has: {{command}} (as typed, build/<name>
// ...) and {{machine}} (threads and kernels).
inline TemplateValues run_values(int argc, char** argv) {
    return {{"command", command_line(argc, argv)}, {"machine", threading_info()}};
}

// Writes the filled summary to <out>/summary.md and says so.
inline void write_summary(const std::string& out, const std::string& text) {
    write_text(out + "/summary.md", text);
    std::printf("wrote %s/summary.md\n", out.c_str());
}

// A study's main after its flags: parses them and runs `body`, with the
// messages and exit codes of run_app (apps/flags.h).
inline int run_study(CLI::App& app, int argc, char** argv, const std::function<void()>& body) {
    return run_app(app, argc, argv, [&] {
        body();
        return kExitOk;
    });
}

}  // namespace minnow::app
