// minnow/core/autograd.h: the reverse-mode autograd engine.
//
// The whole idea (as in micrograd): every differentiable op that sees an input
// requiring grad records a Node. The Node keeps what its backward needs and
// edges to the Nodes that made its inputs. Tensor::backward() walks the Nodes
// in reverse topological order, hands each one the gradient of its output and
// passes what it returns on along its edges. Leaves (parameters) end in an
// AccumulateGrad node that adds into `tensor.grad()`.
//
// Writing an op with a hand-written backward (BatchNorm is one):
//
//     struct ScaleBackward : Node {
//         float s;
//         std::vector<Tensor> backward(const Tensor& dy) override {
//             return {mul(dy, s)};                 // dx = s * dy
//         }
//         const char* name() const override { return "ScaleBackward"; }
//     };
//     Tensor scale(const Tensor& x, float s) {
//         Tensor y = mul(x, s).detach();          // or any kernel of your own
//         auto node = std::make_shared<ScaleBackward>();
//         node->s = s;
//         return attach(y, node, {x});             // records it if x needs grad
//     }
//
// backward() returns one gradient per input given to attach(), in order; an
// undefined Tensor means "no gradient for this input". Backward functions run
// with grad mode off, so they may use any op freely.
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "core/tensor.h"

namespace minnow {

struct Node;

// Where a gradient goes: the node that produced an input (or its leaf's
// AccumulateGrad). A null `fn` means that input needs no gradient.
struct Edge {
    std::shared_ptr<Node> fn;
};

struct Node {
    // Frees a long chain of nodes iteratively (see autograd.cpp).
    virtual ~Node();
    // Given dL/d(output), returns dL/d(input_i) for every input, in order.
    virtual std::vector<Tensor> backward(const Tensor& grad_output) = 0;
    virtual const char* name() const = 0;
    // Frees what the node saved for backward; called once backward has used it.
    // Override when the node holds large tensors (the default does nothing:
    // such a node's saved tensors are freed when the graph itself goes away).
    virtual void release_saved() {}

    // Whether input i wants a gradient: backward may skip the others.
    bool needs_grad(size_t i) const { return i < next_edges.size() && next_edges[i].fn != nullptr; }

    std::vector<Edge> next_edges;  // one per input, set by attach()
    Shape output_shape;            // for checking what backward is handed
    bool released = false;         // true once backward ran (the graph is freed)
};

// The node at the end of a leaf: adds the incoming gradient into leaf.grad.
struct AccumulateGrad : Node {
    explicit AccumulateGrad(std::shared_ptr<TensorImpl> leaf) : leaf(std::move(leaf)) {}
    std::vector<Tensor> backward(const Tensor& grad_output) override;
    const char* name() const override { return "AccumulateGrad"; }
    std::shared_ptr<TensorImpl> leaf;
};

// Records `node` as the creator of `output` if grad mode is on and any input
// requires grad; returns `output` (now with requires_grad and grad_fn set).
// Inputs may be undefined tensors (they get a null edge).
Tensor attach(Tensor output, std::shared_ptr<Node> node, const std::vector<Tensor>& inputs);

// True if grad mode is on and some input requires grad: an op can skip saving
// tensors for backward when this is false.
bool any_requires_grad(const std::vector<Tensor>& inputs);

// Grad mode is per thread; NoGradGuard turns it off for a scope (evaluation,
// optimizer steps, backward functions).
struct GradMode {
    static bool is_enabled();
    static void set_enabled(bool on);
};

class NoGradGuard {
public:
    NoGradGuard() : prev_(GradMode::is_enabled()) { GradMode::set_enabled(false); }
    ~NoGradGuard() { GradMode::set_enabled(prev_); }
    NoGradGuard(const NoGradGuard&) = delete;
    NoGradGuard& operator=(const NoGradGuard&) = delete;

private:
    bool prev_;
};

// The engine: see the comment at the top. Called by Tensor::backward().
void run_backward(const Tensor& root, const Tensor& grad_output);

// Told by the engine, on the thread running backward(), when a leaf's
// gradient is final for this backward() (its AccumulateGrad ran: every use
// of the leaf has added into it) and after every node. Data-parallel
// training (train/data_parallel.h) starts a bucket's allreduce there while
// the rest of backward() computes. Installed for a scope, per thread.
struct BackwardListener {
    virtual ~BackwardListener() = default;
    virtual void leaf_grad_final(const TensorImpl& leaf) = 0;
    virtual void node_done() {}
};
class BackwardListenerScope {
public:
    explicit BackwardListenerScope(BackwardListener* listener);
    ~BackwardListenerScope();
    BackwardListenerScope(const BackwardListenerScope&) = delete;
    BackwardListenerScope& operator=(const BackwardListenerScope&) = delete;

private:
    BackwardListener* prev_;
};

// Profiling: when set, the engine times every node's backward and reports it
// here (the bench app uses it for per-layer backward times). Off by default.
using BackwardTimer = std::function<void(const Node& node, double seconds)>;
void set_backward_timer(BackwardTimer timer);

}  // namespace minnow
