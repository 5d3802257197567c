// minnow/layers/int8_model.h: int8 inference of a trained cnn or ResNet20 (post-training quantization).
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
// A residual connection (ResNet's relu(conv2(..) + shortcut)) adds the
// bytes of the block's input (or of its shortcut conv's output, scale sr,
// zero point zr) before the rounding, in the same multiply-adds:
//
//     v = acc[o] m[o] + c[o] + qr (sr / sy),   with c[o] lowered by zr sr / sy
//
// A 2x2 max-pool after a conv works on the bytes (rounding and clamping keep
// the order of values, so the max of the bytes is the byte of the max), in the
// same pass: the two rows of an output row pair are requantized into a small
// buffer and pooled into the next layer's input. The last conv, before the
// global average pool, goes back to float instead (y = v with m, c for
// sy = 1, zy = 0), and the classifier is quantized dynamically, as
// PyTorch's quantize_dynamic does for Linear layers: per-channel int8
// weights, and each image's features scaled by their own range when it runs.
// docs/int8.md has the derivation in full and the measurements.
//
// Calibration sets each activation's scale from the float model's values on
// calibration images (training images, never test ones):
//   MinMax      the largest value seen;
//   Percentile  the given percentile of the values (clips rare outliers);
//   Mse         the clipping point that minimises the mean squared error of
//               clipping plus rounding over the values seen (from a histogram).
// A tensor with negative values (the input image, a shortcut's output) takes
// its min and max, with a zero point.
//
// What it takes, in eval mode with BatchNorm folded (layers/fold_batchnorm.h):
//   * the cnn (ReferenceCNN) or a Sequential of Conv2d, ReLU after a conv,
//     MaxPool2d(2) after a conv or its ReLU, Identity, then
//     AdaptiveAvgPool2d(1), Flatten and one Linear;
//   * ResNet20: its stem, its BasicBlocks (identity or 1x1-conv shortcuts), the
//     global pool and the Linear.
// Anything else (a BatchNorm not folded, a GroupNorm) is an Error naming it.
//
// The first conv, over the image's 3 channels, runs as a 1x1 conv over its
// 3x3x3 = 27-byte patches (kernels/conv_int8.h, quantize_patches): the same
// bytes and sums, in a shape the kernels run several times faster.
// quantize_int8 also runs its plan of the model in float on the first
// calibration batch and refuses to go on if that does not give the model's
// own logits, so a model it misreads is an error, not silent garbage.
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
    bool image_patches = true;  // the first conv over the image's patches (see the top): the same bits, faster
};

class Int8Model : public Module {
public:
    // A tensor between convs, held as bytes (see the top).
    struct Activation {
        std::string name;      // what produces it, e.g. "features.0 -> relu"
        float scale = 1;       // s
        int zero = 0;          // z: the byte of 0.0
        int64_t channels = 0;
        int64_t border = 0;    // the widest padding of the convs that read it
    };
    // One conv with what follows it (see the top), from activation `input`
    // to `output` (-1: the float features before the global pool).
    struct Conv {
        std::string name;                  // the Conv2d's name in the float model
        int64_t stride = 1, pad = 0;
        int8::PackedWeights weights;
        int64_t patch_kernel = 0;          // k: reads the image as k x k patches (a 1x1 conv; see below)
        int input = 0, output = -1;
        int residual = -1;                 // the activation added before the ReLU, or -1
        float residual_multiplier = 0;     // sr / sy
        bool relu = false, pool = false;   // a ReLU, and a 2x2 max-pool, after it
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

    Int8Model(std::vector<Activation> activations, std::vector<Conv> convs, Classifier classifier,
              int8::Kernel kernel);
    // x [N, C, H, W] float -> logits [N, classes] float. An image holding a
    // NaN or an infinity gets NaN logits (no byte stands for those).
    Tensor forward(const Tensor& x) override;
    std::string type_name() const override { return "Int8Model"; }
    std::string extra_repr() const override;
    const std::vector<Activation>& activations() const { return activations_; }
    const std::vector<Conv>& convs() const { return convs_; }
    const Classifier& classifier() const { return classifier_; }
    int8::Kernel kernel() const { return kernel_; }

private:
    void run_image(const float* x, int64_t H, int64_t W, float* logits, bool rows_in_parallel);
    int64_t image_channels() const;
    std::vector<Activation> activations_;
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
