// minnow/layers/conv2d_bf16.h: a bfloat16 convolution for inference.
//
// The same convolution as Conv2d (layers/conv2d.h), computed as im2col + a
// GEMM whose operands are rounded to bfloat16 (kernels/gemm_bf16.h):
//
//     y[n] = round(W) round(col(x[n])) + b       [O, P] = [O, K] x [K, P], summed in float
//
// The weights are rounded and packed once, when the layer is made from a
// Conv2d; the input is rounded when it is packed, on every call; the bias,
// the accumulation and the output stay float32, so every layer starts from
// its input rounded to bfloat16 ("activations rounded per layer"). The GEMM
// kernel is the best the CPU has (kernels/gemm_bf16.h): AMX tiles or
// AVX512-BF16, both faster than float32; on an AVX2 CPU a kernel that widens
// to float32, slower than the float32 conv (no bfloat16 arithmetic there), and
// elsewhere the portable one; all give the same numbers up to summation
// order. A conv with stride 1 and at least 32 input
// channels reads its GEMM operand straight from the packed input (no im2col
// copy); the others use im2col (see conv2d_bf16.cpp).
//
// Inference only: there is no backward, and forward() refuses training mode
// and an input that wants a gradient.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/gemm_bf16.h"
#include "layers/conv2d.h"

namespace minnow {

class Bf16Conv2d : public Module {
public:
    // Copies conv's geometry, rounds and packs its weights. `kernel` Auto
    // takes the best the machine has; an unavailable one is an Error.
    explicit Bf16Conv2d(const Conv2d& conv, bf16::Kernel kernel = bf16::Kernel::Auto);
    Tensor forward(const Tensor& x) override;
    std::string type_name() const override { return "Bf16Conv2d"; }
    std::string extra_repr() const override;
    bf16::Kernel kernel() const { return kernel_; }

    int64_t in_channels, out_channels, kernel_size, stride, padding;
    // When set, forward returns relu(conv(x)): the GEMM applies the ReLU as it
    // stores each tile of the output (to_bf16_inference sets it for a conv
    // that a ReLU follows).
    bool fused_relu = false;
    // Buffers under Conv2d's names (so the state_dict keeps its keys): the
    // weights as rounded to bfloat16 (stored as float), the float bias
    // (undefined if conv had none). The GEMM reads its own packed copy, made
    // again by forward() whenever these buffers changed (load_state_dict).
    Tensor weight, bias;

    // Stride 1 and at least 32 input channels: the direct way (B tiles read
    // from the packed input); otherwise im2col. See conv2d_bf16.cpp.
    bool direct() const { return direct_; }

private:
    void pack_if_changed();
    bf16::PackedA packed_weight_;
    std::vector<float> packed_from_;  // the weight and bias values packed_weight_ was made from
    bf16::Kernel kernel_;
    bool direct_ = false;
};

struct Bf16InferenceOptions {
    bf16::Kernel kernel = bf16::Kernel::Auto;
    bool fuse_relu = true;     // a ReLU after a conv is done by the conv
    bool eval_pooling = true;  // MaxPool2d -> EvalMaxPool2d (layers/eval_pooling.h)
};

// Rewrites an eval-mode model in place for bfloat16 inference:
//   * every Conv2d becomes a Bf16Conv2d (same name);
//   * in a Sequential, a ReLU that follows a conv, with only Identity modules
//     between (a folded BatchNorm), is done by the conv (fused_relu) and
//     becomes an Identity, so indices stay;
//   * every MaxPool2d becomes an EvalMaxPool2d (no indices for a backward).
// Everything else (BatchNorm if not folded, the ReLUs inside a BasicBlock's
// forward, the Linear classifier) stays float32. Fold BatchNorm first
// (layers/fold_batchnorm.h) so the folded convs carry it. Returns the number
// of convs replaced. An Error for a model in training mode.
int to_bf16_inference(Module& model, const Bf16InferenceOptions& options = {});

}  // namespace minnow
