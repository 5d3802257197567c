// The bfloat16 inference path: rounding (kernels/gemm_bf16.h), the GEMM against
// float32 within the bounds bfloat16 rounding allows, the portable kernel
// against the dispatched one, the bfloat16 conv layer against conv2d, and a
// converted cnn against float32 (layers/conv2d_bf16.h).
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <map>

#include "core/autograd.h"
#include "kernels/gemm_bf16.h"
#include "core/ops.h"
#include "core/parallel.h"
#include "core/random.h"
#include "layers/batchnorm.h"
#include "layers/conv2d.h"
#include "layers/conv2d_bf16.h"
#include "layers/eval_pooling.h"
#include "layers/fold_batchnorm.h"
#include "layers/model_surgery.h"
#include "layers/models.h"
#include "test_helpers.h"

using namespace minnow;
using minnow::testing::max_abs;
using minnow::testing::max_abs_diff;
namespace bf = minnow::bf16;

namespace {

constexpr double kUnitRoundoff = 1.0 / 256;     // bfloat16: 8 significant bits, |x - round(x)| <= 2^-8 |x|
constexpr double kFloatEps = 1.0 / (1 << 23);  // float32 epsilon, 2^-23

float from_bits(uint32_t u) {
    float x;
    std::memcpy(&x, &u, 4);
    return x;
}

// The kernels the test can run here: portable always, and AVX2, AVX512-BF16
// and AMX where the CPU has them.
std::vector<bf::Kernel> kernels_here() {
    std::vector<bf::Kernel> k;
    for (bf::Kernel kernel : {bf::Kernel::Portable, bf::Kernel::Avx2, bf::Kernel::Avx512Bf16, bf::Kernel::Amx})
        if (bf::kernel_available(kernel)) k.push_back(kernel);
    return k;
}

struct Problem {
    int64_t M, N, K, lda, ldb, ldc;
    bool bias;
};

// C = A B (+ bias) through pack_a / pack_b / gemm with one kernel, into a C
// of ldc columns prefilled with a sentinel (to catch writes past N).
std::vector<float> bf16_gemm(const Problem& p, const std::vector<float>& A, const std::vector<float>& B,
                             const std::vector<float>& bias, bf::Kernel kernel) {
    bf::PackedA packed_a = bf::pack_a(A.data(), p.M, p.K, p.lda, p.bias ? bias.data() : nullptr);
    std::vector<bf::bf16_t> packed_b(bf::packed_b_size(p.K, p.N));
    bf::pack_b(B.data(), p.K, p.N, p.ldb, packed_b.data(), kernel);
    std::vector<float> C(p.M * p.ldc, -12345.f);
    bf::gemm(packed_a, packed_b.data(), p.N, C.data(), p.ldc, kernel);
    return C;
}

}  // namespace

TEST_CASE("bf16: rounding to nearest even, NaN, infinity, subnormals") {
    CHECK(bf::from_float(1.f) == 0x3f80);
    CHECK(bf::from_float(-2.f) == 0xc000);
    // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: to the even one, 1.
    CHECK(bf::from_float(1.f + 1.f / 256) == 0x3f80);
    // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even).
    CHECK(bf::from_float(1.f + 3.f / 256) == 0x3f82);
    // Just above halfway rounds up.
    CHECK(bf::from_float(from_bits(0x3f808001u)) == 0x3f81);
    CHECK(bf::from_float(std::numeric_limits<float>::infinity()) == 0x7f80);
    CHECK(bf::from_float(std::numeric_limits<float>::max()) == 0x7f80);  // rounds up to infinity
    CHECK(std::isnan(bf::round(std::numeric_limits<float>::quiet_NaN())));
    CHECK(std::isnan(bf::to_float(bf::from_float(from_bits(0x7f800001u)))));  // a NaN whose top bits look like inf
    CHECK(bf::from_float(from_bits(0x00400000u)) == 0x0000);                 // subnormal -> +0
    CHECK(bf::from_float(from_bits(0x80400000u)) == 0x8000);                 // subnormal -> -0
    for (float x : {0.1f, -3.7f, 1e-20f, 6.5e10f}) {
        const double r = bf::round(x);
        CHECK(std::fabs(r - x) <= kUnitRoundoff * std::fabs(x));
        CHECK(bf::round(static_cast<float>(r)) == r);  // rounding a bfloat16 value changes nothing
    }
}

TEST_CASE("bf16: pack_b of the dispatched kernel equals the portable one bit for bit") {
    // Awkward values: halfway cases, subnormals, infinities, NaN, signed zeros;
    // K and N not multiples of the blocks.
    const int64_t K = 37, N = 45, ldb = 50;
    std::vector<float> B(K * ldb);
    Generator gen(11);
    const uint32_t specials[] = {0x3f808000u, 0x3f818000u, 0x00000001u, 0x80700000u, 0x7f800000u,
                                 0xff800000u, 0x7fc00000u, 0x80000000u, 0x7f7fffffu, 0x3f7fffffu};
    for (size_t i = 0; i < B.size(); ++i)
        B[i] = i % 7 == 0 ? from_bits(specials[(i / 7) % 10]) : gen.normal() * std::exp2(gen.normal() * 10);
    std::vector<bf::bf16_t> portable(bf::packed_b_size(K, N));
    bf::pack_b(B.data(), K, N, ldb, portable.data(), bf::Kernel::Portable);
    // The layout: pairs of rows side by side, zeros in the padding.
    const int64_t Np = bf::round_up(N, bf::kColBlock), Kp = bf::round_up(K, bf::kDepthBlock);
    CHECK(portable.size() == static_cast<size_t>(Kp * Np));
    CHECK(portable[(5 * Np + 7) * 2 + 1] == bf::from_float(B[11 * ldb + 7]));
    CHECK(portable[(18 * Np + 3) * 2 + 1] == 0);  // row 37 is padding
    CHECK(portable[(2 * Np + 46) * 2] == 0);      // column 46 is padding
    for (bf::Kernel k : kernels_here()) {
        std::vector<bf::bf16_t> got(portable.size(), 0xdead);
        bf::pack_b(B.data(), K, N, ldb, got.data(), k);
        int64_t mismatches = 0;
        for (size_t i = 0; i < got.size(); ++i) mismatches += got[i] != portable[i];
        CHECK_MESSAGE(mismatches == 0, std::string(bf::kernel_name(k)));
    }
}

TEST_CASE("bf16: GEMM vs float32 sgemm within bfloat16 rounding bounds, odd shapes, each kernel") {
    INFO("best kernel here: " << std::string(bf::kernel_name(bf::best_kernel())));
    const Problem problems[] = {
        {1, 1, 1, 1, 1, 1, false},          {17, 33, 45, 45, 33, 33, true},  {40, 50, 70, 73, 51, 60, true},
        {16, 32, 32, 32, 32, 32, false},    {64, 100, 576, 576, 100, 100, true},
        {5, 200, 3, 3, 200, 201, true},     {33, 17, 1153, 1153, 17, 17, false},
    };
    Generator gen(7);
    for (const Problem& p : problems) {
        std::vector<float> A(p.M * p.lda), B(p.K * p.ldb), bias(p.M);
        for (float& a : A) a = gen.normal();
        for (float& b : B) b = gen.normal();
        for (float& b : bias) b = gen.normal();
        // float32 reference through sgemm (minnow's matmul), on the dense [M, K] and [K, N].
        Tensor a = Tensor::empty({p.M, p.K}), b = Tensor::empty({p.K, p.N});
        for (int64_t m = 0; m < p.M; ++m)
            for (int64_t k = 0; k < p.K; ++k) a.data()[m * p.K + k] = A[m * p.lda + k];
        for (int64_t k = 0; k < p.K; ++k)
            for (int64_t n = 0; n < p.N; ++n) b.data()[k * p.N + n] = B[k * p.ldb + n];
        Tensor c32 = matmul(a, b);
        for (bf::Kernel kernel : kernels_here()) {
            std::vector<float> C = bf16_gemm(p, A, B, bias, kernel);
            double worst_vs_fp32 = 0, worst_vs_rounded = 0;
            for (int64_t m = 0; m < p.M; ++m)
                for (int64_t n = 0; n < p.N; ++n) {
                    // Per element: sum |a||b| bounds every error term.
                    double abs_sum = 0, rounded = p.bias ? bias[m] : 0.0;
                    for (int64_t k = 0; k < p.K; ++k) {
                        const double x = A[m * p.lda + k], y = B[k * p.ldb + n];
                        abs_sum += std::fabs(x * y);
                        rounded += static_cast<double>(bf::round(x)) * bf::round(y);  // exact operands, exact sum
                    }
                    const double got = C[m * p.ldc + n];
                    const double fp32 = c32.data()[m * p.N + n] + (p.bias ? bias[m] : 0.f);
                    // bf16 rounding of both operands: |a'b' - ab| <= (2u + u^2)|ab|; then two
                    // float32 summations (ours and sgemm's), each within K eps sum |a||b|.
                    const double bound_fp32 =
                        (2 * kUnitRoundoff + kUnitRoundoff * kUnitRoundoff + 2.0 * (p.K + 1) * kFloatEps) * abs_sum +
                        1e-6;
                    const double bound_rounded = (p.K + 1) * kFloatEps * abs_sum * 1.01 + 1e-6;
                    worst_vs_fp32 = std::max(worst_vs_fp32, std::fabs(got - fp32) / bound_fp32);
                    worst_vs_rounded = std::max(worst_vs_rounded, std::fabs(got - rounded) / bound_rounded);
                }
            INFO(std::string(bf::kernel_name(kernel)) << " M " << p.M << " N " << p.N << " K " << p.K
                                        << ": worst error / bound vs float32 " << worst_vs_fp32
                                        << ", vs exact product of the rounded operands " << worst_vs_rounded);
            CHECK(worst_vs_fp32 <= 1.0);
            CHECK(worst_vs_rounded <= 1.0);
            // Nothing written past column N of a row.
            for (int64_t m = 0; m < p.M; ++m)
                for (int64_t n = p.N; n < p.ldc; ++n) CHECK(C[m * p.ldc + n] == -12345.f);
        }
    }
}

TEST_CASE("bf16: the portable GEMM and every other kernel agree to float summation rounding") {
    const std::vector<bf::Kernel> kernels = kernels_here();
    MESSAGE("bf16 kernels tested here: " << kernels.size() << ", best "
                                         << std::string(bf::kernel_name(bf::best_kernel())));
    CHECK(bf::kernel_available(bf::best_kernel()));
    Generator gen(8);
    // Rows and columns that fill no block (5 rows, 17 columns), and that do.
    for (const Problem& p : {Problem{48, 96, 64, 64, 96, 96, true}, Problem{31, 47, 300, 300, 47, 47, true},
                             Problem{5, 17, 40, 40, 17, 20, false}, Problem{70, 33, 96, 100, 33, 40, true}}) {
        std::vector<float> A(p.M * p.lda), B(p.K * p.ldb), bias(p.M);
        for (float& a : A) a = gen.normal();
        for (float& b : B) b = gen.uniform();  // like post-ReLU activations: all positive
        for (float& b : bias) b = gen.normal();
        const auto portable = bf16_gemm(p, A, B, bias, bf::Kernel::Portable);
        for (bf::Kernel kernel : kernels) {
            const auto other = bf16_gemm(p, A, B, bias, kernel);
            int64_t outside = 0;
            for (int64_t m = 0; m < p.M; ++m)
                for (int64_t n = 0; n < p.N; ++n) {
                    double abs_sum = std::fabs(bias[m]);
                    for (int64_t k = 0; k < p.K; ++k) abs_sum += std::fabs(A[m * p.lda + k] * B[k * p.ldb + n]);
                    const double d = std::fabs(portable[m * p.ldc + n] - other[m * p.ldc + n]);
                    outside += d > 2.0 * (p.K + 1) * kFloatEps * abs_sum;
                }
            CHECK_MESSAGE(outside == 0,
                          std::string(bf::kernel_name(kernel)) << " M " << p.M << " N " << p.N << " K " << p.K);
        }
    }
}

namespace {

// conv2d on bf16-rounded input and weights, in float32: what Bf16Conv2d must
// compute up to summation order.
Tensor rounded_reference(const Tensor& x, const Conv2d& conv) {
    auto round_all = [](const Tensor& t) {
        Tensor r = Tensor::empty(t.shape());
        for (int64_t i = 0; i < t.numel(); ++i) r.data()[i] = bf::round(t.data()[i]);
        return r;
    };
    return conv2d(round_all(x), round_all(conv.weight), conv.bias, conv.stride, conv.padding);
}

// A conv that rounds its input and weights to bfloat16 and then runs in
// float32: the float32 model made to see exactly the bfloat16 model's operands.
class RoundedConv : public Module {
public:
    explicit RoundedConv(std::shared_ptr<Conv2d> conv) : conv_(std::move(conv)) {}
    Tensor forward(const Tensor& x) override { return rounded_reference(x, *conv_); }
    std::string type_name() const override { return "RoundedConv"; }

private:
    std::shared_ptr<Conv2d> conv_;
};


}  // namespace

TEST_CASE("bf16: Bf16Conv2d equals conv2d on rounded operands (strides, padding, 1x1, odd channels)") {
    struct Case {
        int64_t n, cin, cout, k, s, p, h, w;
    };
    // im2col path: few channels or stride > 1; direct path: stride 1 and >= 32 channels
    // (channel counts that are not multiples of 32, widths not multiples of 16, 1x1 and 5x5).
    const Case cases[] = {{1, 3, 64, 3, 1, 1, 32, 32},  {3, 5, 7, 3, 2, 1, 9, 11},    {2, 16, 32, 1, 2, 0, 8, 8},
                          {1, 20, 33, 3, 1, 0, 6, 13},  {1, 1, 1, 5, 3, 2, 7, 7},     {2, 64, 32, 3, 2, 1, 9, 9},
                          {4, 64, 128, 3, 1, 1, 8, 8},  {1, 48, 20, 3, 1, 1, 17, 19}, {3, 32, 16, 1, 1, 0, 5, 33},
                          {1, 64, 64, 3, 1, 0, 20, 18}, {2, 33, 17, 5, 1, 2, 9, 9},   {1, 128, 256, 3, 1, 1, 8, 8}};
    manual_seed(9);
    NoGradGuard no_grad;
    const int saved_threads = get_num_threads();
    for (int threads : {1, 2})
    for (const Case& c : cases)
        for (bool bias : {true, false})
            for (bf::Kernel kernel : kernels_here()) {
                set_num_threads(threads);
                CAPTURE(threads);
                Conv2d conv(c.cin, c.cout, c.k, c.s, c.p, bias);
                conv.eval();
                Bf16Conv2d fast(conv, kernel);
                fast.eval();
                CHECK(fast.direct() == (c.s == 1 && c.cin >= 32));
                Tensor x = Tensor::normal({c.n, c.cin, c.h, c.w}, 0.f, 1.f);
                Tensor expected = rounded_reference(x, conv), got = fast(x);
                const double diff = max_abs_diff(got, expected), scale = max_abs(expected);
                INFO(std::string(bf::kernel_name(kernel))
                     << " conv " << c.cin << "->" << c.cout << " k" << c.k << " s" << c.s << " p" << c.p << " on "
                     << c.n << "x" << c.h << "x" << c.w << (bias ? " with bias" : "") << ": max diff " << diff
                     << ", scale " << scale);
                CHECK(diff <= 1e-5 * scale + 1e-6);
                // And against float32 itself, within bfloat16 rounding (loosely: 2u of the scale).
                CHECK(max_abs_diff(got, conv2d(x, conv.weight, conv.bias, c.s, c.p)) <= 2 * kUnitRoundoff * scale * 4);
            }
    set_num_threads(saved_threads);
}

TEST_CASE("bf16: Bf16Conv2d is for inference only") {
    Conv2d conv(3, 4, 3, 1, 1);
    Bf16Conv2d fast(conv);
    fast.train();
    Tensor x = Tensor::normal({1, 3, 5, 5}, 0.f, 1.f);
    CHECK_THROWS_WITH_AS(fast(x), doctest::Contains("call eval()"), Error);
    fast.eval();
    x.requires_grad_(true);
    CHECK_THROWS_WITH_AS(fast(x), doctest::Contains("NoGradGuard"), Error);
    NoGradGuard no_grad;
    CHECK(fast(x).shape() == Shape{1, 4, 5, 5});
    CHECK_THROWS_WITH_AS(fast(Tensor::zeros({1, 2, 5, 5})), doctest::Contains("expected input of shape"), Error);
}

TEST_CASE("bf16: Bf16Conv2d follows its weight and bias buffers (load_state_dict, writes)") {
    NoGradGuard no_grad;
    for (bool direct : {false, true}) {
        CAPTURE(direct);
        const int64_t cin = direct ? 32 : 3;
        Conv2d a(cin, 8, 3, 1, 1), b(cin, 8, 3, 1, 1);
        a.eval();
        b.eval();
        Bf16Conv2d fast(a);
        fast.eval();
        CHECK(fast.direct() == direct);
        Tensor x = Tensor::normal({2, cin, 6, 6}, 0.f, 1.f);
        Tensor before = fast(x);
        // b's weights and bias loaded into the bf16 layer: it computes b now.
        fast.load_state_dict(b.state_dict());
        Tensor after = fast(x), expected = rounded_reference(x, b);
        CHECK(max_abs_diff(after, expected) <= 1e-5 * max_abs(expected) + 1e-6);
        CHECK(max_abs_diff(after, before) > 1e-3);
        // and a write to the bias buffer alone
        fast.bias.data()[0] += 1.f;
        Tensor shifted = fast(x);
        CHECK(shifted.data()[0] == doctest::Approx(after.data()[0] + 1.f).epsilon(1e-5));
    }
}

TEST_CASE("bf16: a folded, converted cnn's logits are close to float32's") {
    manual_seed(10);
    auto reference = make_model("cnn", "batch");
    // Running statistics from a few training-mode batches, so BatchNorm does
    // real work and the activations have a sensible scale.
    {
        NoGradGuard no_grad;
        for (int i = 0; i < 3; ++i) (*reference)(Tensor::normal({16, 3, 32, 32}, 0.f, 1.f));
    }
    reference->eval();
    auto converted = make_model("cnn", "batch");
    converted->load_state_dict(reference->state_dict());
    converted->eval();
    CHECK(fold_batchnorm(*converted) == 5);
    auto simulated = make_model("cnn", "batch");  // folded, float32, seeing bf16-rounded operands
    simulated->load_state_dict(reference->state_dict());
    simulated->eval();
    fold_batchnorm(*simulated);
    std::vector<std::string> convs;
    for (auto& [name, m] : simulated->named_modules())
        if (dynamic_cast<Conv2d*>(m)) convs.push_back(name);
    for (const auto& name : convs) {
        std::shared_ptr<Conv2d> conv;
        for (auto& [n, m] : std::dynamic_pointer_cast<ReferenceCNN>(simulated)->features->named_children())
            if ("features." + n == name) conv = std::dynamic_pointer_cast<Conv2d>(m);
        replace_submodule(*simulated, name, std::make_shared<RoundedConv>(conv));
    }
    CHECK(to_bf16_inference(*converted) == 5);
    std::map<std::string, int> types;
    for (auto& [name, m] : converted->named_modules()) ++types[m->type_name()];
    CHECK(types["Bf16Conv2d"] == 5);
    CHECK(types["ReLU"] == 0);             // each done by the conv before it
    CHECK(types["Identity"] == 5 + 5);     // the folded BatchNorms and the fused ReLUs
    CHECK(types["EvalMaxPool2d"] == 2);
    CHECK(types["Linear"] == 1);           // the classifier stays float32

    NoGradGuard no_grad;
    for (const Shape& shape : {Shape{8, 3, 32, 32}, Shape{1, 3, 40, 24}}) {
        Tensor x = Tensor::normal(shape, 0.f, 1.f);
        Tensor fp32 = (*reference)(x), bf16 = (*converted)(x), sim = (*simulated)(x);
        const double scale = max_abs(fp32);
        INFO(shape_str(shape) << ": max |bf16 - fp32| " << max_abs_diff(bf16, fp32) << ", max |bf16 - simulated| "
                              << max_abs_diff(bf16, sim) << ", logit scale " << scale);
        CHECK(scale > 0.1);
        // The wiring: exactly the float32 computation on rounded operands, up to summation order.
        CHECK(max_abs_diff(bf16, sim) <= 1e-4 * scale);
        // The cost of bfloat16: five layers of 0.4% operand rounding stay within a few percent.
        CHECK(max_abs_diff(bf16, fp32) <= 0.05 * scale);
    }
}

TEST_CASE("bf16: resnet20 converts (bias-free and 1x1 stride-2 shortcut convs)") {
    manual_seed(12);
    auto reference = make_model("resnet20", "batch");
    reference->eval();
    auto converted = make_model("resnet20", "batch");
    converted->load_state_dict(reference->state_dict());
    converted->eval();
    CHECK(to_bf16_inference(*converted) == 1 + 9 * 2 + 2);  // BatchNorm left unfolded, in float32
    NoGradGuard no_grad;
    Tensor x = Tensor::normal({2, 3, 32, 32}, 0.f, 1.f);
    Tensor fp32 = (*reference)(x), bf16 = (*converted)(x);
    CHECK(max_abs_diff(bf16, fp32) <= 0.05 * max_abs(fp32));
    converted->train();
    CHECK_THROWS_WITH_AS(to_bf16_inference(*converted), doctest::Contains("training mode"), Error);
}

TEST_CASE("bf16: to_bf16_inference options: no fusion, no pooling swap") {
    manual_seed(13);
    auto model = make_model("cnn", "batch");
    model->eval();
    fold_batchnorm(*model);  // a ReLU now follows each conv (after an Identity): fusable, but fuse_relu is off below
    Bf16InferenceOptions options;
    options.fuse_relu = false;
    options.eval_pooling = false;
    CHECK(to_bf16_inference(*model, options) == 5);
    std::map<std::string, int> types;
    for (auto& [name, m] : model->named_modules()) ++types[m->type_name()];
    CHECK(types["ReLU"] == 5);
    CHECK(types["MaxPool2d"] == 2);
    CHECK(types["Bf16Conv2d"] == 5);
}

TEST_CASE("bf16: EvalMaxPool2d equals MaxPool2d (2x2, odd sizes, NaN, other windows)") {
    manual_seed(14);
    NoGradGuard no_grad;
    for (const Shape& shape : {Shape{2, 3, 8, 8}, Shape{1, 5, 7, 9}, Shape{1, 64, 128, 128}})
        for (auto [k, s, p] : {std::tuple<int64_t, int64_t, int64_t>{2, 2, 0}, {3, 2, 1}, {2, 1, 0}}) {
            MaxPool2d pool(k, s, p);
            EvalMaxPool2d fast(pool);
            pool.eval();
            fast.eval();
            Tensor x = Tensor::normal(shape, 0.f, 1.f);
            x.data()[5] = std::numeric_limits<float>::quiet_NaN();
            Tensor expected = pool(x), got = fast(x);
            REQUIRE(got.shape() == expected.shape());
            int64_t mismatches = 0;
            for (int64_t i = 0; i < got.numel(); ++i) {
                const float a = got.data()[i], b = expected.data()[i];
                mismatches += !(a == b || (std::isnan(a) && std::isnan(b)));
            }
            CHECK_MESSAGE(mismatches == 0, shape_str(shape) << " k" << k << " s" << s << " p" << p);
        }
    EvalMaxPool2d fast(MaxPool2d(2));
    fast.train();
    CHECK_THROWS_WITH_AS(fast(Tensor::zeros({1, 1, 4, 4})), doctest::Contains("call eval()"), Error);
}

TEST_CASE("bf16: the GEMM's ReLU epilogue is max(C, 0), NaN kept, for each kernel") {
    const int64_t M = 20, N = 37, K = 40;  // edge tiles in both directions
    Generator gen(15);
    std::vector<float> A(M * K), B(K * N), bias(M);
    for (float& a : A) a = gen.normal();
    for (float& b : B) b = gen.normal();
    for (float& b : bias) b = gen.normal();
    B[3 * N + 5] = std::numeric_limits<float>::quiet_NaN();  // column 5 of C is NaN in every row
    bf::PackedA packed_a = bf::pack_a(A.data(), M, K, K, bias.data());
    for (bf::Kernel kernel : kernels_here()) {
        std::vector<bf::bf16_t> packed_b(bf::packed_b_size(K, N));
        bf::pack_b(B.data(), K, N, N, packed_b.data(), kernel);
        std::vector<float> plain(M * N), relu(M * N);
        bf::gemm(packed_a, packed_b.data(), N, plain.data(), N, kernel);
        bf::gemm(packed_a, packed_b.data(), N, relu.data(), N, kernel, /*relu=*/true);
        int64_t negatives = 0, mismatches = 0;
        for (int64_t i = 0; i < M * N; ++i) {
            negatives += plain[i] < 0;
            if (i % N == 5) mismatches += !std::isnan(relu[i]);
            else mismatches += relu[i] != std::max(plain[i], 0.f);
        }
        CHECK(negatives > 100);  // the ReLU had work to do
        CHECK_MESSAGE(mismatches == 0, std::string(bf::kernel_name(kernel)));
    }
}
