#include "optim/lr_scheduler.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

namespace minnow {

static constexpr double kPi = 3.141592653589793;  // Python's math.pi

// ---------------------------------------------------------------- LRScheduler
LRScheduler::LRScheduler(Optimizer& optimizer) : optimizer_(optimizer) {
    for (ParamGroup& g : optimizer_.param_groups()) {
        if (!g.initial_lr) g.initial_lr = g.lr;
        base_lrs_.push_back(*g.initial_lr);
    }
}

void LRScheduler::initial_step() {
    apply(0);
    last_epoch_ = 0;
}

void LRScheduler::step() {
    apply(last_epoch_ + 1);
    last_epoch_ += 1;
}

void LRScheduler::apply(int64_t epoch) {
    std::vector<ParamGroup>& groups = optimizer_.param_groups();
    if (groups.size() != base_lrs_.size())
        throw Error(std::string(name()) + ": the optimizer has " + std::to_string(groups.size()) +
                    " param groups but the scheduler was made for " + std::to_string(base_lrs_.size()));
    std::vector<double> lrs;
    std::vector<std::optional<double>> momenta;
    for (size_t i = 0; i < groups.size(); ++i) {
        lrs.push_back(lr_at(epoch, i));
        momenta.push_back(momentum_at(epoch, i));
    }
    for (size_t i = 0; i < groups.size(); ++i) {
        groups[i].lr = lrs[i];
        if (momenta[i]) (optimizer_.uses_betas() ? groups[i].beta1 : groups[i].momentum) = *momenta[i];
    }
    last_lr_ = lrs;
}

SafetensorsFile LRScheduler::state_dict(const std::string& prefix) const {
    SafetensorsFile out;
    out.metadata[prefix + "type"] = name();
    out.metadata[prefix + "last_epoch"] = std::to_string(last_epoch_);
    out.metadata[prefix + "base_lrs"] = nlohmann::json(base_lrs_).dump();
    return out;
}

void LRScheduler::load_state_dict(const SafetensorsFile& file, const std::string& prefix) {
    const std::string src = file.path.empty() ? std::string("scheduler state") : file.path;
    auto get = [&](const std::string& key) -> const std::string& {
        auto it = file.metadata.find(prefix + key);
        if (it == file.metadata.end())
            throw Error(src + ": no " + name() + " state (metadata '" + prefix + key + "' is missing)");
        return it->second;
    };
    if (get("type") != name())
        throw Error(src + ": the scheduler state was saved by " + get("type") + " and cannot be loaded into " +
                    name());
    const auto epoch = parse_whole_number(get("last_epoch"));
    if (!epoch || *epoch > uint64_t{INT64_MAX})
        throw Error(src + ": metadata '" + prefix + "last_epoch' is " + quote_for_error(get("last_epoch")) +
                    ", not a whole number >= 0");
    const int64_t last_epoch = static_cast<int64_t>(*epoch);
    std::vector<double> base_lrs;
    try {
        base_lrs = nlohmann::json::parse(get("base_lrs")).get<std::vector<double>>();
    } catch (const nlohmann::json::exception& e) {
        throw Error(src + ": metadata '" + prefix + "base_lrs' is not a list of numbers (" + e.what() + ")");
    }
    for (double lr : base_lrs)
        if (!(lr >= 0))
            throw Error(src + ": metadata '" + prefix + "base_lrs' holds " + std::to_string(lr) +
                        ", not a learning rate (>= 0)");
    if (base_lrs.size() != base_lrs_.size())
        throw Error(src + ": the " + name() + " state has " + std::to_string(base_lrs.size()) +
                    " base lrs but the optimizer has " + std::to_string(base_lrs_.size()) + " param groups");

    std::vector<double> old = base_lrs_;
    base_lrs_ = base_lrs;
    try {
        apply(last_epoch);
    } catch (const Error& e) {
        base_lrs_ = old;
        throw Error(src + ": cannot resume " + name() + " at epoch " + std::to_string(last_epoch) + ": " + e.what());
    }
    last_epoch_ = last_epoch;
}

// ---------------------------------------------------------------- MultiStepLR
MultiStepLR::MultiStepLR(Optimizer& optimizer, std::vector<int64_t> milestones, double gamma)
    : LRScheduler(optimizer), milestones_(std::move(milestones)), gamma_(gamma) {
    std::sort(milestones_.begin(), milestones_.end());
    initial_step();
}

double MultiStepLR::lr_at(int64_t epoch, size_t group) const {
    const auto passed = std::upper_bound(milestones_.begin(), milestones_.end(), epoch) - milestones_.begin();
    return base_lrs_[group] * std::pow(gamma_, static_cast<double>(passed));
}

// ---------------------------------------------------------------- CosineAnnealingLR
CosineAnnealingLR::CosineAnnealingLR(Optimizer& optimizer, int64_t T_max, double eta_min)
    : LRScheduler(optimizer), T_max_(T_max), eta_min_(eta_min) {
    if (T_max <= 0) throw Error("CosineAnnealingLR: T_max must be positive, got " + std::to_string(T_max));
    initial_step();
}

double CosineAnnealingLR::lr_at(int64_t epoch, size_t group) const {
    const double base_lr = base_lrs_[group];
    return eta_min_ + (base_lr - eta_min_) * (1 + std::cos(kPi * static_cast<double>(epoch) / T_max_)) / 2;
}

// ---------------------------------------------------------------- LinearLR
LinearLR::LinearLR(Optimizer& optimizer, double start_factor, double end_factor, int64_t total_iters)
    : LRScheduler(optimizer), start_factor_(start_factor), end_factor_(end_factor), total_iters_(total_iters) {
    if (!(start_factor >= 0 && start_factor <= 1))
        throw Error("LinearLR: start_factor must be between 0 and 1, got " + std::to_string(start_factor));
    if (!(end_factor >= 0 && end_factor <= 1))
        throw Error("LinearLR: end_factor must be between 0 and 1, got " + std::to_string(end_factor));
    if (total_iters <= 0)
        throw Error("LinearLR: total_iters must be positive, got " + std::to_string(total_iters));
    initial_step();
}

double LinearLR::lr_at(int64_t epoch, size_t group) const {
    const double done = static_cast<double>(std::min(total_iters_, epoch));
    return base_lrs_[group] * (start_factor_ + (end_factor_ - start_factor_) * done / total_iters_);
}

// ---------------------------------------------------------------- OneCycleLR
OneCycleLR::OneCycleLR(Optimizer& optimizer, double max_lr, int64_t total_steps, const OneCycleOptions& o)
    : LRScheduler(optimizer), total_steps_(total_steps), options_(o) {
    if (total_steps <= 0)
        throw Error("OneCycleLR: total_steps must be positive, got " + std::to_string(total_steps));
    if (!(o.pct_start >= 0 && o.pct_start <= 1))
        throw Error("OneCycleLR: pct_start must be between 0 and 1, got " + std::to_string(o.pct_start));
    if (!(max_lr >= 0)) throw Error("OneCycleLR: max_lr must be >= 0, got " + std::to_string(max_lr));

    const double initial_lr = max_lr / o.div_factor;
    const double min_lr = initial_lr / o.final_div_factor;
    const double up_end = o.pct_start * static_cast<double>(total_steps) - 1;  // PyTorch's float(...) - 1
    const double last = static_cast<double>(total_steps - 1);
    const double hi_m = o.max_momentum, lo_m = o.base_momentum;
    if (o.three_phase)
        phases_ = {{up_end, initial_lr, max_lr, hi_m, lo_m},
                   {2 * o.pct_start * static_cast<double>(total_steps) - 2, max_lr, initial_lr, lo_m, hi_m},
                   {last, initial_lr, min_lr, hi_m, hi_m}};
    else
        phases_ = {{up_end, initial_lr, max_lr, hi_m, lo_m}, {last, max_lr, min_lr, lo_m, hi_m}};

    // The schedule starts from max_lr / div_factor, whatever the optimizer's lr was.
    for (size_t i = 0; i < base_lrs_.size(); ++i) {
        optimizer.param_groups()[i].initial_lr = initial_lr;
        base_lrs_[i] = initial_lr;
    }
    initial_step();
}

double OneCycleLR::anneal(double start, double end, double pct) const {
    if (options_.anneal_strategy == OneCycleOptions::Anneal::Linear) return (end - start) * pct + start;
    return end + (start - end) / 2.0 * (std::cos(kPi * pct) + 1);
}

std::pair<const OneCycleLR::Phase*, double> OneCycleLR::locate(int64_t step) const {
    if (step > total_steps_)
        throw Error("OneCycleLR: tried to step " + std::to_string(step + 1) + " times; total_steps is " +
                    std::to_string(total_steps_));
    const double s = static_cast<double>(step);
    double start_step = 0;
    for (size_t i = 0; i < phases_.size(); ++i) {
        const Phase& ph = phases_[i];
        if (s <= ph.end_step || i + 1 == phases_.size())
            return {&ph, (s - start_step) / (ph.end_step - start_step)};
        start_step = ph.end_step;
    }
    return {nullptr, 0};  // unreachable: the last phase takes every step
}

double OneCycleLR::lr_at(int64_t epoch, size_t /*group*/) const {
    auto [phase, pct] = locate(epoch);
    return anneal(phase->start_lr, phase->end_lr, pct);
}

std::optional<double> OneCycleLR::momentum_at(int64_t epoch, size_t /*group*/) const {
    if (!options_.cycle_momentum) return std::nullopt;
    auto [phase, pct] = locate(epoch);
    return anneal(phase->start_momentum, phase->end_momentum, pct);
}

// ---------------------------------------------------------------- SequentialLR
SequentialLR::SequentialLR(Optimizer& optimizer, std::vector<std::shared_ptr<LRScheduler>> schedulers,
                           std::vector<int64_t> milestones)
    : LRScheduler(optimizer), schedulers_(std::move(schedulers)), milestones_(std::move(milestones)) {
    if (schedulers_.empty()) throw Error("SequentialLR: no schedulers given");
    if (milestones_.size() + 1 != schedulers_.size())
        throw Error("SequentialLR: expects one milestone fewer than schedulers, got " +
                    std::to_string(schedulers_.size()) + " schedulers and " + std::to_string(milestones_.size()) +
                    " milestones");
    for (size_t i = 0; i < schedulers_.size(); ++i)
        if (!schedulers_[i] || &schedulers_[i]->optimizer() != &optimizer)
            throw Error("SequentialLR: scheduler " + std::to_string(i) + " is null or made on another optimizer");
    for (size_t i = 0; i < milestones_.size(); ++i)
        if (milestones_[i] <= (i ? milestones_[i - 1] : 0))
            throw Error("SequentialLR: milestones must be positive and increasing");
    initial_step();
}

std::pair<const LRScheduler*, int64_t> SequentialLR::locate(int64_t epoch) const {
    const size_t k = std::upper_bound(milestones_.begin(), milestones_.end(), epoch) - milestones_.begin();
    return {schedulers_[k].get(), k == 0 ? epoch : epoch - milestones_[k - 1]};
}

double SequentialLR::lr_at(int64_t epoch, size_t group) const {
    auto [s, local] = locate(epoch);
    return s->lr_at(local, group);
}

std::optional<double> SequentialLR::momentum_at(int64_t epoch, size_t group) const {
    auto [s, local] = locate(epoch);
    return s->momentum_at(local, group);
}

}  // namespace minnow
