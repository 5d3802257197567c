// minnow/layers/module.h: the Module base class, in PyTorch's words.
//
// A module owns named parameters (trained by the optimizer), named buffers
// (state that is saved but not trained, such as BatchNorm's running
// statistics) and named child modules. Names compose with dots exactly as in
// PyTorch, so `state_dict()` of the reference CNN has the keys
// `features.1.running_var`, ... and checkpoints move between minnow and
// PyTorch unchanged.
//
// Each module has its own training flag; train()/eval() set it on the module
// and every descendant (there is no global flag).
//
// A new layer: derive from Module, register what it owns in the constructor,
// implement forward(). See layers/linear.h for the smallest complete example
// and docs/new-layer.md for the walk-through.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/safetensors.h"
#include "core/tensor.h"

namespace minnow {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

class Module;

// What register_module returns: where the child sits in its parent's registry.
// Bind it to a Child<T> member; `->` reaches the child meanwhile.
template <class M>
struct Registered {
    Module* parent;
    size_t index;
    std::shared_ptr<M> module;
    M* operator->() const { return module.get(); }
};

// A typed handle to a registered child, for calling it from forward():
// `(*conv1)(x)`, `classifier->weight`. It holds no pointer to the child: every
// use reads the parent's registry, so model surgery (replace_child) cannot
// leave it pointing at the old module, and there is one set of books.
//
//     Child<Module> conv1;        // any module may take its place
//     Child<Sequential> body;     // only a Sequential (the parent calls body->size())
//     conv1 = register_module("conv1", std::make_shared<Conv2d>(3, 8, 3));
//
// T is the parent's promise about the child: replace_child refuses a
// replacement that is not a T, and leaves the model as it was. Hold a layer
// that surgery swaps for another type (fold_batchnorm makes a BatchNorm an
// Identity; to_bf16_inference makes a Conv2d a Bf16Conv2d) as Child<Module>.
// A handle belongs to one parent, so it cannot be copied (nor, then, can a
// module holding one: copy a model with make_model + load_state_dict).
template <class T>
class Child {
public:
    Child() = default;
    Child(const Child&) = delete;
    Child& operator=(const Child&) = delete;
    template <class M>
    Child& operator=(const Registered<M>& r);
    T* get() const;  // null before binding
    T& operator*() const { return *get(); }
    T* operator->() const { return get(); }
    std::shared_ptr<T> ptr() const;

private:
    Module* parent_ = nullptr;
    size_t index_ = 0;
};

class Module {
public:
    virtual ~Module() = default;
    virtual Tensor forward(const Tensor& x) = 0;
    // Calls forward(), then the forward hooks. Call children through this
    // (`(*conv)(x)`), not through forward(), so their hooks run too.
    Tensor operator()(const Tensor& x);
    // relu((*this)(x)). Through forward_relu() when nothing can observe the
    // output before the ReLU (no forward hook, no forward timer): a module
    // that can apply the ReLU in its own pass over memory (BatchNorm) does,
    // with the same bits. Sequential uses it for a child followed by a ReLU.
    Tensor call_relu(const Tensor& x);
    // relu(forward(x)); BatchNorm overrides it with its fused pass.
    virtual Tensor forward_relu(const Tensor& x);
    bool has_forward_hooks() const { return !hooks_.empty(); }
    // A hook sees the module and its output after every call (used, e.g., to
    // find the first layer whose output went non-finite). Returns its index.
    using ForwardHook = std::function<void(Module&, const Tensor& output)>;
    size_t register_forward_hook(ForwardHook hook);
    void clear_forward_hooks() { hooks_.clear(); }
    // Profiling: when set, every module call is timed and reported here
    // (module, its output, seconds; a parent's time includes its children's).
    using ForwardTimer = std::function<void(Module&, const Tensor& output, double seconds)>;
    static void set_forward_timer(ForwardTimer timer);
    // The class name, for printing and error messages ("Conv2d").
    virtual std::string type_name() const = 0;
    // Extra description for printing ("3, 64, kernel_size=3, padding=1").
    virtual std::string extra_repr() const { return ""; }

    // ---- what the module owns (recursively, with dotted names) ----
    NamedTensors named_parameters() const;
    NamedTensors named_buffers() const;
    std::vector<Tensor> parameters() const;
    std::vector<Tensor> buffers() const;
    const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& named_children() const { return children_; }
    // Every descendant with its dotted name ("" for this module itself), depth first.
    std::vector<std::pair<std::string, Module*>> named_modules();
    // Model surgery (folding BatchNorm, swapping in inference layers): puts `m`
    // in place of the child registered as `name`, keeping its name and place
    // in the order; `m` takes this module's training flag. Every Child<T>
    // handle to it sees `m` from then on. An Error, changing nothing, if there
    // is no such child or a handle holds it as a T that `m` is not.
    void replace_child(const std::string& name, std::shared_ptr<Module> m);

    // ---- modes ----
    void train(bool on = true);
    void eval() { train(false); }
    bool is_training() const { return training_; }
    void zero_grad();  // drops every parameter's gradient

    // ---- checkpoints ----
    // Parameters and buffers in PyTorch's order (each module: its parameters,
    // its buffers, then its children), with the dtype each is stored as.
    std::vector<TensorEntry> state_dict() const;
    // Copies the values into this module's tensors. With strict, every name
    // must match both ways; any mismatch (missing, unexpected, wrong shape)
    // is reported together in one Error naming `source`.
    void load_state_dict(const std::vector<TensorEntry>& state, bool strict = true,
                         const std::string& source = "state_dict");
    void save(const std::string& path, const std::map<std::string, std::string>& metadata = {}) const;
    void load(const std::string& path, bool strict = true);

    // Multi-line description of the module tree, like print(model) in PyTorch.
    std::string repr() const;

protected:
    // Registration, in the constructor. A parameter gets requires_grad; a
    // buffer does not, and the optimizer never sees it. The returned handle
    // shares storage with the registered tensor (loading copies into it).
    Tensor register_parameter(const std::string& name, Tensor t);
    Tensor register_buffer(const std::string& name, Tensor t, DType dtype = DType::F32);
    // A child: bind the result to a Child<T> member to call it from forward().
    template <class M>
    Registered<M> register_module(const std::string& name, std::shared_ptr<M> m) {
        add_child(name, m);
        return {this, children_.size() - 1, std::move(m)};
    }
    void add_child(const std::string& name, std::shared_ptr<Module> m);

private:
    template <class T>
    friend class Child;
    // What a Child<T> bound to child `index` accepts in its place.
    struct HandleType {
        size_t index;
        bool (*accepts)(const Module*);
    };
    std::vector<HandleType> handle_types_;
    void collect(const std::string& prefix, std::vector<TensorEntry>& out, bool params, bool bufs) const;
    NamedTensors params_;
    std::vector<std::pair<std::string, std::pair<Tensor, DType>>> buffers_;
    std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
    std::vector<ForwardHook> hooks_;
    bool training_ = true;
};

template <class T>
template <class M>
Child<T>& Child<T>::operator=(const Registered<M>& r) {
    static_assert(std::is_base_of_v<T, M>, "Child<T> bound to a module that is not a T");
    parent_ = r.parent;
    index_ = r.index;
    parent_->handle_types_.push_back({index_, [](const Module* m) { return dynamic_cast<const T*>(m) != nullptr; }});
    return *this;
}

// replace_child keeps the registered child a T (see Child), so the cast is sound.
template <class T>
T* Child<T>::get() const {
    return parent_ ? static_cast<T*>(parent_->children_[index_].second.get()) : nullptr;
}

template <class T>
std::shared_ptr<T> Child<T>::ptr() const {
    return parent_ ? std::static_pointer_cast<T>(parent_->children_[index_].second) : nullptr;
}

// Children called "0", "1", ... applied in order.
class Sequential : public Module {
public:
    Sequential() = default;
    explicit Sequential(std::vector<std::shared_ptr<Module>> modules);
    void push_back(std::shared_ptr<Module> m);
    Tensor forward(const Tensor& x) override;
    std::string type_name() const override { return "Sequential"; }
    size_t size() const { return named_children().size(); }
    std::shared_ptr<Module> operator[](size_t i) const { return named_children().at(i).second; }
};

}  // namespace minnow
