// minnow/layers/int8_model.h: int8 inference of a trained cnn (post-training quantization).
//
// A real tensor x is stored as bytes q with a scale s and a zero point z:
//
//     x ~ s (q - z),   q = clamp(round(x / s) + z, 0, 127)
//
// (7-bit activations: kernels/conv_int8.h says why), and a conv's weights as
// signed bytes with one scale per output channel, symmetric (no zero point):
//
//     W[o] ~ sw[o] qw[o],   sw[o] = max|W[o]| / 127,   qw = round(W / sw[o]) in [-127, 127]
//
// Then a convolution of the real numbers is an integer one plus a per-channel
// correction, summed exactly in int32 (kernels/conv_int8.h):
//
//     conv(x)[o] + b[o] ~ sx sw[o] (acc[o] - zx Sw[o]) + b[o],   acc = sum qw qx,  Sw[o] = sum qw[o]
//
// and the bytes of the next layer's input (scale sy, zero point zy) follow in
// one multiply-add per output, with a ReLU as the lower clamp (0.0 is zy):
//
//     qy = clamp(round(acc[o] m[o] + c[o]), relu ? zy : 0, 127),
//     m[o] = sx sw[o] / sy,   c[o] = (b[o] - sx sw[o] zx Sw[o]) / sy + zy
//
// A 2x2 max-pool after it works on the bytes (rounding and clamping keep the
// order of values, so the max of the bytes is the byte of the max), in the
// same pass: the two rows of an output row pair are requantized into a small
// buffer and pooled into the next layer's input. The last conv, before the
// global average pool, goes back to float instead (y = acc m[o] + c[o] with
// m, c for sy = 1, zy = 0), and the classifier is quantized dynamically, as
// PyTorch's quantize_dynamic does for Linear layers: per-channel int8
// weights, and each image's features scaled by their own range when it runs.
// docs/int8.md has the derivation in full and the measurements.
//
// Calibration sets each activation scale from the float model's values on
// calibration images (training images, never test ones), at each conv's input:
//   MinMax      the largest value seen;
//   Percentile  the given percentile of the values (clips rare outliers);
//   Mse         the clipping point that minimises the mean squared error of
//               clipping plus rounding over the values seen (from a histogram).
// The input image, which has negative values, always takes its min and max.
//
// What it takes: a model in eval mode whose BatchNorm is folded
// (layers/fold_batchnorm.h): a Sequential (or ReferenceCNN's features and
// classifier) of Conv2d, ReLU after a conv, MaxPool2d(2) after a conv's ReLU,
// Identity, and at the end AdaptiveAvgPool2d(1), Flatten and one Linear. Any
// other layer (a BatchNorm not folded, a BasicBlock) is an Error naming it:
// resnet20's residual blocks have no int8 version here.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "kernels/conv_int8.h"
#include "layers/module.h"

namespace minnow {

enum class Calibration { MinMax, Percentile, Mse };
const char* calibration_name(Calibration c);  // "minmax", "percentile", "mse"
Calibration parse_calibration(const std::string& name);

struct Int8Options {
    Calibration calibration = Calibration::Mse;
    double percentile = 99.99;  // for Calibration::Percentile
    int8::Kernel kernel = int8::Kernel::Auto;
    int64_t batch_size = 64;    // calibration images per float forward pass
};

class Int8Model : public Module {
public:
    // One conv with what follows it (see the top).
    struct Conv {
        std::string name;                  // the Conv2d's name in the float model
        int64_t stride = 1, pad = 0;
        int8::PackedWeights weights;
        float in_scale = 1;                // sx
        int in_zero = 0;                   // zx
        bool relu = false, pool = false;   // a ReLU, and a 2x2 max-pool, after it
        bool to_float = false;             // the last conv: output in float
        int out_zero = 0;                  // zy (the byte of 0.0 in the output)
        std::vector<float> multiplier, offset;  // m[o], c[o]
    };
    // The classifier, quantized dynamically.
    struct Classifier {
        std::string name;
        int64_t in = 0, out = 0;
        std::vector<int8_t> weight;        // [out][in]
        std::vector<float> weight_scale;   // sw[o]
        std::vector<int32_t> weight_sum;   // Sw[o]
        std::vector<float> bias;           // b[o] (zeros without one)
    };

    Int8Model(std::vector<Conv> convs, Classifier classifier, int8::Kernel kernel);
    // x [N, C, H, W] float -> logits [N, classes] float. An image holding a
    // NaN or an infinity gets NaN logits (no byte stands for those).
    Tensor forward(const Tensor& x) override;
    std::string type_name() const override { return "Int8Model"; }
    std::string extra_repr() const override;
    const std::vector<Conv>& convs() const { return convs_; }
    const Classifier& classifier() const { return classifier_; }
    int8::Kernel kernel() const { return kernel_; }

private:
    void run_image(const float* x, int64_t H, int64_t W, float* logits, bool rows_in_parallel);
    std::vector<Conv> convs_;
    Classifier classifier_;
    int8::Kernel kernel_;
};

// Quantizes `model` (eval mode, BatchNorm folded; see the top) with scales
// calibrated on `calibration_images` [N, C, H, W] (normalised as for
// training). Errors name the layer that cannot be quantized.
std::shared_ptr<Int8Model> quantize_int8(Module& model, const Tensor& calibration_images,
                                         const Int8Options& options = {});

}  // namespace minnow
