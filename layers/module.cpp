#include "layers/module.h"

#include <chrono>
#include <set>
#include <sstream>

#include "core/ops.h"
#include "layers/activation.h"

namespace minnow {

static Module::ForwardTimer& forward_timer() {
    static Module::ForwardTimer timer;
    return timer;
}
void Module::set_forward_timer(ForwardTimer timer) { forward_timer() = std::move(timer); }

Tensor Module::operator()(const Tensor& x) {
    Tensor y;
    if (forward_timer()) {
        const auto t0 = std::chrono::steady_clock::now();
        y = forward(x);
        forward_timer()(*this, y, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    } else {
        y = forward(x);
    }
    for (auto& hook : hooks_) hook(*this, y);
    return y;
}

Tensor Module::forward_relu(const Tensor& x) { return relu(forward(x)); }

Tensor Module::call_relu(const Tensor& x) {
    if (!hooks_.empty() || forward_timer()) return relu((*this)(x));
    return forward_relu(x);
}

size_t Module::register_forward_hook(ForwardHook hook) {
    hooks_.push_back(std::move(hook));
    return hooks_.size() - 1;
}

// ---------------------------------------------------------------- registration
static void check_name(const std::string& name, const std::string& type) {
    if (name.empty() || name.find('.') != std::string::npos)
        throw Error(type + ": invalid member name '" + name + "' (must be non-empty, without dots)");
}

Tensor Module::register_parameter(const std::string& name, Tensor t) {
    check_name(name, type_name());
    if (!t.is_leaf()) t = t.detach();
    t.requires_grad_(true);
    params_.emplace_back(name, t);
    return t;
}

Tensor Module::register_buffer(const std::string& name, Tensor t, DType dtype) {
    check_name(name, type_name());
    t = t.detach();
    buffers_.emplace_back(name, std::make_pair(t, dtype));
    return t;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> m) {
    check_name(name, type_name());
    if (!m) throw Error(type_name() + ": child '" + name + "' is null");
    m->train(training_);
    children_.emplace_back(name, std::move(m));
}

void Module::replace_child(const std::string& name, std::shared_ptr<Module> m) {
    if (!m) throw Error(type_name() + ": replacement for child '" + name + "' is null");
    for (size_t i = 0; i < children_.size(); ++i) {
        if (children_[i].first != name) continue;
        for (const HandleType& h : handle_types_)
            if (h.index == i && !h.accepts(m.get()))
                throw Error(type_name() + ": '" + name + "' is held as a " + children_[i].second->type_name() +
                            " by its handle, and a " + m->type_name() + " cannot take its place");
        m->train(training_);
        children_[i].second = std::move(m);
        return;
    }
    throw Error(type_name() + ": no child named '" + name + "' to replace");
}

// ---------------------------------------------------------------- traversal
void Module::collect(const std::string& prefix, std::vector<TensorEntry>& out, bool params, bool bufs) const {
    if (params)
        for (const auto& [n, t] : params_) out.push_back({prefix + n, t, DType::F32});
    if (bufs)
        for (const auto& [n, tb] : buffers_) out.push_back({prefix + n, tb.first, tb.second});
    for (const auto& [n, c] : children_) c->collect(prefix + n + ".", out, params, bufs);
}

static NamedTensors to_named(const std::vector<TensorEntry>& entries) {
    NamedTensors out;
    for (const auto& e : entries) out.emplace_back(e.name, e.tensor);
    return out;
}

NamedTensors Module::named_parameters() const {
    std::vector<TensorEntry> e;
    collect("", e, true, false);
    return to_named(e);
}

NamedTensors Module::named_buffers() const {
    std::vector<TensorEntry> e;
    collect("", e, false, true);
    return to_named(e);
}

std::vector<Tensor> Module::parameters() const {
    std::vector<Tensor> out;
    for (auto& [n, t] : named_parameters()) out.push_back(t);
    return out;
}

std::vector<Tensor> Module::buffers() const {
    std::vector<Tensor> out;
    for (auto& [n, t] : named_buffers()) out.push_back(t);
    return out;
}

std::vector<std::pair<std::string, Module*>> Module::named_modules() {
    std::vector<std::pair<std::string, Module*>> out{{"", this}};
    for (auto& [n, c] : children_)
        for (auto& [cn, cm] : c->named_modules()) out.emplace_back(cn.empty() ? n : n + "." + cn, cm);
    return out;
}

void Module::train(bool on) {
    training_ = on;
    for (auto& [n, c] : children_) c->train(on);
}

void Module::zero_grad() {
    for (Tensor& p : parameters()) p.zero_grad();
}

// ---------------------------------------------------------------- checkpoints
std::vector<TensorEntry> Module::state_dict() const {
    std::vector<TensorEntry> e;
    collect("", e, true, true);
    return e;
}

void Module::load_state_dict(const std::vector<TensorEntry>& state, bool strict, const std::string& source) {
    std::map<std::string, const TensorEntry*> given;
    for (const auto& e : state) given[e.name] = &e;
    std::vector<std::string> missing, wrong;
    std::set<std::string> used;
    std::vector<std::pair<Tensor, const Tensor*>> copies;
    for (const auto& mine : state_dict()) {
        auto it = given.find(mine.name);
        if (it == given.end()) {
            missing.push_back(mine.name);
            continue;
        }
        used.insert(mine.name);
        const Tensor& src = it->second->tensor;
        if (src.shape() != mine.tensor.shape())
            wrong.push_back(mine.name + " (expected " + shape_str(mine.tensor.shape()) + ", got " +
                            shape_str(src.shape()) + ")");
        else if (it->second->dtype != mine.dtype)
            wrong.push_back(mine.name + " (expected dtype " + dtype_name(mine.dtype) + ", got " +
                            dtype_name(it->second->dtype) + ")");
        else
            copies.emplace_back(mine.tensor, &src);
    }
    std::vector<std::string> unexpected;
    for (const auto& e : state)
        if (!used.count(e.name)) unexpected.push_back(e.name);

    auto list = [](const std::vector<std::string>& v) {
        std::string s;
        for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + v[i];
        return s;
    };
    std::string problems;
    if (!wrong.empty()) problems += "\n  wrong shape or dtype: " + list(wrong);
    if (strict && !missing.empty()) problems += "\n  missing: " + list(missing);
    if (strict && !unexpected.empty()) problems += "\n  unexpected: " + list(unexpected);
    if (!problems.empty())
        throw Error("loading " + source + " into " + type_name() + " failed:" + problems);
    // Only after every check passed, so a failed load leaves the model unchanged.
    for (auto& [dst, src] : copies) copy_(dst, *src);
}

void Module::save(const std::string& path, const std::map<std::string, std::string>& metadata) const {
    save_safetensors(path, state_dict(), metadata);
}

void Module::load(const std::string& path, bool strict) {
    SafetensorsFile f = load_safetensors(path);
    load_state_dict(f.tensors, strict, path);
}

std::string Module::repr() const {
    std::ostringstream os;
    os << type_name() << "(" << extra_repr();
    if (!children_.empty()) {
        os << "\n";
        for (const auto& [n, c] : children_) {
            std::string sub = c->repr();
            // indent nested lines
            std::string indented;
            for (char ch : sub) {
                indented += ch;
                if (ch == '\n') indented += "  ";
            }
            os << "  (" << n << "): " << indented << "\n";
        }
    }
    os << ")";
    return os.str();
}

// ---------------------------------------------------------------- Sequential
Sequential::Sequential(std::vector<std::shared_ptr<Module>> modules) {
    for (auto& m : modules) push_back(std::move(m));
}

void Sequential::push_back(std::shared_ptr<Module> m) { add_child(std::to_string(size()), std::move(m)); }

// A child followed by a ReLU that nothing observes (no hooks) is one
// call_relu(): BatchNorm + ReLU run as one pass, the same values either way.
Tensor Sequential::forward(const Tensor& x) {
    Tensor h = x;
    const auto& children = named_children();
    for (size_t i = 0; i < children.size(); ++i) {
        Module& m = *children[i].second;
        const bool relu_next = i + 1 < children.size() &&
                               dynamic_cast<const ReLU*>(children[i + 1].second.get()) &&
                               !children[i + 1].second->has_forward_hooks();
        if (relu_next && !forward_timer()) {
            h = m.call_relu(h);
            ++i;
        } else {
            h = m(h);
        }
    }
    return h;
}

}  // namespace minnow
