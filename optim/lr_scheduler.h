// minnow/optim/lr_scheduler.h: learning-rate schedules, as torch.optim.lr_scheduler.
//
// A scheduler drives the lr of every param group of one optimizer (which must
// outlive it). Made on an optimizer, it sets each group's lr to the schedule's
// value at epoch 0; each step() moves on one epoch and sets the lr for it
// (OneCycleLR also sets the momentum). As in PyTorch, call step() after
// opt.step().
//
// "Epoch" means whatever the caller steps. Call step() once per epoch for a
// per-epoch schedule, or once per iteration for a per-iteration one:
//
//     MultiStepLR sched(opt, {10, 15}, 0.1);       // lr / 10 after epoch 10 and again after 15
//     for (int epoch = 0; epoch < 20; ++epoch) {
//         for (auto& batch : loader) { ...; opt.step(); }
//         sched.step();
//     }
//
//     OneCycleLR sched(opt, 0.1, epochs * batches_per_epoch);
//     for (...) for (auto& batch : loader) { ...; opt.step(); sched.step(); }
//
// Warm-up then another schedule (epochs 0-4 linear warm-up, then cosine):
//
//     auto warmup = std::make_shared<LinearLR>(opt, 0.1, 1.0, 5);
//     auto cosine = std::make_shared<CosineAnnealingLR>(opt, 25);
//     SequentialLR sched(opt, {warmup, cosine}, {5});
//
// Every schedule is computed in closed form from the group's base lr and the
// epoch (PyTorch's _get_closed_form_lr). PyTorch's own step() updates
// MultiStepLR, CosineAnnealingLR and LinearLR recursively from the current lr;
// the two agree up to the rounding of doubles, and the tests check minnow
// against PyTorch's recorded lrs to float precision. So an lr set by hand in
// param_groups() lasts only until the next step().
//
// The base lr of a group is its `initial_lr` (PyTorch's group["initial_lr"]):
// the first scheduler made on an optimizer sets it to the group's lr, so
// schedulers made one after another (for SequentialLR) share it.
//
// Checkpoints: state_dict() is metadata only: <prefix>type, <prefix>last_epoch
// and <prefix>base_lrs (a JSON array), with prefix "lr_scheduler." by default.
// load_state_dict() restores them and sets the groups' lr (and momentum) for
// last_epoch, so a resumed run continues exactly.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/safetensors.h"
#include "optim/optimizer.h"

namespace minnow {

class LRScheduler {
public:
    virtual ~LRScheduler() = default;
    LRScheduler(const LRScheduler&) = delete;
    LRScheduler& operator=(const LRScheduler&) = delete;

    // "MultiStepLR", ...: the class name, in errors and checkpoints.
    virtual const char* name() const = 0;

    // Moves on one epoch and sets every group's lr for it.
    void step();
    // The epoch the current lrs belong to: 0 after construction, +1 per step().
    int64_t last_epoch() const { return last_epoch_; }
    // The lr of each group, as set by the last step() (or the constructor).
    const std::vector<double>& get_last_lr() const { return last_lr_; }
    const std::vector<double>& base_lrs() const { return base_lrs_; }
    Optimizer& optimizer() const { return optimizer_; }

    // The schedule itself: the lr of param group `group` at `epoch` (>= 0).
    virtual double lr_at(int64_t epoch, size_t group) const = 0;
    // The momentum (SGD) or beta1 (Adam) a schedule sets at `epoch`; none by default.
    virtual std::optional<double> momentum_at(int64_t /*epoch*/, size_t /*group*/) const { return std::nullopt; }

    SafetensorsFile state_dict(const std::string& prefix = "lr_scheduler.") const;
    void load_state_dict(const SafetensorsFile& state, const std::string& prefix = "lr_scheduler.");

protected:
    // Records every group's base lr (its initial_lr, set to its lr if unset).
    explicit LRScheduler(Optimizer& optimizer);
    // Every constructor ends with this: sets the hyperparameters for epoch 0.
    void initial_step();

    std::vector<double> base_lrs_;

private:
    // Sets every group's lr (and momentum) for `epoch`; changes nothing if lr_at throws.
    void apply(int64_t epoch);

    Optimizer& optimizer_;
    int64_t last_epoch_ = -1;
    std::vector<double> last_lr_;
};

// lr = base_lr * gamma^(number of milestones <= epoch). A milestone given twice
// counts twice, as in PyTorch.
class MultiStepLR : public LRScheduler {
public:
    MultiStepLR(Optimizer& optimizer, std::vector<int64_t> milestones, double gamma = 0.1);
    const char* name() const override { return "MultiStepLR"; }
    double lr_at(int64_t epoch, size_t group) const override;

private:
    std::vector<int64_t> milestones_;  // sorted
    double gamma_;
};

// lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2: from
// base_lr at epoch 0 down to eta_min at T_max (and back up after, as in PyTorch).
class CosineAnnealingLR : public LRScheduler {
public:
    CosineAnnealingLR(Optimizer& optimizer, int64_t T_max, double eta_min = 0);
    const char* name() const override { return "CosineAnnealingLR"; }
    double lr_at(int64_t epoch, size_t group) const override;

private:
    int64_t T_max_;
    double eta_min_;
};

// Linear warm-up: lr = base_lr * (start_factor + (end_factor - start_factor) *
// min(epoch, total_iters) / total_iters), then constant.
class LinearLR : public LRScheduler {
public:
    LinearLR(Optimizer& optimizer, double start_factor = 1.0 / 3, double end_factor = 1.0,
             int64_t total_iters = 5);
    const char* name() const override { return "LinearLR"; }
    double lr_at(int64_t epoch, size_t group) const override;

private:
    double start_factor_, end_factor_;
    int64_t total_iters_;
};

// torch.optim.lr_scheduler.OneCycleLR's options beyond max_lr and total_steps, with its defaults.
struct OneCycleOptions {
    double pct_start = 0.3;            // fraction of the steps spent raising the lr
    enum class Anneal { Cos, Linear } anneal_strategy = Anneal::Cos;
    bool cycle_momentum = true;        // momentum (SGD) or beta1 (Adam) from max to base and back
    double base_momentum = 0.85;
    double max_momentum = 0.95;
    double div_factor = 25;            // initial lr = max_lr / div_factor
    double final_div_factor = 1e4;     // final lr = initial lr / final_div_factor
    bool three_phase = false;          // down to the initial lr first, then to the final one
};

// The 1cycle policy, stepped once per iteration (total_steps = epochs *
// iterations per epoch). In phase 1 (steps 0 .. pct_start * total_steps - 1) the
// lr rises from max_lr / div_factor to max_lr while the momentum falls from
// max_momentum to base_momentum; in phase 2 (to step total_steps - 1) the lr
// falls to the final lr and the momentum rises back. Each is annealed by cosine
// (or linearly). It sets the momentum already at construction. As in PyTorch
// 1.13, step number total_steps (past the end; the cosine turns back up) is
// allowed, and stepping beyond it is an error.
class OneCycleLR : public LRScheduler {
public:
    OneCycleLR(Optimizer& optimizer, double max_lr, int64_t total_steps, const OneCycleOptions& options = {});
    const char* name() const override { return "OneCycleLR"; }
    double lr_at(int64_t epoch, size_t group) const override;
    std::optional<double> momentum_at(int64_t epoch, size_t group) const override;

private:
    struct Phase {
        double end_step;
        double start_lr, end_lr;
        double start_momentum, end_momentum;
    };
    // The value between `start` and `end` at fraction `pct` of a phase.
    double anneal(double start, double end, double pct) const;
    // The phase of `step` and the fraction of it done.
    std::pair<const Phase*, double> locate(int64_t step) const;

    int64_t total_steps_;
    OneCycleOptions options_;
    std::vector<Phase> phases_;
};

// Runs `schedulers[0]` until epoch milestones[0], then schedulers[1] (from its
// own epoch 0) until milestones[1], and so on. The schedulers must be made on
// the same optimizer (before this); SequentialLR steps them, never step them
// yourself. Its checkpoint holds its last_epoch; each scheduler's base lrs come
// from its construction, which a resumed run repeats.
class SequentialLR : public LRScheduler {
public:
    SequentialLR(Optimizer& optimizer, std::vector<std::shared_ptr<LRScheduler>> schedulers,
                 std::vector<int64_t> milestones);
    const char* name() const override { return "SequentialLR"; }
    double lr_at(int64_t epoch, size_t group) const override;
    std::optional<double> momentum_at(int64_t epoch, size_t group) const override;

private:
    // The scheduler in charge at `epoch`, and the epoch in its own count.
    std::pair<const LRScheduler*, int64_t> locate(int64_t epoch) const;

    std::vector<std::shared_ptr<LRScheduler>> schedulers_;
    std::vector<int64_t> milestones_;
};

}  // namespace minnow
