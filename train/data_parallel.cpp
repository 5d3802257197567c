#include "train/data_parallel.h"

#include <algorithm>
#include <cstring>

#include "dist/comm.h"

namespace minnow {

GlobalMean global_mean(int64_t count, double value) {
    if (dist::size() == 1) return {count, value};
    double sums[2] = {static_cast<double>(count), static_cast<double>(count) * value};
    dist::sum_in_rank_order(sums, 2);
    return {static_cast<int64_t>(sums[0]), sums[1] / sums[0]};
}

void average_gradients(const std::vector<Tensor>& params, double weight, int64_t bucket_floats) {
    if (dist::size() == 1) return;
    // Every rank walks the parameters in the same order (the same model), so
    // the buckets line up. A parameter without a gradient on one rank must
    // have none on every rank (the same graph), else the buckets would not.
    std::vector<float> bucket;
    std::vector<Tensor> members;
    const float w = static_cast<float>(weight);
    auto flush = [&] {
        if (bucket.empty()) return;
        dist::allreduce_sum(bucket.data(), static_cast<int64_t>(bucket.size()));
        size_t at = 0;
        for (Tensor& g : members) {
            std::memcpy(g.data(), bucket.data() + at, sizeof(float) * g.numel());
            at += static_cast<size_t>(g.numel());
        }
        bucket.clear();
        members.clear();
    };
    for (const Tensor& p : params) {
        Tensor g = p.grad();
        if (!g.defined()) continue;
        if (!bucket.empty() && static_cast<int64_t>(bucket.size()) + g.numel() > bucket_floats) flush();
        const float* q = g.data();
        for (int64_t i = 0; i < g.numel(); ++i) bucket.push_back(q[i] * w);
        members.push_back(g);
    }
    flush();
}

}  // namespace minnow
