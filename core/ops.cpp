// The differentiable ops: each forward kernel with its backward beside it.
//
// Conventions: `dy` is dL/d(output); a backward returns dL/d(input) for each
// input, in the order given to attach(). Backward functions run with grad mode
// off, so they freely reuse the ops in this file.
#include "core/ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>

#include "core/autograd.h"
#include "core/parallel.h"
#include "kernels/gemm.h"

namespace minnow {

// ================================================================ broadcasting
// Strides of a tensor of shape `in`, as seen through the broadcast shape
// `out`: 0 along the dims where `in` is broadcast (size 1 or missing).
static std::vector<int64_t> broadcast_strides(const Shape& in, const Shape& out) {
    std::vector<int64_t> st(out.size(), 0);
    const auto cs = contiguous_strides(in);
    const size_t lead = out.size() - in.size();
    for (size_t i = 0; i < in.size(); ++i) st[lead + i] = in[i] == 1 ? 0 : cs[i];
    return st;
}

// Offset, in a tensor with strides `st`, of row `r` of a tensor of shape
// `out` (a row is a run along the last dim).
static int64_t row_offset(int64_t r, const Shape& out, const std::vector<int64_t>& st) {
    int64_t off = 0;
    for (int64_t d = static_cast<int64_t>(out.size()) - 2; d >= 0; --d) {
        off += (r % out[d]) * st[d];
        r /= out[d];
    }
    return off;
}

// out[i] = f(a[i'], b[i'']) over the broadcast shape.
template <class F>
static Tensor binary_kernel(const Tensor& a, const Tensor& b, const char* op, F f) {
    const Shape shape = broadcast_shapes(a.shape(), b.shape(), op);
    Tensor out = Tensor::empty(shape);
    const float* pa = a.data();
    const float* pb = b.data();
    float* po = out.data();
    const int64_t n = out.numel();
    if (a.shape() == b.shape()) {
#pragma omp parallel for simd if (n > kParallelGrain)
        for (int64_t i = 0; i < n; ++i) po[i] = f(pa[i], pb[i]);
        return out;
    }
    const auto sa = broadcast_strides(a.shape(), shape);
    const auto sb = broadcast_strides(b.shape(), shape);
    const int64_t inner = shape.empty() ? 1 : shape.back();
    const int64_t rows = inner == 0 ? 0 : n / inner;
    const int64_t ia = shape.empty() ? 0 : sa.back(), ib = shape.empty() ? 0 : sb.back();
#pragma omp parallel for if (n > kParallelGrain)
    for (int64_t r = 0; r < rows; ++r) {
        const float* ra = pa + row_offset(r, shape, sa);
        const float* rb = pb + row_offset(r, shape, sb);
        float* ro = po + r * inner;
        for (int64_t j = 0; j < inner; ++j) ro[j] = f(ra[j * ia], rb[j * ib]);
    }
    return out;
}

// broadcast_to: y = x repeated along the broadcast dims  =>  dx = dy summed
// back over them.
struct BroadcastBackward : Node {
    Shape input_shape;
    std::vector<Tensor> backward(const Tensor& dy) override { return {sum_to(dy, input_shape)}; }
    const char* name() const override { return "BroadcastBackward"; }
};

Tensor broadcast_to(const Tensor& x, const Shape& shape) {
    if (broadcast_shapes(x.shape(), shape, "broadcast_to") != shape)
        throw Error("broadcast_to: cannot broadcast " + shape_str(x.shape()) + " to " + shape_str(shape));
    Tensor out = Tensor::empty(shape);
    const auto sx = broadcast_strides(x.shape(), shape);
    const int64_t inner = shape.empty() ? 1 : shape.back();
    const int64_t rows = inner == 0 ? 0 : out.numel() / inner;
    const int64_t is = shape.empty() ? 0 : sx.back();
    const float* px = x.data();
    float* po = out.data();
#pragma omp parallel for if (out.numel() > kParallelGrain)
    for (int64_t r = 0; r < rows; ++r) {
        const float* src = px + row_offset(r, shape, sx);
        for (int64_t j = 0; j < inner; ++j) po[r * inner + j] = src[j * is];
    }
    auto node = std::make_shared<BroadcastBackward>();
    node->input_shape = x.shape();
    return attach(out, node, {x});
}

// ================================================================ reductions
// Splits x's dims into kept ones (one output element per index) and reduced
// ones (summed over). Offsets are in elements of x.
struct ReduceLayout {
    Shape out_shape;          // with reduced dims removed
    Shape out_shape_keepdim;  // with reduced dims set to 1
    std::vector<int64_t> kept_sizes, kept_strides, red_sizes, red_strides;
    int64_t n_out = 1, n_red = 1;

    ReduceLayout(const Shape& shape, std::vector<int64_t> dims, const char* op) {
        const int64_t nd = static_cast<int64_t>(shape.size());
        std::vector<bool> reduce(nd, dims.empty());
        for (int64_t d : dims) reduce[normalize_dim(d, nd, op)] = true;
        const auto st = contiguous_strides(shape);
        for (int64_t d = 0; d < nd; ++d) {
            if (reduce[d]) {
                red_sizes.push_back(shape[d]);
                red_strides.push_back(st[d]);
                n_red *= shape[d];
                out_shape_keepdim.push_back(1);
            } else {
                kept_sizes.push_back(shape[d]);
                kept_strides.push_back(st[d]);
                n_out *= shape[d];
                out_shape.push_back(shape[d]);
                out_shape_keepdim.push_back(shape[d]);
            }
        }
    }
    static int64_t unravel(int64_t i, const std::vector<int64_t>& sizes, const std::vector<int64_t>& strides) {
        int64_t off = 0;
        for (int64_t d = static_cast<int64_t>(sizes.size()) - 1; d >= 0; --d) {
            off += (i % sizes[d]) * strides[d];
            i /= sizes[d];
        }
        return off;
    }
    int64_t base(int64_t out_index) const { return unravel(out_index, kept_sizes, kept_strides); }
    int64_t red(int64_t j) const { return unravel(j, red_sizes, red_strides); }
    const Shape& result_shape(bool keepdim) const { return keepdim ? out_shape_keepdim : out_shape; }
};

// Sums in double so long reductions keep float precision.
static Tensor sum_kernel(const Tensor& x, const ReduceLayout& L, bool keepdim) {
    Tensor out = Tensor::empty(L.result_shape(keepdim));
    const float* px = x.data();
    float* po = out.data();
#pragma omp parallel for if (x.numel() > kParallelGrain)
    for (int64_t i = 0; i < L.n_out; ++i) {
        const float* base = px + L.base(i);
        double s = 0;
        for (int64_t j = 0; j < L.n_red; ++j) s += base[L.red(j)];
        po[i] = static_cast<float>(s);
    }
    return out;
}

// sum: y = sum_j x_j  =>  dx_j = dy (broadcast back over the reduced dims)
struct SumBackward : Node {
    Shape input_shape, keepdim_shape;
    float scale = 1.f;  // 1 for sum, 1/n for mean
    std::vector<Tensor> backward(const Tensor& dy) override {
        Tensor g = broadcast_to(dy.reshape(keepdim_shape), input_shape);
        if (scale != 1.f) mul_(g, scale);
        return {g};
    }
    const char* name() const override { return "SumBackward"; }
};

static Tensor sum_or_mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim, bool is_mean) {
    ReduceLayout L(x.shape(), dims, is_mean ? "mean" : "sum");
    Tensor out = sum_kernel(x, L, keepdim);
    const float scale = is_mean ? 1.f / static_cast<float>(L.n_red) : 1.f;
    if (is_mean) mul_(out, scale);
    auto node = std::make_shared<SumBackward>();
    node->input_shape = x.shape();
    node->keepdim_shape = L.out_shape_keepdim;
    node->scale = scale;
    return attach(out, node, {x});
}

Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
    return sum_or_mean(x, dims, keepdim, false);
}
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim) {
    return sum_or_mean(x, dims, keepdim, true);
}

Tensor sum_to(const Tensor& x, const Shape& shape) {
    if (x.shape() == shape) return x;
    if (broadcast_shapes(shape, x.shape(), "sum_to") != x.shape())
        throw Error("sum_to: cannot sum " + shape_str(x.shape()) + " down to " + shape_str(shape));
    const size_t lead = x.shape().size() - shape.size();
    std::vector<int64_t> dims;
    for (size_t d = 0; d < x.shape().size(); ++d)
        if (d < lead || (shape[d - lead] == 1 && x.shape()[d] != 1)) dims.push_back(static_cast<int64_t>(d));
    if (dims.empty()) return x.reshape(shape);
    return sum(x, dims, true).reshape(shape);
}

// var: y = 1/(n - ddof) * sum_j (x_j - m)^2, m = mean(x)
// dy/dx_j = 2 (x_j - m) / (n - ddof)  (the terms through m sum to zero)
struct VarBackward : Node {
    Tensor x, m;  // m with keepdim shape
    float denom = 1.f;
    Shape keepdim_shape;
    std::vector<Tensor> backward(const Tensor& dy) override {
        return {mul(mul(sub(x, m), dy.reshape(keepdim_shape)), 2.f / denom)};
    }
    void release_saved() override { x = m = Tensor(); }
    const char* name() const override { return "VarBackward"; }
};

Tensor var(const Tensor& x, const std::vector<int64_t>& dims, bool unbiased, bool keepdim) {
    ReduceLayout L(x.shape(), dims, "var");
    Tensor m, out;
    {
        NoGradGuard ng;
        m = mean(x, dims, true);
        Tensor d = sub(x, m);
        out = sum(mul(d, d), dims, keepdim);
    }
    const float denom = static_cast<float>(L.n_red - (unbiased ? 1 : 0));
    mul_(out, 1.f / denom);
    auto node = std::make_shared<VarBackward>();
    if (any_requires_grad({x})) {
        node->x = x.detach();
        node->m = m;
    }
    node->denom = denom;
    node->keepdim_shape = L.out_shape_keepdim;
    return attach(out, node, {x});
}

// max along one dim: y = x_k with k the first maximum  =>  dx_k = dy, else 0
struct MaxBackward : Node {
    Tensor index;  // flat offsets into x of the chosen maxima, one per output
    Shape input_shape;
    std::vector<Tensor> backward(const Tensor& dy) override {
        Tensor dx = Tensor::zeros(input_shape);
        const float* pi = index.data();
        for (int64_t i = 0; i < index.numel(); ++i) dx.data()[static_cast<int64_t>(pi[i])] += dy.data()[i];
        return {dx};
    }
    const char* name() const override { return "MaxBackward"; }
};

// Returns (values, flat offsets of the first maxima, index along dim).
static void max_kernel(const Tensor& x, int64_t dim, bool keepdim, Tensor* values, Tensor* offsets,
                       Tensor* argidx) {
    if (x.numel() == 0) throw Error("max: empty tensor of shape " + shape_str(x.shape()));
    ReduceLayout L(x.shape(), {dim}, "max");
    *values = Tensor::empty(L.result_shape(keepdim));
    *offsets = Tensor::empty(L.result_shape(keepdim));
    *argidx = Tensor::empty(L.result_shape(keepdim));
    const float* px = x.data();
#pragma omp parallel for if (x.numel() > kParallelGrain)
    for (int64_t i = 0; i < L.n_out; ++i) {
        const int64_t base = L.base(i);
        int64_t best = 0;
        float bv = px[base];
        for (int64_t j = 1; j < L.n_red; ++j) {
            const float v = px[base + j * L.red_strides[0]];
            if (v > bv || (std::isnan(v) && !std::isnan(bv))) {
                bv = v;
                best = j;
            }
        }
        values->data()[i] = bv;
        offsets->data()[i] = static_cast<float>(base + best * L.red_strides[0]);
        argidx->data()[i] = static_cast<float>(best);
    }
}

Tensor max(const Tensor& x, int64_t dim, bool keepdim) {
    Tensor values, offsets, argidx;
    max_kernel(x, dim, keepdim, &values, &offsets, &argidx);
    auto node = std::make_shared<MaxBackward>();
    node->index = offsets;
    node->input_shape = x.shape();
    return attach(values, node, {x});
}

// max of all elements: y = max_j x_j  =>  dx_j = dy / n for each of the n
// elements equal to y (the NaNs, if y is NaN), else 0. PyTorch spreads the
// gradient over ties this way for the full max (but not for max along a dim).
struct MaxAllBackward : Node {
    Tensor x;
    float value = 0.f;
    std::vector<Tensor> backward(const Tensor& dy) override {
        const float* px = x.data();
        const int64_t n = x.numel();
        const bool nan = std::isnan(value);
        auto hit = [&](float v) { return nan ? std::isnan(v) : v == value; };
        int64_t count = 0;
        for (int64_t i = 0; i < n; ++i) count += hit(px[i]);
        const float share = dy.item() / static_cast<float>(count);
        Tensor dx = Tensor::empty(x.shape());
        for (int64_t i = 0; i < n; ++i) dx.data()[i] = hit(px[i]) ? share : 0.f;
        return {dx};
    }
    void release_saved() override { x = Tensor(); }
    const char* name() const override { return "MaxAllBackward"; }
};

Tensor max(const Tensor& x) {
    Tensor values, offsets, argidx;
    max_kernel(x.reshape({-1}), 0, false, &values, &offsets, &argidx);
    auto node = std::make_shared<MaxAllBackward>();
    if (any_requires_grad({x})) node->x = x.detach();
    node->value = values.item();
    return attach(values, node, {x});
}

Tensor argmax(const Tensor& x, int64_t dim, bool keepdim) {
    Tensor values, offsets, argidx;
    max_kernel(x, dim, keepdim, &values, &offsets, &argidx);
    return argidx;
}

// log_softmax: y_j = x_j - log sum_k exp(x_k)
// dy/dx: dx_j = dy_j - softmax_j * sum_k dy_k, with softmax_j = exp(y_j)
struct LogSoftmaxBackward : Node {
    Tensor y;
    int64_t dim = 0;
    std::vector<Tensor> backward(const Tensor& dy) override {
        return {sub(dy, mul(exp(y), sum(dy, {dim}, true)))};
    }
    void release_saved() override { y = Tensor(); }
    const char* name() const override { return "LogSoftmaxBackward"; }
};

Tensor log_softmax(const Tensor& x, int64_t dim) {
    dim = normalize_dim(dim, x.dim(), "log_softmax");
    ReduceLayout L(x.shape(), {dim}, "log_softmax");
    Tensor y = Tensor::empty(x.shape());
    const float* px = x.data();
    float* py = y.data();
    const int64_t s = L.red_strides[0];
#pragma omp parallel for if (x.numel() > kParallelGrain)
    for (int64_t i = 0; i < L.n_out; ++i) {
        const int64_t base = L.base(i);
        float m = -std::numeric_limits<float>::infinity();
        for (int64_t j = 0; j < L.n_red; ++j) m = std::max(m, px[base + j * s]);
        double z = 0;
        for (int64_t j = 0; j < L.n_red; ++j) z += std::exp(static_cast<double>(px[base + j * s] - m));
        const float lse = m + static_cast<float>(std::log(z));
        for (int64_t j = 0; j < L.n_red; ++j) py[base + j * s] = px[base + j * s] - lse;
    }
    auto node = std::make_shared<LogSoftmaxBackward>();
    node->y = y.detach();
    node->dim = dim;
    return attach(y, node, {x});
}

// ================================================================ binary ops
// Each gradient is summed back down to its input's shape (sum_to), which
// undoes the broadcast.
struct AddBackward : Node {
    Shape a_shape, b_shape;
    float b_sign = 1.f;  // -1 for sub
    std::vector<Tensor> backward(const Tensor& dy) override {
        Tensor da, db;
        if (needs_grad(0)) da = sum_to(dy, a_shape);
        if (needs_grad(1)) db = b_sign == 1.f ? sum_to(dy, b_shape) : sum_to(neg(dy), b_shape);
        return {da, db};
    }
    const char* name() const override { return b_sign == 1.f ? "AddBackward" : "SubBackward"; }
};

static Tensor add_or_sub(const Tensor& a, const Tensor& b, float sign) {
    Tensor out = sign == 1.f ? binary_kernel(a, b, "add", [](float u, float v) { return u + v; })
                             : binary_kernel(a, b, "sub", [](float u, float v) { return u - v; });
    auto node = std::make_shared<AddBackward>();
    node->a_shape = a.shape();
    node->b_shape = b.shape();
    node->b_sign = sign;
    return attach(out, node, {a, b});
}

Tensor add(const Tensor& a, const Tensor& b) { return add_or_sub(a, b, 1.f); }
Tensor sub(const Tensor& a, const Tensor& b) { return add_or_sub(a, b, -1.f); }

// y = a * b  =>  da = dy * b, db = dy * a
struct MulBackward : Node {
    Tensor a, b;
    std::vector<Tensor> backward(const Tensor& dy) override {
        Tensor da, db;
        if (needs_grad(0)) da = sum_to(mul(dy, b), a.shape());
        if (needs_grad(1)) db = sum_to(mul(dy, a), b.shape());
        return {da, db};
    }
    void release_saved() override { a = b = Tensor(); }
    const char* name() const override { return "MulBackward"; }
};

Tensor mul(const Tensor& a, const Tensor& b) {
    Tensor out = binary_kernel(a, b, "mul", [](float u, float v) { return u * v; });
    auto node = std::make_shared<MulBackward>();
    if (any_requires_grad({a, b})) {
        node->a = a.detach();
        node->b = b.detach();
    }
    return attach(out, node, {a, b});
}

// y = a / b  =>  da = dy / b, db = -dy * a / b^2
struct DivBackward : Node {
    Tensor a, b;
    std::vector<Tensor> backward(const Tensor& dy) override {
        Tensor da, db;
        if (needs_grad(0)) da = sum_to(div(dy, b), a.shape());
        if (needs_grad(1)) db = sum_to(neg(div(mul(dy, a), mul(b, b))), b.shape());
        return {da, db};
    }
    void release_saved() override { a = b = Tensor(); }
    const char* name() const override { return "DivBackward"; }
};

Tensor div(const Tensor& a, const Tensor& b) {
    Tensor out = binary_kernel(a, b, "div", [](float u, float v) { return u / v; });
    auto node = std::make_shared<DivBackward>();
    if (any_requires_grad({a, b})) {
        node->a = a.detach();
        node->b = b.detach();
    }
    return attach(out, node, {a, b});
}

// y = max(a, b), NaN if either is NaN (torch.maximum). The gradient, as
// PyTorch defines it: to a where a > b, to b where b > a, half to each where
// they tie, and, where a NaN makes the comparison false both ways, to both.
//     share_a = a == b ? 1/2 : (a < b ? 0 : 1),   share_b = a == b ? 1/2 : (a > b ? 0 : 1)
struct MaximumBackward : Node {
    Tensor a, b;
    std::vector<Tensor> backward(const Tensor& dy) override {
        Tensor da, db;
        if (needs_grad(0)) {
            Tensor share = binary_kernel(a, b, "maximum", [](float u, float v) { return u == v ? 0.5f : u < v ? 0.f : 1.f; });
            da = sum_to(mul(dy, share), a.shape());
        }
        if (needs_grad(1)) {
            Tensor share = binary_kernel(a, b, "maximum", [](float u, float v) { return u == v ? 0.5f : u > v ? 0.f : 1.f; });
            db = sum_to(mul(dy, share), b.shape());
        }
        return {da, db};
    }
    void release_saved() override { a = b = Tensor(); }
    const char* name() const override { return "MaximumBackward"; }
};

Tensor maximum(const Tensor& a, const Tensor& b) {
    Tensor out = binary_kernel(a, b, "maximum", [](float u, float v) { return u != u || u >= v ? u : v; });
    auto node = std::make_shared<MaximumBackward>();
    if (any_requires_grad({a, b})) {
        node->a = a.detach();
        node->b = b.detach();
    }
    return attach(out, node, {a, b});
}

// ================================================================ unary ops
// One node serves every elementwise unary op: it keeps either the input or
// the output (whichever the derivative is cheaper in) and a function
// dx = df(dy, saved, param). Each op below states its derivative in one line.
// The node is a template on df's type, so df is inlined into the loop and
// the loop vectorises (through a function pointer it would not).
template <class DF>
struct UnaryBackward : Node {
    const char* op_name = "UnaryBackward";
    Tensor saved;  // x or y, see each op
    float param = 0.f;
    DF df;
    explicit UnaryBackward(DF f) : df(f) {}
    std::vector<Tensor> backward(const Tensor& dy) override {
        Tensor dx = Tensor::empty(dy.shape());
        const float* pd = dy.data();
        const float* ps = saved.defined() ? saved.data() : pd;  // ops that need nothing saved
        float* px = dx.data();
        const int64_t n = dy.numel();
        const float p = param;
#pragma omp parallel for simd if (n > kParallelGrain)
        for (int64_t i = 0; i < n; ++i) px[i] = df(pd[i], ps[i], p);
        return {dx};
    }
    void release_saved() override { saved = Tensor(); }
    const char* name() const override { return op_name; }
};

enum class Save { Nothing, Input, Output };

template <class F, class DF>
static Tensor unary(const Tensor& x, const char* name, F f, Save save, DF df, float param = 0.f) {
    Tensor y = Tensor::empty(x.shape());
    const float* px = x.data();
    float* py = y.data();
    const int64_t n = x.numel();
#pragma omp parallel for simd if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) py[i] = f(px[i]);
    if (!any_requires_grad({x})) return y;
    auto node = std::make_shared<UnaryBackward<DF>>(df);
    node->op_name = name;
    node->param = param;
    if (save == Save::Input) node->saved = x.detach();
    if (save == Save::Output) node->saved = y.detach();
    return attach(y, node, {x});
}

Tensor neg(const Tensor& x) {  // y = -x, dx = -dy
    return unary(x, "NegBackward", [](float v) { return -v; }, Save::Nothing,
                 [](float dy, float, float) { return -dy; });
}
Tensor add(const Tensor& x, float s) {  // y = x + s, dx = dy
    return unary(x, "AddScalarBackward", [s](float v) { return v + s; }, Save::Nothing,
                 [](float dy, float, float) { return dy; });
}
Tensor mul(const Tensor& x, float s) {  // y = s x, dx = s dy
    return unary(x, "MulScalarBackward", [s](float v) { return v * s; }, Save::Nothing,
                 [](float dy, float, float s_) { return dy * s_; }, s);
}
// x^p as PyTorch computes it: the exponents 1/2 and -1/2 by sqrt and 1 /
// sqrt, which differ from std::pow at -inf (std::pow(-inf, 1/2) = +inf,
// sqrt(-inf) = NaN; std::pow(-inf, -1/2) = 0, 1 / sqrt(-inf) = NaN); 2 as
// x * x. (torch.pow's exponents 3, -1 and -2, as x*x*x, 1/x and 1/(x*x), give
// what std::pow gives at 0, +-inf and NaN.)
static inline float pow_scalar(float v, float p) {
    if (p == 0.5f) return std::sqrt(v);
    if (p == -0.5f) return 1.f / std::sqrt(v);
    if (p == 2.f) return v * v;
    return std::pow(v, p);
}
// y = x^p, dx = (p x^(p-1)) dy, and dx = 0 for p = 0 (where x^(p-1) would
// make it NaN at x = 0), as PyTorch's pow_backward.
Tensor pow(const Tensor& x, float p) {
    return unary(x, "PowBackward", [p](float v) { return pow_scalar(v, p); }, Save::Input,
                 [](float dy, float v, float p_) { return p_ == 0.f ? 0.f : dy * (p_ * pow_scalar(v, p_ - 1.f)); }, p);
}
Tensor exp(const Tensor& x) {  // y = e^x, dx = y dy
    return unary(x, "ExpBackward", [](float v) { return std::exp(v); }, Save::Output,
                 [](float dy, float y, float) { return dy * y; });
}
Tensor log(const Tensor& x) {  // y = ln x, dx = dy / x
    return unary(x, "LogBackward", [](float v) { return std::log(v); }, Save::Input,
                 [](float dy, float v, float) { return dy / v; });
}
Tensor sqrt(const Tensor& x) {  // y = x^(1/2), dx = dy / (2 y)
    return unary(x, "SqrtBackward", [](float v) { return std::sqrt(v); }, Save::Output,
                 [](float dy, float y, float) { return dy / (2.f * y); });
}
Tensor rsqrt(const Tensor& x) {  // y = x^(-1/2), dx = -1/2 x^(-3/2) dy = -1/2 y^3 dy
    return unary(x, "RsqrtBackward", [](float v) { return 1.f / std::sqrt(v); }, Save::Output,
                 [](float dy, float y, float) { return -0.5f * dy * y * y * y; });
}
Tensor tanh(const Tensor& x) {  // dx = (1 - y^2) dy
    return unary(x, "TanhBackward", [](float v) { return std::tanh(v); }, Save::Output,
                 [](float dy, float y, float) { return dy * (1.f - y * y); });
}
Tensor sigmoid(const Tensor& x) {  // y = 1 / (1 + e^-x), dx = y (1 - y) dy
    return unary(x, "SigmoidBackward", [](float v) { return 1.f / (1.f + std::exp(-v)); }, Save::Output,
                 [](float dy, float y, float) { return dy * y * (1.f - y); });
}
// y = max(x, 0) and dx = dy where x > 0, as PyTorch: written as !(v <= 0) so
// that a NaN passes through both ways (relu(NaN) = NaN, its gradient dy),
// and the gradient at the kink x = 0 is 0.
Tensor relu(const Tensor& x) {
    return unary(x, "ReluBackward", [](float v) { return !(v <= 0.f) ? v : 0.f; }, Save::Output,
                 [](float dy, float y, float) { return !(y <= 0.f) ? dy : 0.f; });
}
Tensor abs(const Tensor& x) {  // dx = sign(x) dy
    return unary(x, "AbsBackward", [](float v) { return std::fabs(v); }, Save::Input,
                 [](float dy, float v, float) { return v > 0.f ? dy : (v < 0.f ? -dy : 0.f); });
}
Tensor square(const Tensor& x) {  // y = x^2, dx = 2 x dy
    return unary(x, "SquareBackward", [](float v) { return v * v; }, Save::Input,
                 [](float dy, float v, float) { return 2.f * v * dy; });
}

// ================================================================ matmul
// C = A B  =>  dA = dC B^T, dB = A^T dC. All three are one sgemm each
// (kernels/gemm.h), with the transposes done by the BLAS flags rather than by copies.
static void gemm_batched(bool ta, bool tb, int64_t batch, int64_t m, int64_t n, int64_t k, const float* a,
                         const float* b, float* c) {
    const int64_t lda = ta ? m : k, ldb = tb ? k : n;
    for (int64_t i = 0; i < batch; ++i)
        sgemm(ta, tb, m, n, k, a + i * m * k, lda, b + i * k * n, ldb, 0.f, c + i * m * n, n);
}

struct MatmulBackward : Node {
    Tensor a, b;
    int64_t batch = 1, m = 0, k = 0, n = 0;
    std::vector<Tensor> backward(const Tensor& dy) override {
        Tensor da, db;
        if (needs_grad(0)) {
            da = Tensor::empty(a.shape());
            gemm_batched(false, true, batch, m, k, n, dy.data(), b.data(), da.data());  // dC B^T
        }
        if (needs_grad(1)) {
            db = Tensor::empty(b.shape());
            gemm_batched(true, false, batch, k, n, m, a.data(), dy.data(), db.data());  // A^T dC
        }
        return {da, db};
    }
    void release_saved() override { a = b = Tensor(); }
    const char* name() const override { return "MatmulBackward"; }
};

Tensor matmul(const Tensor& a, const Tensor& b) {
    const bool ok2 = a.dim() == 2 && b.dim() == 2 && a.size(1) == b.size(0);
    const bool ok3 = a.dim() == 3 && b.dim() == 3 && a.size(0) == b.size(0) && a.size(2) == b.size(1);
    if (!ok2 && !ok3)
        throw Error("matmul: shapes " + shape_str(a.shape()) + " and " + shape_str(b.shape()) +
                    " do not multiply (need [m, k] x [k, n] or [b, m, k] x [b, k, n])");
    const int64_t batch = ok3 ? a.size(0) : 1, m = a.size(-2), k = a.size(-1), n = b.size(-1);
    Tensor out = Tensor::empty(ok3 ? Shape{batch, m, n} : Shape{m, n});
    if (k == 0) fill_(out, 0.f);
    else gemm_batched(false, false, batch, m, n, k, a.data(), b.data(), out.data());
    auto node = std::make_shared<MatmulBackward>();
    if (any_requires_grad({a, b})) {
        node->a = a.detach();
        node->b = b.detach();
    }
    node->batch = batch;
    node->m = m;
    node->k = k;
    node->n = n;
    return attach(out, node, {a, b});
}

// ================================================================ layout
// permute: out[i_0..] = x[i_perm...]; the gradient is permuted back by the
// inverse permutation.
struct PermuteBackward : Node {
    std::vector<int64_t> inverse;
    std::vector<Tensor> backward(const Tensor& dy) override { return {permute(dy, inverse)}; }
    const char* name() const override { return "PermuteBackward"; }
};

Tensor permute(const Tensor& x, const std::vector<int64_t>& dims) {
    const int64_t nd = x.dim();
    if (static_cast<int64_t>(dims.size()) != nd)
        throw Error("permute: " + std::to_string(dims.size()) + " dims given for shape " + shape_str(x.shape()));
    std::vector<int64_t> perm(nd), inverse(nd, -1);
    for (int64_t i = 0; i < nd; ++i) {
        perm[i] = normalize_dim(dims[i], nd, "permute");
        if (inverse[perm[i]] != -1) throw Error("permute: dim repeated in the permutation");
        inverse[perm[i]] = i;
    }
    Shape out_shape(nd);
    std::vector<int64_t> in_st = contiguous_strides(x.shape()), st(nd);
    for (int64_t i = 0; i < nd; ++i) {
        out_shape[i] = x.shape()[perm[i]];
        st[i] = in_st[perm[i]];  // stride in x of the out dim i
    }
    Tensor out = Tensor::empty(out_shape);
    const int64_t n = out.numel();
    const int64_t inner = nd == 0 ? 1 : out_shape.back();
    const int64_t rows = inner == 0 ? 0 : n / inner;
    const int64_t is = nd == 0 ? 0 : st.back();
    const float* px = x.data();
    float* po = out.data();
#pragma omp parallel for if (n > kParallelGrain)
    for (int64_t r = 0; r < rows; ++r) {
        const float* src = px + row_offset(r, out_shape, st);
        for (int64_t j = 0; j < inner; ++j) po[r * inner + j] = src[j * is];
    }
    auto node = std::make_shared<PermuteBackward>();
    node->inverse = inverse;
    return attach(out, node, {x});
}

Tensor transpose(const Tensor& x, int64_t dim0, int64_t dim1) {
    std::vector<int64_t> perm(x.dim());
    std::iota(perm.begin(), perm.end(), 0);
    std::swap(perm[normalize_dim(dim0, x.dim(), "transpose")], perm[normalize_dim(dim1, x.dim(), "transpose")]);
    return permute(x, perm);
}

// Views x as [outer, size(dim), inner] for slice and cat.
static void split_at(const Shape& s, int64_t dim, int64_t* outer, int64_t* inner) {
    *outer = 1;
    *inner = 1;
    for (int64_t i = 0; i < dim; ++i) *outer *= s[i];
    for (size_t i = dim + 1; i < s.size(); ++i) *inner *= s[i];
}

// slice: y = x[start:end:step] along dim  =>  dx = zeros, with dy written back
// into the sliced positions.
struct SliceBackward : Node {
    Shape input_shape;
    int64_t dim = 0, start = 0, step = 1;
    std::vector<Tensor> backward(const Tensor& dy) override {
        Tensor dx = Tensor::zeros(input_shape);
        int64_t outer, inner;
        split_at(input_shape, dim, &outer, &inner);
        const int64_t len = dy.shape()[dim], full = input_shape[dim];
        for (int64_t o = 0; o < outer; ++o)
            for (int64_t i = 0; i < len; ++i)
                std::memcpy(dx.data() + (o * full + start + i * step) * inner,
                            dy.data() + (o * len + i) * inner, inner * sizeof(float));
        return {dx};
    }
    const char* name() const override { return "SliceBackward"; }
};

Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step) {
    dim = normalize_dim(dim, x.dim(), "slice");
    const int64_t full = x.shape()[dim];
    if (step <= 0) throw Error("slice: step must be positive, got " + std::to_string(step));
    if (start < 0) start += full;
    if (end < 0) end += full;
    start = std::clamp<int64_t>(start, 0, full);
    end = std::clamp<int64_t>(end, start, full);
    const int64_t len = (end - start + step - 1) / step;
    Shape out_shape = x.shape();
    out_shape[dim] = len;
    Tensor out = Tensor::empty(out_shape);
    int64_t outer, inner;
    split_at(x.shape(), dim, &outer, &inner);
    for (int64_t o = 0; o < outer; ++o)
        for (int64_t i = 0; i < len; ++i)
            std::memcpy(out.data() + (o * len + i) * inner, x.data() + (o * full + start + i * step) * inner,
                        inner * sizeof(float));
    auto node = std::make_shared<SliceBackward>();
    node->input_shape = x.shape();
    node->dim = dim;
    node->start = start;
    node->step = step;
    return attach(out, node, {x});
}

// cat: y = [x_0, x_1, ...] along dim  =>  dx_i = the matching slice of dy
struct CatBackward : Node {
    int64_t dim = 0;
    std::vector<int64_t> sizes;
    std::vector<Tensor> backward(const Tensor& dy) override {
        std::vector<Tensor> dxs;
        int64_t at = 0;
        for (size_t i = 0; i < sizes.size(); ++i) {
            dxs.push_back(needs_grad(i) ? slice(dy, dim, at, at + sizes[i]) : Tensor());
            at += sizes[i];
        }
        return dxs;
    }
    const char* name() const override { return "CatBackward"; }
};

Tensor cat(const std::vector<Tensor>& xs, int64_t dim) {
    if (xs.empty()) throw Error("cat: no tensors given");
    const Shape& s0 = xs[0].shape();
    dim = normalize_dim(dim, static_cast<int64_t>(s0.size()), "cat");
    Shape out_shape = s0;
    out_shape[dim] = 0;
    std::vector<int64_t> sizes;
    for (const Tensor& t : xs) {
        bool ok = t.dim() == static_cast<int64_t>(s0.size());
        for (int64_t d = 0; ok && d < t.dim(); ++d) ok = d == dim || t.shape()[d] == s0[d];
        if (!ok)
            throw Error("cat: shapes " + shape_str(s0) + " and " + shape_str(t.shape()) +
                        " differ outside dim " + std::to_string(dim));
        sizes.push_back(t.shape()[dim]);
        out_shape[dim] += t.shape()[dim];
    }
    Tensor out = Tensor::empty(out_shape);
    int64_t outer, inner;
    split_at(out_shape, dim, &outer, &inner);
    int64_t at = 0;
    for (const Tensor& t : xs) {
        const int64_t len = t.shape()[dim];
        for (int64_t o = 0; o < outer; ++o)
            std::memcpy(out.data() + (o * out_shape[dim] + at) * inner, t.data() + o * len * inner,
                        len * inner * sizeof(float));
        at += len;
    }
    auto node = std::make_shared<CatBackward>();
    node->dim = dim;
    node->sizes = sizes;
    return attach(out, node, xs);
}

// ================================================================ in place
static void check_same_numel(const Tensor& dst, const Tensor& src, const char* op) {
    if (dst.numel() != src.numel())
        throw Error(std::string(op) + ": shapes " + shape_str(dst.shape()) + " and " + shape_str(src.shape()) +
                    " differ in size");
}

void add_(Tensor& dst, const Tensor& src, float alpha) {
    check_same_numel(dst, src, "add_");
    float* d = dst.data();
    const float* s = src.data();
    const int64_t n = dst.numel();
#pragma omp parallel for simd if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) d[i] += alpha * s[i];
}

void mul_(Tensor& dst, float s) {
    float* d = dst.data();
    const int64_t n = dst.numel();
#pragma omp parallel for simd if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) d[i] *= s;
}

void fill_(Tensor& dst, float value) {
    float* d = dst.data();
    const int64_t n = dst.numel();
#pragma omp parallel for simd if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) d[i] = value;
}

void copy_(Tensor& dst, const Tensor& src) {
    check_same_numel(dst, src, "copy_");
    std::memcpy(dst.data(), src.data(), dst.numel() * sizeof(float));
}

}  // namespace minnow
