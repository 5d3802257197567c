// Conv2d: the module, its autograd node, and the plan that picks, on every
// call, which of three paths computes the output, the input gradient and the
// weight gradient:
//   im2col + GEMM over the images   conv2d_gemm.cpp       any convolution
//   one image over every thread     conv2d_split.cpp      im2col + GEMM, fewer images than threads
//   direct 3x3 kernels              conv2d_direct3x3.cpp  3x3, stride 1, padding 1, on AVX2 / AVX-512
// plan() below holds every rule that chooses; conv2d_paths.h is what the
// files share.
//
// ---------------------------------------------------------------- layouts
// All tensors are contiguous row-major:
//   x   [N, C, H, W]          input
//   w   [O, C, kh, kw]        weight, read as the matrix W [O, K], K = C*kh*kw
//   y   [N, O, Ho, Wo]        output; y[n] is the matrix Y_n [O, P], P = Ho*Wo
//   col [K, P]                the im2col matrix of ONE image:
//       col[(c*kh + i)*kw + j][oh*Wo + ow] = x[n, c, oh*s - p + i, ow*s - p + j]
//       (0 where that pixel falls in the zero padding)
// Row k of col lists, for every output position, the input pixel that weight
// element k multiplies, so the whole convolution of image n is one GEMM:
//       Y_n = W col_n + b            [O, P] = [O, K] x [K, P]
// and Y_n lands directly in y's NCHW layout (no transpose).
//
// A 1x1 kernel with stride 1 and no padding needs no im2col: col_n is x[n]
// itself, read as [C, H*W].
//
// The padding's zeros multiply the weights on every path, so a NaN or
// infinite weight makes its whole output channel NaN, border included, as
// PyTorch's im2col path (the CPU's choice at batch 1) does; its oneDNN path
// (from batch 2) skips the padding and leaves the border finite. The input
// gradient never multiplies the padding (col2im drops it): NaN only where the
// weight reaches a real pixel, as in PyTorch on both paths.
//
// ---------------------------------------------------------------- threads
// The batch is split over the OpenMP threads, image by image (or in the
// chunks below), and each thread calls single-threaded GEMMs (OpenBLAS runs
// single-threaded inside an OpenMP parallel region); each thread sums its own
// partial dW and db, and the partials are added in a fixed order at the end
// (deterministic for a given thread count). The threads never synchronise
// inside a layer and each keeps its im2col buffer in its own cache. On this
// project's 2-core machine this beat one multi-threaded GEMM per image by far
// (OpenBLAS's threads synchronise on every call, which collapses when the
// cores are shared) and a batch-folded GEMM by up to 15%. With fewer images
// than threads (inference at batch 1), each image's GEMMs are split over the
// threads instead (conv2d_split.cpp). With too little work, the images are
// done one after another and OpenBLAS may thread each GEMM.
//
// ---------------------------------------------------------------- chunks
// How many columns one GEMM gets is a matter of cache sizes:
// * Bands. For a big image the col of a whole image (K x P floats: 2.4 MB for
//   the reference CNN's second conv) outgrows a core's L2 cache between being
//   written by im2col and read by the GEMM. So such an image is done in bands
//   of output rows oh0 <= oh < oh1: im2col of the band, then a GEMM on the
//   band's columns of Y_n (ldc = P). A band is just a narrower GEMM:
//       Y_n[:, oh0*Wo : oh1*Wo] = W col_band + b
// * Groups. For a small image (8x8: P = 64) a GEMM per image spends much of
//   its time packing W, which it reuses for only P columns. So several whole
//   images go side by side into one col, [K, G*P], and one GEMM; its output
//   [O, G*P] is then copied to the G images' places in y (adding the bias),
//   and in the backward the G images' gradients are gathered the same way.
// Each thread works through its images in such chunks (a band of one image,
// or G images); images of medium size are one chunk each.
//
// ---------------------------------------------------------------- direct kernels
// Most 3x3 convolutions with stride 1 and padding 1 (every one of the
// reference CNN) skip im2col and the GEMM altogether: the kernels of
// kernels/conv3x3.h compute their output, input gradient and weight gradient
// straight from the images (conv2d_direct3x3.cpp), when the instruction-set
// level in use (kernels/cpu.h) is avx2 or above (AVX2 or AVX-512 tiles, the
// same bits) and the sizes suit them (see plan(): output channels a multiple
// of 8, and of the vector width, 8 or 16, for the weight gradient). Otherwise,
// and on a CPU without AVX2, they take im2col + GEMM like every other
// convolution. The input gradient also takes the GEMM when a weight is NaN or
// infinite (see Conv2dBackward).
//
// ---------------------------------------------------------------- scratch
// Scratch memory (the col buffers, the per-thread partial dW and db, the
// padded images of the direct kernels: enum Scratch) is kept between calls
// and grown, never shrunk: a training loop allocates no big scratch buffer
// after its first step. The direct kernels' packed weights are kept too, and
// reused while the weights are the same (conv2d_direct3x3.cpp).
#include "layers/conv2d.h"


#include <algorithm>
#include <cmath>

#include "core/autograd.h"
#include "core/parallel.h"
#include "kernels/conv3x3.h"
#include "layers/conv2d_paths.h"
#include "layers/init.h"

namespace minnow {

namespace conv2d_detail {

std::vector<float*> scratch_buffers(Scratch kind, int threads, int64_t floats) {
    thread_local std::vector<Tensor> pool[kScratchKinds];
    std::vector<Tensor>& bufs = pool[static_cast<int>(kind)];
    if (static_cast<int>(bufs.size()) < threads) bufs.resize(threads);
    std::vector<float*> out(threads);
    for (int t = 0; t < threads; ++t) {
        if (!bufs[t].defined() || bufs[t].numel() < floats) bufs[t] = Tensor::empty({std::max<int64_t>(floats, 1)});
        out[t] = bufs[t].data();
    }
    return out;
}

void share(int64_t n, int parts, int t, int64_t align, int64_t* begin, int64_t* end) {
    const int64_t units = (n + align - 1) / align;
    *begin = std::min(n, units * t / parts * align);
    *end = std::min(n, units * (t + 1) / parts * align);
}

namespace {

// ---------------------------------------------------------------- the plan
// The chunks (see the top). A col holds at most kColFloats (2 MB, about one
// core's L2 cache); a group aims at kMinCols GEMM columns.
constexpr int64_t kColFloats = int64_t{1} << 19, kMinCols = 256;
// Below kSplitMinFlops per image, splitting one image over the threads costs
// more in the parallel region than it saves; below 2^22 flops in all the
// batch is not worth spreading over threads either.
constexpr int64_t kSplitMinFlops = int64_t{1} << 21, kParallelMinFlops = int64_t{1} << 22;
// A split by columns keeps at least this many columns a thread (conv2d_split.cpp).
constexpr int64_t kSplitMinCols = 128;

// Output rows per band: the fewest equal bands whose col fits. The
// pointwise case has no col: one band.
int64_t band_rows(const ConvGeometry& g) {
    if (g.pointwise()) return g.Ho;
    const int64_t bands = std::max<int64_t>(1, (g.K() * g.P() + kColFloats - 1) / kColFloats);
    return (g.Ho + bands - 1) / bands;
}

// Whole images per GEMM, at most an equal share of each of `threads`.
int64_t images_per_chunk(const ConvGeometry& g, int threads) {
    if (g.pointwise() || g.K() * g.P() > kColFloats / 2) return 1;
    const int64_t want = (kMinCols + g.P() - 1) / g.P(), fits = kColFloats / (g.K() * g.P());
    const int64_t share = (g.N + threads - 1) / threads;
    return std::max<int64_t>(1, std::min({want, fits, share}));
}

// Every decision of one call: the forward (want_dx etc. false) or the backward.
Plan plan(const ConvGeometry& g, bool want_dx, bool want_dw, bool want_db) {
    Plan p;
    const int threads = get_num_threads();
    const int64_t flops_per_image = 2 * g.O * g.K() * g.P();
    p.split = threads > 1 && g.N < threads && flops_per_image > kSplitMinFlops;
    p.parallel = threads > 1 && g.N >= threads && g.N * flops_per_image > kParallelMinFlops;
    p.threads = p.split || p.parallel ? threads : 1;

    // The direct kernels take the 3x3 "same" convolutions whose sizes they
    // support (kernels/conv3x3.h): the output for O output channels, the input
    // gradient for C. The weight gradient also wants 8 input channels or more:
    // with fewer, as the first layer's 3, the kernel has too few accumulators
    // to keep the FMA units busy (the reference CNN's first layer took 12-15 ms
    // forward + backward that way against 7-8 with im2col + GEMM). A split
    // backward is all GEMMs (they share one col_n, conv2d_split.cpp).
    const bool same = g.same3x3();
    p.forward = same && direct3x3_supported(g.O, g.H, g.W) ? Path::direct : Path::gemm;
    if (want_dx) p.input_grad = !p.split && same && direct3x3_supported(g.C, g.H, g.W) ? Path::direct : Path::gemm;
    if (want_dw)
        p.weight_grad = !p.split && same && g.C >= 8 && direct3x3_weight_grad_supported(g.O, g.H, g.W)
                            ? Path::direct
                            : Path::gemm;
    p.bias_grad = want_db;

    p.group = images_per_chunk(g, p.threads);
    p.band_rows = band_rows(g);
    p.chunks = (g.N + p.group - 1) / p.group;
    p.by_columns = p.split && g.Ho >= threads && g.P() / threads >= kSplitMinCols;
    return p;
}

// ---------------------------------------------------------------- the backward's sums
// db_t += the row sums of each G_n, into each thread's partial (after its
// dW [O*K]), chunk by chunk as backward_gemm goes: the same images per thread.
void bias_grad_partials(const Plan& p, const ConvGeometry& g, const float* dY, const std::vector<float*>& part) {
    const int64_t O = g.O, K = g.K(), P = g.P(), G = p.group;
#pragma omp parallel for num_threads(p.threads) schedule(static) if (p.parallel)
    for (int64_t ch = 0; ch < p.chunks; ++ch) {
        float* db_t = part[thread_index()] + O * K;
        for (int64_t n = ch * G; n < std::min(g.N, (ch + 1) * G); ++n)
            for (int64_t o = 0; o < O; ++o) {
                const float* Gno = dY + (n * O + o) * P;
                float s = 0.f;
#pragma omp simd reduction(+ : s)
                for (int64_t q = 0; q < P; ++q) s += Gno[q];
                db_t[o] += s;
            }
    }
}

// dw and db (either may be null) = the threads' partials, added in a fixed
// order (deterministic for a given thread count).
void sum_partials(const Plan& p, const ConvGeometry& g, const std::vector<float*>& part, float* dw, float* db) {
    const int64_t OK = g.O * g.K();
    const auto sum = [&](int64_t e) {
        float s = 0.f;
        for (int u = 0; u < p.threads; ++u) s += part[u][e];
        return s;
    };
#pragma omp parallel num_threads(p.threads) if (p.parallel)
    {
        if (dw) {
#pragma omp for schedule(static)
            for (int64_t e = 0; e < OK; ++e) dw[e] = sum(e);
        }
        if (db) {
#pragma omp for schedule(static)
            for (int64_t o = 0; o < g.O; ++o) db[o] = sum(OK + o);
        }
    }
}

}  // namespace
}  // namespace conv2d_detail

using namespace conv2d_detail;

namespace {

// Whether no element is NaN or infinite (one pass, vectorised).
bool all_finite(const Tensor& t) {
    const float* v = t.data();
    const int64_t n = t.numel();
    int64_t bad = 0;
#pragma omp simd reduction(+ : bad)
    for (int64_t i = 0; i < n; ++i) bad += std::isfinite(v[i]) ? 0 : 1;
    return bad == 0;
}

// ---------------------------------------------------------------- backward
// Per image n (dropping n):  Y = W col + b 1^T, i.e.
//   Y[o, q] = sum_k W[o, k] col[k, q] + b[o].
// With G = dL/dY [O, P]:
//   dL/dW[o, k]   = sum_q G[o, q] col[k, q]     ->  dW  = sum_n G_n col_n^T   [O, P] x [P, K]
//   dL/db[o]      = sum_q G[o, q]               ->  db  = sum over n, q of G_n
//   dL/dcol[k, q] = sum_o W[o, k] G[o, q]       ->  dcol_n = W^T G_n          [K, O] x [O, P]
// and since col_n is x[n] copied (im2col), dx[n] = col2im(dcol_n): each pixel
// collects the gradient of every col entry that was copied from it.
// col_n is recomputed from x rather than kept from the forward (it would be
// K/C = kh*kw times the size of x for the whole batch).
//
// Split (fewer images than threads): conv2d_split.cpp does all three.
// Otherwise each thread sums its images' dW and db into its own partials
// (by GEMMs or by the direct weight-gradient kernel), the partials are added
// up, and dx comes by GEMMs (with dW, chunk by chunk) or by the direct kernel.
struct Conv2dBackward : Node {
    Tensor x, weight;
    ConvGeometry g{};
    std::vector<Tensor> backward(const Tensor& dy) override {
        Plan p = plan(g, needs_grad(0), needs_grad(1), needs_grad(2));
        // The direct kernel convolves G, padded with zeros, with the flipped
        // weights: a NaN or infinite weight times a zero of that padding would
        // make dx's border NaN, where im2col + GEMM (and PyTorch) never multiply
        // (col2im drops what falls in the padding). Such weights take the GEMM.
        if (p.input_grad == Path::direct && !all_finite(weight)) p.input_grad = Path::gemm;
        Tensor dx, dw, db;
        if (p.input_grad != Path::none) dx = Tensor::empty(x.shape());
        if (p.weight_grad != Path::none) dw = Tensor::empty(weight.shape());
        if (p.bias_grad) db = Tensor::empty({g.O});
        float* dX = dx.defined() ? dx.data() : nullptr;
        float* dW = dw.defined() ? dw.data() : nullptr;
        float* dB = db.defined() ? db.data() : nullptr;
        const float* X = x.data();
        const float* Wt = weight.data();
        const float* dY = dy.data();
        if (p.split) {
            backward_split(p, g, X, Wt, dY, dX, dW, dB);
            return {dx, dw, db};
        }

        // Per-thread partial sums, [O*K] for dW then [O] for db.
        const std::vector<float*> part = scratch_buffers(Scratch::partials, p.threads, g.O * g.K() + g.O);
        for (float* t : part) std::fill(t, t + g.O * g.K() + g.O, 0.f);
        if (p.bias_grad) bias_grad_partials(p, g, dY, part);
        const bool gemm_dx = p.input_grad == Path::gemm, gemm_dw = p.weight_grad == Path::gemm;
        if (gemm_dx || gemm_dw) backward_gemm(p, g, X, Wt, dY, gemm_dx ? dX : nullptr, gemm_dw ? &part : nullptr);
        if (p.weight_grad == Path::direct) weight_grad_direct(p, g, X, dY, part);
        if (dW || dB) sum_partials(p, g, part, dW, dB);
        if (p.input_grad == Path::direct) input_grad_direct(p, g, Wt, dY, dX);
        return {dx, dw, db};
    }
    void release_saved() override { x = weight = Tensor(); }
    const char* name() const override { return "Conv2dBackward"; }
};

// ---------------------------------------------------------------- forward
ConvGeometry conv_geometry(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t s, int64_t p) {
    auto fail = [&](const std::string& why) {
        return Error("conv2d: " + why + " (input " + shape_str(x.shape()) + ", weight " +
                     shape_str(weight.shape()) + ", stride " + std::to_string(s) + ", padding " +
                     std::to_string(p) + ")");
    };
    if (weight.dim() != 4) throw fail("weight must be [out_channels, in_channels, kh, kw]");
    if (s < 1 || p < 0) throw fail("stride must be >= 1 and padding >= 0");
    if (x.dim() != 4 || x.size(1) != weight.size(1))
        throw fail("expected input [N, " + std::to_string(weight.size(1)) + ", H, W]");
    if (bias.defined() && bias.shape() != Shape{weight.size(0)})
        throw fail("bias must be [" + std::to_string(weight.size(0)) + "], got " + shape_str(bias.shape()));
    ConvGeometry g{};
    g.N = x.size(0), g.C = x.size(1), g.H = x.size(2), g.W = x.size(3);
    g.O = weight.size(0), g.kh = weight.size(2), g.kw = weight.size(3);
    g.s = s, g.p = p;
    if (g.H + 2 * p < g.kh || g.W + 2 * p < g.kw) throw fail("the padded input is smaller than the kernel");
    g.Ho = (g.H + 2 * p - g.kh) / s + 1;
    g.Wo = (g.W + 2 * p - g.kw) / s + 1;
    return g;
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t stride, int64_t padding) {
    const ConvGeometry g = conv_geometry(x, weight, bias, stride, padding);
    const Plan p = plan(g, false, false, false);
    Tensor y = Tensor::empty({g.N, g.O, g.Ho, g.Wo});
    const float* b = bias.defined() ? bias.data() : nullptr;
    if (p.forward == Path::direct) forward_direct(p, g, x.data(), weight.data(), b, y.data());
    else if (p.split) forward_split(p, g, x.data(), weight.data(), b, y.data());
    else forward_gemm(p, g, x.data(), weight.data(), b, y.data());

    if (!any_requires_grad({x, weight, bias})) return y;
    auto node = std::make_shared<Conv2dBackward>();
    node->x = x.detach();
    node->weight = weight.detach();
    node->g = g;
    return attach(y, node, {x, weight, bias});
}

// ---------------------------------------------------------------- module
Conv2d::Conv2d(int64_t in_c, int64_t out_c, int64_t k, int64_t s, int64_t p, bool has_bias, Generator* gen)
    : in_channels(in_c), out_channels(out_c), kernel_size(k), stride(s), padding(p) {
    if (in_c < 1 || out_c < 1 || k < 1 || s < 1 || p < 0)
        throw Error("Conv2d(" + std::to_string(in_c) + ", " + std::to_string(out_c) + ", kernel_size=" +
                    std::to_string(k) + ", stride=" + std::to_string(s) + ", padding=" + std::to_string(p) +
                    "): channels, kernel_size and stride must be >= 1 and padding >= 0");
    Tensor w = Tensor::empty({out_c, in_c, k, k});
    Tensor b = has_bias ? Tensor::empty({out_c}) : Tensor();
    init::default_linear_init_(w, b, gen);
    weight = register_parameter("weight", w);
    if (has_bias) bias = register_parameter("bias", b);
}

Tensor Conv2d::forward(const Tensor& x) {
    if (x.dim() != 4 || x.size(1) != in_channels)
        throw Error("Conv2d(" + extra_repr() + "): expected input of shape [N, " + std::to_string(in_channels) +
                    ", H, W], got " + shape_str(x.shape()));
    return conv2d(x, weight, bias, stride, padding);
}

std::string Conv2d::extra_repr() const {
    std::string s = std::to_string(in_channels) + ", " + std::to_string(out_channels) +
                    ", kernel_size=" + std::to_string(kernel_size);
    if (stride != 1) s += ", stride=" + std::to_string(stride);
    if (padding != 0) s += ", padding=" + std::to_string(padding);
    if (!bias.defined()) s += ", bias=False";
    return s;
}

}  // namespace minnow
