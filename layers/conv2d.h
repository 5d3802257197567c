// minnow/layers/conv2d.h: 2-d convolution (cross-correlation, as PyTorch's).
//
//   y[n, o, oh, ow] = b[o] + sum_{c, i, j} w[o, c, i, j] * x[n, c, oh*s - p + i, ow*s - p + j]
//
// with x read as 0 outside the image (zero padding p, stride s). Each call
// picks one of three paths for the output, the input gradient and the weight
// gradient (conv2d.cpp's plan()):
//   * im2col + GEMM over the images (any convolution; conv2d_gemm.cpp),
//   * one image over every thread, for fewer images than threads
//     (im2col + GEMMs split by rows or columns; conv2d_split.cpp),
//   * the direct 3x3 kernels of kernels/conv3x3.h for 3x3, stride 1,
//     padding 1 on a CPU with AVX2 or AVX-512 (conv2d_direct3x3.cpp).
// All give the same result up to float rounding. See conv2d.cpp for the
// layouts, the rules and the derivation of the backward.
#pragma once

#include <cstdint>

#include "core/random.h"
#include "layers/module.h"

namespace minnow {

// x [N, C, H, W], weight [O, C, kh, kw], bias [O] or undefined
//   ->  y [N, O, (H + 2p - kh) / s + 1, (W + 2p - kw) / s + 1].
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(), int64_t stride = 1,
              int64_t padding = 0);

// nn.Conv2d(in_channels, out_channels, kernel_size, stride=1, padding=0,
// bias=True) with a square kernel. Parameters "weight" [out, in, k, k] and
// "bias" [out], initialised as PyTorch does (layers/init.h) from `gen`
// (default_generator() if null).
class Conv2d : public Module {
public:
    Conv2d(int64_t in_channels, int64_t out_channels, int64_t kernel_size, int64_t stride = 1,
           int64_t padding = 0, bool bias = true, Generator* gen = nullptr);
    Tensor forward(const Tensor& x) override;
    std::string type_name() const override { return "Conv2d"; }
    std::string extra_repr() const override;

    int64_t in_channels, out_channels, kernel_size, stride, padding;
    Tensor weight, bias;  // bias undefined when built with bias = false
};

}  // namespace minnow
