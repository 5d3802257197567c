// minnow/web/panels.h: what the interactive BatchNorm page computes, as plain
// minnow code.
//
// The page (web/src/) is JavaScript that draws; every number it shows comes
// from these functions, compiled to WebAssembly (web/bindings.cpp) and, the
// same source, natively for the tests (tests/test_web_panels.cpp). Each
// returns its result as a JSON string, which is what crosses to JavaScript.
//
// The data (web_data, web/make_data.cpp, writes it at build time):
//   pool.safetensors   test images of CIFAR-10 with the first convolution
//                      (features.0) of a trained `cnn` applied: per image and
//                      channel the mean and mean square of that activation
//                      over its 32x32 positions, for all its channels, and the
//                      whole activation of the first few ("shown") channels,
//                      with features.1's learned scale and shift for them
//   train.safetensors  a few thousand training images (U8) and labels
//   test.safetensors   held-out test images and labels
// each in a fixed random order (never class by class).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "layers/module.h"
#include "optim/optimizer.h"

namespace minnow::web {

struct PageData {
    // The pool (panels 1 and 3).
    Tensor pool_images;      // [P, 3, 32, 32], pixel values 0..255
    Tensor pool_labels;      // [P]
    Tensor activations;      // [P, K, 32, 32]: features.0's output, channels 0..K-1
    Tensor bn_weight, bn_bias;  // [K]: features.1's gamma and beta for those channels
    int64_t channels = 0;    // C, all of features.0's output channels
    // Over the whole pool, per channel (the "population" a batch samples):
    std::vector<double> mean, var;  // of the activation (biased variance)
    std::vector<double> mean_noise, var_noise;  // variance over images of each image's mean,
                                                // and of its mean squared deviation from `mean`
    // [P * C], per image and channel, over its 32x32 positions: its mean's
    // offset from the pool's mean, a_i - mean, and its mean squared deviation
    // from the pool's mean, d_i. Relative to the pool's mean, so that a
    // batch's sums of them in float lose nothing to cancellation.
    std::vector<float> image_offset, image_deviation;
    // Panel 2's images, and the loader's normalisation (the experiment's,
    // from train.safetensors's metadata).
    std::shared_ptr<const ImageSet> train_set, test_set;
    LoaderOptions loader;
    std::vector<std::string> class_names;
    std::string checkpoint;  // where features.0 came from (its metadata)

    int64_t pool_size() const { return pool_labels.numel(); }
    int64_t shown_channels() const { return activations.shape()[1]; }
};

// Reads DIR/{pool,train,test}.safetensors; an Error naming the file and what
// is wrong for anything missing or malformed. Returns a summary (JSON).
std::string load_data(PageData& data, const std::string& dir);

// One pool image as RGBA bytes for a thumbnail.
std::string pool_image(const PageData& data, int64_t index);

// Panel 1: `batches` batches of `batch_size` images drawn from the pool with
// replacement; the spread of their per-channel batch mean and (biased)
// variance around the pool's, relative to the pool's standard deviation and
// variance, over every channel; its standard error; and the 1/sqrt(B) law
// from the pool's own per-image variation.
std::string batch_stats(const PageData& data, int64_t batch_size, int64_t batches, uint64_t seed);

// Panel 1: the probe (pool image 0) in `draws` random batches of
// `batch_size`, through a BatchNorm2d in training mode: its output for shown
// channel 0 in each, and with the pool's statistics (eval mode).
std::string probe(const PageData& data, int64_t batch_size, int64_t draws, uint64_t seed);

// Panel 3: pool image `probe_index` in two batches of `batch_size` whose other
// images differ (drawn with seed_a and seed_b): its BatchNorm2d output (train
// mode) and its LayerNorm output (over C, H, W) in both, and how much each moved.
std::string independence(const PageData& data, int64_t probe_index, int64_t batch_size, uint64_t seed_a,
                         uint64_t seed_b);

// Panel 2: a small convnet trained live on train_images, with minnow's
// train_step and SGD (momentum 0.9, weight decay 5e-4):
//   conv 3->8, norm, ReLU, max-pool 2, conv 8->16, norm, ReLU, max-pool 2, linear 1024->10
// norm: a kind of make_norm2d ("batch", "layer", "group", "none", ...);
// momentum: BatchNorm's weight of each new batch in its running statistics.
class Trainer {
public:
    Trainer(const PageData& data, const std::string& norm, int64_t batch_size, double momentum, double lr,
            uint64_t seed);
    ~Trainer();
    // n training steps: their losses and the mean time per step.
    std::string step(int64_t n);
    // Accuracy and loss on the first `images` test images, in training mode
    // (each batch of batch_size normalised with its own statistics, running
    // statistics left as they were) and in eval mode (running statistics).
    std::string evaluate(int64_t images);

private:
    const PageData& data_;
    int64_t batch_size_;
    std::shared_ptr<Module> model_;
    std::unique_ptr<Optimizer> opt_;
    std::unique_ptr<DataLoader> loader_;  // shuffled, a new order each epoch
    int64_t epoch_ = 0, steps_ = 0;
};

// The page's parity check: BatchNorm2d (train and eval) and LayerNorm on fixed
// inputs, outputs and gradients (JSON), for comparing the WebAssembly build
// with the native one (web/test.sh).
std::string parity_report();

}  // namespace minnow::web
