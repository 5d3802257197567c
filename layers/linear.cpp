// Linear: y = x W^T + b, forward and backward side by side.
//
// Layouts (row-major): x viewed as a matrix X [M, in] (M = all leading dims
// multiplied), W [out, in], b [out], Y [M, out].
#include "layers/linear.h"

#include "core/autograd.h"
#include "kernels/gemm.h"
#include "layers/init.h"

namespace minnow {

// ---------------------------------------------------------------- backward
// Y[m, o] = sum_i X[m, i] W[o, i] + b[o]. For a loss L with G = dL/dY:
//   dL/dX[m, i] = sum_o G[m, o] W[o, i]   ->  dX = G W          [M, out] x [out, in]
//   dL/dW[o, i] = sum_m G[m, o] X[m, i]   ->  dW = G^T X        [out, M] x [M, in]
//   dL/db[o]    = sum_m G[m, o]           ->  db = column sums of G
struct LinearBackward : Node {
    Tensor x, weight;  // saved from the forward
    int64_t M = 0, in = 0, out = 0;
    std::vector<Tensor> backward(const Tensor& dy) override {
        const float* G = dy.data();
        Tensor dx, dw, db;
        if (M == 0 || in == 0 || out == 0) {  // empty matrices: every gradient is 0
            if (needs_grad(0)) dx = Tensor::zeros(x.shape());
            if (needs_grad(1)) dw = Tensor::zeros(weight.shape());
            if (needs_grad(2)) db = Tensor::zeros({out});
            return {dx, dw, db};
        }
        if (needs_grad(0)) {  // dX = G W
            dx = Tensor::empty(x.shape());
            sgemm(false, false, M, in, out, G, out, weight.data(), in, 0.f, dx.data(), in);
        }
        if (needs_grad(1)) {  // dW = G^T X
            dw = Tensor::empty(weight.shape());
            sgemm(true, false, out, in, M, G, out, x.data(), in, 0.f, dw.data(), in);
        }
        if (needs_grad(2)) {  // db = sum over rows of G (in double, as PyTorch's sum keeps precision)
            db = Tensor::empty({out});
            for (int64_t o = 0; o < out; ++o) {
                double s = 0;
                for (int64_t m = 0; m < M; ++m) s += G[m * out + o];
                db.data()[o] = static_cast<float>(s);
            }
        }
        return {dx, dw, db};
    }
    void release_saved() override { x = weight = Tensor(); }
    const char* name() const override { return "LinearBackward"; }
};

// ---------------------------------------------------------------- forward
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
    if (weight.dim() != 2)
        throw Error("Linear: weight must be [out_features, in_features], got " + shape_str(weight.shape()));
    const int64_t out = weight.size(0), in = weight.size(1);
    if (x.dim() < 1 || x.size(-1) != in)
        throw Error("Linear(" + std::to_string(in) + ", " + std::to_string(out) + "): expected input [*, " +
                    std::to_string(in) + "], got " + shape_str(x.shape()));
    if (bias.defined() && bias.shape() != Shape{out})
        throw Error("Linear: bias must be [" + std::to_string(out) + "], got " + shape_str(bias.shape()));
    const int64_t M = x.numel() / in;
    Shape y_shape = x.shape();
    y_shape.back() = out;
    Tensor y = Tensor::empty(y_shape);
    // Y starts as b in every row, and the GEMM adds X W^T to it (beta = 1):
    // the bias add costs no extra pass over Y.
    float* Y = y.data();
    for (int64_t m = 0; m < M; ++m)
        for (int64_t o = 0; o < out; ++o) Y[m * out + o] = bias.defined() ? bias.data()[o] : 0.f;
    if (M > 0 && in > 0 && out > 0)
        sgemm(false, true, M, out, in, x.data(), in, weight.data(), in, 1.f, Y, out);

    if (!any_requires_grad({x, weight, bias})) return y;
    auto node = std::make_shared<LinearBackward>();
    node->x = x.detach();
    node->weight = weight.detach();
    node->M = M;
    node->in = in;
    node->out = out;
    return attach(y, node, {x, weight, bias});
}

// ---------------------------------------------------------------- module
Linear::Linear(int64_t in_f, int64_t out_f, bool has_bias, Generator* gen)
    : in_features(in_f), out_features(out_f) {
    if (in_f < 0 || out_f < 0)
        throw Error("Linear: sizes must be non-negative, got in_features=" + std::to_string(in_f) +
                    ", out_features=" + std::to_string(out_f));
    Tensor w = Tensor::empty({out_f, in_f});
    Tensor b = has_bias ? Tensor::empty({out_f}) : Tensor();
    init::default_linear_init_(w, b, gen);
    weight = register_parameter("weight", w);
    if (has_bias) bias = register_parameter("bias", b);
}

Tensor Linear::forward(const Tensor& x) { return linear(x, weight, bias); }

std::string Linear::extra_repr() const {
    return "in_features=" + std::to_string(in_features) + ", out_features=" + std::to_string(out_features) +
           ", bias=" + (bias.defined() ? "True" : "False");
}

}  // namespace minnow
