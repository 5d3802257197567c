// minnow/train/evaluate.h: a model's loss, accuracy and confusion matrix on a
// labelled image set.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "core/tensor.h"
#include "data/dataset.h"
#include "data/loader.h"
#include "layers/module.h"

namespace minnow {

struct EvalResult {
    double loss = 0, accuracy = 0;  // mean cross-entropy, accuracy in %
    int64_t n = 0;
    std::vector<std::vector<int64_t>> confusion;  // [true][predicted]
    Tensor logits;                                // [n, classes] when asked for
    Tensor labels;                                // [n]
};

// Eval mode, no graph, the set in order in batches of `loader` (its batch
// size and normalisation; shuffling and augmentation are turned off). The
// model's training flag is restored afterwards. With loader.ranks > 1 (a
// data-parallel job, dist/comm.h) every rank evaluates its slice of each
// batch and every rank gets the totals of the whole set (not keep_logits).
EvalResult evaluate(Module& model, std::shared_ptr<const ImageSet> set, LoaderOptions loader,
                    bool keep_logits = false);

}  // namespace minnow
