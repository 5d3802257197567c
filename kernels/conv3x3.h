// minnow/kernels/conv3x3.h: a direct 3x3 convolution ("same" padding 1,
// stride 1) for one image, without im2col: the kernel reads the input where
// it lies. Conv2d (layers/conv2d.cpp) uses it for the forward, with the
// weights flipped and transposed for the input gradient, and a kernel of the
// same shape for the weight gradient, of its 3x3 layers whenever
// direct3x3_supported() says so; everything else takes the im2col + GEMM
// path. The kernels are AVX-512 tiles when the instruction-set level of
// kernels/cpu.h is avx512 or above, AVX2 + FMA tiles at avx2 (chosen at run
// time: a portable build uses them too), the same sums in the same order, so
// the same bits either way. See conv3x3.cpp for the derivation and the
// register tiling.
#pragma once

#include <cstdint>

namespace minnow {

// Whether conv3x3_direct handles an image of `out_channels` x H x W output
// now: active_isa() avx2 or above, out_channels a multiple of 8, W a multiple of 16 or
// one of 8, 4, 2, 1, and H*W a multiple of 16.
bool direct3x3_supported(int64_t out_channels, int64_t H, int64_t W);

// Floats of the packed weight panels, and of the padded-input scratch that
// conv3x3_direct needs for a C x H x W input.
int64_t direct3x3_packed_floats(int64_t out_channels, int64_t in_channels);
int64_t direct3x3_scratch_floats(int64_t in_channels, int64_t H, int64_t W);

// Packs the weights w [O, C, 3, 3] for conv3x3_direct, which then computes
//   transposed = false:  y = conv(x, w)                 (O outputs from C inputs)
//   transposed = true:   y = conv(x, w flipped, c<->o)  (C outputs from O inputs:
//                        the input gradient, see conv3x3.cpp)
// The layout is the same at every instruction-set level (layers/conv2d_direct3x3.cpp
// keeps packings across a change of level on that ground).
void pack3x3_weights(const float* w, int64_t O, int64_t C, bool transposed, float* packed);

// One image: y [out_channels, H, W] = conv(x [in_channels, H, W]) + bias (bias may be null),
// with `packed` from pack3x3_weights and `scratch` of direct3x3_scratch_floats floats.
void conv3x3_direct(const float* x, int64_t in_channels, int64_t H, int64_t W, const float* packed,
                    int64_t out_channels, const float* bias, float* y, float* scratch);

// Whether conv3x3_direct_weight_grad handles it now: active_isa() avx2 or
// above and out_channels a multiple of the vector width, 16 at avx512 and
// above, 8 at avx2 (any image size).
bool direct3x3_weight_grad_supported(int64_t out_channels, int64_t H, int64_t W);

// Images in a run of conv3x3_direct_weight_grad (at least 1024 pixels: its
// accumulators are added into dw once per run), and the scratch floats of a run.
int64_t direct3x3_weight_grad_images(int64_t H, int64_t W);
int64_t direct3x3_weight_grad_scratch_floats(int64_t in_channels, int64_t out_channels, int64_t H, int64_t W);

// dw [O, C, 3, 3] += the weight gradient of the same convolution for `images`
// (at most direct3x3_weight_grad_images) consecutive images x [images, C, H, W]
// with output gradients dy [images, O, H, W].
void conv3x3_direct_weight_grad(const float* x, const float* dy, int64_t images, int64_t C, int64_t H, int64_t W,
                                int64_t O, float* dw, float* scratch);

}  // namespace minnow
