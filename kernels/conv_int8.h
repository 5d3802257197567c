// minnow/kernels/conv_int8.h: the int8 convolution for inference, summing in int32.
//
//     acc[oy, ox, o] = sum_{i, j, c} W[o, c, i, j] * X[oy*s + i, ox*s + j, c]        (int32)
//
// W holds signed 8-bit weights in [-127, 127], X unsigned activations in
// [0, 127] (7 bits), in a layout with the convolution's zero padding already
// around the image (see "layouts"). Everything that makes this a quantized
// convolution of real numbers (scales, zero points, the bias, rounding back to
// 8 bits) is the caller's: layers/int8_model.h, derived in docs/int8.md. Here
// it is integer arithmetic only, so every kernel gives the same bits.
//
// Why activations have 7 bits, not 8: the AVX2 instruction that multiplies
// bytes, VPMADDUBSW, multiplies unsigned bytes of one operand by signed bytes
// of the other and adds adjacent pairs of products into a signed 16-bit
// integer, saturating. With 8-bit activations a pair can reach
// 2 * 255 * 127 = 64770, past 32767, and the saturated sum would be silently
// wrong. With activations in [0, 127] and weights in [-127, 127] a pair is at
// most 2 * 127 * 127 = 32258: no pair ever saturates, and the AVX2 kernel is
// exact. The VNNI instruction (VPDPBUSD) sums four products straight into
// int32 and has no such limit, but using the same 7 bits everywhere keeps
// every kernel's results identical. PyTorch's fbgemm backend does the same
// ("reduce_range": activations quantized to [0, 127] on x86).
//
// int32 cannot overflow: |acc| <= K * 127 * 127 with K = C*kh*kw taps, so up
// to K = 133,000 (a 3x3 conv over 14,000 channels).
//
// Layouts (bytes, channels last, because a kernel reads 4 consecutive input
// channels of one pixel as one 32-bit word):
//   * input X: [Hp][Wp][Cp], Hp = H + 2*border, Wp = W + 2*border (border >=
//     the conv's padding), Cp = C rounded up to a multiple of 4; the border is
//     the value that means 0.0 (the zero point) and the padding channels
//     anything (their weights are 0).
//   * weights: pack_weights() turns W [O][C][kh][kw] into
//     [Op/16][kh*kw][Cp/4][16][4]: blocks of 16 output channels; in a block,
//     for each tap (i, j) and group of 4 input channels, the 16 channels' 4
//     weights side by side (64 bytes: one AVX-512 vector, two AVX2 ones).
//     Op = O rounded up to 16; padding is 0.
//   * output acc: [rows][Wo][Op] int32, one row after another.
//
// Kernels, chosen at run time (best_kernel(): by the instruction-set level of
// kernels/cpu.h, so MINNOW_ISA and set_isa() choose here too, and by the
// CPU's VNNI flags):
//   * Amx: TDPBUSD on AMX tiles, up to 16 pixels x 16 output channels x 64
//     input channels per instruction (AMX-INT8: Intel Sapphire Rapids and
//     later), at level amx, reading the same layouts (conv_int8_amx.cpp).
//   * Avx512Vnni: VPDPBUSD on 512-bit vectors (AVX512-VNNI: Intel Ice Lake,
//     Sapphire Rapids; AMD Zen 4, Zen 5), at level avx512 and above.
//   * AvxVnni: VPDPBUSD on 256-bit vectors (AVX-VNNI: Intel Alder Lake and
//     later; also on CPUs with AVX512-VNNI that have it), at level avx2 and above.
//   * Avx2: VPMADDUBSW + VPMADDWD (three instructions where VNNI has one), at
//     level avx2 and above (AMD Zen 2, Zen 3; older Intel).
//   * Portable: plain C++ loops, for any CPU, and the reference the tests
//     compare the others with.
// tests/test_conv_int8.cpp checks every kernel the machine has against the
// definition above, bit for bit.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/aligned.h"

namespace minnow::int8 {

enum class Kernel { Auto, Amx, Avx512Vnni, AvxVnni, Avx2, Portable };
// The fastest kernel at the active instruction-set level (see the top).
Kernel best_kernel();
// Whether this machine can run kernel k.
bool kernel_available(Kernel k);
// "amx", "avx512_vnni", "avx_vnni", "avx2", "portable" ("auto" resolves first).
const char* kernel_name(Kernel k);
// Every kernel this machine can run, portable first: what tests loop over.
std::vector<Kernel> available_kernels();

constexpr int64_t kChannelGroup = 4;   // input channels per 32-bit word
constexpr int64_t kOutputBlock = 16;   // output channels per packed block
constexpr int kActivationMax = 127;    // activations are in [0, 127] (see the top)
constexpr int kWeightMax = 127;        // weights are in [-127, 127]
inline int64_t round_up(int64_t n, int64_t block) { return (n + block - 1) / block * block; }

// The geometry of one convolution (square stride, the same zero padding on
// every side), and of its input's buffer, whose border may be wider than the
// padding (one buffer read by a 3x3 conv with padding 1 and by a 1x1 conv
// without: a ResNet block's input).
struct ConvShape {
    int64_t C = 0, H = 0, W = 0;  // input channels and size, without padding
    int64_t O = 0, kh = 0, kw = 0, stride = 1, pad = 0;
    int64_t border = -1;          // the input buffer's border, >= pad; -1: pad
    int64_t Cp() const { return round_up(C, kChannelGroup); }
    int64_t Op() const { return round_up(O, kOutputBlock); }
    int64_t edge() const { return border < 0 ? pad : border; }
    int64_t Hp() const { return H + 2 * edge(); }  // the buffer's rows and columns
    int64_t Wp() const { return W + 2 * edge(); }
    int64_t origin() const { return edge() - pad; }  // where the padded image starts in the buffer
    int64_t Ho() const { return (H + 2 * pad - kh) / stride + 1; }
    int64_t Wo() const { return (W + 2 * pad - kw) / stride + 1; }
    int64_t input_bytes() const { return Hp() * Wp() * Cp(); }
};

// The filter, packed once; the image size comes with each call.
struct PackedWeights {
    int64_t C = 0, O = 0, kh = 0, kw = 0;
    AlignedVector<int8_t> values;  // [Op/16][kh*kw][Cp/4][16][4] (see the top)
};
// W [O][C][kh][kw], each in [-127, 127] (an Error otherwise).
PackedWeights pack_weights(const int8_t* W, int64_t O, int64_t C, int64_t kh, int64_t kw);

// acc for the output rows [oy0, oy1): acc [oy1-oy0][Wo][Op] (see the top),
// from the padded input X [Hp][Wp][Cp] of the convolution `s`, whose filter
// w is. An Error if s does not match w or its padded input is smaller than
// the kernel. Single-threaded: callers split the rows (or the images) over threads.
void conv(const uint8_t* X, const ConvShape& s, const PackedWeights& w, int64_t oy0, int64_t oy1, int32_t* acc,
          Kernel kernel = Kernel::Auto);

// ---------------------------------------------------------------- around the convolution
// These are plain loops, the same on every kernel; their arithmetic is
// spelled out so that the results do not depend on the compiler's choices
// (std::fma, std::nearbyint: round half to even).

// q = clamp(nearbyint(x * inv_scale) + zero, 0, 127) of a float image
// x [C][H][W] into the padded layout out [H+2pad][W+2pad][Cp], its border
// and padding channels set to `zero`. Returns false, leaving out unspecified,
// if x holds a NaN or an infinity (no byte means those).
bool quantize_image(const float* x, int64_t C, int64_t H, int64_t W, float inv_scale, int zero, int64_t pad,
                    uint8_t* out);

// What is added to a conv's outputs before they are rounded: the bytes of
// another tensor at the same pixels and channels (a residual connection),
// times one multiplier: v += float(residual[p * stride + o]) * multiplier.
struct Residual {
    const uint8_t* bytes = nullptr;  // none if null
    int64_t stride = 0;
    float multiplier = 0;
};

// The same bytes as quantize_image, laid out as the patches that a k x k
// conv with stride 1 and padding (k-1)/2 reads at each pixel: out [H][W][P4],
// P4 = C*k*k rounded up to 4, entry c*k*k + i*k + j of pixel (h, w) = the byte
// of x[c][h+i-p][w+j-p] (`zero` outside the image; the padding entries hold
// anything: their weights are 0). An image's first conv (3 channels) then runs as a 1x1 conv over
// C*k*k = 27 channels: one tap of 7 words instead of 9 taps of one word, each
// with a channel of 4 wasted. Returns false for a NaN or an infinity (among
// the rows it reads). Writes the output rows [h0, h1) only (h1 = -1: H), so
// that callers can split an image's rows between threads.
bool quantize_patches(const float* x, int64_t C, int64_t H, int64_t W, int64_t k, float inv_scale, int zero,
                      uint8_t* out, int64_t h0 = 0, int64_t h1 = -1);

// One output row back to 8 bits, for the next layer: for pixel p and channel o < O,
//     v = fma(float(acc[p][o]), multiplier[o], offset[o])   (+ the residual, by one more fma)
//     q = clamp(nearbyint(v), lo, 127)
// written to out[p * out_stride + o] (a ReLU is lo = the zero point; see docs/int8.md).
void requantize_row(const int32_t* acc, int64_t pixels, int64_t O, int64_t Op, const float* multiplier,
                    const float* offset, const Residual& residual, int lo, uint8_t* out, int64_t out_stride);
// conv's rows [oy0, oy1), each through requantize_row, in one call: row oy's
// bytes go to out + (oy - oy0) * out_row_stride (pixel p at p * out_stride),
// its residual (if any) is read from residual.bytes + (oy - oy0) *
// residual_row_stride. The same bits as conv, then requantize_row, row by
// row, which is what every kernel but AMX does. AMX requantizes each tile of
// 16 pixels x 16 channels while its sums are in L1 (conv_int8_amx.cpp), so
// the int32 sums of a row never go to memory.
struct Requantization {
    const float* multiplier = nullptr;
    const float* offset = nullptr;
    Residual residual;
    int64_t residual_row_stride = 0;
    int lo = 0;
    uint8_t* out = nullptr;
    int64_t out_stride = 0, out_row_stride = 0;
};
void conv_requantize(const uint8_t* X, const ConvShape& s, const PackedWeights& w, int64_t oy0, int64_t oy1,
                     const Requantization& r, Kernel kernel = Kernel::Auto);
// The same to float: y = v, then max(y, 0) if relu; out[p * out_stride + o].
void dequantize_row(const int32_t* acc, int64_t pixels, int64_t O, int64_t Op, const float* multiplier,
                    const float* offset, const Residual& residual, bool relu, float* out, int64_t out_stride);

}  // namespace minnow::int8
