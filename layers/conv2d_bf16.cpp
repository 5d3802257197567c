// Bf16Conv2d: the convolution as bfloat16 GEMMs (AMX tiles, AVX512-BF16,
// AVX2 or the portable kernel: kernels/gemm_bf16.h), in one of two ways.
//
// Layouts as in conv2d.cpp: x [N, C, H, W]; W [O, C, k, k]; the output of
// image n is the matrix Y_n [O, P], P = Ho*Wo, in y's NCHW layout, and
//     Y_n[o, oh*Wo + ow] = b[o] + sum_{c,i,j} W[o, c, i, j] x[n, c, oh*s - p + i, ow*s - p + j]
//
// ---------------------------------------------------------------- direct (stride 1, C >= 32)
// The input image is packed ONCE into bfloat16 pairs of channels, with its
// zero padding written out, row by row:
//     xp[r][c/2][q][c%2] = x[c, r - p, q - p]     (0 outside the image; Hp x Wp rows and columns)
// Then, for output row oh, output columns ow0..ow0+15, kernel offset (i, j)
// and channels 32cb..32cb+31, the 16x16 pairs that the GEMM's B tile needs,
//     B[t][q] = (x[32cb+2t, oh-p+i, ow0+q-p+j], x[32cb+2t+1, ...]),   t, q = 0..15
// are 16 runs of 16 consecutive pairs of xp: run t at xp[oh+i][16cb+t][ow0+j],
// runs Wp pairs apart. So the GEMM reads its B tiles straight from xp
// (bf16::gemm_tiled), with the depth ordered (i, j, channel) and the weights
// packed in that order:
//     A[o][(i*k + j)*Cp + c] = W[o, c, i, j]      (Cp = C rounded up to 32, zeros past C)
// Rows outermost keep what one output row reads (k input rows, all channels)
// together in memory, and a tile's 16 runs within a few KB.
// This is im2col without the copy: the input is read k*k times by the tile
// loads, never rewritten k*k times. Wp is at least the output width rounded up
// to 16 plus k - 1, so a tile past the right edge reads padding (its extra
// columns are dropped when C is stored).
//
// ---------------------------------------------------------------- im2col (any stride, few channels)
// The first conv (3 channels: Cp = 32 would be mostly zeros) and strided ones
// (a tile needs 16 consecutive input columns) go the classic way: for a band
// of output rows oh0 <= oh < oh1 (cols = (oh1 - oh0) * Wo columns of Y_n),
//     col[(c*k + i)*k + j][(oh - oh0)*Wo + ow] = x[n, c, oh*s - p + i, ow*s - p + j]   (0 in the padding)
//     Y_n[:, oh0*Wo : oh1*Wo] = W col + b
// with col made two rows at a time and packed straight into bfloat16 pairs
// (bf16::pack_b_pair), so the float col never exists as a whole.
//
// ---------------------------------------------------------------- threads
// The work is a list of (image, band of output rows) units spread over the
// OpenMP threads; each unit writes its own columns of y, so the threads never
// synchronise inside a GEMM. With at least as many images as threads, each
// thread does whole images (and packs its own xp); with fewer, each image is
// cut into bands so that every thread has work (a batch of one runs on every
// core), after its xp is packed by all threads together. An im2col unit is
// further cut into bands small enough for the L2 cache (kBandBytes, a
// quarter of it): the band's packed col, and its output.
//
// A fused ReLU is applied by the GEMM as it stores each tile of the output
// (bf16::TiledC::relu), so it costs no pass of its own.
#include "layers/conv2d_bf16.h"


#include <algorithm>
#include <cstring>
#include <vector>

#include "core/autograd.h"
#include "core/parallel.h"
#include "kernels/aligned.h"
#include "layers/activation.h"
#include "layers/eval_pooling.h"
#include "layers/flatten.h"
#include "layers/model_surgery.h"

namespace minnow {

namespace {

constexpr int64_t kBandBytes = int64_t{1} << 19;

struct Geometry {
    int64_t N, C, H, W, O, k, s, p, Ho, Wo;
    int64_t K() const { return C * k * k; }
    int64_t P() const { return Ho * Wo; }
};

// Row k = (c*kh + i)*kw + j of the im2col matrix for the band of output rows
// [oh0, oh1) of one image x [C, H, W], into row [(oh1 - oh0) * Wo] (see the top).
void im2col_row(const float* x, const Geometry& g, int64_t k, int64_t oh0, int64_t oh1, float* row) {
    const int64_t c = k / (g.k * g.k), i = k / g.k % g.k, j = k % g.k;
    // Output columns whose input column ow*s - p + j is inside [0, W).
    int64_t ow_lo = 0, ow_hi = g.Wo;
    while (ow_lo < g.Wo && ow_lo * g.s - g.p + j < 0) ++ow_lo;
    while (ow_hi > ow_lo && (ow_hi - 1) * g.s - g.p + j >= g.W) --ow_hi;
    for (int64_t oh = oh0; oh < oh1; ++oh) {
        float* out = row + (oh - oh0) * g.Wo;
        const int64_t ih = oh * g.s - g.p + i;
        if (ih < 0 || ih >= g.H) {
            std::fill(out, out + g.Wo, 0.f);
            continue;
        }
        const float* in = x + (c * g.H + ih) * g.W - g.p + j;  // in[ow * s] = x[c, ih, ow*s - p + j]
        std::fill(out, out + ow_lo, 0.f);
        if (g.s == 1) std::copy(in + ow_lo, in + ow_hi, out + ow_lo);
        else
            for (int64_t ow = ow_lo; ow < ow_hi; ++ow) out[ow] = in[ow * g.s];
        std::fill(out + ow_hi, out + g.Wo, 0.f);
    }
}

// The band's im2col matrix, rounded and packed as bf16::pack_b would pack it,
// made two rows at a time: the float32 rows live only in two small buffers
// (in the L1 cache), never as a whole matrix.
void im2col_packed(const float* x, const Geometry& g, int64_t oh0, int64_t oh1, float* two_rows,
                   bf16::bf16_t* packed, bf16::Kernel kernel) {
    const int64_t K = g.K(), cols = (oh1 - oh0) * g.Wo;
    const int64_t Kp = bf16::round_up(K, bf16::kDepthBlock), Np = bf16::round_up(cols, bf16::kColBlock);
    float* even = two_rows;
    float* odd = two_rows + cols;
    for (int64_t t = 0; t < Kp / 2; ++t) {
        if (2 * t < K) im2col_row(x, g, 2 * t, oh0, oh1, even);
        if (2 * t + 1 < K) im2col_row(x, g, 2 * t + 1, oh0, oh1, odd);
        bf16::pack_b_pair(2 * t < K ? even : nullptr, 2 * t + 1 < K ? odd : nullptr, cols, packed + t * Np * 2, kernel);
    }
}

// The direct path's geometry (see the top).
struct DirectGeometry {
    int64_t Cp, Hp, Wp;
    DirectGeometry(const Geometry& g)
        : Cp(bf16::round_up(g.C, bf16::kDepthBlock)),
          Hp(g.H + 2 * g.p),
          Wp(std::max(bf16::round_up(g.Wo, bf16::kColBlock) + g.k - 1, g.p + bf16::round_up(g.W, bf16::kColBlock))) {}
    int64_t elements() const { return Cp * Hp * Wp; }  // of xp: Cp/2 channel pairs x Hp x Wp pairs
};

// Padded rows [r0, r1) of xp from one image x [C, H, W] (see the top). Each
// run is packed by bf16::pack_b_pair, which writes whole blocks of 16 pairs
// (zeros past W); Wp leaves room for that.
void pack_input(const float* x, const Geometry& g, const DirectGeometry& d, int64_t r0, int64_t r1,
                bf16::bf16_t* xp, bf16::Kernel kernel) {
    const int64_t pairs = d.Cp / 2, written = g.p + bf16::round_up(g.W, bf16::kColBlock);
    for (int64_t r = r0; r < r1; ++r)
        for (int64_t cp = 0; cp < pairs; ++cp) {
            bf16::bf16_t* out = xp + (r * pairs + cp) * d.Wp * 2;
            const int64_t ih = r - g.p, c = 2 * cp;
            if (ih < 0 || ih >= g.H || c >= g.C) {
                std::fill(out, out + d.Wp * 2, 0);
                continue;
            }
            std::fill(out, out + g.p * 2, 0);  // left padding
            const float* even = x + (c * g.H + ih) * g.W;
            const float* odd = c + 1 < g.C ? x + ((c + 1) * g.H + ih) * g.W : nullptr;
            bf16::pack_b_pair(even, odd, g.W, out + g.p * 2, kernel);
            std::fill(out + written * 2, out + d.Wp * 2, 0);  // right padding
        }
}

// Output rows [oh0, oh1) of one image by the direct path: the tile tables
// over xp (see the top), then one tiled GEMM into y_n (relu'd if asked).
void direct_rows(const bf16::PackedA& A, const bf16::bf16_t* xp, const Geometry& g, const DirectGeometry& d,
                 int64_t oh0, int64_t oh1, float* y_n, bool relu, bf16::Kernel kernel) {
    thread_local bf16::TiledB b;
    thread_local bf16::TiledC c;
    const int64_t pairs = d.Cp / 2;
    b.row_stride = d.Wp * 2;
    b.step_offsets.clear();
    for (int64_t i = 0; i < g.k; ++i)
        for (int64_t j = 0; j < g.k; ++j)
            for (int64_t cb = 0; cb < d.Cp / bf16::kDepthBlock; ++cb)
                b.step_offsets.push_back(((i * pairs + cb * 16) * d.Wp + j) * 2);
    b.column_tiles.clear();
    c.column_tiles.clear();
    c.columns.clear();
    c.ldc = g.P();
    c.relu = relu;
    for (int64_t oh = oh0; oh < oh1; ++oh)
        for (int64_t ow0 = 0; ow0 < g.Wo; ow0 += bf16::kColBlock) {
            b.column_tiles.push_back(xp + (oh * pairs * d.Wp + ow0) * 2);
            c.column_tiles.push_back(y_n + oh * g.Wo + ow0);
            c.columns.push_back(static_cast<int>(std::min(bf16::kColBlock, g.Wo - ow0)));
        }
    bf16::gemm_tiled(A, b, c, kernel);
}

}  // namespace

Bf16Conv2d::Bf16Conv2d(const Conv2d& conv, bf16::Kernel kernel)
    : in_channels(conv.in_channels),
      out_channels(conv.out_channels),
      kernel_size(conv.kernel_size),
      stride(conv.stride),
      padding(conv.padding),
      kernel_(kernel == bf16::Kernel::Auto ? bf16::best_kernel() : kernel) {
    if (!bf16::kernel_available(kernel_))
        throw Error(std::string("Bf16Conv2d: the ") + bf16::kernel_name(kernel_) +
                    " kernel is not available on this machine");
    direct_ = stride == 1 && in_channels >= bf16::kDepthBlock;
    Tensor w = Tensor::empty(conv.weight.shape());
    for (int64_t e = 0; e < w.numel(); ++e) w.data()[e] = bf16::round(conv.weight.data()[e]);
    weight = register_buffer("weight", w);
    if (conv.bias.defined()) bias = register_buffer("bias", conv.bias.clone().detach());
    pack_if_changed();
}

// The GEMM reads packed_weight_, made from the weight and bias buffers (the
// rounding of already rounded weights changes nothing). Anything may write
// the buffers afterwards (load_state_dict, a user): the packing is made again
// whenever they differ, bit for bit, from the values it was made from.
void Bf16Conv2d::pack_if_changed() {
    const int64_t k = kernel_size, C = in_channels, K = C * k * k, nw = weight.numel();
    const int64_t nb = bias.defined() ? bias.numel() : 0;
    if (static_cast<int64_t>(packed_from_.size()) == nw + nb &&
        std::memcmp(packed_from_.data(), weight.data(), sizeof(float) * nw) == 0 &&
        (nb == 0 || std::memcmp(packed_from_.data() + nw, bias.data(), sizeof(float) * nb) == 0))
        return;
    packed_from_.assign(weight.data(), weight.data() + nw);
    if (nb) packed_from_.insert(packed_from_.end(), bias.data(), bias.data() + nb);
    const float* b = nb ? bias.data() : nullptr;
    if (direct_) {  // depth ordered (i, j, channel), channels padded to Cp (see the top)
        const int64_t Cp = bf16::round_up(C, bf16::kDepthBlock), Kd = k * k * Cp;
        std::vector<float> reordered(out_channels * Kd, 0.f);
        for (int64_t o = 0; o < out_channels; ++o)
            for (int64_t c = 0; c < C; ++c)
                for (int64_t i = 0; i < k; ++i)
                    for (int64_t j = 0; j < k; ++j)
                        reordered[o * Kd + (i * k + j) * Cp + c] = weight.data()[((o * C + c) * k + i) * k + j];
        packed_weight_ = bf16::pack_a(reordered.data(), out_channels, Kd, Kd, b);
    } else {
        packed_weight_ = bf16::pack_a(weight.data(), out_channels, K, K, b);
    }
}

std::string Bf16Conv2d::extra_repr() const {
    std::string s = std::to_string(in_channels) + ", " + std::to_string(out_channels) +
                    ", kernel_size=" + std::to_string(kernel_size);
    if (stride != 1) s += ", stride=" + std::to_string(stride);
    if (padding != 0) s += ", padding=" + std::to_string(padding);
    if (!bias.defined()) s += ", bias=False";
    if (fused_relu) s += ", relu";
    return s + ", kernel=" + bf16::kernel_name(kernel_) + (direct_ ? ", direct" : ", im2col");
}

Tensor Bf16Conv2d::forward(const Tensor& x) {
    const std::string me = "Bf16Conv2d(" + extra_repr() + ")";
    if (is_training()) throw Error(me + ": inference only (no backward); call eval() first");
    if (GradMode::is_enabled() && x.requires_grad())
        throw Error(me + ": inference only, and the input wants a gradient; run it under NoGradGuard");
    if (x.dim() != 4 || x.size(1) != in_channels)
        throw Error(me + ": expected input of shape [N, " + std::to_string(in_channels) + ", H, W], got " +
                    shape_str(x.shape()));
    Geometry g{x.size(0), x.size(1), x.size(2), x.size(3), out_channels, kernel_size, stride, padding, 0, 0};
    if (g.H + 2 * g.p < g.k || g.W + 2 * g.p < g.k)
        throw Error(me + ": the padded input " + shape_str(x.shape()) + " is smaller than the kernel");
    g.Ho = (g.H + 2 * g.p - g.k) / g.s + 1;
    g.Wo = (g.W + 2 * g.p - g.k) / g.s + 1;
    pack_if_changed();
    const int64_t K = g.K(), P = g.P(), CHW = g.C * g.H * g.W;
    Tensor y = Tensor::empty({g.N, g.O, g.Ho, g.Wo});
    const float* X = x.data();
    float* Y = y.data();
    const int threads = get_num_threads();

    if (direct_) {
        const DirectGeometry d(g);
        if (g.N >= threads) {  // whole images per thread, each packing its own xp
#pragma omp parallel for schedule(static) num_threads(threads) if (g.N > 1)
            for (int64_t n = 0; n < g.N; ++n) {
                thread_local AlignedVector<bf16::bf16_t> xp_buffer;
                bf16::bf16_t* xp = scratch(xp_buffer, d.elements());
                pack_input(X + n * CHW, g, d, 0, d.Hp, xp, kernel_);
                direct_rows(packed_weight_, xp, g, d, 0, g.Ho, Y + n * g.O * P, fused_relu, kernel_);
            }
            return y;
        }
        // Fewer images than threads: all threads pack an image, then share its rows.
        thread_local AlignedVector<bf16::bf16_t> shared_buffer;
        bf16::bf16_t* xp = scratch(shared_buffer, d.elements());
        const int64_t rows = (g.Ho + threads - 1) / threads;
        for (int64_t n = 0; n < g.N; ++n) {
#pragma omp parallel num_threads(threads)
            {
#pragma omp for schedule(static)
                for (int64_t r = 0; r < d.Hp; ++r) pack_input(X + n * CHW, g, d, r, r + 1, xp, kernel_);
#pragma omp for schedule(static)
                for (int64_t oh0 = 0; oh0 < g.Ho; oh0 += rows) {
                    const int64_t oh1 = std::min(g.Ho, oh0 + rows);
                    direct_rows(packed_weight_, xp, g, d, oh0, oh1, Y + n * g.O * P, fused_relu, kernel_);
                }
            }
        }
        return y;
    }

    // im2col bands (see the top): the fewest that fit kBandBytes, but enough for every thread.
    // Per output row: its packed col, or its output if larger (both should stay in cache).
    const int64_t bytes_per_row = g.Wo * std::max(bf16::round_up(K, bf16::kDepthBlock) * 2, g.O * 4);
    int64_t bands = std::max<int64_t>(1, (g.Ho * bytes_per_row + kBandBytes - 1) / kBandBytes);
    if (g.N < threads) bands = std::max<int64_t>(bands, (threads + g.N - 1) / g.N);
    const int64_t rows = (g.Ho + std::min(bands, g.Ho) - 1) / std::min(bands, g.Ho);
    bands = (g.Ho + rows - 1) / rows;
    const int64_t units = g.N * bands;
#pragma omp parallel for schedule(static) num_threads(threads) if (units > 1)
    for (int64_t u = 0; u < units; ++u) {
        thread_local AlignedVector<float> row_buffer;
        thread_local AlignedVector<bf16::bf16_t> packed_buffer;
        const int64_t n = u / bands, oh0 = (u % bands) * rows, oh1 = std::min(g.Ho, oh0 + rows);
        const int64_t cols = (oh1 - oh0) * g.Wo;
        bf16::bf16_t* packed = scratch(packed_buffer, bf16::packed_b_size(K, cols));
        im2col_packed(X + n * CHW, g, oh0, oh1, scratch(row_buffer, 2 * cols), packed, kernel_);
        // The band's columns of Y_n, rows P apart.
        bf16::gemm(packed_weight_, packed, cols, Y + n * g.O * P + oh0 * g.Wo, P, kernel_, fused_relu);
    }
    return y;
}

int to_bf16_inference(Module& model, const Bf16InferenceOptions& options) {
    std::vector<std::pair<std::string, Conv2d*>> convs;
    std::vector<std::pair<std::string, MaxPool2d*>> pools;
    std::vector<std::pair<std::string, std::string>> relu_after_conv;  // (conv, ReLU) paths
    for (auto& [name, m] : model.named_modules()) {
        if (m->is_training())
            throw Error("to_bf16_inference: " + (name.empty() ? std::string("the model") : "'" + name + "'") +
                        " is in training mode; the bfloat16 layers are for inference: call eval() first");
        if (auto* conv = dynamic_cast<Conv2d*>(m)) convs.emplace_back(name, conv);
        if (auto* pool = dynamic_cast<MaxPool2d*>(m)) pools.emplace_back(name, pool);
        if (!dynamic_cast<Sequential*>(m) || !options.fuse_relu) continue;
        const auto& children = m->named_children();
        const std::string prefix = name.empty() ? "" : name + ".";
        for (size_t i = 0; i < children.size(); ++i) {
            if (!dynamic_cast<Conv2d*>(children[i].second.get())) continue;
            size_t next = i + 1;
            while (next < children.size() && dynamic_cast<Identity*>(children[next].second.get())) ++next;
            if (next < children.size() && dynamic_cast<ReLU*>(children[next].second.get()))
                relu_after_conv.emplace_back(prefix + children[i].first, prefix + children[next].first);
        }
    }
    for (auto& [name, conv] : convs) {
        if (name.empty()) throw Error("to_bf16_inference: the model is a single Conv2d; wrap it in a Sequential");
        auto fast = std::make_shared<Bf16Conv2d>(*conv, options.kernel);
        for (const auto& [conv_path, relu_path] : relu_after_conv)
            if (conv_path == name) {
                fast->fused_relu = true;
                replace_submodule(model, relu_path, std::make_shared<Identity>());
            }
        replace_submodule(model, name, fast);
    }
    if (options.eval_pooling)
        for (auto& [name, pool] : pools)
            if (!name.empty()) replace_submodule(model, name, std::make_shared<EvalMaxPool2d>(*pool));
    return static_cast<int>(convs.size());
}

}  // namespace minnow
