#include "train/loop.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "train/data_parallel.h"
#include "train/evaluate.h"

namespace minnow {

LoopResult train_epochs(Module& model, Optimizer& opt, LRScheduler* sched, DataLoader& loader,
                        const LoopOptions& lo, TrainState start, const std::vector<Callback*>& callbacks) {
    using Clock = std::chrono::steady_clock;
    auto each = [&](auto&& f) {
        for (Callback* c : callbacks) f(*c);
    };
    LoopResult res;
    res.state = start;
    int64_t& step = res.state.step;
    each([&](Callback& c) { c.on_train_begin(start); });
    for (int64_t epoch = start.epochs_done; epoch < lo.epochs && !res.stopped_by_max_steps; ++epoch) {
        model.train();
        loader.start_epoch(epoch);
        EpochBegin begin{epoch + 1, lo.epochs, loader.num_batches(), opt.param_groups()[0].lr};
        each([&](Callback& c) { c.on_epoch_begin(begin); });
        EpochStats e;
        e.epoch = epoch + 1;
        e.lr = begin.lr;
        double loss_sum = 0, gn_sum = 0;
        int64_t seen = 0, correct = 0;
        const auto t0 = Clock::now();
        Batch b;
        int64_t batch_index = 0;
        for (;;) {
            StepResult r;
            try {
                if (!loader.next(b)) break;
                r = train_step(model, opt, b, lo.label_smoothing,
                               [&] { each([](Callback& c) { c.after_backward(); }); });
            } catch (const Error& e) {  // say where, e.g. which rank's which step failed to read or compute
                throw Error("epoch " + std::to_string(epoch + 1) + ", batch " + std::to_string(batch_index + 1) +
                            " (step " + std::to_string(step + 1) + "): " + e.what());
            }
            if (!r.finite()) {
                each([&](Callback& c) { c.on_epoch_trained(begin); });
                Divergence d{epoch + 1, batch_index + 1, step + 1, r, false,
                             r.non_finite_after_step.empty()
                                 ? diagnose_non_finite(model, b.images, std::isfinite(r.loss))
                                 : "after the step, " + r.non_finite_after_step + " is not finite",
                             r.non_finite_loss_rank};
                each([&](Callback& c) { c.on_diverged(d); });
                res.diverged = d;
                return res;
            }
            ++step;
            ++e.steps_this_epoch;
            ++batch_index;
            const int64_t bs = b.global_count;  // over all ranks (r.loss and r.correct are too)
            loss_sum += static_cast<double>(r.loss) * bs;
            seen += bs;
            correct += r.correct;
            gn_sum += r.grad_norm;
            e.grad_norm_max = std::max(e.grad_norm_max, r.grad_norm);
            const StepInfo info{epoch + 1, batch_index, step, &b, r, loss_sum / seen, seen};
            each([&](Callback& c) { c.on_step(info); });
            if (lo.max_steps > 0 && step >= lo.max_steps) {
                res.stopped_by_max_steps = true;
                break;
            }
        }
        average_buffers(model);  // on several ranks: the same running statistics everywhere
        each([&](Callback& c) { c.on_epoch_trained(begin); });
        e.train_time_s = std::chrono::duration<double>(Clock::now() - t0).count();
        e.test_loss = e.test_acc = NAN;
        if (lo.test_set) {
            const EvalResult ev = evaluate(model, lo.test_set, lo.test_loader);
            e.test_loss = ev.loss;
            e.test_acc = ev.accuracy;
            if (!std::isfinite(ev.loss)) {  // finite weights, yet eval mode (running statistics) overflows
                DataLoader first(lo.test_set, lo.test_loader);
                first.start_epoch(0);
                Batch tb;
                first.next(tb);
                model.eval();
                Divergence d{epoch + 1, batch_index, step, {}, true, ""};
                d.result.loss = static_cast<float>(ev.loss);
                d.reason = "the test loss after the epoch is " + std::to_string(ev.loss) + " (eval mode): " +
                           diagnose_non_finite(model, tb.images, false);
                each([&](Callback& c) { c.on_diverged(d); });
                res.diverged = d;
                return res;
            }
        }
        e.epoch_time_s = std::chrono::duration<double>(Clock::now() - t0).count();
        if (sched) sched->step();
        e.train_loss = seen ? loss_sum / seen : 0;
        e.train_acc = seen ? 100.0 * correct / seen : 0;
        e.grad_norm_mean = e.steps_this_epoch ? gn_sum / e.steps_this_epoch : 0;
        e.img_per_s = seen / e.train_time_s;
        e.steps = step;
        e.partial = res.stopped_by_max_steps;
        if (!e.partial) res.state.epochs_done = epoch + 1;
        res.epochs.push_back(e);
        each([&](Callback& c) { c.on_epoch_end(e); });
    }
    return res;
}

}  // namespace minnow
