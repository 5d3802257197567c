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
#include <utility>
#include <vector>

#include "core/safetensors.h"
#include "core/tensor.h"

namespace minnow {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

class Module {
public:
    virtual ~Module() = default;
    virtual Tensor forward(const Tensor& x) = 0;
    // Calls forward(), then the forward hooks. Call children through this
    // (`(*conv)(x)`), not through forward(), so their hooks run too.
    Tensor operator()(const Tensor& x);
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
    // in the order; `m` takes this module's training flag. An Error if there
    // is no such child. Handles a model keeps beside the registry (such as
    // BasicBlock::conv1) are not updated here: layers/model_surgery.h does both.
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
    template <class M>
    std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> m) {
        add_child(name, m);
        return m;
    }
    void add_child(const std::string& name, std::shared_ptr<Module> m);

private:
    void collect(const std::string& prefix, std::vector<TensorEntry>& out, bool params, bool bufs) const;
    NamedTensors params_;
    std::vector<std::pair<std::string, std::pair<Tensor, DType>>> buffers_;
    std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
    std::vector<ForwardHook> hooks_;
    bool training_ = true;
};

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
