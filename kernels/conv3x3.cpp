// Direct 3x3 convolution, padding 1, stride 1, for one image: no im2col.
//
// ---------------------------------------------------------------- files
// This file: the layouts' copies, the weight packing and the drivers (which
// tile goes where), plain C++ for any CPU. conv3x3_tiles.h: the layouts and
// the constants both files share. conv3x3_avx512.cpp: the tiles themselves
// (AVX-512 intrinsics), entered only when active_isa() (kernels/cpu.h)
// reaches avx512, which direct3x3_supported() checks.
//
// ---------------------------------------------------------------- why
// The im2col path (layers/conv2d_gemm.cpp) writes every input pixel 9 times
// into a col matrix, and OpenBLAS then copies ("packs") that matrix once more
// into the order its kernel reads. For a 3x3 "same" convolution both copies
// can go: row k = (c, i, j) of col, for 16 consecutive output pixels, is just
// 16 input pixels that sit next to each other in memory, shifted. So the
// kernel loads them straight from the input.
//
// ---------------------------------------------------------------- layout
// The image is copied once inside a border of zeros, xp [C, H+2, W+2] with
// x[c, h, w] = xp[c, h+1, w+1]. Then for tap (i, j)
//   x[c, oh - 1 + i, ow - 1 + j] = xp[c, oh + i, ow + j]
// and the 16 output pixels (oh, ow..ow+15) of one output row need ONE load of
// the 16 floats at xp[c, oh + i, ow + j], when W is a multiple of 16.
//
// Narrower images (W = 8, 4, 2, 1: a vector spans 16/W output rows) get three
// shifted copies instead, xs [C, 3, H+2, W] with xs[c, j, r, w] = x[c, r-1, w+j-1]
// (0 outside the image): rows of width W with no border between them, so
// output pixels p..p+15 (p = oh*W + ow) read the 16 floats at
// xs[c, j, oh + i, ow], consecutive across rows.
//
// Either way the input value of tap (i, j) for the output pixels starting at p
// sits at   input + c*c_stride + i*i_stride + j*j_stride + offset(p)
// (struct InputLayout), and
//
//   y[o, oh, ow] = b[o] + sum_{c,i,j} w[o, c, i, j] * x[c, oh - 1 + i, ow - 1 + j]   (0 outside)
//
// ---------------------------------------------------------------- tiling
// One tile of the output is 8 output channels x 48 output pixels (three
// vectors of 16): 24 accumulator registers. For each of the K = 9C weights of
// the tile's channels, the kernel loads 3 vectors of input and broadcasts 8
// weights into 24 FMAs (tiles of 32 pixels, 16 FMAs for 10 loads, ran 3-10%
// slower). The last tile of an image takes the 16 or 32 pixels left. The
// weights are packed so those 8 sit side by side, in the order the kernel walks k:
//   packed[(ob*K + k)*8 + r] = w[8*ob + r, c, i, j],   k = (c*3 + i)*3 + j.
//
// ---------------------------------------------------------------- rounding
// A tile's accumulators do not run over all K = 9C products in one chain:
// the products of a block of kBlockChannels input channels (144 of them) are
// summed in registers from zero, and the block's sum is then added to the
// tile's sum so far, kept in y. In one chain of n terms each partial sum is
// rounded at the size of everything added before it, and the error grows
// about like n; in C/16 blocks it is about 1/sqrt(C/16) of that, the size a
// GEMM's blocking over K gives. In one chain, the 3x3 convolutions of the
// reference CNN (K = 576 and 1152) rounded 1.9-2.5x worse than PyTorch's
// float32 convolution (rms error against a float64 one); in blocks they round
// as it does. The bias is added after the last block, as a GEMM with beta = 1
// adds it. The cost: one load, add and store of the 24 accumulators per 144
// FMAs each. The weight gradient's sums over pixels are blocked the same way
// (kBlockPixels pixels in registers, then added to a total).
//
// Rounding decides more than the last digits where a ReLU input or the two
// largest values of a max-pool window lie within rounding of each other: there
// float32 implementations that round differently send that pixel's gradient
// down different branches. At a batch of 2 or 3 one such pixel moves weight
// gradients by up to a few percent of their largest element; PyTorch's own
// float32 run, against a float64 one, is off by more than 1e-4 of the largest
// element in 4-13% of random cases at batches 2 to 8 (reference CNN, real
// CIFAR-10 images), as often as minnow's. tests/fixtures/make_fixtures.py
// keeps its inputs clear of those points.
//
// ---------------------------------------------------------------- input gradient
// With G = dL/dy, each x[c, h, w] fed y[o, h+1-i, w+1-j] with weight
// w[o, c, i, j], so
//   dx[c, h, w] = sum_{o,i,j} w[o, c, i, j] * G[o, h+1-i, w+1-j]
//               = sum_{o,i',j'} w[o, c, 2-i', 2-j'] * G[o, h-1+i', w-1+j']     (i' = 2-i, j' = 2-j)
// which is the same "same" convolution of G, with weights w'[c, o, i', j'] =
// w[o, c, 2-i', 2-j'] (flipped, input and output channels swapped):
// pack3x3_weights(..., transposed = true) packs those.
//
// ---------------------------------------------------------------- weight gradient
//   dw[o, c, i, j] = sum_{n, oh, ow} G[n, o, oh, ow] * xp[n, c, oh + i, ow + j]
// a sum over pixels. Here the vectors run along 16 OUTPUT channels: G of each
// image is first transposed to Gt [p][o], then for each pixel two loads of
// Gt[p][o0..o0+31] meet 4 input channels x 3 taps j (for one kernel row i),
// each input value broadcast once for both: 24 accumulators, 24 FMAs for 14
// loads a pixel, and no sums across lanes. (With one vector of 16 output
// channels and 8 input channels, 25 loads for 24 FMAs, it ran at 105-112
// GFLOP/s on one thread against 143-164; with O = 16 that is what is left.
// A first version with vectors along the pixels had to add up 16 lanes per
// channel and tap.) The accumulators run over
// a few images at a time (at least 1024 pixels) before they are added into dw.
// It reads the padded layout (one copy with a border) whatever W is, since the
// pixels go one by one; O must be a multiple of 16.
#include "kernels/conv3x3.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "kernels/conv3x3_tiles.h"
#include "kernels/cpu.h"

namespace minnow {

using namespace conv3x3;

bool direct3x3_supported(int64_t out_channels, int64_t H, int64_t W) {
    return isa_active(Isa::avx512) && out_channels % kRows == 0 && H >= 1 && W >= 1 && (W % 16 == 0 || 16 % W == 0) &&
           (H * W) % 16 == 0;
}

bool direct3x3_weight_grad_supported(int64_t out_channels, int64_t H, int64_t W) {
    return isa_active(Isa::avx512) && out_channels % 16 == 0 && H >= 1 && W >= 1;
}

int64_t direct3x3_packed_floats(int64_t out_channels, int64_t in_channels) { return out_channels * in_channels * 9; }
int64_t direct3x3_scratch_floats(int64_t in_channels, int64_t H, int64_t W) {
    return W % 16 == 0 ? in_channels * (H + 2) * (W + 2)  // padded
                       : in_channels * 3 * (H + 2) * W;   // three shifted copies
}
int64_t direct3x3_weight_grad_images(int64_t H, int64_t W) { return std::max<int64_t>(1, 1024 / (H * W)); }
int64_t direct3x3_weight_grad_scratch_floats(int64_t in_channels, int64_t out_channels, int64_t H, int64_t W) {
    // the run's padded images and transposed output gradients
    return direct3x3_weight_grad_images(H, W) * (in_channels * (H + 2) * (W + 2) + H * W * out_channels);
}

void pack3x3_weights(const float* w, int64_t O, int64_t C, bool transposed, float* packed) {
    const int64_t outs = transposed ? C : O, ins = transposed ? O : C, K = ins * 9;
    for (int64_t out = 0; out < outs; ++out)
        for (int64_t in = 0; in < ins; ++in)
            for (int64_t i = 0; i < 3; ++i)
                for (int64_t j = 0; j < 3; ++j) {
                    const float v = transposed ? w[((in * C + out) * 3 + (2 - i)) * 3 + (2 - j)]  // w[o=in, c=out]
                                               : w[((out * C + in) * 3 + i) * 3 + j];
                    const int64_t k = (in * 3 + i) * 3 + j;
                    packed[((out / kRows) * K + k) * kRows + out % kRows] = v;
                }
}

namespace {

template <class Layout>
void forward(const Layout& L, const float* x, int64_t C, const float* packed, int64_t O, const float* bias, float* y,
             float* scratch) {
    const int64_t P = L.H * L.W, K = 9 * C;
    L.copy(x, C, scratch);
    // Channel panel by panel (its weights, K x 8 floats, stay in L1/L2 while
    // the kernel sweeps the image), 48 pixels at a time.
    for (int64_t ob = 0; ob < O / kRows; ++ob) {
        const float* wp = packed + ob * K * kRows;
        const float* b = bias ? bias + ob * kRows : nullptr;
        float* yo = y + ob * kRows * P;
        int64_t p0 = 0;
        for (; p0 + 48 <= P; p0 += 48) avx512::tile(3, scratch, L, C, wp, b, p0, P, yo);
        if (P - p0 == 32) avx512::tile(2, scratch, L, C, wp, b, p0, P, yo);
        else if (P - p0 == 16) avx512::tile(1, scratch, L, C, wp, b, p0, P, yo);
    }
}

void weight_grad(const Padded& L, const float* x, const float* dy, int64_t images, int64_t C, int64_t O, float* dw,
                 float* scratch) {
    const int64_t P = L.H * L.W, xsize = C * L.c_stride;
    float* gt = scratch + images * xsize;
    for (int64_t n = 0; n < images; ++n) {
        L.copy(x + n * C * P, C, scratch + n * xsize);
        const float* g = dy + n * O * P;  // Gt[n][p][o] = G[n, o, p], 16 pixels at a time
        float* t = gt + n * P * O;
        for (int64_t p0 = 0; p0 < P; p0 += 16)
            for (int64_t o = 0; o < O; ++o)
                for (int64_t p = p0; p < std::min(P, p0 + 16); ++p) t[p * O + o] = g[o * P + p];
    }
    // 24 accumulators: 32 output channels x 4 input channels x 3 taps where O
    // allows (each broadcast then feeds 2 FMAs), else 16 x 8 x 3; the last
    // block of input channels takes what is left.
    const bool two = O % 32 == 0;
    const int64_t ob = two ? 32 : 16, cb = two ? 4 : 8;
    for (int64_t o0 = 0; o0 < O; o0 += ob)
        for (int64_t c0 = 0; c0 < C; c0 += cb)
            for (int64_t i = 0; i < 3; ++i) {
                const int64_t n = std::min(cb, C - c0);
                avx512::weight_grad_block(two, n, L, scratch, gt, images, C, O, o0, c0, i, dw);
            }
}

}  // namespace

void conv3x3_direct(const float* x, int64_t C, int64_t H, int64_t W, const float* packed, int64_t O,
                    const float* bias, float* y, float* scratch) {
    if (!direct3x3_supported(O, H, W))
        throw std::logic_error("conv3x3_direct: needs AVX-512 (active_isa() avx512 or above) and a supported size");
    if (W % 16 == 0) forward(Padded(H, W), x, C, packed, O, bias, y, scratch);
    else forward(Shifted(H, W), x, C, packed, O, bias, y, scratch);
}

void conv3x3_direct_weight_grad(const float* x, const float* dy, int64_t images, int64_t C, int64_t H, int64_t W,
                                int64_t O, float* dw, float* scratch) {
    if (!direct3x3_weight_grad_supported(O, H, W))
        throw std::logic_error("conv3x3_direct_weight_grad: needs AVX-512 (active_isa() avx512 or above) and O a "
                               "multiple of 16");
    weight_grad(Padded(H, W), x, dy, images, C, O, dw, scratch);
}

}  // namespace minnow
