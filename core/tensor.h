// minnow/core/tensor.h: the float32 N-d tensor.
//
// A Tensor is a cheap handle (a shared pointer) to a TensorImpl, so copying a
// Tensor never copies data. Every tensor is contiguous and row-major; views
// made by reshape() share the storage of the tensor they came from.
//
// The autograd fields (requires_grad, grad, grad_fn) live on the TensorImpl;
// the engine that uses them is in core/autograd.h.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/error.h"

namespace minnow {

using Shape = std::vector<int64_t>;

class Generator;
struct Node;

// "[2, 3, 4]"; used in every shape error message.
std::string shape_str(const Shape& shape);
int64_t shape_numel(const Shape& shape);
// Row-major strides of a contiguous tensor of this shape, in elements.
std::vector<int64_t> contiguous_strides(const Shape& shape);
// NumPy broadcasting of two shapes; `op` names the operation in the error.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);
// Turns a possibly negative dimension index into 0..ndim-1, or throws.
int64_t normalize_dim(int64_t dim, int64_t ndim, const char* op);

// A block of floats, 64-byte aligned. Freed blocks are cached for reuse by
// the next allocation of the same size (see tensor.cpp): a training step
// then runs without fresh page faults.
struct Storage {
    explicit Storage(int64_t numel);
    ~Storage();
    Storage(const Storage&) = delete;
    Storage& operator=(const Storage&) = delete;
    float* data = nullptr;
    int64_t numel = 0;
};

// Returns the cached free blocks to the system.
void release_cached_memory();

struct TensorImpl {
    Shape shape;
    std::shared_ptr<Storage> storage;
    int64_t offset = 0;  // in elements, into storage (views of a leading slice)

    // --- autograd ---
    bool requires_grad = false;
    std::shared_ptr<TensorImpl> grad;          // accumulated by backward() on leaves
    std::shared_ptr<Node> grad_fn;             // the node that made this tensor (null for leaves)
    std::weak_ptr<Node> grad_accumulator;      // leaves: the node that adds into `grad`
};

class Tensor {
public:
    Tensor() = default;  // an undefined tensor (like an empty Optional)
    explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

    // ---- creation ----
    static Tensor empty(const Shape& shape);  // uninitialised
    static Tensor zeros(const Shape& shape);
    static Tensor ones(const Shape& shape);
    static Tensor full(const Shape& shape, float value);
    static Tensor scalar(float value);  // 0-d tensor
    static Tensor arange(int64_t n);    // 0, 1, ..., n-1 as shape [n]
    static Tensor from_vector(const std::vector<float>& values, const Shape& shape);
    // Random tensors draw from `gen` (see core/random.h); default_generator() if null.
    static Tensor uniform(const Shape& shape, float low, float high, Generator* gen = nullptr);
    static Tensor normal(const Shape& shape, float mean, float std, Generator* gen = nullptr);

    // ---- shape and data ----
    bool defined() const { return impl_ != nullptr; }
    const Shape& shape() const { return impl().shape; }
    int64_t dim() const { return static_cast<int64_t>(impl().shape.size()); }
    int64_t size(int64_t d) const;  // negative d counts from the end
    int64_t numel() const { return shape_numel(impl().shape); }
    float* data() { return impl().storage->data + impl().offset; }
    const float* data() const { return impl().storage->data + impl().offset; }
    float item() const;  // the value of a one-element tensor
    std::vector<float> to_vector() const;
    // Element at a multi-index (slow; for tests and debugging).
    float at(std::initializer_list<int64_t> index) const;

    // A view with a new shape and the same data; one dim may be -1.
    // Differentiable (the gradient is reshaped back).
    Tensor reshape(const Shape& shape) const;
    // Flattens dims start..end (inclusive) into one.
    Tensor flatten(int64_t start = 0, int64_t end = -1) const;
    Tensor clone() const;  // a new copy of the data (differentiable)

    // ---- autograd (implemented in core/autograd.cpp) ----
    bool requires_grad() const { return impl().requires_grad; }
    // Marks a leaf as wanting a gradient; returns *this for chaining.
    Tensor& requires_grad_(bool on = true);
    bool is_leaf() const { return impl().grad_fn == nullptr; }
    // The accumulated gradient of a leaf (undefined until a backward reaches it).
    Tensor grad() const;
    void set_grad(const Tensor& g);
    void zero_grad();  // drops the gradient (PyTorch's set_to_none)
    const std::shared_ptr<Node>& grad_fn() const { return impl().grad_fn; }
    // Runs reverse-mode autodiff from this tensor. With no argument the tensor
    // must hold one element and the seed gradient is 1.
    void backward(const Tensor& grad_output = Tensor()) const;
    // The same data, cut off from the graph.
    Tensor detach() const;

    TensorImpl& impl() const {
        if (!impl_) throw Error("use of an undefined tensor");
        return *impl_;
    }
    const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
    bool same(const Tensor& other) const { return impl_ == other.impl_; }

private:
    std::shared_ptr<TensorImpl> impl_;
};

// Pretty-prints shape and (for small tensors) values.
std::string to_string(const Tensor& t);

}  // namespace minnow
