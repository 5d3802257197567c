#include "train/evaluate.h"

#include <algorithm>

#include "core/autograd.h"
#include "core/ops.h"
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
    if (keep_logits) {
        r.logits = Tensor::empty({set->n, k});
        r.labels = Tensor::empty({set->n});
    }
    double loss_sum = 0;
    int64_t correct = 0;
    Batch b;
    while (loader.next(b)) {
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
    r.loss = r.n ? loss_sum / r.n : 0;
    r.accuracy = r.n ? 100.0 * correct / r.n : 0;
    return r;
}

}  // namespace minnow
