// minnow/layers/pooling.h: max, average and global average pooling over
// [N, C, H, W], each one autograd node with its backward beside the forward
// in pooling.cpp.
//
// Windows: output (oh, ow) covers input rows oh*s - p .. oh*s - p + k - 1 and
// the same columns; Ho = (H + 2p - k) / s + 1 (PyTorch's ceil_mode=False).
#pragma once

#include <cstdint>
#include <optional>

#include "layers/module.h"

namespace minnow {

struct MaxPoolResult {
    Tensor output;
    // For every output element, the flat index ih*W + iw of the chosen input
    // pixel inside its (n, c) plane, as floats: PyTorch's return_indices.
    Tensor indices;
};

// Max over each window; padding counts as -infinity. On a tie the FIRST
// maximum in row-major window order wins (as in PyTorch), and it alone gets
// the gradient. stride defaults to kernel_size.
Tensor max_pool2d(const Tensor& x, int64_t kernel_size, std::optional<int64_t> stride = std::nullopt,
                  int64_t padding = 0);
MaxPoolResult max_pool2d_with_indices(const Tensor& x, int64_t kernel_size,
                                      std::optional<int64_t> stride = std::nullopt, int64_t padding = 0);

// Mean over each window. Padding counts as zeros and is included in the
// divisor k*k (PyTorch's default count_include_pad=True).
Tensor avg_pool2d(const Tensor& x, int64_t kernel_size, std::optional<int64_t> stride = std::nullopt,
                  int64_t padding = 0);

// F.adaptive_avg_pool2d(x, 1): the mean over H and W -> [N, C, 1, 1]. Only
// output_size 1 (global average pooling) is supported.
Tensor adaptive_avg_pool2d(const Tensor& x, int64_t output_size = 1);

// nn.MaxPool2d(kernel_size, stride=kernel_size, padding=0).
class MaxPool2d : public Module {
public:
    explicit MaxPool2d(int64_t kernel_size, std::optional<int64_t> stride = std::nullopt, int64_t padding = 0);
    Tensor forward(const Tensor& x) override;
    std::string type_name() const override { return "MaxPool2d"; }
    std::string extra_repr() const override;
    int64_t kernel_size, stride, padding;
};

// nn.AvgPool2d(kernel_size, stride=kernel_size, padding=0).
class AvgPool2d : public Module {
public:
    explicit AvgPool2d(int64_t kernel_size, std::optional<int64_t> stride = std::nullopt, int64_t padding = 0);
    Tensor forward(const Tensor& x) override;
    std::string type_name() const override { return "AvgPool2d"; }
    std::string extra_repr() const override;
    int64_t kernel_size, stride, padding;
};

// nn.AdaptiveAvgPool2d(1): global average pooling, [N, C, H, W] -> [N, C, 1, 1].
class AdaptiveAvgPool2d : public Module {
public:
    explicit AdaptiveAvgPool2d(int64_t output_size = 1);
    Tensor forward(const Tensor& x) override { return adaptive_avg_pool2d(x, output_size); }
    std::string type_name() const override { return "AdaptiveAvgPool2d"; }
    std::string extra_repr() const override { return "output_size=" + std::to_string(output_size); }
    int64_t output_size;
};

}  // namespace minnow
