#include "data/loader.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <utility>

#include "core/random.h"

namespace minnow {

namespace {
uint64_t mix(uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}
}  // namespace

uint64_t DataLoader::derive_seed(uint64_t seed, int64_t epoch, int64_t stream) {
    return mix(mix(mix(seed) ^ static_cast<uint64_t>(epoch)) ^ static_cast<uint64_t>(stream));
}

DataLoader::DataLoader(std::shared_ptr<const ImageSet> set, LoaderOptions options)
    : set_(std::move(set)), opt_(std::move(options)) {
    if (!set_) throw Error("DataLoader: no image set given");
    check_image_set(*set_, "DataLoader");
    if (set_->n == 0) throw Error("DataLoader: the image set is empty");
    if (opt_.batch_size < 1) throw Error("DataLoader: batch_size must be >= 1, got " + std::to_string(opt_.batch_size));
    if (opt_.ranks < 1 || opt_.rank < 0 || opt_.rank >= opt_.ranks)
        throw Error("DataLoader: rank must be in [0, ranks), got rank " + std::to_string(opt_.rank) + " of " +
                    std::to_string(opt_.ranks));
    if (opt_.crop_padding < 0 || opt_.cutout < 0 || opt_.prefetch < 0)
        throw Error("DataLoader: crop_padding, cutout and prefetch must be >= 0");
    const int64_t c = set_->channels;
    if (opt_.mean.size() != opt_.std.size() || (!opt_.mean.empty() && static_cast<int64_t>(opt_.mean.size()) != c))
        throw Error("DataLoader: mean and std need one value per channel (" + std::to_string(c) + "), got " +
                    std::to_string(opt_.mean.size()) + " and " + std::to_string(opt_.std.size()));
    for (float s : opt_.std)
        if (!(s > 0) || !std::isfinite(s)) throw Error("DataLoader: every std must be positive and finite");

    // Normalising is a lookup: 256 floats per channel.
    lut_.resize(c * 256);
    for (int64_t ch = 0; ch < c; ++ch)
        for (int v = 0; v < 256; ++v) {
            const float x = v / 255.f;
            lut_[ch * 256 + v] = opt_.mean.empty() ? x : (x - opt_.mean[ch]) / opt_.std[ch];
        }
}

DataLoader::~DataLoader() { stop(); }

int64_t DataLoader::num_batches() const {
    const int64_t n = set_->n, b = opt_.batch_size;
    return opt_.drop_last ? n / b : (n + b - 1) / b;
}

void DataLoader::start_epoch(int64_t epoch) {
    if (epoch < 0) throw Error("DataLoader::start_epoch: epoch must be >= 0, got " + std::to_string(epoch));
    stop();
    epoch_ = epoch;
    if (opt_.shuffle) {
        order_ = Generator(derive_seed(opt_.seed, epoch, 0)).permutation(set_->n);
    } else {
        order_.resize(set_->n);
        std::iota(order_.begin(), order_.end(), 0);
    }
    next_batch_ = 0;
    if (opt_.prefetch > 0) worker_ = std::thread(&DataLoader::produce, this);
}

bool DataLoader::next(Batch& out) {
    if (epoch_ < 0) throw Error("DataLoader::next: call start_epoch first");
    if (opt_.prefetch == 0) {
        if (next_batch_ >= num_batches()) return false;
        out = make_batch(next_batch_++);
        return true;
    }
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [&] { return !ready_.empty() || produced_all_; });
    if (!ready_.empty()) {
        out = std::move(ready_.front());
        ready_.pop_front();
        lock.unlock();
        changed_.notify_all();  // room for the producer
        return true;
    }
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
    return false;
}

void DataLoader::produce() {
    try {
        const int64_t nb = num_batches();
        for (int64_t b = 0; b < nb; ++b) {
            Batch batch = make_batch(b);  // the work, outside the lock
            std::unique_lock<std::mutex> lock(mutex_);
            changed_.wait(lock, [&] { return stopping_ || static_cast<int>(ready_.size()) < opt_.prefetch; });
            if (stopping_) return;
            ready_.push_back(std::move(batch));
            changed_.notify_all();
        }
    } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        error_ = std::current_exception();
    }
    std::lock_guard<std::mutex> lock(mutex_);
    produced_all_ = true;
    changed_.notify_all();
}

void DataLoader::stop() {
    {
        std::lock_guard<std::mutex> lock(mutex_);
        stopping_ = true;
    }
    changed_.notify_all();
    if (worker_.joinable()) worker_.join();
    std::lock_guard<std::mutex> lock(mutex_);
    ready_.clear();
    stopping_ = produced_all_ = false;
    error_ = nullptr;
}

Batch DataLoader::make_batch(int64_t b) const {
    const ImageSet& s = *set_;
    const int64_t H = s.height, W = s.width, C = s.channels, image = s.image_size();
    const int64_t start = b * opt_.batch_size, count = std::min(opt_.batch_size, s.n - start);
    // This rank's slice [k0, k1) of the batch's count images.
    const int64_t k0 = count * opt_.rank / opt_.ranks, k1 = count * (opt_.rank + 1) / opt_.ranks;
    Batch out;
    out.images = Tensor::empty({k1 - k0, C, H, W});
    out.labels = Tensor::empty({k1 - k0});
    out.indices.assign(order_.begin() + start + k0, order_.begin() + start + k1);
    out.global_count = count;
    out.global_start = k0;
    Generator gen(derive_seed(opt_.seed, epoch_, b + 1));
    const int pad = opt_.augment ? opt_.crop_padding : 0;

    for (int64_t k = 0; k < k1; ++k) {
        // This image's random choices, always drawn in the documented order.
        int64_t dy = 0, dx = 0, cy = -1, cx = -1;
        bool flip = false;
        if (opt_.augment) {
            if (pad > 0) {
                dy = static_cast<int64_t>(gen.randint(2 * pad + 1)) - pad;
                dx = static_cast<int64_t>(gen.randint(2 * pad + 1)) - pad;
            }
            if (opt_.flip) flip = gen.uniform() < 0.5f;
            if (opt_.cutout > 0) {
                cy = static_cast<int64_t>(gen.randint(H));
                cx = static_cast<int64_t>(gen.randint(W));
            }
        }
        if (k < k0) continue;  // another rank's image: its draws only
        const int64_t idx = out.indices[k - k0];
        out.labels.data()[k - k0] = static_cast<float>(s.labels[idx]);
        // out(y, x) = src(y + dy, x' + dx) with x' = flip ? W-1-x : x; outside
        // the source is the zero padding (byte 0, normalised like any pixel).
        const uint8_t* src = s.image(idx);
        float* dst = out.images.data() + (k - k0) * image;
        for (int64_t c = 0; c < C; ++c) {
            const float* lut = lut_.data() + c * 256;
            const float zero = lut[0];
            for (int64_t y = 0; y < H; ++y) {
                float* row = dst + (c * H + y) * W;
                const int64_t sy = y + dy;
                if (sy < 0 || sy >= H) {
                    std::fill(row, row + W, zero);
                    continue;
                }
                const uint8_t* srow = src + (c * H + sy) * W;
                for (int64_t x = 0; x < W; ++x) {
                    const int64_t sx = (flip ? W - 1 - x : x) + dx;
                    row[x] = (sx >= 0 && sx < W) ? lut[srow[sx]] : zero;
                }
            }
        }
        if (cy >= 0) {
            const int64_t top = cy - opt_.cutout / 2, left = cx - opt_.cutout / 2;
            const int64_t y0 = std::max<int64_t>(0, top), y1 = std::min(H, top + opt_.cutout);
            const int64_t x0 = std::max<int64_t>(0, left), x1 = std::min(W, left + opt_.cutout);
            for (int64_t c = 0; c < C; ++c)
                for (int64_t y = y0; y < y1; ++y)
                    std::fill(dst + (c * H + y) * W + x0, dst + (c * H + y) * W + x1, 0.f);
        }
    }
    return out;
}

}  // namespace minnow
