#include "web/panels.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>

#include <nlohmann/json.hpp>

#include "core/autograd.h"
#include "core/error.h"
#include "core/ops.h"
#include "core/random.h"
#include "core/safetensors.h"
#include "data/loader.h"
#include "layers/activation.h"
#include "layers/batchnorm.h"
#include "layers/conv2d.h"
#include "layers/flatten.h"
#include "layers/layernorm.h"
#include "layers/linear.h"
#include "layers/loss.h"
#include "layers/norm_factory.h"
#include "layers/pooling.h"
#include "optim/sgd.h"
#include "train/step.h"

namespace minnow::web {

using nlohmann::json;

namespace {

constexpr int64_t kSide = 32;                  // CIFAR-10 images and features.0's output: 32x32
constexpr int64_t kPixels = kSide * kSide;

void check(bool ok, const std::string& what) {
    if (!ok) throw Error(what);
}

// A range check for an argument from the page, naming it.
void check_range(const char* function, const char* name, int64_t v, int64_t lo, int64_t hi) {
    check(v >= lo && v <= hi, std::string(function) + ": " + name + " must be from " + std::to_string(lo) + " to " +
                                  std::to_string(hi) + ", got " + std::to_string(v));
}

// The panels need load_data's data first.
void check_loaded(const PageData& d, const char* function) {
    check(d.pool_labels.defined() && d.train_set, std::string(function) + ": call load_data first");
}

std::vector<float> to_vector(const float* p, int64_t n) { return std::vector<float>(p, p + n); }

double elapsed_ms(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// A labelled image set from a file web_data wrote: "images" [N, 3, 32, 32]
// (U8) and "labels" [N].
std::shared_ptr<ImageSet> read_image_set(const SafetensorsFile& f, const std::vector<std::string>& classes) {
    const Tensor& images = f.get("images");
    const Tensor& labels = f.get("labels");
    check(images.dim() == 4 && images.shape()[1] == 3 && images.shape()[2] == kSide && images.shape()[3] == kSide &&
              labels.dim() == 1 && labels.shape()[0] == images.shape()[0] && labels.numel() > 0,
          f.path + ": expected images [N, 3, 32, 32] and labels [N] with N >= 1");
    auto set = std::make_shared<ImageSet>();
    set->n = images.shape()[0];
    set->channels = 3;
    set->height = set->width = kSide;
    set->class_names = classes;
    set->pixels.resize(static_cast<size_t>(images.numel()));
    std::transform(images.data(), images.data() + images.numel(), set->pixels.begin(),
                   [](float v) { return static_cast<uint8_t>(v); });  // U8 on disk: whole numbers 0..255
    for (int64_t i = 0; i < set->n; ++i) set->labels.push_back(static_cast<int>(labels.data()[i]));
    check_image_set(*set, f.path);
    return set;
}

std::vector<float> parse_floats(const std::string& text, const std::string& what) {
    std::vector<float> out;
    try {
        for (const auto& v : json::parse(text)) out.push_back(v.get<float>());
    } catch (const json::exception&) {
        throw Error(what + ": expected a JSON list of numbers, got " + quote_for_error(text));
    }
    return out;
}

// Fills idx (its size is the batch size) with pool indices: `first` (if >=
// 0), then images drawn with replacement. No object with a destructor lives
// here: in WebAssembly with JavaScript-based exceptions every call that may
// throw from inside such a scope goes through a JavaScript trampoline, which
// cost batch_stats most of its time at B = 512.
void draw_batch(const PageData& d, int64_t first, Generator& gen, std::vector<int64_t>& idx) {
    const uint64_t pool = static_cast<uint64_t>(d.pool_size());
    size_t b = 0;
    if (first >= 0 && !idx.empty()) idx[b++] = first;
    for (; b < idx.size(); ++b) idx[b] = static_cast<int64_t>(gen.randint(pool));
}

std::vector<int64_t> draw_batch(const PageData& d, int64_t batch_size, int64_t first, Generator& gen) {
    std::vector<int64_t> idx(static_cast<size_t>(batch_size));
    draw_batch(d, first, gen, idx);
    return idx;
}

// The first `channels` shown channels of features.0's output for these pool
// images: [B, channels, 32, 32]. BatchNorm treats each channel on its own, so
// what shows only channel 0 normalises only channel 0 (a quarter of the work).
Tensor activations_of(const PageData& d, const std::vector<int64_t>& idx, int64_t channels) {
    const int64_t per = channels * kPixels, stride = d.shown_channels() * kPixels;
    Tensor x = Tensor::empty({static_cast<int64_t>(idx.size()), channels, kSide, kSide});
    for (size_t b = 0; b < idx.size(); ++b)
        std::memcpy(x.data() + static_cast<int64_t>(b) * per, d.activations.data() + idx[b] * stride,
                    per * sizeof(float));
    return x;
}

// A BatchNorm2d over the first `channels` shown channels with features.1's
// learned scale and shift, as the trained network has it.
std::shared_ptr<BatchNorm2d> trained_batchnorm(const PageData& d, int64_t channels, float momentum = 0.1f) {
    auto bn = std::make_shared<BatchNorm2d>(channels, 1e-5f, momentum);
    std::memcpy(bn->weight.data(), d.bn_weight.data(), channels * sizeof(float));
    std::memcpy(bn->bias.data(), d.bn_bias.data(), channels * sizeof(float));
    return bn;
}

// Channel 0 of image 0 of a [B, K, 32, 32] output.
std::vector<float> first_image_channel0(const Tensor& y) { return to_vector(y.data(), kPixels); }

json change(const std::vector<float>& a, const std::vector<float>& b) {
    double max_change = 0, sum = 0;
    for (size_t i = 0; i < a.size(); ++i) {
        const double c = std::fabs(static_cast<double>(a[i]) - b[i]);
        max_change = std::max(max_change, c);
        sum += c;
    }
    return {{"a", a}, {"b", b}, {"max_change", max_change}, {"mean_abs_change", sum / a.size()}};
}

}  // namespace

// ---------------------------------------------------------------- data
std::string load_data(PageData& d, const std::string& dir) {
    const SafetensorsFile pool = load_safetensors(dir + "/pool.safetensors");
    const SafetensorsFile train = load_safetensors(dir + "/train.safetensors");
    const SafetensorsFile test = load_safetensors(dir + "/test.safetensors");
    auto meta = [](const SafetensorsFile& f, const std::string& key) {
        auto it = f.metadata.find(key);
        check(it != f.metadata.end(), f.path + ": no '" + key + "' in its metadata");
        return it->second;
    };
    d.class_names.clear();
    try {
        for (const auto& name : json::parse(meta(pool, "classes"))) d.class_names.push_back(name.get<std::string>());
    } catch (const json::exception&) {
        throw Error(pool.path + ": its 'classes' metadata is not a JSON list of names");
    }
    check(d.class_names.size() >= 2, pool.path + ": fewer than 2 classes");
    d.checkpoint = meta(pool, "checkpoint");

    d.pool_images = pool.get("images");
    d.pool_labels = pool.get("labels");
    d.activations = pool.get("activations");
    d.bn_weight = pool.get("bn_weight");
    d.bn_bias = pool.get("bn_bias");
    const Tensor& m = pool.get("image_mean");
    const Tensor& ms = pool.get("image_mean_sq");
    const int64_t P = d.pool_labels.numel();
    check(P >= 2 && d.pool_images.shape() == Shape{P, 3, kSide, kSide} && d.activations.dim() == 4 &&
              d.activations.shape()[0] == P && d.activations.shape()[2] == kSide &&
              d.activations.shape()[3] == kSide && m.dim() == 2 && m.shape()[0] == P && ms.shape() == m.shape() &&
              d.activations.shape()[1] >= 1 && d.activations.shape()[1] <= m.shape()[1] &&
              d.bn_weight.shape() == Shape{d.activations.shape()[1]} && d.bn_bias.shape() == d.bn_weight.shape(),
          pool.path + ": expected images [P,3,32,32], labels [P], activations [P,K,32,32], image_mean and "
                      "image_mean_sq [P,C] with K <= C, bn_weight and bn_bias [K], P >= 2");
    d.channels = m.shape()[1];
    const int64_t C = d.channels;

    // The pool's statistics per channel: the mean over images of each
    // image's mean (every image has the same 32x32 positions), the variance
    // E[x^2] - E[x]^2, and how much an image's mean and its mean squared
    // deviation vary from image to image: a batch of B images drawn with
    // replacement has a batch mean whose variance is exactly mean_noise / B,
    // and, to leading order in 1/B, a batch variance whose variance is
    // var_noise / B.
    d.image_offset.assign(P * C, 0.f);
    d.image_deviation.assign(P * C, 0.f);
    d.mean.assign(C, 0.0);
    d.var.assign(C, 0.0);
    d.mean_noise.assign(C, 0.0);
    d.var_noise.assign(C, 0.0);
    for (int64_t c = 0; c < C; ++c) {
        double s = 0, s2 = 0;
        for (int64_t i = 0; i < P; ++i) s += m.data()[i * C + c], s2 += ms.data()[i * C + c];
        const double mu = s / P, var = s2 / P - mu * mu;
        check(var > 0, pool.path + ": channel " + std::to_string(c) + " of the activations is constant");
        double vm = 0, vd = 0;
        for (int64_t i = 0; i < P; ++i) {
            const double mi = m.data()[i * C + c];
            const double dev = ms.data()[i * C + c] - 2 * mu * mi + mu * mu;  // mean (x - mu)^2 of image i
            d.image_offset[i * C + c] = static_cast<float>(mi - mu);
            d.image_deviation[i * C + c] = static_cast<float>(dev);
            vm += (mi - mu) * (mi - mu);
            vd += (dev - var) * (dev - var);
        }
        d.mean[c] = mu;
        d.var[c] = var;
        d.mean_noise[c] = vm / P;
        d.var_noise[c] = vd / P;
    }

    d.loader.mean = parse_floats(meta(train, "mean"), train.path + " metadata 'mean'");
    d.loader.std = parse_floats(meta(train, "std"), train.path + " metadata 'std'");
    check(d.loader.mean.size() == 3 && d.loader.std.size() == 3,
          train.path + ": its 'mean' and 'std' metadata need 3 values (one per colour channel)");
    d.train_set = read_image_set(train, d.class_names);
    d.test_set = read_image_set(test, d.class_names);

    return json{{"pool_images", P},
                {"channels", C},
                {"channels_shown", d.shown_channels()},
                {"train_images", d.train_set->n},
                {"test_images", d.test_set->n},
                {"classes", d.class_names},
                {"checkpoint", d.checkpoint}}
        .dump();
}

std::string pool_image(const PageData& d, int64_t index) {
    check_loaded(d, "pool_image");
    check_range("pool_image", "index", index, 0, d.pool_size() - 1);
    std::vector<int> rgba(kPixels * 4);
    const float* img = d.pool_images.data() + index * 3 * kPixels;
    for (int64_t p = 0; p < kPixels; ++p) {
        for (int64_t c = 0; c < 3; ++c) rgba[p * 4 + c] = static_cast<int>(img[c * kPixels + p]);
        rgba[p * 4 + 3] = 255;
    }
    return json{{"width", kSide},
                {"height", kSide},
                {"label", static_cast<int>(d.pool_labels.data()[index])},
                {"rgba", rgba}}
        .dump();
}

// ---------------------------------------------------------------- panel 1
std::string batch_stats(const PageData& d, int64_t batch_size, int64_t batches, uint64_t seed) {
    check_loaded(d, "batch_stats");
    check_range("batch_stats", "batch size", batch_size, 1, 4096);
    check_range("batch_stats", "number of batches", batches, 10, 100000);
    const auto t0 = std::chrono::steady_clock::now();
    const int64_t C = d.channels;
    // The batches in 10 groups: the spread of each group's estimate gives the
    // standard error of the whole estimate.
    constexpr int kGroups = 10;
    double mean_sq[kGroups] = {}, var_sq[kGroups] = {};
    int64_t in_group[kGroups] = {};
    std::vector<double> example_means, example_vars;
    Generator gen(seed);
    json layer_check;
    std::vector<float> offset(C), deviation(C);
    std::vector<int64_t> idx(static_cast<size_t>(batch_size));
    for (int64_t r = 0; r < batches; ++r) {
        draw_batch(d, -1, gen, idx);
        const int g = static_cast<int>(r * kGroups / batches);
        ++in_group[g];
        // The batch's statistics from its images' own. BatchNorm's batch mean
        // m is the mean over B x 32 x 32 values, i.e. of the B image means;
        // its (biased) variance v is the mean square deviation, which from
        // the pool's mean mu is the mean of the images' d_i, less (m - mu)^2.
        std::fill(offset.begin(), offset.end(), 0.f);
        std::fill(deviation.begin(), deviation.end(), 0.f);
        for (int64_t i : idx) {  // one vectorised loop over the channels per image
            float* __restrict o = offset.data();
            float* __restrict v = deviation.data();
            const float* __restrict io = d.image_offset.data() + i * C;
            const float* __restrict iv = d.image_deviation.data() + i * C;
            for (int64_t c = 0; c < C; ++c) o[c] += io[c], v[c] += iv[c];
        }
        for (int64_t c = 0; c < C; ++c) {
            const double e = static_cast<double>(offset[c]) / batch_size;  // m - mu
            const double v = static_cast<double>(deviation[c]) / batch_size - e * e;
            const double m = d.mean[c] + e;
            mean_sq[g] += e * e / d.var[c];
            var_sq[g] += (v - d.var[c]) * (v - d.var[c]) / (d.var[c] * d.var[c]);
            if (c == 0 && r < 500) example_means.push_back(m), example_vars.push_back(v);
        }
        if (r == 0) {
            // ... and they are the layer's: a BatchNorm2d with momentum 1 keeps
            // exactly this batch's mean and (unbiased) variance, here for
            // channel 0.
            auto bn = trained_batchnorm(d, 1, 1.f);
            NoGradGuard no_grad;
            (*bn)(activations_of(d, idx, 1));
            const double n = static_cast<double>(batch_size) * kPixels;
            const double e = static_cast<double>(offset[0]) / batch_size;
            const double m = d.mean[0] + e, v = static_cast<double>(deviation[0]) / batch_size - e * e;
            const double mean_diff = std::fabs(bn->running_mean.data()[0] - m);
            const double var_diff = std::fabs(bn->running_var.data()[0] * (n - 1) / n - v) / v;
            layer_check = {{"mean_difference", mean_diff}, {"var_relative_difference", var_diff}};
        }
    }
    // RMS over batches and channels of the relative errors, and its standard
    // error from the spread of the 10 groups' estimates.
    auto spread = [&](const double* sq, double* se) {
        double total = 0, n = 0, g_sum = 0, g_sq = 0;
        for (int g = 0; g < kGroups; ++g) {
            total += sq[g];
            n += static_cast<double>(in_group[g]) * C;
            const double sg = std::sqrt(sq[g] / (static_cast<double>(in_group[g]) * C));
            g_sum += sg, g_sq += sg * sg;
        }
        const double gm = g_sum / kGroups;
        *se = std::sqrt(std::max(0.0, g_sq / kGroups - gm * gm) / (kGroups - 1));
        return std::sqrt(total / n);
    };
    double mean_se, var_se;
    const double mean_spread = spread(mean_sq, &mean_se), var_spread = spread(var_sq, &var_se);
    double k_mean = 0, k_var = 0;
    for (int64_t c = 0; c < C; ++c) k_mean += d.mean_noise[c] / d.var[c], k_var += d.var_noise[c] / (d.var[c] * d.var[c]);
    const double root_b = std::sqrt(static_cast<double>(batch_size));
    return json{{"batch_size", batch_size},
                {"num_batches", batches},
                {"mean_spread", mean_spread},
                {"mean_spread_se", mean_se},
                {"var_spread", var_spread},
                {"var_spread_se", var_se},
                {"mean_spread_predicted", std::sqrt(k_mean / C) / root_b},
                {"var_spread_predicted", std::sqrt(k_var / C) / root_b},
                {"example",
                 {{"channel", 0},
                  {"population_mean", d.mean[0]},
                  {"population_var", d.var[0]},
                  {"batch_means", example_means},
                  {"batch_vars", example_vars}}},
                {"layer_check", layer_check},
                {"ms", elapsed_ms(t0)}}
        .dump();
}

std::string probe(const PageData& d, int64_t batch_size, int64_t draws, uint64_t seed) {
    check_loaded(d, "probe");
    check_range("probe", "batch size", batch_size, 1, 1024);
    check_range("probe", "draws", draws, 1, 64);
    const auto t0 = std::chrono::steady_clock::now();
    NoGradGuard no_grad;
    Generator gen(seed);
    std::vector<std::vector<float>> outputs;
    for (int64_t r = 0; r < draws; ++r) {
        auto bn = trained_batchnorm(d, 1);  // training mode: the batch's own statistics
        outputs.push_back(first_image_channel0((*bn)(activations_of(d, draw_batch(d, batch_size, 0, gen), 1))));
    }
    auto eval_bn = trained_batchnorm(d, 1);  // eval mode with the pool's statistics as the running ones
    eval_bn->running_mean.data()[0] = static_cast<float>(d.mean[0]);
    eval_bn->running_var.data()[0] = static_cast<float>(d.var[0]);
    eval_bn->eval();
    const std::vector<float> eval_output = first_image_channel0((*eval_bn)(activations_of(d, {0}, 1)));
    // How far the probe's output moves between draws: per pixel the standard
    // deviation over the draws, averaged over the pixels.
    double spread = 0;
    for (int64_t p = 0; p < kPixels && draws > 1; ++p) {
        double s = 0, s2 = 0;
        for (const auto& o : outputs) s += o[p], s2 += static_cast<double>(o[p]) * o[p];
        const double m = s / draws;
        spread += std::sqrt(std::max(0.0, (s2 / draws - m * m) * draws / (draws - 1)));
    }
    return json{{"batch_size", batch_size},
                {"channel", 0},
                {"width", kSide},
                {"height", kSide},
                {"input", to_vector(d.activations.data(), kPixels)},
                {"outputs", outputs},
                {"eval_output", eval_output},
                {"pixel_spread", spread / kPixels},
                {"ms", elapsed_ms(t0)}}
        .dump();
}

// ---------------------------------------------------------------- panel 3
std::string independence(const PageData& d, int64_t probe_index, int64_t batch_size, uint64_t seed_a,
                         uint64_t seed_b) {
    check_loaded(d, "independence");
    check_range("independence", "probe index", probe_index, 0, d.pool_size() - 1);
    check_range("independence", "batch size", batch_size, 2, 1024);
    NoGradGuard no_grad;
    Generator gen_a(seed_a), gen_b(seed_b);
    const int64_t K = d.shown_channels();
    const Tensor xa = activations_of(d, draw_batch(d, batch_size, probe_index, gen_a), K);
    const Tensor xb = activations_of(d, draw_batch(d, batch_size, probe_index, gen_b), K);
    auto bn = trained_batchnorm(d, K);
    LayerNorm ln({K, kSide, kSide});  // each image over its own C x H x W
    return json{{"batch_size", batch_size},
                {"channel", 0},
                {"width", kSide},
                {"height", kSide},
                {"input", first_image_channel0(xa)},
                {"bn", change(first_image_channel0((*bn)(xa)), first_image_channel0((*bn)(xb)))},
                {"ln", change(first_image_channel0(ln(xa)), first_image_channel0(ln(xb)))}}
        .dump();
}

// ---------------------------------------------------------------- panel 2
namespace {

std::shared_ptr<Module> small_convnet(const std::string& norm) {
    auto net = std::make_shared<Sequential>();
    for (auto [in, out] : {std::pair<int64_t, int64_t>{3, 8}, {8, 16}}) {
        net->push_back(std::make_shared<Conv2d>(in, out, 3, 1, 1));
        net->push_back(make_norm2d(norm, out));
        net->push_back(std::make_shared<ReLU>());
        net->push_back(std::make_shared<MaxPool2d>(2));
    }
    net->push_back(std::make_shared<Flatten>());
    net->push_back(std::make_shared<Linear>(16 * 8 * 8, 10));
    return net;
}

LoaderOptions loader_options(const PageData& d, int64_t batch_size, bool shuffle, uint64_t seed) {
    LoaderOptions o = d.loader;
    o.batch_size = batch_size;
    o.shuffle = shuffle;
    o.drop_last = shuffle;  // training: every step a full batch
    o.seed = seed;
    o.prefetch = 0;         // no background thread: the page has one
    return o;
}

}  // namespace

Trainer::Trainer(const PageData& data, const std::string& norm, int64_t batch_size, double momentum, double lr,
                 uint64_t seed)
    : data_(data), batch_size_(batch_size) {
    check_loaded(data, "Trainer");
    check_range("Trainer", "batch size", batch_size, 1, std::min<int64_t>(512, data.train_set->n));
    check(momentum >= 0 && momentum <= 1, "Trainer: the running statistics' momentum must be in [0, 1], got " +
                                              std::to_string(momentum));
    check(lr > 0 && lr <= 10, "Trainer: the learning rate must be in (0, 10], got " + std::to_string(lr));
    default_generator().manual_seed(seed);  // the initial weights
    model_ = small_convnet(norm);
    for (auto& [name, m] : model_->named_modules())
        if (auto* bn = dynamic_cast<BatchNorm*>(m)) bn->set_momentum(static_cast<float>(momentum));
    SGDOptions o(lr);
    o.momentum = 0.9;
    o.weight_decay = 5e-4;
    opt_ = std::make_unique<SGD>(model_->parameters(), o);
    loader_ = std::make_unique<DataLoader>(data.train_set, loader_options(data, batch_size, true, seed));
    loader_->start_epoch(epoch_);
}

Trainer::~Trainer() = default;

std::string Trainer::step(int64_t n) {
    check_range("Trainer.step", "steps", n, 1, 1000);
    std::vector<double> losses;
    const auto t0 = std::chrono::steady_clock::now();
    model_->train();
    for (int64_t i = 0; i < n; ++i) {
        Batch b;
        if (!loader_->next(b)) {  // the end of an epoch of the few thousand images
            loader_->start_epoch(++epoch_);
            loader_->next(b);
        }
        const StepResult r = train_step(*model_, *opt_, b);
        check(r.finite(), "Trainer.step: the training went non-finite (" +
                              (r.non_finite_after_step.empty() ? std::string("loss or gradient")
                                                               : r.non_finite_after_step) +
                              "): lower the learning rate");
        losses.push_back(r.loss);
        ++steps_;
    }
    double mean = 0;
    for (double l : losses) mean += l;
    return json{{"step", steps_}, {"losses", losses}, {"loss", mean / n}, {"ms_per_step", elapsed_ms(t0) / n}}.dump();
}

std::string Trainer::evaluate(int64_t images) {
    check_range("Trainer.evaluate", "images", images, 1, data_.test_set->n);
    std::vector<int64_t> first(static_cast<size_t>(images));
    for (int64_t i = 0; i < images; ++i) first[static_cast<size_t>(i)] = i;
    auto set = std::make_shared<ImageSet>(subset(*data_.test_set, first));
    NoGradGuard no_grad;
    // Both modes see the same images in the same batches of batch_size_.
    auto run = [&](bool training) {
        model_->train(training);
        DataLoader loader(set, loader_options(data_, batch_size_, false, 0));
        loader.start_epoch(0);
        double loss = 0;
        int64_t correct = 0;
        Batch b;
        while (loader.next(b)) {
            const Tensor logits = (*model_)(b.images);
            loss += cross_entropy(logits, b.labels, 0.f, Reduction::Sum).item();
            const Tensor pred = argmax(logits, 1);
            for (int64_t i = 0; i < pred.numel(); ++i) correct += pred.data()[i] == b.labels.data()[i];
        }
        return std::pair<double, double>{100.0 * correct / images, loss / images};
    };
    // Training mode would fold these batches into the running statistics:
    // keep them as they are (what a training step left).
    std::vector<Tensor> saved;
    for (const Tensor& t : model_->buffers()) saved.push_back(t.clone());
    const auto [train_acc, train_loss] = run(true);
    std::vector<Tensor> buffers = model_->buffers();
    for (size_t i = 0; i < buffers.size(); ++i) copy_(buffers[i], saved[i]);
    const auto [eval_acc, eval_loss] = run(false);
    model_->train();
    return json{{"train_mode_accuracy", train_acc},
                {"eval_mode_accuracy", eval_acc},
                {"train_mode_loss", train_loss},
                {"eval_mode_loss", eval_loss},
                {"images", images}}
        .dump();
}

// ---------------------------------------------------------------- parity
std::string parity_report() {
    // Inputs every build makes bit for bit alike: small multiples of 1/16.
    auto values = [](const Shape& shape, int64_t a, int64_t b) {
        Tensor t = Tensor::empty(shape);
        for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = static_cast<float>((i * a + b) % 101) / 16.f - 3.f;
        return t;
    };
    const Shape shape{4, 3, 5, 5};
    json out;
    auto record = [&](const std::string& name, const Tensor& t) { out[name] = to_vector(t.data(), t.numel()); };

    BatchNorm2d bn(3);
    copy_(bn.weight, Tensor::from_vector({1.5f, 0.5f, -1.f}, {3}));
    copy_(bn.bias, Tensor::from_vector({0.125f, -0.25f, 0.375f}, {3}));
    for (bool training : {true, false}) {
        bn.train(training);
        bn.zero_grad();
        Tensor x = values(shape, 37, 11);
        x.requires_grad_();
        Tensor y = bn(x);
        y.backward(values(shape, 53, 7));
        const std::string p = training ? "batchnorm_train." : "batchnorm_eval.";
        record(p + "output", y);
        record(p + "input_grad", x.grad());
        record(p + "weight_grad", bn.weight.grad());
        record(p + "bias_grad", bn.bias.grad());
        record(p + "running_mean", bn.running_mean);
        record(p + "running_var", bn.running_var);
    }
    LayerNorm ln({3, 5, 5});
    copy_(ln.weight, values({3, 5, 5}, 29, 3));
    copy_(ln.bias, values({3, 5, 5}, 31, 5));
    Tensor x = values(shape, 37, 11);
    x.requires_grad_();
    Tensor y = ln(x);
    y.backward(values(shape, 53, 7));
    record("layernorm.output", y);
    record("layernorm.input_grad", x.grad());
    record("layernorm.weight_grad", ln.weight.grad());
    record("layernorm.bias_grad", ln.bias.grad());
    return out.dump();
}

}  // namespace minnow::web
