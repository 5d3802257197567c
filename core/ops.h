// minnow/core/ops.h: the differentiable tensor operations.
//
// Every op here computes its result and, if an input requires grad, records a
// Node whose backward sits next to the forward in core/ops.cpp. Binary ops
// broadcast as NumPy does. Shape errors name the op and the shapes that met.
#pragma once

#include <vector>

#include "core/tensor.h"

namespace minnow {

// ---- elementwise, broadcasting ----
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor maximum(const Tensor& a, const Tensor& b);  // NaN if either is; ties split the gradient (torch.maximum)
Tensor add(const Tensor& a, float s);
Tensor mul(const Tensor& a, float s);
Tensor pow(const Tensor& a, float exponent);

// ---- unary ----
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor rsqrt(const Tensor& x);  // 1 / sqrt(x)
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor relu(const Tensor& x);
Tensor abs(const Tensor& x);
Tensor square(const Tensor& x);

// ---- reductions over `dims` (all dims if empty) ----
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims = {}, bool keepdim = false);
// Variance; unbiased divides by n - 1 (torch.var's default), else by n.
Tensor var(const Tensor& x, const std::vector<int64_t>& dims = {}, bool unbiased = true,
           bool keepdim = false);
// Maximum along one dim; a NaN is the maximum (the first NaN, if several), and
// the gradient goes to the first maximum (torch.max(x, dim)).
Tensor max(const Tensor& x, int64_t dim, bool keepdim = false);
// Of all elements; the gradient is shared evenly by the elements equal to the
// maximum (the NaNs, if it is NaN), as torch.max(x) shares it.
Tensor max(const Tensor& x);
// Index of the first maximum along `dim` (of the first NaN, if any), as floats
// (not differentiable).
Tensor argmax(const Tensor& x, int64_t dim, bool keepdim = false);
Tensor log_softmax(const Tensor& x, int64_t dim);

// ---- linear algebra (OpenBLAS sgemm: kernels/gemm.h) ----
// [m, k] x [k, n] -> [m, n]; or batched [b, m, k] x [b, k, n] -> [b, m, n].
Tensor matmul(const Tensor& a, const Tensor& b);

// ---- layout ----
Tensor transpose(const Tensor& x, int64_t dim0, int64_t dim1);
Tensor permute(const Tensor& x, const std::vector<int64_t>& dims);
// Elements start, start+step, ... < end along `dim` (end is clamped; negative
// start/end count from the end).
Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end, int64_t step = 1);
Tensor cat(const std::vector<Tensor>& xs, int64_t dim);
// Copies x into `shape` following broadcasting rules.
Tensor broadcast_to(const Tensor& x, const Shape& shape);
// Sums x down to `shape` (the adjoint of broadcast_to): what a broadcasting
// op's backward does to the gradient of a broadcast input.
Tensor sum_to(const Tensor& x, const Shape& shape);

// ---- in place, never recorded (optimizers, initialisation, accumulation) ----
void add_(Tensor& dst, const Tensor& src, float alpha = 1.f);  // dst += alpha * src, same shape
void mul_(Tensor& dst, float s);
void fill_(Tensor& dst, float value);
void copy_(Tensor& dst, const Tensor& src);  // same numel

// ---- operators ----
inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator-(const Tensor& a) { return neg(a); }
inline Tensor operator+(const Tensor& a, float s) { return add(a, s); }
inline Tensor operator+(float s, const Tensor& a) { return add(a, s); }
inline Tensor operator-(const Tensor& a, float s) { return add(a, -s); }
inline Tensor operator-(float s, const Tensor& a) { return add(neg(a), s); }
inline Tensor operator*(const Tensor& a, float s) { return mul(a, s); }
inline Tensor operator*(float s, const Tensor& a) { return mul(a, s); }
inline Tensor operator/(const Tensor& a, float s) { return mul(a, 1.f / s); }

}  // namespace minnow
