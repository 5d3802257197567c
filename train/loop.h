// minnow/train/loop.h: the epoch loop, with callbacks.
//
//     DataLoader loader(train_set, loader_options);
//     LoopOptions lo;
//     lo.epochs = 20;
//     lo.test_set = test_set;
//     lo.test_loader.batch_size = 256;            // + the normalisation of the training batches
//     ProgressBar progress;
//     MetricsLog log("out/metrics.csv", "out/metrics.jsonl");
//     LoopResult r = train_epochs(model, opt, &sched, loader, lo, {}, {&progress, &log});
//
// Each epoch: model.train(), loader.start_epoch(epoch), train_step on every
// batch (train/step.h), then evaluation on lo.test_set, then sched->step()
// (a schedule stepped per epoch, as PyTorch's MultiStepLR). A non-finite step
// (loss, gradient, or a parameter or buffer after the optimizer's step) or a
// non-finite test loss ends the loop (LoopResult::diverged, with the reason
// from diagnose_non_finite); the epoch it happened in is not counted as done,
// so no checkpoint callback sees it. The loop resumes from any TrainState: epoch e sees the batches an
// uninterrupted run would (the DataLoader's order depends on (seed, epoch)).
//
// On several ranks (dist/comm.h, a loader with LoaderOptions::ranks and a
// test loader sliced the same way) every rank calls train_epochs: the
// statistics are the whole batch's (train/data_parallel.h), so every rank
// stops at the same step; after each epoch's training the buffers are
// averaged over the ranks (average_buffers), before the test and the
// callbacks, and the test set is split over the ranks (evaluate).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "data/loader.h"
#include "layers/module.h"
#include "optim/lr_scheduler.h"
#include "optim/optimizer.h"
#include "train/step.h"

namespace minnow {

// How far a run has come: whole epochs and optimizer steps.
struct TrainState {
    int64_t epochs_done = 0, step = 0;
};

struct LoopOptions {
    int64_t epochs = 1;         // train until this many epochs are done
    int64_t max_steps = 0;      // stop after this many optimizer steps in all (0: no limit)
    float label_smoothing = 0;  // of the training loss
    std::shared_ptr<const ImageSet> test_set;  // evaluated after every epoch (none: test_* are NaN)
    LoaderOptions test_loader;                 // its batch size and normalisation
};

struct EpochBegin {
    int64_t epoch = 0, epochs = 0;  // 1-based, of lo.epochs
    int64_t batches = 0;            // in this epoch
    double lr = 0;                  // of the first parameter group
};

struct StepInfo {
    int64_t epoch = 0, batch = 0, step = 0;  // 1-based: epoch, batch in the epoch, step of the run
    const Batch* data = nullptr;
    StepResult result;
    double running_loss = 0;  // mean loss of the epoch's images so far
    int64_t seen = 0;         // images of the epoch so far
};

struct EpochStats {
    int64_t epoch = 0;  // 1-based
    double lr = 0;      // during the epoch (first parameter group)
    double train_loss = 0, train_acc = 0, test_loss = 0, test_acc = 0;  // acc in %
    double grad_norm_mean = 0, grad_norm_max = 0;                       // global norm over the steps
    double img_per_s = 0, train_time_s = 0, epoch_time_s = 0;           // epoch time includes the test
    int64_t steps = 0;             // of the run, at the end of this epoch
    int64_t steps_this_epoch = 0;  // finite steps of this epoch
    bool partial = false;          // cut short by max_steps
};

// A non-finite step, or a non-finite test loss after an epoch (in_test: then
// batch and step are the epoch's last, and result.loss is the test loss).
struct Divergence {
    int64_t epoch = 0, batch = 0, step = 0;  // 1-based, as StepInfo
    StepResult result;
    bool in_test = false;
    std::string reason;  // diagnose_non_finite, on this rank's slice of the batch
    int rank = -1;       // on several ranks: the first whose slice's loss was not finite, or -1
};

struct LoopResult {
    TrainState state;
    std::vector<EpochStats> epochs;  // the epochs this call ran
    bool stopped_by_max_steps = false;
    std::optional<Divergence> diverged;
};

// The hooks of train_epochs, in the order it calls them. Each does nothing
// by default. Callbacks are called in the order given.
class Callback {
public:
    virtual ~Callback() = default;
    virtual void on_train_begin(const TrainState&) {}     // before the first epoch (also if none is left)
    virtual void on_epoch_begin(const EpochBegin&) {}
    virtual void after_backward() {}                      // the step's gradients are there, finite
    virtual void on_step(const StepInfo&) {}              // after a finite step
    virtual void on_epoch_trained(const EpochBegin&) {}   // the epoch's last step, before the test
    virtual void on_epoch_end(const EpochStats&) {}       // after the test and the schedule's step
    virtual void on_diverged(const Divergence&) {}        // a non-finite step: the loop ends
};

// A Callback made of functions (each may be empty).
struct CallbackFunctions : Callback {
    std::function<void(const StepInfo&)> step;
    std::function<void(const EpochStats&)> epoch_end;
    std::function<void(const Divergence&)> diverged;
    void on_step(const StepInfo& s) override {
        if (step) step(s);
    }
    void on_epoch_end(const EpochStats& e) override {
        if (epoch_end) epoch_end(e);
    }
    void on_diverged(const Divergence& d) override {
        if (diverged) diverged(d);
    }
};

// Trains from `start` until lo.epochs epochs are done, max_steps is reached
// or a step goes non-finite. `sched` may be null (a constant lr).
LoopResult train_epochs(Module& model, Optimizer& opt, LRScheduler* sched, DataLoader& loader,
                        const LoopOptions& lo, TrainState start = {},
                        const std::vector<Callback*>& callbacks = {});

}  // namespace minnow
