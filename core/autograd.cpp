// The autograd engine and the autograd methods of Tensor.
#include "core/autograd.h"

#include <chrono>
#include <unordered_map>

#include "core/ops.h"

namespace minnow {

// ---------------------------------------------------------------- grad mode
static thread_local bool grad_mode_enabled = true;
bool GradMode::is_enabled() { return grad_mode_enabled; }
void GradMode::set_enabled(bool on) { grad_mode_enabled = on; }

// ---------------------------------------------------------------- nodes
// Destroying the last handle to a graph would, by default, destroy each node
// from inside its successor's destructor: one stack frame per node, enough to
// overflow the stack for a deep graph. Instead, take the edges out first and
// free the nodes from a loop.
Node::~Node() {
    std::vector<std::shared_ptr<Node>> stack;
    for (Edge& e : next_edges)
        if (e.fn) stack.push_back(std::move(e.fn));
    while (!stack.empty()) {
        std::shared_ptr<Node> n = std::move(stack.back());
        stack.pop_back();
        if (n.use_count() == 1)  // we hold the last reference: n dies here, after giving up its edges
            for (Edge& e : n->next_edges)
                if (e.fn) stack.push_back(std::move(e.fn));
    }
}

// ---------------------------------------------------------------- leaves
std::vector<Tensor> AccumulateGrad::backward(const Tensor& grad_output) {
    if (!leaf->grad) {
        // Keep the engine's gradient itself when nothing else can see its
        // buffer (no other handle, no view): saves a full copy per leaf.
        // Otherwise an own copy: the caller may reuse its buffer.
        const bool sole = grad_output.impl_ptr().use_count() == 1 &&
                          grad_output.impl().storage.use_count() == 1 && !grad_output.requires_grad();
        leaf->grad = sole ? grad_output.impl_ptr() : grad_output.clone().impl_ptr();
    } else {
        Tensor acc(leaf->grad);
        add_(acc, grad_output);
    }
    return {};
}

// The AccumulateGrad of a leaf, shared by every use of that leaf in a graph.
static std::shared_ptr<Node> grad_accumulator(const Tensor& leaf) {
    TensorImpl& impl = leaf.impl();
    if (auto acc = impl.grad_accumulator.lock()) return acc;
    auto acc = std::make_shared<AccumulateGrad>(leaf.impl_ptr());
    acc->output_shape = impl.shape;
    impl.grad_accumulator = acc;
    return acc;
}

static Edge edge_of(const Tensor& t) {
    if (!t.defined() || !t.requires_grad()) return Edge{};
    if (t.grad_fn()) return Edge{t.grad_fn()};
    return Edge{grad_accumulator(t)};
}

bool any_requires_grad(const std::vector<Tensor>& inputs) {
    if (!GradMode::is_enabled()) return false;
    for (const Tensor& t : inputs)
        if (t.defined() && t.requires_grad()) return true;
    return false;
}

Tensor attach(Tensor output, std::shared_ptr<Node> node, const std::vector<Tensor>& inputs) {
    if (!any_requires_grad(inputs)) return output;
    node->next_edges.clear();
    for (const Tensor& t : inputs) node->next_edges.push_back(edge_of(t));
    node->output_shape = output.shape();
    output.impl().requires_grad = true;
    output.impl().grad_fn = std::move(node);
    return output;
}

// ---------------------------------------------------------------- the engine
static BackwardTimer& backward_timer() {
    static BackwardTimer timer;
    return timer;
}
void set_backward_timer(BackwardTimer timer) { backward_timer() = std::move(timer); }

static thread_local BackwardListener* backward_listener = nullptr;
BackwardListenerScope::BackwardListenerScope(BackwardListener* listener) : prev_(backward_listener) {
    backward_listener = listener;
}
BackwardListenerScope::~BackwardListenerScope() { backward_listener = prev_; }

//
// 1. Find every node reachable from the root and count, for each, how many
//    edges point at it (its dependencies). Iterative, so a graph thousands of
//    nodes deep does not overflow the stack.
// 2. Start from the root with the seed gradient. A node runs once all nodes
//    that feed it a gradient have run (Kahn's algorithm: a reverse
//    topological order). Its outputs are summed into its inputs' pending
//    gradients.
// 3. Each node releases what it saved as soon as it has run.
void run_backward(const Tensor& root, const Tensor& grad_output) {
    if (!root.requires_grad())
        throw Error("backward(): the tensor does not require grad and has no grad_fn");
    Tensor seed = grad_output;
    if (!seed.defined()) {
        if (root.numel() != 1)
            throw Error("backward(): grad can be implied only for a one-element tensor, got shape " +
                        shape_str(root.shape()));
        seed = Tensor::ones(root.shape());
    } else if (seed.shape() != root.shape()) {
        throw Error("backward(): gradient of shape " + shape_str(seed.shape()) +
                    " for a tensor of shape " + shape_str(root.shape()));
    }
    std::shared_ptr<Node> root_fn = edge_of(root).fn;

    // 1. dependency counts
    std::unordered_map<Node*, int> deps;
    std::vector<Node*> stack{root_fn.get()};
    deps[root_fn.get()] = 0;
    while (!stack.empty()) {
        Node* n = stack.back();
        stack.pop_back();
        if (n->released)
            throw Error(std::string("backward(): the graph through ") + n->name() +
                        " was already used by an earlier backward() and freed");
        for (const Edge& e : n->next_edges) {
            if (!e.fn) continue;
            auto [it, inserted] = deps.try_emplace(e.fn.get(), 0);
            ++it->second;
            if (inserted) stack.push_back(e.fn.get());
        }
    }

    // 2. run nodes whose dependencies are all done
    NoGradGuard no_grad;  // backward functions do not record a graph
    std::unordered_map<Node*, Tensor> pending{{root_fn.get(), seed}};
    std::vector<Node*> ready{root_fn.get()};
    while (!ready.empty()) {
        Node* n = ready.back();
        ready.pop_back();
        auto it = pending.find(n);
        Tensor g = it == pending.end() ? Tensor() : std::move(it->second);
        if (it != pending.end()) pending.erase(it);
        std::vector<Tensor> grads;
        if (g.defined()) {  // an undefined g: no gradient reached n, so nothing flows on
            if (backward_timer()) {
                const auto t0 = std::chrono::steady_clock::now();
                grads = n->backward(g);
                backward_timer()(*n, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
            } else {
                grads = n->backward(g);
            }
            if (!dynamic_cast<AccumulateGrad*>(n) && grads.size() != n->next_edges.size())
                throw Error(std::string(n->name()) + ": backward returned " +
                            std::to_string(grads.size()) + " gradients for " +
                            std::to_string(n->next_edges.size()) + " inputs");
        }
        if (auto* acc = dynamic_cast<AccumulateGrad*>(n)) {
            if (backward_listener && g.defined()) backward_listener->leaf_grad_final(*acc->leaf);
        } else {
            n->release_saved();
            n->released = true;
        }
        if (backward_listener) backward_listener->node_done();
        for (size_t i = 0; i < n->next_edges.size(); ++i) {
            Node* next = n->next_edges[i].fn.get();
            if (!next) continue;
            if (i < grads.size() && grads[i].defined()) {
                if (grads[i].shape() != next->output_shape)
                    throw Error(std::string(n->name()) + ": gradient " + std::to_string(i) +
                                " has shape " + shape_str(grads[i].shape()) + ", expected " +
                                shape_str(next->output_shape));
                Tensor& acc = pending[next];
                acc = acc.defined() ? add(acc, grads[i]) : grads[i];
            }
            if (--deps[next] == 0) ready.push_back(next);
        }
    }
}

// ---------------------------------------------------------------- Tensor methods
void Tensor::backward(const Tensor& grad_output) const { run_backward(*this, grad_output); }

Tensor& Tensor::requires_grad_(bool on) {
    if (!is_leaf())
        throw Error("requires_grad_() can only be set on a leaf; use detach() first");
    impl().requires_grad = on;
    return *this;
}

Tensor Tensor::grad() const { return Tensor(impl().grad); }

void Tensor::set_grad(const Tensor& g) {
    if (g.defined() && g.shape() != shape())
        throw Error("set_grad(): gradient shape " + shape_str(g.shape()) + " for tensor " +
                    shape_str(shape()));
    impl().grad = g.impl_ptr();
}

void Tensor::zero_grad() { impl().grad.reset(); }

Tensor Tensor::detach() const {
    auto out = std::make_shared<TensorImpl>();
    out->shape = impl().shape;
    out->storage = impl().storage;
    out->offset = impl().offset;
    return Tensor(out);
}

}  // namespace minnow
