// SyncBatchNorm: BatchNorm's forward and hand-derived backward
// (layers/batchnorm.cpp), with the per-channel numbers they reduce summed
// over the ranks of the job.
//
// Why two exchanges suffice. Per channel, with M values over all ranks and
// m_r on rank r, BatchNorm's forward needs mu and var of all M values, and
// its backward (batchnorm.cpp, (1)-(3)) needs, besides mu and sigma, only
//     sum_j g_j   and   sum_j g_j (x_j - mu)     over all M values,
// both sums of per-rank sums. Everything else is per element: xhat_i,
// y_i = gamma xhat_i + beta, and
//     dx_i = gamma / sigma * (g_i - sum_j g_j / M - xhat_i * sum_j g_j xhat_j / M)
// where i is one of this rank's values. So:
//
// Forward. Each rank computes, for its m_r values, the mean mu_r and
// q_r = sum (x - mu_r)^2 (two passes: no cancellation, as in BatchNorm), and
// the ranks exchange (m_r, mu_r, q_r). They are combined rank by rank with
// the pairwise update of Chan, Golub & LeVeque (1979): merging a set (n,
// mu, q) with (m_r, mu_r, q_r),
//     n'  = n + m_r,   delta = mu_r - mu
//     mu' = mu + delta * m_r / n'
//     q'  = q + q_r + delta^2 * n * m_r / n'
// exact in real arithmetic (q' is the sum of squared deviations from mu' of
// the union) and, unlike sums of x and x^2, free of cancellation when
// |mu| >> sigma. Then var = q / M as in BatchNorm, running_var takes
// q / (M - 1). Each rank combines all K triples in the same order, so every
// rank gets the same bits, and holds the same running statistics.
//
// Backward. Each rank sums g and g (x - mu) over its own values with the
// global mu, the ranks sum those in rank order, and each finishes its own
// dx with (3), M in place of m. gamma's and beta's gradients, (1) and (2),
// are returned as this rank's sums: the data-parallel step averages every
// parameter's gradient over the ranks, as it does the convolutions'.
#include "layers/syncbatchnorm.h"

#include <cmath>
#include <vector>

#include "core/autograd.h"
#include "dist/comm.h"
#include "kernels/norm.h"

namespace minnow {

namespace {

struct SyncBatchNormBackward : Node {
    Tensor x;             // this rank's input, [N, C, *]
    Tensor mean, invstd;  // [C]: the global statistics
    Tensor weight;        // gamma [C], or undefined (gamma = 1)
    double count = 0;     // M, values per channel over all ranks

    std::vector<Tensor> backward(const Tensor& dy) override {
        const ChannelView v(x.shape());
        const int64_t C = v.C;
        std::vector<double> sums(2 * static_cast<size_t>(C));  // sum g [C], then sum g (x - mu) [C]
        channel_kernels::grad_sums(dy.data(), x.data(), v, mean.data(), sums.data(), sums.data() + C);
        Tensor dweight, dbias, dx;
        const float* is = invstd.data();
        if (needs_grad(1)) {  // (2), this rank's sum
            dweight = Tensor::empty({C});
            for (int64_t c = 0; c < C; ++c) dweight.data()[c] = static_cast<float>(sums[C + c] * is[c]);
        }
        if (needs_grad(2)) {  // (1), this rank's sum
            dbias = Tensor::empty({C});
            for (int64_t c = 0; c < C; ++c) dbias.data()[c] = static_cast<float>(sums[c]);
        }
        if (!needs_grad(0)) return {dx, dweight, dbias};
        dist::sum_in_rank_order(sums.data(), 2 * C);  // the global sums
        std::vector<float> a(C), b(C), k(C);
        const float* gamma = weight.defined() ? weight.data() : nullptr;
        for (int64_t c = 0; c < C; ++c) {
            a[c] = (gamma ? gamma[c] : 1.f) * is[c];                                   // gamma * invstd
            b[c] = static_cast<float>(sums[c] / count);                                // mean(g)
            k[c] = static_cast<float>(is[c] * (sums[C + c] * is[c]) / count);          // invstd * mean(g xhat)
        }
        dx = Tensor::empty(x.shape());
        channel_kernels::input_grad(dy.data(), x.data(), v, mean.data(), a.data(), b.data(), k.data(), dx.data());
        return {dx, dweight, dbias};
    }
    void release_saved() override { x = mean = invstd = weight = Tensor(); }
    const char* name() const override { return "SyncBatchNormBackward"; }
};

}  // namespace

Tensor sync_batch_norm(const Tensor& x, const Tensor& running_mean, const Tensor& running_var, const Tensor& weight,
                       const Tensor& bias, float momentum, float eps) {
    if (x.dim() < 2)
        throw Error("sync_batch_norm: expected an input [N, C, *] with at least 2 dims, got shape " +
                    shape_str(x.shape()));
    const ChannelView v(x.shape());
    const int64_t C = v.C;
    for (const Tensor* t : {&running_mean, &running_var, &weight, &bias})
        if (t->defined() && t->shape() != Shape{C})
            throw Error("sync_batch_norm: a per-channel tensor has shape " + shape_str(t->shape()) + ", expected [" +
                        std::to_string(C) + "] for input of shape " + shape_str(x.shape()));

    // This rank's (m_r, mu_r, q_r) per channel, then every rank's.
    const int K = dist::size();
    std::vector<double> mine(3 * static_cast<size_t>(C)), all(3 * static_cast<size_t>(C) * K);
    channel_kernels::moments(x.data(), v, mine.data() + C, mine.data() + 2 * C);
    for (int64_t c = 0; c < C; ++c) mine[c] = static_cast<double>(v.per_channel());
    dist::allgather(mine.data(), 3 * C, all.data());

    Tensor mean = Tensor::empty({C}), invstd = Tensor::empty({C});
    std::vector<float> scale(C), shift(C);
    double M = 0;
    for (int64_t c = 0; c < C; ++c) {
        double n = 0, mu = 0, q = 0;  // Chan et al.'s merge, rank by rank
        for (int r = 0; r < K; ++r) {
            const double* t = all.data() + 3 * C * r;
            const double m_r = t[c], mu_r = t[C + c], q_r = t[2 * C + c];
            if (m_r == 0) continue;
            if (n == 0) {  // the first set as it is: one rank gives BatchNorm's bits
                n = m_r, mu = mu_r, q = q_r;
                continue;
            }
            const double n1 = n + m_r, delta = mu_r - mu;
            mu += delta * m_r / n1;
            q += q_r + delta * delta * n * m_r / n1;
            n = n1;
        }
        M = n;
        if (M <= 1)
            throw Error("sync_batch_norm: expected more than 1 value per channel over all " + std::to_string(K) +
                        " ranks when training, got " + std::to_string(static_cast<int64_t>(M)) +
                        " (this rank's input has shape " + shape_str(x.shape()) + ")");
        // As batch_norm computes them (the same expressions, the same bits).
        const double var = q / M, f = momentum, unbias = M / (M - 1);
        mean.data()[c] = static_cast<float>(mu);
        invstd.data()[c] = static_cast<float>(1.0 / std::sqrt(var + eps));
        if (running_mean.defined()) {
            float& rm = const_cast<Tensor&>(running_mean).data()[c];
            float& rv = const_cast<Tensor&>(running_var).data()[c];
            rm = static_cast<float>(f * mu + (1 - f) * rm);
            rv = static_cast<float>(f * var * unbias + (1 - f) * rv);
        }
        scale[c] = (weight.defined() ? weight.data()[c] : 1.f) * invstd.data()[c];
        shift[c] = (bias.defined() ? bias.data()[c] : 0.f) - mean.data()[c] * scale[c];
    }
    Tensor y = Tensor::empty(x.shape());
    channel_kernels::scale_shift(x.data(), v, scale.data(), shift.data(), y.data());

    if (!any_requires_grad({x, weight, bias})) return y;
    auto node = std::make_shared<SyncBatchNormBackward>();
    node->x = x.detach();
    node->mean = mean;
    node->invstd = invstd;
    if (weight.defined()) node->weight = weight.detach();
    node->count = M;
    return attach(y, node, {x, weight, bias});
}

SyncBatchNorm::SyncBatchNorm(int64_t num_features, float eps, std::optional<float> momentum, bool affine,
                             bool track_running_stats)
    : BatchNorm("SyncBatchNorm", {2, 3, 4}, num_features, eps, momentum, affine, track_running_stats) {}

Tensor SyncBatchNorm::forward(const Tensor& x) {
    const Plan p = plan();
    if (!p.batch_stats) return BatchNorm::forward(x);  // eval mode, frozen statistics: nothing to share
    check_input(x, /*batch_stats=*/false);  // the count is checked over all ranks
    const float factor = p.update_running ? count_batch() : 0.f;
    try {
        return sync_batch_norm(x, p.update_running ? running_mean : Tensor(),
                               p.update_running ? running_var : Tensor(), weight, bias, factor, eps());
    } catch (const Error& e) {
        throw Error(layer_name() + ": " + e.what());
    }
}

int convert_sync_batchnorm(Module& model) {
    int replaced = 0;
    for (const auto& [name, child] : model.named_children()) {
        auto* bn = dynamic_cast<BatchNorm*>(child.get());
        const bool plain = bn && (typeid(*bn) == typeid(BatchNorm1d) || typeid(*bn) == typeid(BatchNorm2d) ||
                                  typeid(*bn) == typeid(BatchNorm));
        if (!plain) {
            replaced += convert_sync_batchnorm(*child);
            continue;
        }
        auto sync = std::make_shared<SyncBatchNorm>(bn->num_features(), bn->eps(), bn->momentum(), bn->affine(),
                                                    bn->track_running_stats());
        sync->load_state_dict(bn->state_dict(), true, name);
        if (bn->statistics_frozen()) sync->freeze_statistics();
        model.replace_child(name, sync);  // takes the parent's training flag
        ++replaced;
    }
    return replaced;
}

}  // namespace minnow
