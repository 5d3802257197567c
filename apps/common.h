// apps/common.h: what the CIFAR-10 apps share: threads, finding and loading
// the data, its normalisation. The training itself (a step, the epoch loop,
// evaluation, checkpoints, logs, figures) is the library's train/ part.
// Header-only: each app is one .cpp.
#pragma once

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

// The studies (apps/study_*.cpp) use autograd, ops, the loss and gradient
// norms through this header.
#include "apps/flags.h"
#include "core/autograd.h"
#include "core/ops.h"
#include "core/parallel.h"
#include "data/cifar10.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "layers/fold_batchnorm.h"
#include "layers/int8_model.h"
#include "layers/loss.h"
#include "layers/models.h"
#include "optim/grad_utils.h"
#include "optim/optimizer.h"
#include "train/callbacks.h"
#include "train/checkpoint.h"
#include "train/evaluate.h"
#include "train/loop.h"
#include "train/step.h"

namespace minnow::app {

namespace fs = std::filesystem;

// The recipe of ../shared/reference/models.py (RECIPE).
inline const std::vector<float> kCifarMean{0.4914f, 0.4822f, 0.4465f};
inline const std::vector<float> kCifarStd{0.2023f, 0.1994f, 0.2010f};

// The memory a forward pass (and, for training, its backward) of `batch`
// images of side `image_size` needs, estimated from the layers' outputs for
// one image. Measured peak memory (bench, cnn and resnet20, batches 128-512):
// a training step holds about 1.1x the sum of its layers' outputs (they are
// kept for the backward; gradients are freed as it goes), evaluation far
// less; the factors below leave a margin.
inline double step_bytes(Module& model, bool train, int64_t batch, int64_t image_size) {
    double per_image = 0;
    Module::set_forward_timer([&](Module& m, const Tensor& y, double) {
        if (m.named_children().empty()) per_image += 4.0 * static_cast<double>(y.numel());
    });
    // In eval mode: a training-mode pass would move BatchNorm's running statistics.
    const bool was_training = model.is_training();
    model.eval();
    try {
        NoGradGuard ng;
        model(Tensor::zeros({1, 3, image_size, image_size}));
    } catch (...) {
        Module::set_forward_timer(nullptr);
        model.train(was_training);
        throw;
    }
    Module::set_forward_timer(nullptr);
    model.train(was_training);
    double params = 0;
    for (const Tensor& p : model.parameters()) params += 4.0 * static_cast<double>(p.numel());
    return (train ? 1.25 : 0.5) * per_image * static_cast<double>(batch) + (train ? 3 : 1) * params;
}

// The memory this process may still use: MemAvailable of /proc/meminfo
// (0 if unknown).
inline double available_memory_bytes() {
    std::FILE* f = std::fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    double kib = 0;
    while (std::fgets(line, sizeof line, f))
        if (std::sscanf(line, "MemAvailable: %lf kB", &kib) == 1) break;
    std::fclose(f);
    return kib * 1024;
}

// A UsageError naming `flag` when a step at this batch size cannot fit in
// memory, so a run is refused at once instead of being killed by the kernel
// mid-way (or after hours of training, at a larger evaluation batch).
inline void require_batch_fits(Module& model, bool train, int64_t batch, int64_t image_size,
                               const std::string& flag) {
    const double need = step_bytes(model, train, batch, image_size), have = available_memory_bytes();
    if (have > 0 && need > 0.9 * have) {
        char msg[256];
        std::snprintf(msg, sizeof msg, "%s %lld: a %s step at %lldx%lld needs about %.1f GiB, and %.1f GiB are available",
                      flag.c_str(), static_cast<long long>(batch), train ? "training" : "evaluation",
                      static_cast<long long>(image_size), static_cast<long long>(image_size), need / (1 << 30),
                      have / (1 << 30));
        throw UsageError(msg);
    }
}

// --data, or the usual places: ./data/cifar-10-batches-bin (the official
// download), ../shared/data/cifar10 (image folders), and the same relative
// to the source tree. Empty if none holds CIFAR-10.
inline std::string find_cifar10(const std::string& given) {
    if (!given.empty()) {
        if (!fs::exists(given)) throw UsageError("--data " + given + ": no such file or directory");
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

// The test set in order, normalised with `mean` and `std` (those the model
// was trained with).
inline LoaderOptions test_loader_options(int64_t batch_size, const std::vector<float>& mean = kCifarMean,
                                         const std::vector<float>& std = kCifarStd) {
    LoaderOptions o;
    o.batch_size = batch_size;
    o.shuffle = false;
    o.mean = mean;
    o.std = std;
    return o;
}

// The test set in order, normalised as the training batches (train/evaluate.h).
inline EvalResult evaluate(Module& model, std::shared_ptr<const ImageSet> set, int64_t batch_size,
                           bool keep_logits = false, const std::vector<float>& mean = kCifarMean,
                           const std::vector<float>& std = kCifarStd) {
    return minnow::evaluate(model, std::move(set), test_loader_options(batch_size, mean, std), keep_logits);
}

// int8 inference (layers/int8_model.h): `count` training images, evenly
// across the classes, normalised as for training: what the activation scales
// are calibrated on (never test images).
inline Tensor calibration_images(const std::string& root, int64_t count, const std::string& cache_dir,
                                 const std::vector<float>& mean, const std::vector<float>& std) {
    DataLoader loader(load_split(root, true, count, cache_dir), test_loader_options(count, mean, std));
    loader.start_epoch(0);
    Batch b;
    if (!loader.next(b)) throw Error("no training images to calibrate int8 on in " + root);
    return b.images;
}

// The int8 version of `trained` (a model_name/norm network, not changed):
// a copy with BatchNorm folded, quantized with scales from `calibration`.
inline std::shared_ptr<Int8Model> int8_version(const std::string& model_name, const std::string& norm,
                                               const Module& trained, const Tensor& calibration,
                                               const Int8Options& options = {}) {
    auto folded = make_model(model_name, norm);
    folded->load_state_dict(trained.state_dict());
    folded->eval();
    fold_batchnorm(*folded);
    return quantize_int8(*folded, calibration, options);
}

// Values of a file's metadata as text, and back: numbers in the shortest text
// that reads back as the same value, lists comma-separated, bools
// "true"/"false". from_text throws an Error unless the whole text is a value.
template <class T> std::string to_text(const T& v) {
    if constexpr (std::is_same_v<T, std::string>) return v;
    else if constexpr (std::is_floating_point_v<T>) {
        char b[40];
        for (int digits = 6;; ++digits) {
            std::snprintf(b, sizeof b, "%.*g", digits, static_cast<double>(v));
            if (static_cast<T>(std::strtod(b, nullptr)) == v || digits == 17) return b;
        }
    } else if constexpr (std::is_same_v<T, bool>) return v ? "true" : "false";
    else return std::to_string(v);
}
template <class T> std::string to_text(const std::vector<T>& v) {
    std::string s;
    for (const T& x : v) s += (s.empty() ? "" : ",") + to_text(x);
    return s;
}
template <class T> void from_text(const std::string& s, T& v) {
    if constexpr (std::is_same_v<T, std::string>) {
        v = s;
    } else if constexpr (std::is_same_v<T, bool>) {
        if (s != "true" && s != "false") throw Error("'" + s + "' is not true or false");
        v = s == "true";
    } else {
        std::istringstream in(s);
        if (!(in >> v) || !(in >> std::ws).eof()) throw Error("'" + s + "' is not a number");
    }
}
template <class T> void from_text(const std::string& s, std::vector<T>& v) {
    v.clear();
    std::istringstream in(s);
    for (std::string part; std::getline(in, part, ',');) from_text(part, v.emplace_back());
}

// The per-channel normalisation a file's metadata records under `key`
// ("mean" or "std": three numbers, comma-separated, as train_cifar writes
// them), or `fallback` if it records none.
inline std::vector<float> normalisation_in(const SafetensorsFile& f, const std::string& key, const std::string& path,
                                           const std::vector<float>& fallback) {
    auto it = f.metadata.find(key);
    if (it == f.metadata.end()) return fallback;
    std::vector<float> v;
    try {
        from_text(it->second, v);
    } catch (const Error&) {
        v.clear();
    }
    bool ok = v.size() == 3;
    for (float x : v) ok = ok && std::isfinite(x) && (key != "std" || x > 0);
    if (!ok)
        throw Error(path + ": metadata '" + key + "' is '" + it->second + "', not three finite numbers" +
                    (key == "std" ? " > 0" : "") + " separated by commas");
    return v;
}

}  // namespace minnow::app
