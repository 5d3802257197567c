// Conv2d: PyTorch parity (4 cases), gradcheck of every variant, the parallel
// and 1x1 paths against a naive direct convolution, errors.
#include <array>
#include <cmath>
#include <vector>

#include "core/autograd.h"
#include "core/parallel.h"
#include "kernels/conv3x3.h"
#include "kernels/cpu.h"
#include "layers/conv2d.h"
#include "test_layers_common.h"

using namespace minnow;
using namespace minnow::testing;

namespace {

struct ConvCase {
    const char* name;
    int64_t in, out, k, stride, pad;
    bool bias;
};

// The definition, with loops: y[n,o,oh,ow] = b[o] + sum_{c,i,j} w[o,c,i,j] x[n,c,oh*s-p+i,ow*s-p+j],
// and its gradients for an upstream dy, accumulated the obvious way, in double
// (so that it is also the reference for the rounding error of the fast paths).
struct NaiveConv {
    Tensor y, dx, dw, db;
    NaiveConv(const Tensor& x, const Tensor& w, const Tensor& b, const Tensor& dy, int64_t s, int64_t p) {
        const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
        const int64_t O = w.size(0), kh = w.size(2), kw = w.size(3);
        const int64_t Ho = (H + 2 * p - kh) / s + 1, Wo = (W + 2 * p - kw) / s + 1;
        std::vector<double> sy(N * O * Ho * Wo), sdx(x.numel()), sdw(w.numel()), sdb(O);
        const float *px = x.data(), *pw = w.data(), *pdy = dy.data();
        for (int64_t n = 0; n < N; ++n)
            for (int64_t o = 0; o < O; ++o)
                for (int64_t oh = 0; oh < Ho; ++oh)
                    for (int64_t ow = 0; ow < Wo; ++ow) {
                        const int64_t yi = ((n * O + o) * Ho + oh) * Wo + ow;
                        double acc = b.defined() ? b.data()[o] : 0.0;
                        const double g = pdy[yi];
                        sdb[o] += g;
                        for (int64_t c = 0; c < C; ++c)
                            for (int64_t i = 0; i < kh; ++i)
                                for (int64_t j = 0; j < kw; ++j) {
                                    const int64_t ih = oh * s - p + i, iw = ow * s - p + j;
                                    if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                                    const int64_t xi = ((n * C + c) * H + ih) * W + iw;
                                    const int64_t wi = ((o * C + c) * kh + i) * kw + j;
                                    acc += double(pw[wi]) * px[xi];
                                    sdx[xi] += g * pw[wi];
                                    sdw[wi] += g * px[xi];
                                }
                        sy[yi] = acc;
                    }
        auto to_tensor = [](const std::vector<double>& v, Shape shape) {
            Tensor t = Tensor::empty(std::move(shape));
            for (int64_t i = 0; i < t.numel(); ++i) t.data()[i] = static_cast<float>(v[i]);
            return t;
        };
        y = to_tensor(sy, {N, O, Ho, Wo});
        dx = to_tensor(sdx, x.shape());
        dw = to_tensor(sdw, w.shape());
        db = to_tensor(sdb, {O});
    }
};

// Root mean square of a - b.
double rms_diff(const Tensor& a, const Tensor& b) {
    double s = 0;
    for (int64_t i = 0; i < a.numel(); ++i) s += (double(a.data()[i]) - b.data()[i]) * (double(a.data()[i]) - b.data()[i]);
    return std::sqrt(s / static_cast<double>(a.numel()));
}

void check_against_naive(int64_t N, int64_t C, int64_t H, int64_t W, int64_t O, int64_t k, int64_t s, int64_t p,
                         bool bias) {
    Generator g(99);
    Tensor x = rand_leaf({N, C, H, W}, g), w = rand_leaf({O, C, k, k}, g, -0.2f, 0.2f);
    Tensor b = bias ? rand_leaf({O}, g) : Tensor();
    Tensor y = conv2d(x, w, b, s, p);
    Tensor dy = Tensor::uniform(y.shape(), -1.f, 1.f, &g);
    y.backward(dy);
    NaiveConv ref(x, w, b, dy, s, p);
    check_close(y, ref.y, 1e-4, 1e-4, "y");
    check_close(x.grad(), ref.dx, 1e-4, 1e-4, "dx");
    check_close(w.grad(), ref.dw, 1e-4, 1e-3, "dw");
    if (bias) check_close(b.grad(), ref.db, 1e-4, 1e-3, "db");
}

// Output and gradients of conv2d with `threads` threads against one thread
// (where the images go one after another and each GEMM is whole).
void check_against_one_thread(int threads, int64_t N, int64_t C, int64_t H, int64_t W, int64_t O, int64_t k,
                              int64_t s, int64_t p, bool bias) {
    CAPTURE(threads);
    CAPTURE(N);
    CAPTURE(C);
    CAPTURE(H);
    CAPTURE(O);
    CAPTURE(k);
    CAPTURE(s);
    Generator g(11);
    Tensor x = rand_leaf({N, C, H, W}, g), w = rand_leaf({O, C, k, k}, g, -0.2f, 0.2f);
    Tensor b = bias ? rand_leaf({O}, g) : Tensor();
    const int64_t Ho = (H + 2 * p - k) / s + 1, Wo = (W + 2 * p - k) / s + 1;
    Tensor dy = Tensor::uniform({N, O, Ho, Wo}, -1.f, 1.f, &g);
    auto run = [&](int n_threads) {
        set_num_threads(n_threads);
        x.zero_grad(), w.zero_grad();
        if (bias) b.zero_grad();
        Tensor y = conv2d(x, w, b, s, p);
        y.backward(dy);
        return std::vector<Tensor>{y.detach(), x.grad(), w.grad(), bias ? b.grad() : Tensor()};
    };
    const std::vector<Tensor> one = run(1), many = run(threads);
    check_close(many[0], one[0], 1e-5, 1e-5, "y");
    check_close(many[1], one[1], 1e-5, 1e-5, "dx");
    // dW and db sum N*Ho*Wo products (up to 2048 here) of values up to 1 in
    // another order (one thread: band after band; split: one GEMM per image),
    // so they agree to float rounding of sums of that size, not to 1e-5.
    check_close(many[2], one[2], 1e-5, 1e-4, "dw");
    if (bias) check_close(many[3], one[3], 1e-5, 1e-4, "db");
}

}  // namespace

TEST_CASE("layers: Conv2d matches PyTorch (output and every gradient)") {
    SafetensorsFile f = layer_fixture("conv2d");
    const ConvCase cases[] = {{"k3s1p1_bias", 3, 4, 3, 1, 1, true},
                              {"k3s2p0_nobias", 2, 3, 3, 2, 0, false},
                              {"k1s2p0_nobias", 4, 6, 1, 2, 0, false},
                              {"k3s2p1_nobias_rect", 3, 4, 3, 2, 1, false}};
    for (const ConvCase& c : cases) {
        const std::string n = c.name;
        CAPTURE(n);
        Conv2d conv(c.in, c.out, c.k, c.stride, c.pad, c.bias);
        copy_(conv.weight, f.get(n + ".weight"));
        if (c.bias) copy_(conv.bias, f.get(n + ".bias"));
        Tensor x = leaf(f, n + ".x");
        Tensor y = conv(x);
        check_parity(y, f.get(n + ".y"), n + " y");
        y.backward(f.get(n + ".dy"));
        check_parity(x.grad(), f.get(n + ".dx"), n + " dx");
        check_parity(conv.weight.grad(), f.get(n + ".dweight"), n + " dweight");
        if (c.bias) check_parity(conv.bias.grad(), f.get(n + ".dbias"), n + " dbias");
    }
}

TEST_CASE("layers: Conv2d gradcheck (padding, stride 2, no bias, 1x1, rectangular)") {
    Generator g(5);
    auto conv = [](int64_t s, int64_t p) {
        return [s, p](const std::vector<Tensor>& v) { return conv2d(v[0], v[1], v.size() > 2 ? v[2] : Tensor(), s, p); };
    };
    Tensor x = rand_leaf({2, 3, 5, 5}, g);
    expect_gradcheck(conv(1, 1), {x, rand_leaf({4, 3, 3, 3}, g), rand_leaf({4}, g)});  // padding + bias
    expect_gradcheck(conv(2, 0), {x, rand_leaf({2, 3, 3, 3}, g)});                     // stride 2, no bias
    expect_gradcheck(conv(2, 1), {rand_leaf({1, 2, 4, 5}, g), rand_leaf({3, 2, 3, 3}, g)});  // H != W
    expect_gradcheck(conv(1, 0), {x, rand_leaf({3, 3, 1, 1}, g), rand_leaf({3}, g)});   // 1x1 (no im2col)
    expect_gradcheck(conv(2, 0), {x, rand_leaf({3, 3, 1, 1}, g)});                      // 1x1 stride 2
    expect_gradcheck(conv(1, 2), {rand_leaf({1, 1, 3, 3}, g), rand_leaf({2, 1, 2, 3}, g)});  // pad > k/2, kh != kw
}

TEST_CASE("layers: Conv2d against a naive convolution, serial and image-parallel, 3x3 and 1x1") {
    const int saved = get_num_threads();
    set_num_threads(1);
    check_against_naive(2, 3, 6, 5, 4, 3, 1, 1, true);  // small: one image after another
    check_against_naive(4, 16, 16, 16, 16, 3, 1, 1, true);
    // Two threads and enough work (N * 2*O*K*P > 2^22 flops): the batch is split over the threads.
    set_num_threads(2);
    check_against_naive(4, 16, 16, 16, 16, 3, 1, 1, true);
    check_against_naive(5, 16, 15, 15, 16, 3, 1, 1, true);   // odd batch: 3 + 2 images
    check_against_naive(4, 16, 31, 31, 16, 3, 2, 1, false);  // stride 2
    check_against_naive(4, 32, 16, 16, 32, 1, 1, 0, true);   // 1x1 stride 1: GEMM straight on x
    check_against_naive(4, 32, 16, 16, 32, 1, 2, 0, false);  // 1x1 stride 2: im2col subsamples
    // Small images go several to a GEMM (K*P small, P < 256): groups of 4 here, with a last
    // group of 2 (10 images), and 3x3 stride 2 / 1x1 stride 2 (the ResNet shortcut) too.
    check_against_naive(10, 32, 8, 8, 32, 3, 1, 1, true);
    check_against_naive(8, 32, 16, 15, 32, 3, 2, 1, false);
    check_against_naive(8, 64, 16, 16, 64, 1, 2, 0, false);
    set_num_threads(1);
    check_against_naive(5, 8, 8, 8, 8, 3, 1, 1, true);  // one thread: groups of 4 and 1
    set_num_threads(2);
    // Big images are done in bands of output rows (K*P > 2^19 floats): 16 + 15 rows here,
    // then two bands of 8 rows with stride 2.
    check_against_naive(2, 72, 31, 31, 2, 3, 1, 1, true);
    check_against_naive(2, 256, 32, 31, 2, 3, 2, 1, false);
    set_num_threads(saved);
}

TEST_CASE("layers: Conv2d's direct 3x3 kernels against the definition and against im2col + GEMM") {
    const int saved = get_num_threads();
    // Forward, input gradient and weight gradient by the direct kernels
    // (3x3, stride 1, padding 1, output width a multiple of 16 or dividing 16,
    // output channels a multiple of 8, of 16 for the weight gradient, input
    // channels too for dx): 32x32 in pairs of 16-pixel vectors, a 3x16 image whose
    // 48 pixels end in a lone vector, a 16x48 image, weight-gradient runs of
    // 4 images (16x16) with a short last run (6 images), and 3 input channels
    // (the direct forward, but dx and dW by im2col + GEMM: 3 is no multiple of 8
    // and too few channels for the weight-gradient kernel).
    // Each level of conv_isas(): the AVX-512 tiles (vectors of 16), the AVX2
    // ones (vectors of 8: a panel of 8 channels in two passes of 4, tiles of
    // 24 pixels) and im2col + GEMM.
    for (Isa isa : conv_isas())
    for (int threads : {1, 2}) {
        const std::string isa_text = isa_name(isa);
        CAPTURE(isa_text);
        CAPTURE(threads);
        ScopedIsa scoped(isa);
        CHECK(direct3x3_supported(8, 16, 16) == (isa != Isa::generic));
        CHECK(direct3x3_weight_grad_supported(8, 16, 16) == (isa == Isa::avx2));  // 8: one AVX2 vector
        CHECK(!direct3x3_supported(12, 16, 16));                                 // 12: no multiple of 8
        set_num_threads(threads);
        check_against_naive(2, 8, 32, 32, 16, 3, 1, 1, true);
        check_against_naive(3, 16, 3, 16, 8, 3, 1, 1, false);
        check_against_naive(2, 8, 16, 48, 24, 3, 1, 1, true);
        check_against_naive(6, 16, 16, 16, 16, 3, 1, 1, true);
        check_against_naive(4, 3, 32, 32, 16, 3, 1, 1, true);
        // The weight gradient's blocks: 4 input channels x 32 outputs with a
        // last block of 1, 2 or 3 input channels; 8 x 16 outputs with a last of 5.
        check_against_naive(2, 13, 16, 16, 32, 3, 1, 1, true);
        check_against_naive(2, 10, 16, 16, 32, 3, 1, 1, false);
        check_against_naive(2, 11, 8, 8, 64, 3, 1, 1, true);
        check_against_naive(2, 13, 16, 16, 16, 3, 1, 1, true);
        // Narrow images in three shifted copies, a vector spanning 16/W rows
        // (forward and input gradient): 8x8, 4x4, 8 rows of 2, a column of 16.
        check_against_naive(5, 16, 8, 8, 16, 3, 1, 1, true);
        check_against_naive(3, 8, 4, 4, 8, 3, 1, 1, false);
        check_against_naive(2, 8, 8, 2, 16, 3, 1, 1, true);
        check_against_naive(2, 8, 16, 1, 8, 3, 1, 1, true);
        // Channel counts that are and are not multiples of the tiles: 24
        // outputs (3 panels; the AVX2 weight gradient's one-vector blocks of 4
        // input channels, 3 vectors; the AVX-512 one's by GEMM), 12 outputs
        // (no multiple of 8: every pass by GEMM), 13 inputs (a last block of 1
        // channel, a short kBlockChannels block) at widths 32, 16, 8 and 4.
        for (int64_t w : {32, 16, 8, 4}) {
            CAPTURE(w);
            check_against_naive(2, 13, w, w, 24, 3, 1, 1, true);
            check_against_naive(2, 24, w, w, 12, 3, 1, 1, true);
            check_against_naive(2, 40, w, w, 16, 3, 1, 1, false);
        }
    }
    // The same convolutions by the direct kernels and im2col + GEMM agree to
    // float rounding.
    if (direct_isas().empty()) {
        MESSAGE("this CPU has no AVX2: the direct 3x3 kernels are not used");
        set_num_threads(saved);
        return;
    }
    set_num_threads(2);
    Generator g(3);
    for (const std::array<int64_t, 4>& shape :
         {std::array<int64_t, 4>{16, 32, 32, 32}, {64, 16, 16, 64}, {8, 5, 16, 16}, {128, 8, 8, 64}}) {
        const int64_t C = shape[0], H = shape[1], W = shape[2], O = shape[3];
        CAPTURE(C);
        CAPTURE(H);
        CAPTURE(O);
        Tensor x = rand_leaf({4, C, H, W}, g), w = rand_leaf({O, C, 3, 3}, g, -0.2f, 0.2f), b = rand_leaf({O}, g);
        Tensor dy = Tensor::uniform({4, O, H, W}, -1.f, 1.f, &g);
        auto run = [&](Isa isa) {
            ScopedIsa scoped(isa);
            x.zero_grad(), w.zero_grad(), b.zero_grad();
            Tensor y = conv2d(x, w, b, 1, 1);
            y.backward(dy);
            return std::vector<Tensor>{y.detach(), x.grad(), w.grad(), b.grad()};
        };
        const std::vector<Tensor> gemm = run(Isa::generic);
        std::vector<std::vector<Tensor>> direct;
        for (Isa isa : direct_isas()) {
            const std::string isa_text = isa_name(isa);
            CAPTURE(isa_text);
            direct.push_back(run(isa));
            check_close(direct.back()[0], gemm[0], 1e-5, 1e-5, "y");
            check_close(direct.back()[1], gemm[1], 1e-5, 1e-5, "dx");
            check_close(direct.back()[2], gemm[2], 1e-5, 1e-4, "dw");
            check_close(direct.back()[3], gemm[3], 1e-5, 1e-4, "db");
        }
        // The AVX2 and the AVX-512 tiles sum in the same order: the same bits
        // (where both run the weight gradient, O a multiple of 16).
        if (direct.size() == 2)
            for (int k = 0; k < 4; ++k) {
                CAPTURE(k);
                CHECK(max_abs_diff(direct[0][k], direct[1][k]) == 0.0);
            }
    }
    set_num_threads(saved);
}

// The direct kernels must round no worse than im2col + GEMM: near a ReLU's
// kink or a max-pool tie, a larger error sends the gradient down the other
// branch more often (kernels/conv3x3.cpp, "rounding"). Measured against the
// definition in double, as the rms error over the output, the input gradient
// and the weight gradient of 3x3 convolutions of the reference CNN's sizes
// (9 * 128 = 1152 products per output; in one chain, the forward and the input
// gradient rounded 1.9-2.5x worse than the GEMM).
TEST_CASE("layers: Conv2d's direct 3x3 kernels round no worse than im2col + GEMM") {
    if (direct_isas().empty()) {
        MESSAGE("this CPU has no AVX2: the direct 3x3 kernels are not used, nothing to test");
        return;
    }
    const int saved = get_num_threads();
    Generator g(5);
    // ReLU outputs (non-negative, as every inner layer of the CNN sees) and
    // weights of PyTorch's default scale 1/sqrt(fan_in).
    Tensor x = Tensor::uniform({2, 128, 16, 16}, 0.f, 1.f, &g).requires_grad_();
    const float bound = 1.f / std::sqrt(9.f * 128.f);
    Tensor w = Tensor::uniform({128, 128, 3, 3}, -bound, bound, &g).requires_grad_();
    Tensor b = Tensor::uniform({128}, -bound, bound, &g).requires_grad_();
    Tensor dy = Tensor::uniform({2, 128, 16, 16}, -1.f, 1.f, &g);
    const NaiveConv ref(x, w, b, dy, 1, 1);
    for (Isa isa : direct_isas())
    for (int threads : {1, 2}) {
        const std::string isa_text = isa_name(isa);
        CAPTURE(isa_text);
        CAPTURE(threads);
        set_num_threads(threads);
        double err[2][3];  // [direct][y, dx, dw]
        for (bool direct : {true, false}) {
            ScopedIsa scoped(direct ? isa : Isa::generic);
            x.zero_grad(), w.zero_grad(), b.zero_grad();
            Tensor y = conv2d(x, w, b, 1, 1);
            y.backward(dy);
            err[direct][0] = rms_diff(y, ref.y);
            err[direct][1] = rms_diff(x.grad(), ref.dx);
            err[direct][2] = rms_diff(w.grad(), ref.dw);
        }
        const char* what[3] = {"y", "dx", "dw"};
        for (int k = 0; k < 3; ++k) {
            CAPTURE(what[k]);
            CAPTURE(err[1][k]);
            CAPTURE(err[0][k]);
            CHECK(err[1][k] <= 1.25 * err[0][k]);
        }
    }
    set_num_threads(saved);
}

TEST_CASE("layers: Conv2d with fewer images than threads splits each image's GEMMs") {
    const int saved = get_num_threads();
    // The reference CNN's convs at batch 1: 32x32 and 16x16 images by columns
    // (bands of output rows, 16 and 8 for each thread), 8x8 images by output
    // channels (blocks of 128 rows).
    check_against_one_thread(2, 1, 64, 32, 32, 64, 3, 1, 1, true);
    check_against_one_thread(2, 1, 64, 16, 16, 128, 3, 1, 1, true);
    check_against_one_thread(2, 1, 128, 8, 8, 256, 3, 1, 1, true);
    // Odd sizes: 31 output rows (15 + 16), 40 and 80 output channels (blocks
    // cut at multiples of 16: 16 + 24, 32 + 48), stride 2, no bias, 1x1
    // kernels (no im2col) both ways. Every case has more than 2^21 flops per
    // image, enough to be split.
    check_against_one_thread(2, 1, 16, 31, 31, 32, 3, 1, 1, true);
    check_against_one_thread(2, 1, 32, 15, 15, 40, 3, 1, 1, true);
    check_against_one_thread(2, 1, 128, 8, 8, 40, 3, 1, 1, false);
    check_against_one_thread(2, 1, 32, 31, 31, 24, 3, 2, 1, false);
    check_against_one_thread(2, 1, 64, 32, 32, 48, 1, 1, 0, true);
    check_against_one_thread(2, 1, 512, 8, 8, 80, 1, 1, 0, false);
    check_against_one_thread(2, 1, 512, 16, 16, 96, 1, 2, 0, false);
    // Three threads, two images: the images in turn, dW and db summed over them;
    // 3 input channels over 3 threads (one each), and 20 output channels over
    // 3 threads (none, 16 and 4).
    check_against_one_thread(3, 2, 3, 32, 32, 96, 3, 1, 1, true);
    check_against_one_thread(3, 2, 96, 12, 12, 20, 3, 1, 1, true);
    // And against the definition, at batch 1 with two threads.
    set_num_threads(2);
    check_against_naive(1, 32, 16, 16, 32, 3, 1, 1, true);
    check_against_naive(1, 96, 8, 8, 40, 3, 1, 1, false);
    set_num_threads(saved);
}

TEST_CASE("layers: Conv2d twice in one graph, input not requiring grad, no grad mode") {
    Generator g(3);
    Conv2d c1(2, 3, 3, 1, 1, true, &g), c2(3, 2, 3, 2, 1, false, &g);
    Tensor x = Tensor::uniform({2, 2, 6, 6}, -1, 1, &g);  // like images: no gradient wanted
    Tensor loss = sum(c2(relu(c1(x))));
    loss.backward();
    CHECK(c1.weight.grad().defined());
    CHECK(c1.bias.grad().defined());
    CHECK(c2.weight.grad().defined());
    CHECK_FALSE(x.grad().defined());
    {
        NoGradGuard ng;
        CHECK_FALSE(c1(x).requires_grad());
    }
}

TEST_CASE("layers: Conv2d module names, init shape, repr and shape errors") {
    Conv2d conv(3, 8, 3, 1, 1);
    auto params = conv.named_parameters();
    REQUIRE(params.size() == 2);
    CHECK(params[0].first == "weight");
    CHECK(params[0].second.shape() == Shape{8, 3, 3, 3});
    CHECK(params[1].second.shape() == Shape{8});
    CHECK(conv.repr() == "Conv2d(3, 8, kernel_size=3, padding=1)");
    CHECK(Conv2d(16, 32, 1, 2, 0, false).repr() == "Conv2d(16, 32, kernel_size=1, stride=2, bias=False)");
    CHECK(conv(Tensor::zeros({2, 3, 7, 5})).shape() == Shape{2, 8, 7, 5});
    CHECK(Conv2d(3, 8, 3, 2, 1)(Tensor::zeros({1, 3, 7, 8})).shape() == Shape{1, 8, 4, 4});

    const std::string wrong_c = error_of([&] { conv(Tensor::zeros({2, 5, 8, 8})); });
    CHECK(wrong_c.find("Conv2d(3, 8, kernel_size=3, padding=1)") != std::string::npos);
    CHECK(wrong_c.find("[N, 3, H, W]") != std::string::npos);
    CHECK(wrong_c.find("[2, 5, 8, 8]") != std::string::npos);
    CHECK(error_of([&] { conv(Tensor::zeros({3, 8, 8})); }).find("[3, 8, 8]") != std::string::npos);
    CHECK(error_of([&] { Conv2d(3, 8, 5)(Tensor::zeros({1, 3, 4, 4})); }).find("smaller than the kernel") !=
          std::string::npos);
    CHECK(error_of([] { Conv2d(3, 0, 3); }).find("Conv2d(3, 0, kernel_size=3") != std::string::npos);
    const std::string fn = error_of([] { conv2d(Tensor::zeros({1, 2, 4, 4}), Tensor::zeros({3, 4, 3, 3})); });
    CHECK(fn.find("conv2d") != std::string::npos);
    CHECK(fn.find("[1, 2, 4, 4]") != std::string::npos);
    CHECK(fn.find("[3, 4, 3, 3]") != std::string::npos);
}
