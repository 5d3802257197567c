#include "train/evaluate.h"

#include <algorithm>

#include "core/autograd.h"
#include "core/ops.h"
#include "dist/comm.h"
#include "layers/loss.h"

namespace minnow {

EvalResult evaluate(Module& model, std::shared_ptr<const ImageSet> set, LoaderOptions loader_options,
                    bool keep_logits) {
    const bool was_training = model.is_training();
    model.eval();
    NoGradGuard no_grad;
    loader_options.shuffle = false;
    loader_options.augment = false;
    DataLoader loader(set, loader_options);
    loader.start_epoch(0);
    EvalResult r;
    const int64_t k = set->num_classes();
    r.confusion.assign(k, std::vector<int64_t>(k, 0));
    if (keep_logits && loader_options.ranks > 1)
        throw Error("evaluate: keep_logits needs the whole set on one rank (the loader has ranks = " +
                    std::to_string(loader_options.ranks) + ")");
    if (keep_logits) {
        r.logits = Tensor::empty({set->n, k});
        r.labels = Tensor::empty({set->n});
    }
    double loss_sum = 0;
    int64_t correct = 0;
    Batch b;
    while (loader.next(b)) {
        if (b.images.size(0) == 0) continue;  // a last batch with fewer images than ranks
        Tensor logits = model(b.images);
        loss_sum += cross_entropy(logits, b.labels, 0.f, Reduction::Sum).item();
        // A row with a NaN logit predicts the class of its first NaN (argmax, as
        // torch.argmax), and its NaN loss makes the mean loss NaN.
        Tensor pred = argmax(logits, 1);
        const int64_t bs = logits.size(0);
        for (int64_t i = 0; i < bs; ++i) {
            const int t = static_cast<int>(b.labels.data()[i]), p = static_cast<int>(pred.data()[i]);
            correct += t == p;
            ++r.confusion[t][p];
        }
        if (keep_logits) {
            std::copy(logits.data(), logits.data() + bs * k, r.logits.data() + r.n * k);
            std::copy(b.labels.data(), b.labels.data() + bs, r.labels.data() + r.n);
        }
        r.n += bs;
    }
    model.train(was_training);
    if (loader_options.ranks > 1) {
        // Each rank evaluated its slice of every batch: the sums over the ranks
        // (in rank order, so the same bits on every rank; counts are exact).
        std::vector<double> sums{loss_sum, static_cast<double>(correct), static_cast<double>(r.n)};
        for (const auto& row : r.confusion) sums.insert(sums.end(), row.begin(), row.end());
        dist::sum_in_rank_order(sums.data(), static_cast<int64_t>(sums.size()));
        loss_sum = sums[0];
        correct = static_cast<int64_t>(sums[1]);
        r.n = static_cast<int64_t>(sums[2]);
        for (int64_t t = 0; t < k; ++t)
            for (int64_t p = 0; p < k; ++p) r.confusion[t][p] = static_cast<int64_t>(sums[3 + t * k + p]);
    }
    r.loss = r.n ? loss_sum / r.n : 0;
    r.accuracy = r.n ? 100.0 * correct / r.n : 0;
    return r;
}

}  // namespace minnow
