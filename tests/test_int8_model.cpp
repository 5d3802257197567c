// int8 inference of the cnn (layers/int8_model.h): close to float32, the same
// bits on every kernel, thread count and batch split, NaN images, and the
// models and inputs it refuses, each with the layer named.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "core/autograd.h"
#include "core/error.h"
#include "core/parallel.h"
#include "core/random.h"
#include "kernels/cpu.h"
#include "layers/fold_batchnorm.h"
#include "layers/int8_model.h"
#include "layers/models.h"
#include "test_helpers.h"

using namespace minnow;
namespace q8 = minnow::int8;

namespace {

struct ScopedThreads {
    int saved = get_num_threads();
    explicit ScopedThreads(int n) { set_num_threads(n); }
    ~ScopedThreads() { set_num_threads(saved); }
};

// A cnn with running statistics from a few training-mode batches (so
// BatchNorm does real work), in eval mode, folded.
std::shared_ptr<Module> folded_cnn(uint64_t seed) {
    manual_seed(seed);
    auto m = make_model("cnn", "batch");
    {
        NoGradGuard no_grad;
        for (int i = 0; i < 3; ++i) (*m)(Tensor::normal({16, 3, 32, 32}, 0.f, 1.f));
    }
    m->eval();
    REQUIRE(fold_batchnorm(*m) == 5);
    return m;
}

double rms(const Tensor& t) {
    double s = 0;
    for (int64_t i = 0; i < t.numel(); ++i) s += double(t.data()[i]) * t.data()[i];
    return std::sqrt(s / t.numel());
}

double rms_diff(const Tensor& a, const Tensor& b) {
    double s = 0;
    for (int64_t i = 0; i < a.numel(); ++i) {
        const double d = double(a.data()[i]) - b.data()[i];
        s += d * d;
    }
    return std::sqrt(s / a.numel());
}

bool same_bits(const Tensor& a, const Tensor& b) {
    if (a.numel() != b.numel()) return false;
    for (int64_t i = 0; i < a.numel(); ++i)
        if (std::memcmp(&a.data()[i], &b.data()[i], 4) != 0) return false;
    return true;
}

}  // namespace

TEST_CASE("int8: a quantized cnn's logits are close to the float model's, with every calibration") {
    auto model = folded_cnn(3);
    const Tensor calibration = Tensor::normal({32, 3, 32, 32}, 0.f, 1.f);
    const Tensor x = Tensor::normal({8, 3, 32, 32}, 0.f, 1.f);
    Tensor want;
    {
        NoGradGuard no_grad;
        want = (*model)(x);
    }
    for (Calibration c : {Calibration::MinMax, Calibration::Percentile, Calibration::Mse}) {
        Int8Options opt;
        opt.calibration = c;
        opt.batch_size = 10;  // a short last batch
        auto q = quantize_int8(*model, calibration, opt);
        const Tensor got = (*q)(x);
        CAPTURE(calibration_name(c));
        REQUIRE(got.shape() == want.shape());
        // 7-bit activations over 5 layers: the rms error was 0.57-0.62% of the logits' here.
        CHECK(rms_diff(got, want) < 0.02 * rms(want));
        CHECK(q->convs().size() == 5);
        REQUIRE(q->activations().size() == 5);
        CHECK(q->activations()[0].zero > 0);  // the image has negative values
        for (size_t a = 1; a < 5; ++a) CHECK(q->activations()[a].zero == 0);  // after a ReLU
        CHECK(q->convs()[1].pool);
        CHECK(q->convs()[4].output == -1);  // the features, in float
    }
    CHECK(parse_calibration("mse") == Calibration::Mse);
    CHECK_THROWS_WITH_AS(parse_calibration("kl"), doctest::Contains("minmax, percentile or mse"), Error);
}

// q's logits on x with every kernel at 1 and 2 threads, for the whole batch
// and image by image, have the bits of the portable kernel's on one thread.
void check_every_kernel_agrees(const Int8Model& q, const Tensor& x) {
    Tensor reference;
    {
        ScopedThreads one(1);
        reference = Int8Model(q.activations(), q.convs(), q.classifier(), q8::Kernel::Portable)(x);
    }
    const int64_t classes = reference.size(1);
    for (q8::Kernel k : q8::available_kernels())
        for (int threads : {1, 2}) {
            ScopedThreads t(threads);
            Int8Model m(q.activations(), q.convs(), q.classifier(), k);
            CAPTURE(q8::kernel_name(k));
            CAPTURE(threads);
            CAPTURE(shape_str(x.shape()));
            CHECK(same_bits(m(x), reference));
            // one image at a time (rows split over the threads) gives the same logits as the batch
            for (int64_t n = 0; n < x.size(0); ++n) {
                Tensor one = Tensor::empty({1, x.size(1), x.size(2), x.size(3)});
                std::memcpy(one.data(), x.data() + n * one.numel(), 4 * one.numel());
                const Tensor y = m(one);
                CHECK(std::memcmp(y.data(), reference.data() + n * classes, 4 * classes) == 0);
            }
        }
}

TEST_CASE("int8: the same logits on every kernel, thread count, batch split and image size") {
    auto model = folded_cnn(4);
    auto q = quantize_int8(*model, Tensor::normal({16, 3, 32, 32}, 0.f, 1.f));
    for (const Shape& shape : {Shape{3, 3, 32, 32}, Shape{1, 3, 20, 24}, Shape{2, 3, 9, 11}})
        check_every_kernel_agrees(*q, Tensor::normal(shape, 0.f, 1.f));
}

TEST_CASE("int8: the first conv over the image's patches gives the bits of the 3x3 conv over the image") {
    for (const char* name : {"cnn", "resnet20"}) {
        manual_seed(8);
        auto model = make_model(name, "none");
        model->eval();
        const Tensor calibration = Tensor::normal({8, 3, 32, 32}, 0.f, 1.f);
        Int8Options plain;
        plain.image_patches = false;
        auto patched = quantize_int8(*model, calibration), unpatched = quantize_int8(*model, calibration, plain);
        CAPTURE(name);
        CHECK(patched->convs().front().patch_kernel == 3);
        CHECK(unpatched->convs().front().patch_kernel == 0);
        for (const Shape& shape : {Shape{2, 3, 32, 32}, Shape{1, 3, 7, 13}}) {
            const Tensor x = Tensor::normal(shape, 0.f, 1.f);
            CHECK(same_bits((*patched)(x), (*unpatched)(x)));
        }
    }
}

TEST_CASE("int8: an image with a NaN or an infinity gets NaN logits, the others are untouched") {
    auto model = folded_cnn(5);
    auto q = quantize_int8(*model, Tensor::normal({8, 3, 32, 32}, 0.f, 1.f));
    const Tensor x = Tensor::normal({3, 3, 16, 16}, 0.f, 1.f);
    const Tensor clean = (*q)(x);
    for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                      -std::numeric_limits<float>::infinity()}) {
        Tensor y = Tensor::empty(x.shape());
        std::memcpy(y.data(), x.data(), 4 * x.numel());
        y.data()[3 * 256 + 17] = bad;  // image 1, channel 0
        const Tensor got = (*q)(y);
        for (int i = 0; i < 10; ++i) {
            CHECK(std::isnan(got.data()[10 + i]));
            CHECK(got.data()[i] == clean.data()[i]);
            CHECK(got.data()[20 + i] == clean.data()[20 + i]);
        }
    }
}

TEST_CASE("int8: models and inputs it cannot take are refused, naming the layer") {
    const Tensor calibration = Tensor::normal({4, 3, 32, 32}, 0.f, 1.f);
    {
        auto m = make_model("cnn", "batch");
        m->eval();
        CHECK_THROWS_WITH_AS(quantize_int8(*m, calibration), doctest::Contains("'features.1' (BatchNorm2d)"), Error);
        CHECK_THROWS_WITH_AS(quantize_int8(*m, calibration), doctest::Contains("fold BatchNorm"), Error);
    }
    {
        auto m = make_model("cnn", "none");  // training mode
        CHECK_THROWS_WITH_AS(quantize_int8(*m, calibration), doctest::Contains("training mode"), Error);
        m->eval();
        auto q = quantize_int8(*m, calibration);  // no BatchNorm: nothing to fold
        CHECK_THROWS_WITH_AS((*q)(Tensor::normal({1, 3, 1, 1}, 0.f, 1.f)), doctest::Contains("too small for 'features.3'"),
                             Error);
        CHECK_THROWS_WITH_AS((*q)(Tensor::normal({1, 1, 32, 32}, 0.f, 1.f)), doctest::Contains("[N, 3, H, W]"), Error);
        CHECK_THROWS_WITH_AS(quantize_int8(*m, Tensor::normal({4, 1, 8, 8}, 0.f, 1.f)),
                             doctest::Contains("the first conv takes 3"), Error);
        Int8Options bad;
        bad.calibration = Calibration::Percentile;
        bad.percentile = 0;
        CHECK_THROWS_WITH_AS(quantize_int8(*m, calibration, bad), doctest::Contains("percentile"), Error);
    }
    {
        auto m = make_model("resnet20", "batch");
        m->eval();
        CHECK_THROWS_WITH_AS(quantize_int8(*m, calibration), doctest::Contains("'bn1' (BatchNorm2d)"), Error);
        auto g = make_model("cnn", "group");
        g->eval();
        CHECK_THROWS_WITH_AS(quantize_int8(*g, calibration), doctest::Contains("'features.1' (GroupNorm) has no int8"),
                             Error);
    }
}

TEST_CASE("int8: a quantized resnet20 (residual blocks, 1x1 shortcuts) is close to float, the same on every kernel") {
    manual_seed(6);
    auto model = make_model("resnet20", "batch");
    {
        NoGradGuard no_grad;
        for (int i = 0; i < 3; ++i) (*model)(Tensor::normal({16, 3, 32, 32}, 0.f, 1.f));
    }
    model->eval();
    REQUIRE(fold_batchnorm(*model) == 21);
    auto q = quantize_int8(*model, Tensor::normal({32, 3, 32, 32}, 0.f, 1.f));
    CHECK(q->convs().size() == 21);
    int residuals = 0, shortcut_zero_points = 0;
    for (const auto& c : q->convs()) residuals += c.residual >= 0;
    for (const auto& a : q->activations()) shortcut_zero_points += a.name.find("shortcut") != std::string::npos && a.zero > 0;
    CHECK(residuals == 9);
    CHECK(shortcut_zero_points == 2);  // a shortcut's output has negative values
    const Tensor x = Tensor::normal({3, 3, 32, 32}, 0.f, 1.f);
    Tensor want;
    {
        NoGradGuard no_grad;
        want = (*model)(x);
    }
    const Tensor got = (*q)(x);
    CHECK(rms_diff(got, want) < 0.02 * rms(want));  // measured: 0.66% of the logits' rms
    check_every_kernel_agrees(*q, x);
}