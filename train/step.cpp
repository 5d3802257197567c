#include "train/step.h"

#include "core/autograd.h"
#include "core/ops.h"
#include "layers/loss.h"
#include "optim/grad_utils.h"
#include "train/data_parallel.h"

namespace minnow {

std::string non_finite_element(const Tensor& t) {
    const float* p = t.data();
    for (int64_t i = 0, n = t.numel(); i < n; ++i)
        if (!std::isfinite(p[i])) return "element " + std::to_string(i) + " is " + (std::isnan(p[i]) ? "nan" : "inf");
    return "";
}

std::string first_non_finite(const std::vector<TensorEntry>& entries) {
    for (const TensorEntry& e : entries)
        if (const std::string bad = non_finite_element(e.tensor); !bad.empty()) return e.name + " (" + bad + ")";
    return "";
}

StepResult train_step(Module& model, Optimizer& opt, const Batch& b, float label_smoothing,
                      const std::function<void()>& after_backward) {
    opt.zero_grad();
    Tensor logits = model(b.images);
    Tensor loss = cross_entropy(logits, b.labels, label_smoothing);
    StepResult r;
    Tensor pred = argmax(logits, 1);
    int64_t correct = 0;
    for (int64_t i = 0; i < pred.numel(); ++i) correct += pred.data()[i] == b.labels.data()[i];
    // On several ranks (train/data_parallel.h) the loss and the count are the
    // whole batch's, so that every rank decides the same below, and the
    // gradients are averaged over the ranks before anything reads them.
    const BatchTotals batch = batch_totals(b.images.size(0), loss.item(), correct);
    r.loss = static_cast<float>(batch.loss);
    r.correct = batch.correct;
    r.non_finite_loss_rank = batch.first_non_finite_rank;
    if (!std::isfinite(r.loss)) return r;
    GradientReducer reducer(model.parameters(),
                            static_cast<double>(b.images.size(0)) / static_cast<double>(batch.count));
    {
        BackwardListenerScope listen(reducer.listener());
        loss.backward();
    }
    reducer.finish();
    r.grad_norm = global_grad_norm(model.parameters());
    if (!r.finite()) return r;
    if (after_backward) after_backward();
    opt.step();
    r.non_finite_after_step = first_non_finite(model.state_dict());
    return r;
}

std::string diagnose_non_finite(Module& model, const Tensor& images, bool loss_finite) {
    for (const TensorEntry& e : model.state_dict())
        if (const std::string bad = non_finite_element(e.tensor); !bad.empty())
            return e.name + " is not finite (" + bad + ")";
    if (loss_finite) {
        std::string name;
        if (!all_finite_grads(model.named_parameters(), &name)) return "the gradient of " + name + " is not finite";
    }
    std::string first;
    for (auto& [name, m] : model.named_modules()) {
        if (!m->named_children().empty()) continue;  // leaves only: the layers themselves
        m->register_forward_hook([&first, name = name](Module& mod, const Tensor& y) {
            if (first.empty() && !non_finite_element(y).empty()) first = name + " (" + mod.type_name() + ")";
        });
    }
    if (!non_finite_element(images).empty()) first = "the input batch itself";
    {
        NoGradGuard ng;
        model(images);
    }
    for (auto& [name, m] : model.named_modules()) m->clear_forward_hooks();
    if (!first.empty()) return "the output of " + first + " is the first that is not finite";
    std::string name;
    if (!all_finite_grads(model.named_parameters(), &name)) return "the gradient of " + name + " is not finite";
    return "every layer's output was finite on a rerun: the loss overflowed";
}

}  // namespace minnow
