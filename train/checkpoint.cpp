#include "train/checkpoint.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace minnow {

namespace {
const char* const kOptim = "optim.";
const char* const kSched = "lr_scheduler.";
bool starts_with(const std::string& s, const char* prefix) { return s.rfind(prefix, 0) == 0; }
const char* const kOwnKeys[] = {"format", "epochs_done", "step", "rng", "metrics_jsonl"};
}  // namespace

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

TrainingCheckpoint TrainingCheckpoint::load(const std::string& path) { return from_file(load_safetensors(path)); }

namespace {
// The generator's state as save writes it: 5 words, one space between them;
// the 4 of xoshiro256** not all zero (from there it draws only zeros), the 5th
// 0 (no cached normal) or 2^32 + the bits of a finite float.
bool parse_rng(const std::string& text, Generator::State& out) {
    size_t at = 0;
    for (size_t i = 0; i < out.size(); ++i) {
        const size_t space = i + 1 < out.size() ? text.find(' ', at) : text.size();
        if (space == std::string::npos) return false;
        const auto w = parse_whole_number(text.substr(at, space - at));
        if (!w) return false;
        out[i] = *w;
        at = space + 1;
    }
    if ((out[0] | out[1] | out[2] | out[3]) == 0) return false;
    const uint64_t extra = out[4];
    if (extra >> 32 > 1 || (extra >> 32 == 0 && extra != 0)) return false;
    float spare;
    const uint32_t bits = static_cast<uint32_t>(extra);
    std::memcpy(&spare, &bits, sizeof spare);
    return std::isfinite(spare);
}
}  // namespace

TrainingCheckpoint TrainingCheckpoint::from_file(const SafetensorsFile& f) {
    const std::string& path = f.path;
    auto meta = [&](const std::string& k) -> const std::string& {
        auto it = f.metadata.find(k);
        if (it == f.metadata.end())
            throw Error(path + ": not a training checkpoint (no '" + k + "' in its metadata)");
        return it->second;
    };
    if (meta("format") != "minnow-train-checkpoint")
        throw Error(path + ": not a training checkpoint (its metadata 'format' is " +
                    quote_for_error(meta("format")) + ", not 'minnow-train-checkpoint')");
    auto count = [&](const std::string& k) {
        const auto v = parse_whole_number(meta(k));
        if (!v || *v > uint64_t{INT64_MAX})
            throw Error(path + ": metadata '" + k + "' is " + quote_for_error(meta(k)) +
                        ", not a whole number >= 0");
        return static_cast<int64_t>(*v);
    };
    TrainingCheckpoint c;
    c.source = path;
    c.progress = {count("epochs_done"), count("step")};
    if (!parse_rng(meta("rng"), c.rng))
        throw Error(path + ": metadata 'rng' is " + quote_for_error(meta("rng")) +
                    ", not the generator's state (5 whole numbers, one space apart, as a checkpoint writes them)");
    if (auto it = f.metadata.find("metrics_jsonl"); it != f.metadata.end()) c.history = it->second;
    c.model = model_entries(f);
    c.optimizer.path = c.schedule.path = path;
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
    // save() never writes one; an edited or foreign file could hold it, and
    // the run would stop at its first step.
    std::vector<TensorEntry> all = model;
    all.insert(all.end(), optimizer.tensors.begin(), optimizer.tensors.end());
    if (const std::string bad = first_non_finite(all); !bad.empty())
        throw Error((source.empty() ? std::string("checkpoint") : source) +
                    ": cannot be resumed, it holds a tensor that is not finite: " + bad);
    m.load_state_dict(model, true, source.empty() ? "checkpoint" : source);
    opt.load_state_dict(optimizer, kOptim);
    if (sched && !schedule.metadata.empty()) sched->load_state_dict(schedule, kSched);
    default_generator().set_state(rng);
    return progress;
}

}  // namespace minnow
