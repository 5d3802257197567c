#include "optim/optimizer.h"

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "core/autograd.h"

namespace minnow {

// ---------------------------------------------------------------- groups
ParamGroupSpec::ParamGroupSpec(std::vector<Tensor> params) : params(std::move(params)) {}

ParamGroupSpec::ParamGroupSpec(const NamedTensors& named_params) {
    for (const auto& [name, p] : named_params) {
        names.push_back(name);
        params.push_back(p);
    }
}

std::vector<ParamGroupSpec> param_groups_no_decay_for_norm_and_bias(const NamedTensors& named_params,
                                                                    double weight_decay) {
    NamedTensors decay, no_decay;
    for (const auto& np : named_params) (np.second.dim() >= 2 ? decay : no_decay).push_back(np);
    std::vector<ParamGroupSpec> groups{ParamGroupSpec(decay), ParamGroupSpec(no_decay)};
    groups[0].weight_decay = weight_decay;
    groups[1].weight_decay = 0.0;
    return groups;
}

// ---------------------------------------------------------------- Optimizer
Optimizer::Optimizer(std::vector<ParamGroupSpec> specs, const ParamGroup& defaults) {
    std::set<const TensorImpl*> seen;
    std::set<std::string> seen_names;
    int64_t index = 0;  // over all groups: the name of an unnamed parameter
    for (auto& spec : specs) {
        if (!spec.names.empty() && spec.names.size() != spec.params.size())
            throw Error("optimizer: a param group has " + std::to_string(spec.params.size()) +
                        " parameters but " + std::to_string(spec.names.size()) + " names");
        ParamGroup g = defaults;
        g.params = std::move(spec.params);
        g.names = std::move(spec.names);
        if (spec.lr) g.lr = *spec.lr;
        if (spec.weight_decay) g.weight_decay = *spec.weight_decay;
        for (size_t i = 0; i < g.params.size(); ++i, ++index) {
            if (g.names.size() < g.params.size()) g.names.push_back(std::to_string(index));
            const Tensor& p = g.params[i];
            const std::string& n = g.names[i];
            if (!p.defined()) throw Error("optimizer: parameter '" + n + "' is an undefined tensor");
            if (!p.is_leaf()) throw Error("optimizer: can't optimize a non-leaf tensor ('" + n + "')");
            if (!seen.insert(p.impl_ptr().get()).second)
                throw Error("optimizer: parameter '" + n + "' appears more than once");
            if (!seen_names.insert(n).second)
                throw Error("optimizer: two parameters are called '" + n + "'");
        }
        groups_.push_back(std::move(g));
    }
    if (seen.empty()) throw Error("optimizer got an empty parameter list");
}

void Optimizer::step() {
    NoGradGuard no_grad;
    for (const ParamGroup& group : groups_) {
        for (size_t i = 0; i < group.params.size(); ++i) {
            Tensor p = group.params[i];
            const Tensor grad = p.grad();
            if (!grad.defined()) continue;  // no gradient: no update, no state (as in PyTorch)
            if (grad.shape() != p.shape())
                throw Error(std::string(name()) + ": the gradient of '" + group.names[i] + "' has shape " +
                            shape_str(grad.shape()) + " but the parameter has shape " + shape_str(p.shape()));
            ParamState& s = state_[p.impl_ptr().get()];
            s.step += 1;
            update(group, p, grad, s);
        }
    }
}

void Optimizer::zero_grad() {
    for (ParamGroup& g : groups_)
        for (Tensor& p : g.params) p.zero_grad();
}

const ParamState* Optimizer::state(const Tensor& param) const {
    auto it = state_.find(param.impl_ptr().get());
    return it == state_.end() ? nullptr : &it->second;
}

// ---------------------------------------------------------------- checkpoints
// The buffers of a ParamState (or const ParamState) by their PyTorch names.
template <class State>
static auto buffers_of(State& s) {
    using T = decltype(&s.exp_avg);  // Tensor* or const Tensor*
    return std::vector<std::pair<std::string, T>>{
        {"momentum_buffer", &s.momentum_buffer}, {"exp_avg", &s.exp_avg}, {"exp_avg_sq", &s.exp_avg_sq}};
}

SafetensorsFile Optimizer::state_dict(const std::string& prefix) const {
    SafetensorsFile out;
    nlohmann::ordered_json groups = nlohmann::ordered_json::array();
    for (const ParamGroup& g : groups_) {
        if (g.names.size() != g.params.size())
            throw Error(std::string(name()) + ".state_dict(): a param group has " +
                        std::to_string(g.params.size()) + " parameters but " + std::to_string(g.names.size()) +
                        " names (parameters were added to param_groups() by hand)");
        nlohmann::ordered_json j;
        j["params"] = g.names;
        j["lr"] = g.lr;
        j["weight_decay"] = g.weight_decay;
        j["momentum"] = g.momentum;
        j["dampening"] = g.dampening;
        j["nesterov"] = g.nesterov;
        j["betas"] = {g.beta1, g.beta2};
        j["eps"] = g.eps;
        j["initial_lr"] = g.initial_lr ? nlohmann::ordered_json(*g.initial_lr) : nlohmann::ordered_json();
        groups.push_back(j);

        for (size_t i = 0; i < g.params.size(); ++i) {
            auto it = state_.find(g.params[i].impl_ptr().get());
            if (it == state_.end()) continue;
            const std::string key = prefix + "state." + g.names[i] + ".";
            out.metadata[key + "step"] = std::to_string(it->second.step);
            for (const auto& [buf, t] : buffers_of(it->second))
                if (t->defined()) out.tensors.push_back({key + buf, *t, DType::F32});
        }
    }
    out.metadata[prefix + "type"] = name();
    out.metadata[prefix + "param_groups"] = groups.dump();
    return out;
}

static int64_t parse_step(const std::string& text) {
    const auto v = parse_whole_number(text);
    if (!v || *v > uint64_t{INT64_MAX}) throw Error(quote_for_error(text) + " is not a step count (a whole number >= 0)");
    return static_cast<int64_t>(*v);
}

// "" if the names agree, else where they first differ.
static std::string name_mismatch(const std::vector<std::string>& saved, const std::vector<std::string>& mine) {
    for (size_t i = 0; i < std::min(saved.size(), mine.size()); ++i)
        if (saved[i] != mine[i])
            return "parameter " + std::to_string(i) + " is '" + saved[i] + "' in the file but '" + mine[i] + "' here";
    if (saved.size() != mine.size())
        return "it has " + std::to_string(saved.size()) + " parameters in the file but " +
               std::to_string(mine.size()) + " here";
    return "";
}

// Every hyperparameter of `j` (one group of <prefix>param_groups) into `g`.
static void read_hyperparameters(const nlohmann::json& j, ParamGroup& g) {
    g.lr = j.at("lr").get<double>();
    g.weight_decay = j.at("weight_decay").get<double>();
    g.momentum = j.at("momentum").get<double>();
    g.dampening = j.at("dampening").get<double>();
    g.nesterov = j.at("nesterov").get<bool>();
    g.beta1 = j.at("betas").at(0).get<double>();
    g.beta2 = j.at("betas").at(1).get<double>();
    g.eps = j.at("eps").get<double>();
    const auto& init = j.at("initial_lr");
    g.initial_lr = init.is_null() ? std::nullopt : std::optional<double>(init.get<double>());
}

void Optimizer::load_state_dict(const SafetensorsFile& file, const std::string& prefix) {
    const std::string src = file.path.empty() ? std::string("optimizer state") : file.path;
    std::vector<std::string> problems;
    auto fail_if_problems = [&] {
        if (problems.empty()) return;
        std::string msg = src + ": cannot load the " + name() + " state:";
        for (const auto& p : problems) msg += "\n  " + p;
        throw Error(msg);
    };
    auto meta = [&](const std::string& key) -> const std::string* {
        auto it = file.metadata.find(prefix + key);
        return it == file.metadata.end() ? nullptr : &it->second;
    };
    const std::string* type = meta("type");
    const std::string* groups_text = meta("param_groups");
    if (!type || !groups_text)
        throw Error(src + ": no optimizer state (metadata '" + prefix + "type' and '" + prefix +
                    "param_groups' are missing)");
    if (*type != name())
        throw Error(src + ": the optimizer state was saved by " + *type + " and cannot be loaded into " + name());

    // ---- the groups: as many, with the same parameters; take their hyperparameters
    std::vector<ParamGroup> groups = groups_;
    try {
        const nlohmann::json saved = nlohmann::json::parse(*groups_text);
        if (!saved.is_array() || saved.size() != groups.size())
            throw Error("it holds " + (saved.is_array() ? std::to_string(saved.size()) : std::string("no")) +
                        " param groups, this " + name() + " has " + std::to_string(groups.size()));
        for (size_t gi = 0; gi < groups.size(); ++gi) {
            const std::string differ = name_mismatch(saved[gi].at("params").get<std::vector<std::string>>(),
                                                     groups[gi].names);
            if (!differ.empty()) {
                problems.push_back("param group " + std::to_string(gi) + ": " + differ);
                continue;
            }
            read_hyperparameters(saved[gi], groups[gi]);
            try {  // what the constructor would refuse, a file may not bring in
                check_group(groups[gi]);
                if (groups[gi].initial_lr && !(*groups[gi].initial_lr >= 0))
                    throw Error(std::string(name()) + ": invalid initial_lr: " + std::to_string(*groups[gi].initial_lr));
            } catch (const Error& e) {
                problems.push_back("param group " + std::to_string(gi) + ": " + e.what());
            }
        }
    } catch (const nlohmann::json::exception& e) {
        throw Error(src + ": metadata '" + prefix + "param_groups' is malformed (" + e.what() + ")");
    } catch (const Error& e) {
        throw Error(src + ": metadata '" + prefix + "param_groups' does not fit this optimizer: " + e.what());
    }
    fail_if_problems();  // (the state below would be looked up under the wrong names)

    // ---- the state of each parameter that has a step count: its buffers, of the right shape
    std::map<std::string, const TensorEntry*> unused;  // every <prefix>state.* tensor, until used
    for (const auto& e : file.tensors)
        if (e.name.rfind(prefix + "state.", 0) == 0) unused[e.name] = &e;
    std::unordered_map<const TensorImpl*, ParamState> state;
    for (const ParamGroup& g : groups) {
        for (size_t i = 0; i < g.params.size(); ++i) {
            const std::string key = prefix + "state." + g.names[i] + ".";
            const std::string* step = meta("state." + g.names[i] + ".step");
            if (!step) continue;  // never updated
            ParamState s;
            try {
                s.step = parse_step(*step);
            } catch (const Error& e) {
                problems.push_back(key + "step: " + e.what());
            }
            std::set<std::string> found;
            for (auto& [buf, t] : buffers_of(s)) {
                auto it = unused.find(key + buf);
                if (it == unused.end()) continue;
                found.insert(buf);
                const Tensor& saved = it->second->tensor;
                if (saved.shape() != g.params[i].shape())
                    problems.push_back(key + buf + " has shape " + shape_str(saved.shape()) +
                                       " but the parameter has shape " + shape_str(g.params[i].shape()));
                else
                    *t = saved.detach().clone();  // our own copy, never the caller's storage
                unused.erase(it);
            }
            for (const std::string& buf : required_buffers())
                if (!found.count(buf)) problems.push_back(key + buf + " is missing (" + key + "step is there)");
            state[g.params[i].impl_ptr().get()] = std::move(s);
        }
    }
    for (const auto& [n, e] : unused)
        problems.push_back(n + " is unexpected (no parameter of that name, or no " + prefix + "state.<param>.step)");
    fail_if_problems();

    groups_ = std::move(groups);
    state_ = std::move(state);
}

}  // namespace minnow
