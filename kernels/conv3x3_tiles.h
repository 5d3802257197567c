// minnow/kernels/conv3x3_tiles.h (internal): the pieces of the direct 3x3 convolution
// (kernels/conv3x3.cpp) that its tiles (conv3x3_kernels.h) share.
// Internal: see kernels/conv3x3.h for the interface and conv3x3.cpp for the
// derivation, the layouts and the register tiling.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace minnow::conv3x3 {

constexpr int64_t kRows = 8;            // output channels per tile
constexpr int64_t kBlockPixels = 128;   // pixels the weight gradient sums in registers (see "rounding")
constexpr int64_t kBlockChannels = 16;  // input channels summed in registers before y is updated (see "rounding")

// Where the input value of tap (i, j) for the output pixels p.. lies (see
// "layout" at the top): input + c*c_stride + i*i_stride + j*j_stride + offset(p).
// Two layouts, two types: the kernels are templates on them, so that the
// padded layout's j_stride of 1 is a constant folded into the loads' addresses
// (as a run-time stride it cost a third of the kernel's speed).
struct Padded {  // one copy, [C, H+2, W+2]: the tiles' for W a multiple of 16, the weight gradient's always
    int64_t H, W, c_stride, i_stride;
    static constexpr int64_t j_stride = 1;
    Padded(int64_t H_, int64_t W_) : H(H_), W(W_), c_stride((H_ + 2) * (W_ + 2)), i_stride(W_ + 2) {}
    int64_t offset(int64_t p) const { return (p / W) * (W + 2) + p % W; }
    void copy(const float* x, int64_t C, float* input) const {  // x [C, H, W] inside a border of zeros
        const int64_t PW = W + 2;
        for (int64_t c = 0; c < C; ++c) {
            float* p = input + c * c_stride;
            std::fill(p, p + PW, 0.f);                            // the row above
            std::fill(p + (H + 1) * PW, p + (H + 2) * PW, 0.f);  // the row below
            for (int64_t h = 0; h < H; ++h) {
                float* row = p + (h + 1) * PW;
                row[0] = 0.f, row[W + 1] = 0.f;  // left and right
                std::memcpy(row + 1, x + (c * H + h) * W, W * sizeof(float));
            }
        }
    }
};

struct Shifted {  // three shifted copies, [C, 3, H+2, W], for W = 8, 4, 2, 1
    int64_t H, W, c_stride, i_stride, j_stride;
    Shifted(int64_t H_, int64_t W_) : H(H_), W(W_), c_stride(3 * (H_ + 2) * W_), i_stride(W_), j_stride((H_ + 2) * W_) {}
    int64_t offset(int64_t p) const { return p; }
    void copy(const float* x, int64_t C, float* input) const {  // xs[c, j, r, w] = x[c, r-1, w+j-1], 0 outside
        for (int64_t c = 0; c < C; ++c)
            for (int64_t j = 0; j < 3; ++j) {
                float* p = input + c * c_stride + j * j_stride;
                std::fill(p, p + W, 0.f);
                std::fill(p + (H + 1) * W, p + (H + 2) * W, 0.f);
                for (int64_t h = 0; h < H; ++h)
                    for (int64_t w = 0; w < W; ++w) {
                        const int64_t src = w + j - 1;
                        p[(h + 1) * W + w] = src >= 0 && src < W ? x[(c * H + h) * W + src] : 0.f;
                    }
            }
    }
};

// The tiles of one instruction set: conv3x3_kernels.h, written once and
// templated on the vector width, compiled for AVX-512 in conv3x3_avx512.cpp
// and for AVX2 + FMA in conv3x3_avx2.cpp. conv3x3.cpp calls a set only when
// active_isa() (kernels/cpu.h) reaches its level. Both sets sum every output
// in the same order (see "rounding" in conv3x3.cpp), so they give the same bits.
struct Tiles {
    // One panel of 8 output channels (the packed weights wp, K x 8 floats)
    // over the whole image: y [8][P] (+ bias[0..7] if not null).
    void (*panel_padded)(const float* input, const Padded& L, int64_t C, const float* wp, const float* bias, float* y);
    void (*panel_shifted)(const float* input, const Shifted& L, int64_t C, const float* wp, const float* bias,
                          float* y);
    // dw += the weight gradient over a run of images: xps their padded
    // copies, gt their transposed output gradients Gt [p][O]; O a multiple of lanes.
    void (*weight_grad)(const Padded& L, const float* xps, const float* gt, int64_t images, int64_t C, int64_t O,
                        float* dw);
    int64_t lanes;  // floats per vector: 16 (AVX-512) or 8 (AVX2)
};
extern const Tiles avx512_tiles;  // conv3x3_avx512.cpp
extern const Tiles avx2_tiles;    // conv3x3_avx2.cpp

}  // namespace minnow::conv3x3
