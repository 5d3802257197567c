// web_data: the data of the interactive BatchNorm page (web/panels.h), made
// natively at build time from CIFAR-10 and a trained `cnn` checkpoint.
//
//     build/web_data --checkpoint model.safetensors --out web/public/data
//
// Writes OUT/pool.safetensors (test images with features.0's output: its
// per-image, per-channel mean and mean square over the 32x32 positions for
// every channel, the whole output of the first --shown channels, and
// features.1's scale and shift for them), OUT/train.safetensors and
// OUT/test.safetensors (images as U8, labels, and the normalisation in the
// metadata). The pool and the test images are disjoint.
#include <cstdio>

#include <nlohmann/json.hpp>

#include "apps/common.h"
#include "core/random.h"
#include "layers/batchnorm.h"
#include "layers/conv2d.h"

using namespace minnow;
using namespace minnow::app;

namespace {

struct Options {
    std::string checkpoint, data, out, cache_dir = default_cache_dir();
    int64_t pool = 1024, train = 4000, test = 1000, shown = 4;
};

// The images of `set` as a U8 tensor [N, 3, 32, 32] and their labels [N].
std::vector<TensorEntry> image_entries(const ImageSet& set) {
    Tensor images = Tensor::empty({set.n, set.channels, set.height, set.width});
    std::copy(set.pixels.begin(), set.pixels.end(), images.data());
    Tensor labels = Tensor::empty({set.n});
    std::copy(set.labels.begin(), set.labels.end(), labels.data());
    return {{"images", images, DType::U8}, {"labels", labels, DType::U8}};
}

std::string json_list(const std::vector<float>& v) { return nlohmann::json(v).dump(); }

// `set` in a fixed random order. The readers give the images class by class;
// the page takes batches and evaluation images from the front, and a batch of
// one class would normalise the class away.
ImageSet shuffled(const ImageSet& set, uint64_t seed) { return subset(set, Generator(seed).permutation(set.n)); }

int run(const Options& o) {
    require_writable_folder(o.out, "--out");
    SafetensorsFile f = load_safetensors(o.checkpoint);
    auto model = make_model("cnn", "batch");
    model->load_state_dict(model_entries(f), true, o.checkpoint);
    model->eval();
    Conv2d* conv = nullptr;
    BatchNorm* bn = nullptr;
    for (auto& [name, m] : model->named_modules()) {
        if (name == "features.0") conv = dynamic_cast<Conv2d*>(m);
        if (name == "features.1") bn = dynamic_cast<BatchNorm*>(m);
    }
    if (!conv || !bn) throw Error(o.checkpoint + ": the cnn has no Conv2d features.0 followed by BatchNorm features.1");
    const int64_t C = conv->out_channels;
    if (o.shown > C) throw UsageError("--shown " + std::to_string(o.shown) + ": features.0 has only " + std::to_string(C) + " channels");
    const std::vector<float> mean = normalisation_in(f, "mean", o.checkpoint, kCifarMean),
                             std = normalisation_in(f, "std", o.checkpoint, kCifarStd);

    const std::string root = find_cifar10(o.data);
    const ImageSet test_all = load_cifar10(root, false, o.cache_dir);
    if (o.pool + o.test > test_all.n)
        throw UsageError("--pool " + std::to_string(o.pool) + " and --test " + std::to_string(o.test) + ": " + root +
                         " has only " + std::to_string(test_all.n) + " test images");
    // The pool and panel 2's test images: disjoint parts of the test set, each
    // evenly across the classes (the pool takes P of every P + T images in turn).
    const int64_t total = o.pool + o.test;
    const ImageSet both = evenly_across_classes(test_all, total);
    std::vector<int64_t> pool_idx, test_idx;
    for (int64_t i = 0; i < both.n; ++i)
        ((i + 1) * o.pool / total != i * o.pool / total ? pool_idx : test_idx).push_back(i);
    const ImageSet pool = shuffled(subset(both, pool_idx), 1), test = shuffled(subset(both, test_idx), 2);

    // features.0 on the pool, a batch at a time, normalised as in training.
    LoaderOptions lo = test_loader_options(64, mean, std);
    lo.prefetch = 0;
    DataLoader loader(std::make_shared<ImageSet>(pool), lo);
    loader.start_epoch(0);
    const int64_t P = pool.n, HW = 32 * 32;
    Tensor activations = Tensor::empty({P, o.shown, 32, 32});
    Tensor image_mean = Tensor::empty({P, C}), image_mean_sq = Tensor::empty({P, C});
    NoGradGuard no_grad;
    int64_t n = 0;
    for (Batch b; loader.next(b);) {
        const Tensor y = (*conv)(b.images);  // [B, C, 32, 32]
        for (int64_t i = 0; i < y.shape()[0]; ++i, ++n) {
            for (int64_t c = 0; c < C; ++c) {
                const float* p = y.data() + (i * C + c) * HW;
                double s = 0, s2 = 0;
                for (int64_t k = 0; k < HW; ++k) s += p[k], s2 += static_cast<double>(p[k]) * p[k];
                image_mean.data()[n * C + c] = static_cast<float>(s / HW);
                image_mean_sq.data()[n * C + c] = static_cast<float>(s2 / HW);
                if (c < o.shown) std::copy(p, p + HW, activations.data() + (n * o.shown + c) * HW);
            }
        }
    }
    Tensor bn_weight = Tensor::empty({o.shown}), bn_bias = Tensor::empty({o.shown});
    std::copy(bn->weight.data(), bn->weight.data() + o.shown, bn_weight.data());
    std::copy(bn->bias.data(), bn->bias.data() + o.shown, bn_bias.data());

    std::vector<TensorEntry> pool_entries = image_entries(pool);
    pool_entries.push_back({"activations", activations});
    pool_entries.push_back({"image_mean", image_mean});
    pool_entries.push_back({"image_mean_sq", image_mean_sq});
    pool_entries.push_back({"bn_weight", bn_weight});
    pool_entries.push_back({"bn_bias", bn_bias});
    const std::string source = "features.0 and features.1 of " + o.checkpoint +
                               (f.metadata.count("epochs") ? " (cnn, BatchNorm, " + f.metadata.at("epochs") + " epochs)"
                                                           : " (cnn, BatchNorm)");
    save_safetensors(o.out + "/pool.safetensors", pool_entries,
                     {{"classes", nlohmann::json(pool.class_names).dump()}, {"checkpoint", source}});
    const ImageSet train = shuffled(*load_split(root, true, o.train, o.cache_dir), 3);
    const std::map<std::string, std::string> normalisation{{"mean", json_list(mean)}, {"std", json_list(std)}};
    save_safetensors(o.out + "/train.safetensors", image_entries(train), normalisation);
    save_safetensors(o.out + "/test.safetensors", image_entries(test), normalisation);
    std::printf("web_data: %s: pool of %lld test images (features.0: %lld channels, %lld shown), %lld training and "
                "%lld test images for panel 2, from %s\n",
                o.out.c_str(), static_cast<long long>(P), static_cast<long long>(C), static_cast<long long>(o.shown),
                static_cast<long long>(train.n), static_cast<long long>(test.n), root.c_str());
    return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    CLI::App app{"web_data: the data of the interactive BatchNorm page (web/), from CIFAR-10 and a cnn checkpoint"};
    app.add_option("--checkpoint", o.checkpoint, "a BatchNorm cnn: train_cifar checkpoint or --save file")->required();
    app.add_option("--out", o.out, "folder to write pool, train and test .safetensors into")->required();
    app.add_option("--data", o.data, "cifar-10-batches-bin folder or image folders with train/ and test/");
    app.add_option("--pool", o.pool, "test images in panel 1 and 3's pool")->check(flag::whole(2, 9000))->capture_default_str();
    app.add_option("--train", o.train, "training images for panel 2")->check(flag::whole(1, 50000))->capture_default_str();
    app.add_option("--test", o.test, "held-out test images for panel 2")->check(flag::whole(1, 8000))->capture_default_str();
    app.add_option("--shown", o.shown, "channels of features.0 kept whole")->check(flag::whole(1, 64))->capture_default_str();
    app.add_option("--cache-dir", o.cache_dir, "where decoded image folders are cached")->capture_default_str();
    return run_app(app, argc, argv, [&] { return run(o); });
}
