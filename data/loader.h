// minnow/data/loader.h: batches of float tensors from an ImageSet.
//
//     DataLoader loader(train_set, opts);
//     for (int64_t epoch = 0; epoch < epochs; ++epoch) {
//         loader.start_epoch(epoch);
//         Batch b;
//         while (loader.next(b)) { ... b.images [B,C,H,W], b.labels [B] ... }
//     }
//
// Determinism. Everything random in an epoch comes from (seed, epoch) alone,
// never from the order earlier epochs ran in or from thread timing, so a run
// resumed at epoch e sees exactly the batches an uninterrupted run would:
//   - the order is a Fisher-Yates shuffle of 0..n-1 drawn from
//       Generator(derive_seed(seed, epoch, 0));
//   - batch b's augmentation draws from Generator(derive_seed(seed, epoch, b + 1)),
//     image by image in batch order, per image: crop offset dy then dx (each
//     uniform in [-crop_padding, crop_padding]), then the flip coin, then the
//     cutout centre row then column.
// derive_seed(s, e, k) = mix(mix(mix(s) ^ e) ^ k) on uint64, where mix(z) is
// one splitmix64 output: z += 0x9e3779b97f4a7c15, then
// z = (z ^ z>>30) * 0xbf58476d1ce4e5b9, z = (z ^ z>>27) * 0x94d049bb133111eb,
// z ^ z>>31. Nearby seeds and epochs so give unrelated streams.
//
// Background preparation. With prefetch > 0, start_epoch starts one
// std::thread that fills a queue of at most `prefetch` ready batches while
// training runs; next() takes from it. The per-image work in that thread is
// single-threaded on purpose: the OpenMP threads belong to training.
// start_epoch() again, or destroying the loader, stops the thread cleanly
// even mid-epoch.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "core/tensor.h"
#include "data/dataset.h"

namespace minnow {

struct Batch {
    Tensor images;                 // [B, C, H, W] float, normalised
    Tensor labels;                 // [B], the class index as a float
    std::vector<int64_t> indices;  // which images of the set, in batch order
    // With LoaderOptions::ranks > 1: the images of the whole batch over all
    // ranks, and where this slice starts in it; else B and 0.
    int64_t global_count = 0, global_start = 0;
};

struct LoaderOptions {
    int64_t batch_size = 128;
    bool shuffle = true;
    bool drop_last = false;  // drop a last batch smaller than batch_size
    uint64_t seed = 0;
    // Per channel, on pixels scaled to [0, 1]: x = (p / 255 - mean[c]) / std[c].
    // Both empty means no normalisation (values in [0, 1]).
    std::vector<float> mean, std;
    // Augmentation, applied when `augment` is on:
    bool augment = false;
    int crop_padding = 4;  // random crop of the image padded by this many zero pixels
                           // each side (zero before normalisation, as torchvision pads)
    bool flip = true;      // horizontal flip with probability 1/2
    int cutout = 0;        // side of a square set to 0 after normalisation (DeVries &
                           // Taylor 2017); its centre is uniform over the image, the
                           // square is clipped at the borders; 0 = off
    int prefetch = 2;      // batches prepared ahead on a background thread; 0 = none
    // Data-parallel training (dist/comm.h): this process is rank `rank` of
    // `ranks` and makes only its slice of every batch, images
    // [count * rank / ranks, count * (rank + 1) / ranks) of a batch of
    // `count` (batch_size but for the last). The batches, their order and
    // every image's random choices are those of one process (the generator is
    // drawn for the other ranks' images too, without their pixel work), so the
    // slices of all ranks, in rank order, are the one-process batch bit for bit.
    int rank = 0, ranks = 1;
};

class DataLoader {
public:
    DataLoader(std::shared_ptr<const ImageSet> set, LoaderOptions options);
    ~DataLoader();
    DataLoader(const DataLoader&) = delete;
    DataLoader& operator=(const DataLoader&) = delete;

    // Begins epoch `epoch` (>= 0), abandoning any batches left of the current one.
    void start_epoch(int64_t epoch);
    // The next batch of the epoch into `out`; false when the epoch is done.
    bool next(Batch& out);
    int64_t num_batches() const;

    int64_t size() const { return set_->n; }
    const LoaderOptions& options() const { return opt_; }
    const ImageSet& dataset() const { return *set_; }

    static uint64_t derive_seed(uint64_t seed, int64_t epoch, int64_t stream);

private:
    Batch make_batch(int64_t b) const;  // pure: depends on (order_, b, options) only
    void produce();                     // the background thread's loop
    void stop();                        // ends the background thread, if any

    std::shared_ptr<const ImageSet> set_;
    LoaderOptions opt_;
    std::vector<float> lut_;  // [channel][256]: byte -> normalised float

    int64_t epoch_ = -1;
    std::vector<int64_t> order_;  // this epoch's order of the set's images
    int64_t next_batch_ = 0;      // without prefetch: the next batch to make

    // Between next() and the background thread.
    std::thread worker_;
    std::mutex mutex_;
    std::condition_variable changed_;
    std::deque<Batch> ready_;
    bool stopping_ = false, produced_all_ = false;
    std::exception_ptr error_;
};

}  // namespace minnow
