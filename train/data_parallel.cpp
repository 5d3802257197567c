#include "train/data_parallel.h"

#include <algorithm>
#include <cmath>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>

#include "core/error.h"
#include "dist/comm.h"

namespace minnow {

BatchTotals batch_totals(int64_t count, double loss, int64_t correct) {
    const int k = dist::size();
    if (k == 1) return {count, loss, correct, std::isfinite(loss) ? -1 : 0};
    const double mine[3] = {static_cast<double>(count), static_cast<double>(count) * loss,
                            static_cast<double>(correct)};
    std::vector<double> all(static_cast<size_t>(3 * k));
    dist::allgather(mine, 3, all.data());
    BatchTotals t;
    double images = 0, loss_sum = 0, right = 0;
    for (int r = 0; r < k; ++r) {
        const double* theirs = all.data() + 3 * r;
        images += theirs[0];
        loss_sum += theirs[1];
        right += theirs[2];
        if (t.first_non_finite_rank < 0 && !std::isfinite(theirs[1])) t.first_non_finite_rank = r;
    }
    t.count = static_cast<int64_t>(images);
    t.loss = loss_sum / images;
    t.correct = static_cast<int64_t>(right);
    return t;
}

namespace {
double now_s() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
AllreduceTime& time_so_far() {
    static AllreduceTime t;
    return t;
}
bool overlap_from_env() {
    const char* v = std::getenv("MINNOW_ALLREDUCE");
    if (!v || !*v || std::string(v) == "overlapped") return true;
    if (std::string(v) == "blocking") return false;
    throw Error(std::string("MINNOW_ALLREDUCE is '") + v + "': give overlapped or blocking");
}
}  // namespace

AllreduceTime allreduce_time() { return time_so_far(); }

struct GradientReducer::Bucket {
    std::vector<float> data;
    std::vector<size_t> members;  // parameter indices
    size_t unfilled = 0;
    dist::AllreduceRequest sum;  // started once every member is filled, in bucket order
};

GradientReducer::GradientReducer(const std::vector<Tensor>& params, double weight, int64_t bucket_floats)
    : params_(params), weight_(static_cast<float>(weight)), active_(dist::size() > 1), overlap_(true) {
    if (!active_) return;
    static const bool overlap = overlap_from_env();
    overlap_ = overlap;
    // Every rank has the same parameters in the same order (the same model),
    // so the buckets line up across ranks.
    const size_t n = params_.size();
    bucket_of_.assign(n, 0);
    offset_of_.assign(n, 0);
    filled_.assign(n, false);
    for (size_t k = n; k-- > 0;) {
        const int64_t numel = params_[k].numel();
        if (buckets_.empty() || (!buckets_.back().data.empty() &&
                                 static_cast<int64_t>(buckets_.back().data.size()) + numel > bucket_floats))
            buckets_.emplace_back();
        Bucket& b = buckets_.back();
        bucket_of_[k] = buckets_.size() - 1;
        offset_of_[k] = b.data.size();
        b.data.resize(b.data.size() + static_cast<size_t>(numel), 0.f);
        b.members.push_back(k);
        ++b.unfilled;
        index_of_[&params_[k].impl()] = k;
    }
}

GradientReducer::~GradientReducer() = default;

// Parameter k's gradient times the weight into its bucket (zeros if it has
// none: no gradient reached it on any rank, as the graphs are the same).
void GradientReducer::fill(size_t k) {
    Bucket& b = buckets_[bucket_of_[k]];
    float* out = b.data.data() + offset_of_[k];
    const Tensor g = params_[k].grad();
    if (g.defined()) {
        const float* q = g.data();
        for (int64_t i = 0; i < g.numel(); ++i) out[i] = q[i] * weight_;
    }
    filled_[k] = true;
    --b.unfilled;
}

void GradientReducer::start_ready_buckets() {
    while (next_to_start_ < buckets_.size() && buckets_[next_to_start_].unfilled == 0) {
        Bucket& b = buckets_[next_to_start_++];
        b.sum = dist::AllreduceRequest::start(b.data.data(), static_cast<int64_t>(b.data.size()));
    }
}

void GradientReducer::leaf_grad_final(const TensorImpl& leaf) {
    auto it = index_of_.find(&leaf);
    if (it == index_of_.end() || filled_[it->second]) return;  // not one of ours (an input that wants a gradient)
    fill(it->second);
    start_ready_buckets();
}

void GradientReducer::node_done() {
    for (size_t i = 0; i < next_to_start_; ++i) buckets_[i].sum.test();
}

void GradientReducer::finish() {
    if (!active_ || buckets_.empty()) return;
    const double t0 = now_s();
    for (size_t k = params_.size(); k-- > 0;)
        if (!filled_[k]) fill(k);
    start_ready_buckets();
    for (Bucket& b : buckets_) {
        b.sum.wait();
        for (size_t k : b.members) {
            Tensor g = params_[k].grad();
            if (g.defined()) std::memcpy(g.data(), b.data.data() + offset_of_[k], sizeof(float) * g.numel());
        }
    }
    const double t1 = now_s();
    AllreduceTime& t = time_so_far();
    t.waited_s += t1 - t0;
    ++t.steps;
}

void average_buffers(Module& model) {
    const int k = dist::size();
    if (k == 1) return;
    for (Tensor& b : model.buffers()) {
        std::vector<double> sum(b.data(), b.data() + b.numel());
        dist::sum_in_rank_order(sum.data(), b.numel());
        float* out = b.data();
        for (int64_t i = 0; i < b.numel(); ++i) out[i] = static_cast<float>(sum[static_cast<size_t>(i)] / k);
    }
}

}  // namespace minnow
