// The DataLoader's own speed: images per second turned from bytes into
// normalised (and augmented) float batches, on one thread (prefetch = 0, so
// the work runs in the benchmark's thread and nothing else helps).
//
// The set is synthetic but CIFAR-shaped: 50,000 random 3x32x32 images.
#include <benchmark/benchmark.h>

#include <memory>

#include "core/random.h"
#include "data/loader.h"

namespace {
using namespace minnow;

std::shared_ptr<const ImageSet> cifar_shaped_set() {
    static const auto set = [] {
        auto s = std::make_shared<ImageSet>();
        s->n = 50000;
        s->channels = 3;
        s->height = s->width = 32;
        s->pixels.resize(s->n * s->image_size());
        Generator gen(1);
        for (auto& p : s->pixels) p = static_cast<uint8_t>(gen.next_u64());
        for (int64_t i = 0; i < s->n; ++i) s->labels.push_back(static_cast<int>(i % 10));
        for (int c = 0; c < 10; ++c) s->class_names.push_back(std::to_string(c));
        return std::shared_ptr<const ImageSet>(s);
    }();
    return set;
}

// Batches of 128 for as long as the benchmark wants, starting a new epoch
// whenever one ends.
void run(benchmark::State& state, LoaderOptions o) {
    o.batch_size = 128;
    o.mean = {0.4914f, 0.4822f, 0.4465f};
    o.std = {0.2470f, 0.2435f, 0.2616f};
    DataLoader loader(cifar_shaped_set(), o);
    int64_t epoch = 0, images = 0;
    loader.start_epoch(epoch);
    Batch b;
    for (auto _ : state) {
        if (!loader.next(b)) {
            loader.start_epoch(++epoch);
            loader.next(b);
        }
        benchmark::DoNotOptimize(b.images.data());
        images += b.images.size(0);
    }
    state.SetItemsProcessed(images);
}

// Random crop (padding 4) + horizontal flip + normalise: the CIFAR recipe.
void BM_LoaderAugment(benchmark::State& state) {
    LoaderOptions o;
    o.augment = true;
    o.prefetch = 0;
    run(state, o);
}
BENCHMARK(BM_LoaderAugment)->Unit(benchmark::kMillisecond);

// The same plus cutout 16.
void BM_LoaderAugmentCutout(benchmark::State& state) {
    LoaderOptions o;
    o.augment = true;
    o.cutout = 16;
    o.prefetch = 0;
    run(state, o);
}
BENCHMARK(BM_LoaderAugmentCutout)->Unit(benchmark::kMillisecond);

// Normalise only (evaluation).
void BM_LoaderNormalise(benchmark::State& state) {
    LoaderOptions o;
    o.shuffle = false;
    o.prefetch = 0;
    run(state, o);
}
BENCHMARK(BM_LoaderNormalise)->Unit(benchmark::kMillisecond);

// Augmenting on the background thread: what the consumer waits per batch
// when it does nothing else (wall time, so the producer's work shows).
void BM_LoaderAugmentPrefetch(benchmark::State& state) {
    LoaderOptions o;
    o.augment = true;
    o.prefetch = 2;
    run(state, o);
}
BENCHMARK(BM_LoaderAugmentPrefetch)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
