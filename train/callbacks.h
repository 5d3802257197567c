// minnow/train/callbacks.h: the callbacks of train_epochs (train/loop.h) that
// a training program usually wants:
//
//   ProgressBar      a bar on a terminal, a plain line every tenth of an epoch otherwise
//   EpochTable       a line of metrics per epoch on stdout, under a header
//   LayerGradNorms   per layer (weight and bias together): the gradient's L2 norm,
//                    averaged over the epoch's steps
//   MetricsLog       OUT/metrics.csv and OUT/metrics.jsonl, a row / object per epoch
//   SaveCheckpoint   a TrainingCheckpoint after every whole epoch
//   Figures          training loss, test accuracy and gradient norm as PNGs (gnuplot)
//
// Give them to train_epochs in this order: MetricsLog before Figures (the
// figures are drawn from metrics.csv), LayerGradNorms before MetricsLog.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "train/checkpoint.h"
#include "train/loop.h"

namespace minnow {

bool stdout_is_terminal();
// "4m05s", or "1h02m" from an hour on.
std::string format_duration(double seconds);

class ProgressBar : public Callback {
public:
    explicit ProgressBar(bool enabled = true);
    void on_epoch_begin(const EpochBegin& b) override;
    void on_step(const StepInfo& s) override;
    void on_epoch_trained(const EpochBegin&) override;  // clears the bar

private:
    bool tty_, enabled_;
    EpochBegin epoch_;
    std::chrono::steady_clock::time_point start_;
    double last_ = -1;
};

class EpochTable : public Callback {
public:
    // `partial_note` ends the line of an epoch cut short by max_steps.
    explicit EpochTable(std::string partial_note = " (partial epoch)") : partial_note_(std::move(partial_note)) {}
    void on_train_begin(const TrainState&) override;
    void on_epoch_end(const EpochStats& e) override;

private:
    std::string partial_note_;
};

class LayerGradNorms : public Callback {
public:
    explicit LayerGradNorms(const Module& model) : params_(model.named_parameters()) {}
    void on_epoch_begin(const EpochBegin&) override;
    void after_backward() override;
    void on_step(const StepInfo&) override;
    // This epoch so far: layer name (a parameter's name without its last part) -> mean norm.
    std::map<std::string, double> epoch_means() const;

private:
    NamedTensors params_;
    std::map<std::string, double> step_sq_, sum_;
    int64_t steps_ = 0;
};

// The columns of metrics.csv (and keys of each metrics.jsonl object):
//   epoch,lr,train_loss,train_acc,test_loss,test_acc,grad_norm_mean,grad_norm_max,img_per_s,epoch_time_s,steps
// the JSON objects also have "partial_epoch" and, given a LayerGradNorms,
// "layer_grad_norm" (an object: layer -> norm). A divergence adds the JSON line
// {"epoch", "diverged_at_step", "reason"}.
// The log is kept in memory and both files are rewritten from it after every
// epoch (atomically: a temporary file, then a rename); a write that fails is
// an Error naming the file. At on_train_begin a fresh run (no epoch done)
// starts both files afresh. A resumed run rewrites them from the history in
// its checkpoint (restore(); SaveCheckpoint stores history()): the checkpoint
// is the truth, so a torn or edited log never blocks a resume. Without a
// history (restore not called) the old files' objects of epochs
// 1..epochs_done are kept, and lines that do not parse are dropped with a
// warning naming the file and line.
class MetricsLog : public Callback {
public:
    MetricsLog(std::string csv_path, std::string jsonl_path, const LayerGradNorms* layers = nullptr)
        : csv_(std::move(csv_path)), jsonl_(std::move(jsonl_path)), layers_(layers) {}
    static std::string csv_header();
    // The JSON lines of a resumed run's epochs (TrainingCheckpoint::history).
    void restore(const std::string& history);
    // The JSON lines so far, one object per line.
    std::string history() const;
    void on_train_begin(const TrainState& s) override;
    void on_epoch_end(const EpochStats& e) override;
    void on_diverged(const Divergence& d) override;
    const std::string& csv_path() const { return csv_; }

private:
    void write() const;
    std::string csv_, jsonl_;
    const LayerGradNorms* layers_;
    std::vector<std::string> lines_;  // JSON objects, one per epoch (and a divergence)
    bool restored_ = false;
};

// After each whole epoch (not one cut short by max_steps), with the metrics
// history of `log` if given (a resume rewrites the logs from it). A training
// state that is not finite is never saved (TrainingCheckpoint::save throws).
class SaveCheckpoint : public Callback {
public:
    SaveCheckpoint(std::string path, const Module& model, const Optimizer& opt, const LRScheduler* sched,
                   std::map<std::string, std::string> run = {}, const MetricsLog* log = nullptr)
        : path_(std::move(path)), model_(model), opt_(opt), sched_(sched), run_(std::move(run)), log_(log) {}
    void on_epoch_end(const EpochStats& e) override;
    // The epoch of the last checkpoint this callback wrote (0: none yet).
    int64_t saved_epoch() const { return saved_epoch_; }

private:
    std::string path_;
    const Module& model_;
    const Optimizer& opt_;
    const LRScheduler* sched_;
    std::map<std::string, std::string> run_;
    const MetricsLog* log_;
    int64_t saved_epoch_ = 0;
};

// After each epoch, from a metrics.csv (MetricsLog's): DIR/train_loss.png,
// DIR/test_accuracy.png and DIR/grad_norm.png, each with its gnuplot script
// (.gp). A script that cannot be written is an Error naming it; gnuplot
// failing on the data (e.g. a column with no finite value yet) is a warning
// on stderr; without gnuplot it says so once and draws nothing.
class Figures : public Callback {
public:
    Figures(std::string dir, std::string metrics_csv, std::string label)
        : dir_(std::move(dir)), csv_(std::move(metrics_csv)), label_(std::move(label)) {}
    void on_epoch_end(const EpochStats&) override { draw(); }
    // Returns how many figures were written.
    int draw();

private:
    std::string dir_, csv_, label_;
    bool warned_ = false;
};

}  // namespace minnow
