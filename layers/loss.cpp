// Cross-entropy: log-softmax, the target distribution and the reduction in
// one node, forward and backward side by side.
#include "layers/loss.h"

#include <cmath>
#include <limits>

#include "core/autograd.h"

namespace minnow {

// For one row (dropping i): z the logits, s = softmax(z), log s_c = z_c - lse(z),
// q the target distribution (sum_c q_c = 1), loss = -sum_c q_c log s_c.
//   d loss / d z_k = -sum_c q_c (delta_ck - s_k) = s_k sum_c q_c - q_k = s_k - q_k
// The reduction scales row i by w_i: 1/N (Mean), 1 (Sum); and the upstream
// gradient multiplies it (a scalar dy, or dy_i for None):
//   dlogits[i, k] = (s_ik - q_ik) * w_i * dy(_i)
struct CrossEntropyBackward : Node {
    Tensor probs;                 // s, [N, C]
    std::vector<int64_t> labels;  // [N]
    float eps = 0.f;
    Reduction reduction = Reduction::Mean;
    std::vector<Tensor> backward(const Tensor& dy) override {
        const int64_t N = probs.size(0), C = probs.size(1);
        Tensor dz = Tensor::empty(probs.shape());
        const float* s = probs.data();
        float* pz = dz.data();
        const float off = eps / static_cast<float>(C), on = 1.f - eps + off;  // q for a wrong / the true class
        for (int64_t i = 0; i < N; ++i) {
            float w = reduction == Reduction::None ? dy.data()[i] : dy.item();
            if (reduction == Reduction::Mean) w /= static_cast<float>(N);
            for (int64_t k = 0; k < C; ++k) {
                const float q = k == labels[i] ? on : off;
                pz[i * C + k] = (s[i * C + k] - q) * w;
            }
        }
        return {dz};
    }
    void release_saved() override { probs = Tensor(); }
    const char* name() const override { return "CrossEntropyBackward"; }
};

Tensor cross_entropy(const Tensor& logits, const Tensor& labels, float eps, Reduction reduction) {
    if (logits.dim() != 2)
        throw Error("cross_entropy: expected logits [N, C], got " + shape_str(logits.shape()));
    const int64_t N = logits.size(0), C = logits.size(1);
    if (labels.shape() != Shape{N})
        throw Error("cross_entropy: expected labels [" + std::to_string(N) + "] for logits " +
                    shape_str(logits.shape()) + ", got " + shape_str(labels.shape()));
    if (!(eps >= 0.f && eps <= 1.f))
        throw Error("cross_entropy: label_smoothing must be in [0, 1], got " + std::to_string(eps));
    if (C == 0) throw Error("cross_entropy: logits " + shape_str(logits.shape()) + " have no classes");
    std::vector<int64_t> lab(N);
    for (int64_t i = 0; i < N; ++i) {
        const float v = labels.data()[i];
        if (!(v >= 0.f && v < static_cast<float>(C)) || v != std::floor(v))
            throw Error("cross_entropy: label " + std::to_string(v) + " at index " + std::to_string(i) +
                        " is not a class index in [0, " + std::to_string(C) + ") (logits " +
                        shape_str(logits.shape()) + ", N = " + std::to_string(N) + ")");
        lab[i] = static_cast<int64_t>(v);
    }

    // Per row: lse = m + log sum_c exp(z_c - m), m = max_c z_c (no overflow);
    // log s_c = z_c - lse; loss = -(1 - eps) log s_label - eps/C sum_c log s_c.
    Tensor probs = Tensor::empty(logits.shape());
    std::vector<double> row_loss(N);
    const float* z = logits.data();
    for (int64_t i = 0; i < N; ++i) {
        const float* zi = z + i * C;
        float m = -std::numeric_limits<float>::infinity();
        for (int64_t c = 0; c < C; ++c) m = std::max(m, zi[c]);
        double sum_exp = 0, sum_logp = 0;
        for (int64_t c = 0; c < C; ++c) sum_exp += std::exp(static_cast<double>(zi[c]) - m);
        const double lse = m + std::log(sum_exp);
        for (int64_t c = 0; c < C; ++c) {
            const double logp = zi[c] - lse;
            probs.data()[i * C + c] = static_cast<float>(std::exp(logp));
            sum_logp += logp;
        }
        row_loss[i] = -(1.0 - eps) * (zi[lab[i]] - lse);
        // Only with smoothing: a -inf logit makes sum_logp -inf, and 0 * -inf would
        // turn the finite loss PyTorch gives without smoothing into NaN.
        if (eps > 0.f) row_loss[i] -= eps / static_cast<double>(C) * sum_logp;
    }

    Tensor loss;
    if (reduction == Reduction::None) {
        loss = Tensor::empty({N});
        for (int64_t i = 0; i < N; ++i) loss.data()[i] = static_cast<float>(row_loss[i]);
    } else {
        double total = 0;
        for (double l : row_loss) total += l;
        if (reduction == Reduction::Mean) total /= static_cast<double>(N);
        loss = Tensor::scalar(static_cast<float>(total));
    }
    if (!any_requires_grad({logits})) return loss;
    auto node = std::make_shared<CrossEntropyBackward>();
    node->probs = probs;
    node->labels = std::move(lab);
    node->eps = eps;
    node->reduction = reduction;
    return attach(loss, node, {logits});
}

}  // namespace minnow
