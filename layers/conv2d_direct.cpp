// Direct 3x3 convolution, padding 1, stride 1, for one image: no im2col.
//
// ---------------------------------------------------------------- why
// The im2col path (conv2d.cpp) writes every input pixel 9 times into a col
// matrix, and OpenBLAS then copies ("packs") that matrix once more into the
// order its kernel reads. For a 3x3 "same" convolution both copies can go:
// row k = (c, i, j) of col, for 16 consecutive output pixels, is just 16
// input pixels that sit next to each other in memory, shifted. So the kernel
// loads them straight from the input.
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
#include "layers/conv2d_direct.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace minnow {

namespace {
constexpr int64_t kRows = 8;    // output channels per tile
constexpr int64_t kBlockPixels = 128;   // pixels the weight gradient sums in registers (see "rounding")
constexpr int64_t kBlockChannels = 16;  // input channels summed in registers before y is updated (see "rounding")
bool g_enabled = true;
}  // namespace

void set_direct3x3_enabled(bool on) { g_enabled = on; }

bool direct3x3_supported(int64_t out_channels, int64_t H, int64_t W) {
#if defined(__AVX512F__)
    return g_enabled && out_channels % kRows == 0 && H >= 1 && W >= 1 && (W % 16 == 0 || 16 % W == 0) &&
           (H * W) % 16 == 0;
#else
    (void)out_channels, (void)H, (void)W;
    return false;
#endif
}

bool direct3x3_weight_grad_supported(int64_t out_channels, int64_t H, int64_t W) {
#if defined(__AVX512F__)
    return g_enabled && out_channels % 16 == 0 && H >= 1 && W >= 1;
#else
    (void)out_channels, (void)H, (void)W;
    return false;
#endif
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

#if defined(__AVX512F__)
namespace {

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

// One tile: 8 output channels (the packed panel wp) x NV*16 output pixels
// starting at output position p0 (vector v covers p0 + 16v ..). y points at
// the tile's first channel; P floats between channels.
template <int NV, class Layout>
void tile(const float* input, const Layout& L, int64_t C, const float* wp, const float* bias, int64_t p0, int64_t P,
          float* y) {
    int64_t off[NV];
    for (int v = 0; v < NV; ++v) off[v] = L.offset(p0 + 16 * v);
    __m512 acc[kRows][NV];
    for (int64_t c0 = 0; c0 < C; c0 += kBlockChannels) {
        // The 9 * kBlockChannels products of a block of input channels are
        // summed in registers, then added to the tile's sum so far in y (see
        // "rounding" at the top).
        for (int r = 0; r < kRows; ++r)
            for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_setzero_ps();
        for (int64_t c = c0; c < std::min(C, c0 + kBlockChannels); ++c)
            for (int i = 0; i < 3; ++i)
                for (int j = 0; j < 3; ++j, wp += kRows) {
                    const float* s = input + c * L.c_stride + i * L.i_stride + j * L.j_stride;  // tap (i, j) at + off[v]
                    __m512 b[NV];
                    for (int v = 0; v < NV; ++v) b[v] = _mm512_loadu_ps(s + off[v]);
                    for (int r = 0; r < kRows; ++r) {
                        const __m512 a = _mm512_set1_ps(wp[r]);  // w[8*ob + r, c, i, j]
                        for (int v = 0; v < NV; ++v) acc[r][v] = _mm512_fmadd_ps(a, b[v], acc[r][v]);
                    }
                }
        // y = (earlier blocks) + this block (+ the bias after the last one, as
        // a GEMM with beta = 1 adds it: it does not enter the partial sums).
        const bool first = c0 == 0, last = c0 + kBlockChannels >= C;
        for (int r = 0; r < kRows; ++r)
            for (int v = 0; v < NV; ++v) {
                float* out = y + r * P + p0 + 16 * v;
                __m512 sum = first ? acc[r][v] : _mm512_add_ps(_mm512_loadu_ps(out), acc[r][v]);
                if (last && bias) sum = _mm512_add_ps(sum, _mm512_set1_ps(bias[r]));
                _mm512_storeu_ps(out, sum);
            }
    }
}

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
        for (; p0 + 48 <= P; p0 += 48) tile<3>(scratch, L, C, wp, b, p0, P, yo);
        if (P - p0 == 32) tile<2>(scratch, L, C, wp, b, p0, P, yo);
        else if (P - p0 == 16) tile<1>(scratch, L, C, wp, b, p0, P, yo);
    }
}

// One block: output channels o0..o0+16*OV-1 (OV vectors), input channels
// c0..c0+CB-1, kernel row i, over the run's images. xps: the padded images;
// gt: their Gt [p][O]. Each broadcast input value serves OV vectors.
template <int CB, int OV>
void weight_grad_block(const Padded& L, const float* xps, const float* gt, int64_t images, int64_t C, int64_t O,
                       int64_t o0, int64_t c0, int64_t i, float* dw) {
    const int64_t H = L.H, W = L.W, P = H * W, K = 9 * C, xsize = C * L.c_stride;
    // acc sums the products of a block of about kBlockPixels pixels (whole
    // rows) from zero; total, in memory, the blocks so far (see "rounding").
    __m512 acc[CB][3][OV], total[CB][3][OV];
    for (int cc = 0; cc < CB; ++cc)
        for (int j = 0; j < 3; ++j)
            for (int v = 0; v < OV; ++v) acc[cc][j][v] = total[cc][j][v] = _mm512_setzero_ps();
    auto fold = [&] {  // total += acc, acc = 0
        for (int cc = 0; cc < CB; ++cc)
            for (int j = 0; j < 3; ++j)
                for (int v = 0; v < OV; ++v) {
                    total[cc][j][v] = _mm512_add_ps(total[cc][j][v], acc[cc][j][v]);
                    acc[cc][j][v] = _mm512_setzero_ps();
                }
    };
    const int64_t rows_per_block = std::max<int64_t>(1, kBlockPixels / W);
    int64_t rows = 0;
    for (int64_t n = 0; n < images; ++n) {
        const float* g = gt + n * P * O + o0;  // Gt[n][p][o0..]
        const float* xs[CB];                   // xp[n, c0 + cc, i, :]
        for (int cc = 0; cc < CB; ++cc) xs[cc] = xps + n * xsize + (c0 + cc) * L.c_stride + i * L.i_stride;
        for (int64_t oh = 0; oh < H; ++oh) {
            for (int64_t ow = 0; ow < W; ++ow) {
                __m512 gp[OV];  // G[n, o0 + 16v.., oh, ow]
                for (int v = 0; v < OV; ++v) gp[v] = _mm512_loadu_ps(g + (oh * W + ow) * O + 16 * v);
                const int64_t q = oh * L.i_stride + ow;  // xp[n, c, oh + i, ow + j] = xs[cc][q + j]
                for (int cc = 0; cc < CB; ++cc)
                    for (int j = 0; j < 3; ++j) {
                        const __m512 xv = _mm512_set1_ps(xs[cc][q + j]);
                        for (int v = 0; v < OV; ++v) acc[cc][j][v] = _mm512_fmadd_ps(gp[v], xv, acc[cc][j][v]);
                    }
            }
            if (++rows % rows_per_block == 0) fold();
        }
    }
    fold();
    for (int cc = 0; cc < CB; ++cc)
        for (int j = 0; j < 3; ++j)
            for (int v = 0; v < OV; ++v) {  // lane l holds dw[o0 + 16v + l, c0 + cc, i, j]
                alignas(64) float lanes[16];
                _mm512_store_ps(lanes, total[cc][j][v]);
                const int64_t k = ((c0 + cc) * 3 + i) * 3 + j;
                for (int l = 0; l < 16; ++l) dw[(o0 + 16 * v + l) * K + k] += lanes[l];
            }
}

// weight_grad_block<n, OV> for a block of n <= CB input channels known only at
// run time (the last block of a layer).
template <int CB, int OV>
void weight_grad_blocks(int64_t n, const Padded& L, const float* xps, const float* gt, int64_t images, int64_t C,
                        int64_t O, int64_t o0, int64_t c0, int64_t i, float* dw) {
    if constexpr (CB > 1)
        if (n < CB) return weight_grad_blocks<CB - 1, OV>(n, L, xps, gt, images, C, O, o0, c0, i, dw);
    weight_grad_block<CB, OV>(L, xps, gt, images, C, O, o0, c0, i, dw);
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
                if (two) weight_grad_blocks<4, 2>(n, L, scratch, gt, images, C, O, o0, c0, i, dw);
                else weight_grad_blocks<8, 1>(n, L, scratch, gt, images, C, O, o0, c0, i, dw);
            }
}

}  // namespace

void conv3x3_direct(const float* x, int64_t C, int64_t H, int64_t W, const float* packed, int64_t O,
                    const float* bias, float* y, float* scratch) {
    if (W % 16 == 0) forward(Padded(H, W), x, C, packed, O, bias, y, scratch);
    else forward(Shifted(H, W), x, C, packed, O, bias, y, scratch);
}

void conv3x3_direct_weight_grad(const float* x, const float* dy, int64_t images, int64_t C, int64_t H, int64_t W,
                                int64_t O, float* dw, float* scratch) {
    if (!direct3x3_weight_grad_supported(O, H, W))
        throw std::logic_error("conv3x3_direct_weight_grad: needs AVX-512 and O a multiple of 16");
    weight_grad(Padded(H, W), x, dy, images, C, O, dw, scratch);
}
#else
void conv3x3_direct(const float*, int64_t, int64_t, int64_t, const float*, int64_t, const float*, float*, float*) {
    throw std::logic_error("conv3x3_direct: this build has no AVX-512 (check direct3x3_supported first)");
}
void conv3x3_direct_weight_grad(const float*, const float*, int64_t, int64_t, int64_t, int64_t, int64_t, float*,
                                float*) {
    throw std::logic_error("conv3x3_direct_weight_grad: this build has no AVX-512 (check direct3x3_supported first)");
}
#endif

}  // namespace minnow
