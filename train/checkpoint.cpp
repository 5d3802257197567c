#include "train/checkpoint.h"

#include <algorithm>
#include <sstream>

namespace minnow {

namespace {
const char* const kOptim = "optim.";
const char* const kSched = "lr_scheduler.";
bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }
const char* const kOwnKeys[] = {"format", "epochs_done", "step", "rng", "metrics_jsonl"};
}  // namespace

std::string first_non_finite(const std::vector<TensorEntry>& entries) {
    for (const TensorEntry& e : entries)
        if (const std::string bad = non_finite_element(e.tensor); !bad.empty()) return e.name + " (" + bad + ")";
    return "";
}

std::vector<TensorEntry> model_entries(const SafetensorsFile& f) {
    std::vector<TensorEntry> out;
    for (const auto& e : f.tensors)
        if (!starts_with(e.name, kOptim) && !starts_with(e.name, kSched)) out.push_back(e);
    return out;
}

TrainingCheckpoint TrainingCheckpoint::capture(const Module& model, const Optimizer& opt, const LRScheduler* sched,
                                               TrainState progress, std::map<std::string, std::string> run) {
    TrainingCheckpoint c;
    c.model = model.state_dict();
    c.optimizer = opt.state_dict(kOptim);
    if (sched) c.schedule = sched->state_dict(kSched);
    c.rng = default_generator().state();
    c.progress = progress;
    c.run = std::move(run);
    return c;
}

void TrainingCheckpoint::save(const std::string& path) const {
    std::vector<TensorEntry> entries = model;
    for (const SafetensorsFile* part : {&optimizer, &schedule})
        entries.insert(entries.end(), part->tensors.begin(), part->tensors.end());
    // A checkpoint is what a resume trusts: one holding NaN would be resumed
    // into a run that cannot recover.
    if (const std::string bad = first_non_finite(entries); !bad.empty())
        throw Error(path + ": not saved, the training state is not finite: " + bad);
    std::map<std::string, std::string> meta{{"format", "minnow-train-checkpoint"},
                                            {"epochs_done", std::to_string(progress.epochs_done)},
                                            {"step", std::to_string(progress.step)}};
    meta.insert(run.begin(), run.end());
    for (const SafetensorsFile* part : {&optimizer, &schedule}) meta.insert(part->metadata.begin(), part->metadata.end());
    if (!history.empty()) meta["metrics_jsonl"] = history;
    std::string words;
    for (uint64_t w : rng) words += (words.empty() ? "" : " ") + std::to_string(w);
    meta["rng"] = words;
    save_safetensors(path, entries, meta);  // atomic: a temporary file, then rename
}

TrainingCheckpoint TrainingCheckpoint::load(const std::string& path) {
    SafetensorsFile f = load_safetensors(path);
    auto meta = [&](const std::string& k) {
        auto it = f.metadata.find(k);
        if (it == f.metadata.end())
            throw Error(path + ": not a training checkpoint (no '" + k + "' in its metadata)");
        return it->second;
    };
    TrainingCheckpoint c;
    c.source = path;
    c.progress = {std::stoll(meta("epochs_done")), std::stoll(meta("step"))};
    std::istringstream words(meta("rng"));
    for (auto& w : c.rng) words >> w;
    if (!words) throw Error(path + ": the 'rng' of its metadata is not a generator state");
    if (auto it = f.metadata.find("metrics_jsonl"); it != f.metadata.end()) c.history = it->second;
    c.model = model_entries(f);
    for (auto& e : f.tensors) {
        if (starts_with(e.name, kOptim)) c.optimizer.tensors.push_back(e);
        else if (starts_with(e.name, kSched)) c.schedule.tensors.push_back(e);
    }
    for (auto& [k, v] : f.metadata) {
        if (starts_with(k, kOptim)) c.optimizer.metadata[k] = v;
        else if (starts_with(k, kSched)) c.schedule.metadata[k] = v;
        else if (std::find(std::begin(kOwnKeys), std::end(kOwnKeys), k) == std::end(kOwnKeys)) c.run[k] = v;
    }
    return c;
}

TrainState TrainingCheckpoint::resume(Module& m, Optimizer& opt, LRScheduler* sched) const {
    m.load_state_dict(model, true, source.empty() ? "checkpoint" : source);
    opt.load_state_dict(optimizer, kOptim);
    if (sched && !schedule.metadata.empty()) sched->load_state_dict(schedule, kSched);
    default_generator().set_state(rng);
    return progress;
}

}  // namespace minnow
