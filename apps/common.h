// apps/common.h: what the apps share: finding the data, evaluating a model on
// a test set, one training step and the diagnosis of a non-finite one, and
// small formatting helpers. Header-only: each app is one .cpp.
#pragma once

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/autograd.h"
#include "core/ops.h"
#include "core/parallel.h"
#include "data/cifar10.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "layers/loss.h"
#include "layers/models.h"
#include "optim/grad_utils.h"
#include "optim/optimizer.h"

namespace minnow::app {

namespace fs = std::filesystem;

// The recipe of ../shared/reference/models.py (RECIPE).
inline const std::vector<float> kCifarMean{0.4914f, 0.4822f, 0.4465f};
inline const std::vector<float> kCifarStd{0.2023f, 0.1994f, 0.2010f};

// Applies MINNOW_NUM_THREADS, then --threads N if given (0: keep the default).
inline void setup_threads(int threads) {
    init_threads_from_env();
    if (threads > 0) set_num_threads(threads);
}

// --data, or the usual places: ./data/cifar-10-batches-bin (the official
// download), ../shared/data/cifar10 (image folders), and the same relative
// to the source tree. Empty if none holds CIFAR-10.
inline std::string find_cifar10(const std::string& given) {
    if (!given.empty()) {
        if (!fs::exists(given)) throw Error("--data " + given + ": no such file or directory");
        return given;
    }
    std::vector<std::string> candidates{"data/cifar-10-batches-bin", "../shared/data/cifar10"};
#ifdef MINNOW_SOURCE_DIR
    candidates.push_back(std::string(MINNOW_SOURCE_DIR) + "/data/cifar-10-batches-bin");
    candidates.push_back(std::string(MINNOW_SOURCE_DIR) + "/../shared/data/cifar10");
#endif
    for (const auto& c : candidates)
        if (fs::exists(fs::path(c) / "test_batch.bin") || fs::exists(fs::path(c) / "test")) return c;
    throw Error(
        "CIFAR-10 not found. Looked in ./data/cifar-10-batches-bin and ../shared/data/cifar10.\n"
        "Get the binary version from https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz,\n"
        "unpack it into ./data (giving ./data/cifar-10-batches-bin), or pass --data DIR\n"
        "(a cifar-10-batches-bin folder, or a folder with train/ and test/ image folders).");
}

// Where decoded image folders are cached: $MINNOW_CACHE, else
// $XDG_CACHE_HOME/minnow, else ~/.cache/minnow.
inline std::string default_cache_dir() {
    if (const char* c = std::getenv("MINNOW_CACHE"); c && *c) return c;
    if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x) return std::string(x) + "/minnow";
    if (const char* h = std::getenv("HOME"); h && *h) return std::string(h) + "/.cache/minnow";
    return "";
}

// The limit-n images of a split, evenly across the classes (all if limit <= 0).
inline std::shared_ptr<ImageSet> load_split(const std::string& root, bool train, int64_t limit,
                                            const std::string& cache_dir) {
    ImageSet set = load_cifar10(root, train, cache_dir);
    if (limit > 0 && limit < set.n) set = evenly_across_classes(set, limit);
    return std::make_shared<ImageSet>(std::move(set));
}

inline LoaderOptions test_loader_options(int64_t batch_size) {
    LoaderOptions o;
    o.batch_size = batch_size;
    o.shuffle = false;
    o.mean = kCifarMean;
    o.std = kCifarStd;
    return o;
}

struct EvalResult {
    double loss = 0, accuracy = 0;  // mean cross-entropy, accuracy in %
    int64_t n = 0;
    std::vector<std::vector<int64_t>> confusion;  // [true][predicted]
    Tensor logits;                                // [n, classes] when asked for
    Tensor labels;                                // [n]
};

// Eval mode, no graph; the model's training flag is restored afterwards.
inline EvalResult evaluate(Module& model, std::shared_ptr<const ImageSet> set, int64_t batch_size,
                           bool keep_logits = false) {
    const bool was_training = model.is_training();
    model.eval();
    NoGradGuard no_grad;
    DataLoader loader(set, test_loader_options(batch_size));
    loader.start_epoch(0);
    EvalResult r;
    const int64_t k = set->num_classes();
    r.confusion.assign(k, std::vector<int64_t>(k, 0));
    if (keep_logits) {
        r.logits = Tensor::empty({set->n, k});
        r.labels = Tensor::empty({set->n});
    }
    double loss_sum = 0;
    int64_t correct = 0;
    Batch b;
    while (loader.next(b)) {
        Tensor logits = model(b.images);
        loss_sum += cross_entropy(logits, b.labels, 0.f, Reduction::Sum).item();
        Tensor pred = argmax(logits, 1);
        const int64_t bs = logits.size(0);
        for (int64_t i = 0; i < bs; ++i) {
            const int t = static_cast<int>(b.labels.data()[i]), p = static_cast<int>(pred.data()[i]);
            correct += t == p;
            ++r.confusion[t][p];
        }
        if (keep_logits) {
            std::copy(logits.data(), logits.data() + bs * k, r.logits.data() + r.n * k);
            std::copy(b.labels.data(), b.labels.data() + bs, r.labels.data() + r.n);
        }
        r.n += bs;
    }
    model.train(was_training);
    r.loss = r.n ? loss_sum / r.n : 0;
    r.accuracy = r.n ? 100.0 * correct / r.n : 0;
    return r;
}

// ---------------------------------------------------------------- one step
struct StepResult {
    float loss = NAN;        // the batch's mean cross-entropy
    double grad_norm = NAN;  // global L2 norm of the gradient (NaN if the loss was not finite)
    int64_t correct = 0;     // images of the batch the model got right (before the step)
    bool finite() const { return std::isfinite(loss) && std::isfinite(grad_norm); }
};

// One SGD step of every training app: forward, cross-entropy, backward, the
// gradient's norm, then (only if loss and gradient are finite) `after_backward`
// (to look at the gradients) and opt.step(). A non-finite step changes no
// weight: the caller decides what to do (see diagnose_non_finite).
inline StepResult train_step(Module& model, Optimizer& opt, const Batch& b, float label_smoothing = 0.f,
                             const std::function<void()>& after_backward = {}) {
    opt.zero_grad();
    Tensor logits = model(b.images);
    Tensor loss = cross_entropy(logits, b.labels, label_smoothing);
    StepResult r;
    r.loss = loss.item();
    if (!std::isfinite(r.loss)) return r;
    loss.backward();
    r.grad_norm = global_grad_norm(model.parameters());
    if (!r.finite()) return r;
    if (after_backward) after_backward();
    opt.step();
    Tensor pred = argmax(logits, 1);
    for (int64_t i = 0; i < pred.numel(); ++i) r.correct += pred.data()[i] == b.labels.data()[i];
    return r;
}

// ---------------------------------------------------------------- diagnosis
// Called when the loss or the gradient went non-finite: reruns the batch with
// a hook on every layer and names the first whose output is not finite, or
// else the first parameter whose gradient is not.
inline std::string diagnose_non_finite(Module& model, const Tensor& images, bool loss_finite) {
    auto finite = [](const Tensor& t) {
        for (int64_t i = 0; i < t.numel(); ++i)
            if (!std::isfinite(t.data()[i])) return false;
        return true;
    };
    if (loss_finite) {
        std::string name;
        if (!all_finite_grads(model.named_parameters(), &name)) return "the gradient of " + name + " is not finite";
    }
    std::string first;
    for (auto& [name, m] : model.named_modules()) {
        if (!m->named_children().empty()) continue;  // leaves only: the layers themselves
        m->register_forward_hook([&first, name = name, &finite](Module& mod, const Tensor& y) {
            if (first.empty() && !finite(y)) first = name + " (" + mod.type_name() + ")";
        });
    }
    if (!finite(images)) first = "the input batch itself";
    {
        NoGradGuard ng;
        model(images);
    }
    for (auto& [name, m] : model.named_modules()) m->clear_forward_hooks();
    if (!first.empty()) return "the output of " + first + " is the first that is not finite";
    std::string name;
    if (!all_finite_grads(model.named_parameters(), &name)) return "the gradient of " + name + " is not finite";
    return "every layer's output was finite on a rerun: the loss overflowed";
}

// The model's part of a safetensors file: a train_cifar checkpoint also holds
// the optimizer ("optim.*") and the schedule ("lr_scheduler.*").
inline std::vector<TensorEntry> model_entries(const SafetensorsFile& f) {
    std::vector<TensorEntry> out;
    for (const auto& e : f.tensors)
        if (e.name.rfind("optim.", 0) != 0 && e.name.rfind("lr_scheduler.", 0) != 0) out.push_back(e);
    return out;
}

inline bool stdout_is_terminal() { return isatty(fileno(stdout)) != 0; }

inline std::string format_duration(double seconds) {
    const long s = std::lround(std::max(0.0, seconds));
    char buf[32];
    if (s >= 3600) std::snprintf(buf, sizeof buf, "%ldh%02ldm", s / 3600, (s / 60) % 60);
    else std::snprintf(buf, sizeof buf, "%ldm%02lds", s / 60, s % 60);
    return buf;
}

}  // namespace minnow::app
