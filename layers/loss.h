// minnow/layers/loss.h: the cross-entropy loss on logits.
#pragma once

#include "core/tensor.h"

namespace minnow {

enum class Reduction { Mean, Sum, None };

// F.cross_entropy(logits, labels, label_smoothing=eps, reduction=...):
//   logits [N, C]; labels [N], class indices 0..C-1 stored as floats.
//   loss_i = -sum_c q_ic log softmax(logits_i)_c, with the target
//   distribution q_ic = (1 - eps) [c == label_i] + eps / C (eps/C goes to
//   every class, the true one included, as in PyTorch).
//   Mean: (1/N) sum_i loss_i (a 0-d tensor); Sum: sum_i loss_i; None: [N].
// A label that is not an integer in [0, C) is an Error naming it.
Tensor cross_entropy(const Tensor& logits, const Tensor& labels, float label_smoothing = 0.f,
                     Reduction reduction = Reduction::Mean);

// nn.CrossEntropyLoss(label_smoothing=0, reduction='mean') as a callable:
//     CrossEntropyLoss criterion;  Tensor loss = criterion(logits, labels);
class CrossEntropyLoss {
public:
    explicit CrossEntropyLoss(float label_smoothing = 0.f, Reduction reduction = Reduction::Mean)
        : label_smoothing(label_smoothing), reduction(reduction) {}
    Tensor forward(const Tensor& logits, const Tensor& labels) const {
        return cross_entropy(logits, labels, label_smoothing, reduction);
    }
    Tensor operator()(const Tensor& logits, const Tensor& labels) const { return forward(logits, labels); }
    float label_smoothing;
    Reduction reduction;
};

}  // namespace minnow
