// Direct 3x3 convolution, padding 1, stride 1, for one image: no im2col.
//
// ---------------------------------------------------------------- files
// This file: the layouts' copies, the weight packing and the drivers (which
// tile goes where), plain C++ for any CPU. conv3x3_tiles.h: the layouts and
// the constants all files share. conv3x3_kernels.h: the tiles themselves,
// written once for any vector width; conv3x3_avx512.cpp compiles them for
// AVX-512 (16 floats a vector, 32 registers), conv3x3_avx2.cpp for AVX2 + FMA
// (8 floats, 16 registers). The AVX-512 set runs when active_isa()
// (kernels/cpu.h) reaches avx512, the AVX2 set at avx2; below that
// direct3x3_supported() says no and Conv2d takes im2col + GEMM.
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
// One AVX-512 tile of the output is 8 output channels x 48 output pixels
// (three vectors of 16): 24 accumulator registers. For each of the K = 9C
// weights of the tile's channels, the kernel loads 3 vectors of input and
// broadcasts 8 weights into 24 FMAs (tiles of 32 pixels, 16 FMAs for 10
// loads, ran 3-10% slower). With AVX2's 16 registers a tile is 4 output
// channels x 24 pixels (three vectors of 8): 12 accumulators, 3 loads and a
// broadcast fill the register file, and a panel of 8 channels takes two
// passes. The last tile of an image takes the one or two vectors left. The
// weights are packed so the 8 of a panel sit side by side, in the order the
// kernel walks k:
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
// channel and tap.) With AVX2 (vectors of 8 output channels, 16 registers)
// a block is 2 loads of Gt[p][o0..o0+15] against 2 input channels x 3 taps:
// 12 accumulators, 12 FMAs for 8 loads (or one vector against 4 input
// channels where O is no multiple of 16). The accumulators run over
// a few images at a time (at least 1024 pixels) before they are added into dw.
// It reads the padded layout (one copy with a border) whatever W is, since the
// pixels go one by one; O must be a multiple of the vector width (16, 8).
#include "kernels/conv3x3.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <type_traits>

#include "kernels/conv3x3_tiles.h"
#include "kernels/cpu.h"

namespace minnow {

using namespace conv3x3;

namespace {

// The tiles of the active instruction set (conv3x3_tiles.h): AVX-512 from
// level avx512 up, else AVX2 (callers have checked that it reaches avx2).
// Without the x86-64 kernels no level reaches avx2, so nothing calls this.
const Tiles& active_tiles() {
#if MINNOW_X86
    return isa_active(Isa::avx512) ? avx512_tiles : avx2_tiles;
#else
    throw std::logic_error("conv3x3: the direct tiles exist on x86-64 only");
#endif
}

}  // namespace

bool direct3x3_supported(int64_t out_channels, int64_t H, int64_t W) {
    return isa_active(Isa::avx2) && out_channels % kRows == 0 && H >= 1 && W >= 1 && (W % 16 == 0 || 16 % W == 0) &&
           (H * W) % 16 == 0;
}

bool direct3x3_weight_grad_supported(int64_t out_channels, int64_t H, int64_t W) {
    return isa_active(Isa::avx2) && out_channels % active_tiles().lanes == 0 && H >= 1 && W >= 1;
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
    const Tiles& t = active_tiles();
    const int64_t P = L.H * L.W, K = 9 * C;
    L.copy(x, C, scratch);
    // Channel panel by panel: its weights, K x 8 floats, stay in L1/L2 while
    // the tiles sweep the image.
    for (int64_t ob = 0; ob < O / kRows; ++ob) {
        const float* wp = packed + ob * K * kRows;
        const float* b = bias ? bias + ob * kRows : nullptr;
        if constexpr (std::is_same_v<Layout, Padded>) t.panel_padded(scratch, L, C, wp, b, y + ob * kRows * P);
        else t.panel_shifted(scratch, L, C, wp, b, y + ob * kRows * P);
    }
}

void weight_grad(const Padded& L, const float* x, const float* dy, int64_t images, int64_t C, int64_t O, float* dw,
                 float* scratch) {
    const int64_t P = L.H * L.W, xsize = C * L.c_stride;
    float* gt = scratch + images * xsize;
    for (int64_t n = 0; n < images; ++n) {
        L.copy(x + n * C * P, C, scratch + n * xsize);
        // Gt[n][p][o] = G[n, o, p], reading G (from memory) row by row: one
        // sequential stream the prefetcher follows. The writes are strided,
        // into Gt (P x O floats, in cache). Reading 16 pixels of every row
        // in turn instead, the loads waited on memory: that loop took about
        // a quarter of the weight gradient's time.
        const float* g = dy + n * O * P;
        float* t = gt + n * P * O;
        for (int64_t o = 0; o < O; ++o)
            for (int64_t p = 0; p < P; ++p) t[p * O + o] = g[o * P + p];
    }
    active_tiles().weight_grad(L, scratch, gt, images, C, O, dw);
}

}  // namespace

void conv3x3_direct(const float* x, int64_t C, int64_t H, int64_t W, const float* packed, int64_t O,
                    const float* bias, float* y, float* scratch) {
    if (!direct3x3_supported(O, H, W))
        throw std::logic_error("conv3x3_direct: needs AVX2 (active_isa() avx2 or above) and a supported size");
    if (W % 16 == 0) forward(Padded(H, W), x, C, packed, O, bias, y, scratch);
    else forward(Shifted(H, W), x, C, packed, O, bias, y, scratch);
}

void conv3x3_direct_weight_grad(const float* x, const float* dy, int64_t images, int64_t C, int64_t H, int64_t W,
                                int64_t O, float* dw, float* scratch) {
    if (!direct3x3_weight_grad_supported(O, H, W))
        throw std::logic_error("conv3x3_direct_weight_grad: needs AVX2 (active_isa() avx2 or above) and O a "
                               "multiple of the vector width (16 floats with AVX-512, 8 with AVX2)");
    weight_grad(Padded(H, W), x, dy, images, C, O, dw, scratch);
}

}  // namespace minnow
