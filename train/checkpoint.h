// minnow/train/checkpoint.h: everything a run needs to continue, in one
// safetensors file.
//
//     TrainingCheckpoint::capture(model, opt, &sched, state, {{"model", "cnn"}}).save(path);
//     ...
//     TrainingCheckpoint ck = TrainingCheckpoint::load(path);
//     TrainState state = ck.resume(model, opt, &sched);   // then train_epochs(..., state, ...)
//
// The file: the model's state_dict under its PyTorch names (so it also loads
// into PyTorch with strict=False, or into `evaluate`), the optimizer's state
// under "optim.", the schedule's under "lr_scheduler.", and in the metadata
// "format" = "minnow-train-checkpoint", "epochs_done", "step", "rng" (the
// default generator's state words, space-separated), the optimizer's and the
// schedule's metadata, the metrics log of the epochs done ("metrics_jsonl",
// MetricsLog::history: a resumed run rewrites its logs from it) and the
// caller's run metadata (any other keys).
#pragma once

#include <map>
#include <string>
#include <vector>

#include "core/random.h"
#include "core/safetensors.h"
#include "layers/module.h"
#include "optim/lr_scheduler.h"
#include "optim/optimizer.h"
#include "train/loop.h"

namespace minnow {

struct TrainingCheckpoint {
    std::vector<TensorEntry> model;  // the model's state_dict
    SafetensorsFile optimizer;       // Optimizer::state_dict("optim.")
    SafetensorsFile schedule;        // LRScheduler::state_dict("lr_scheduler."); empty: no schedule
    Generator::State rng{};          // default_generator()'s state
    TrainState progress;
    std::map<std::string, std::string> run;  // the caller's run metadata (e.g. model and norm)
    std::string history;                     // JSON lines of the metrics of epochs 1..epochs_done

    // The state of a run now. `sched` may be null.
    static TrainingCheckpoint capture(const Module& model, const Optimizer& opt, const LRScheduler* sched,
                                      TrainState progress, std::map<std::string, std::string> run = {});
    // Written atomically (a temporary file renamed over `path`): a run killed
    // while saving leaves the previous checkpoint. A tensor that is not
    // finite is an Error naming it, and the previous file stays.
    void save(const std::string& path) const;
    // Throws minnow::Error naming the file and the metadata key if it is not
    // a training checkpoint: a "format" other than "minnow-train-checkpoint",
    // an "epochs_done" or "step" that is not a whole number >= 0, an "rng"
    // that is not the generator's 5 words as save writes them.
    static TrainingCheckpoint load(const std::string& path);
    // The same from a file already read (load is load_safetensors, then this);
    // errors name f.path.
    static TrainingCheckpoint from_file(const SafetensorsFile& f);
    // Puts model, optimizer, schedule (if both have one) and the default
    // generator back as they were; returns where the run was.
    TrainState resume(Module& model, Optimizer& opt, LRScheduler* sched) const;

    std::string source;  // the file it was loaded from (for messages)
};

// The model's part of a safetensors file: a training checkpoint also holds the
// optimizer ("optim.*") and the schedule ("lr_scheduler.*").
std::vector<TensorEntry> model_entries(const SafetensorsFile& f);

}  // namespace minnow
