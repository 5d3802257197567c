// NaN and inf through every op, against PyTorch 1.13
// (tests/fixtures/special_values.safetensors): where PyTorch gives NaN, so
// does minnow, the same infinities, the same argmax and max-pool choices, and
// the same gradients (a NaN is never swallowed, as relu(NaN) = 0 once did).
#include <cmath>
#include <functional>
#include <sstream>

#include "core/autograd.h"
#include "core/ops.h"
#include "kernels/cpu.h"
#include "kernels/gemm_bf16.h"
#include "layers/batchnorm.h"
#include "layers/batchrenorm.h"
#include "layers/conv2d.h"
#include "layers/conv2d_bf16.h"
#include "layers/dropout.h"
#include "layers/eval_pooling.h"
#include "layers/gated_batchnorm.h"
#include "layers/groupnorm.h"
#include "layers/layernorm.h"
#include "layers/linear.h"
#include "layers/loss.h"
#include "layers/pooling.h"
#include "optim/grad_utils.h"
#include "test_helpers.h"

using namespace minnow;
using minnow::testing::source_path;

namespace {

const SafetensorsFile& fixture() {
    static const SafetensorsFile f = load_safetensors(source_path("tests/fixtures/special_values.safetensors"));
    return f;
}

// Equal as PyTorch's values are: NaN where it has NaN, the same infinity
// where it has one, and finite values to float rounding (of sums as large as
// the tensor's largest finite value; `tol` is that relative tolerance).
void check_same(const Tensor& got, const Tensor& want, const std::string& what, double tol = 1e-5) {
    REQUIRE_MESSAGE(got.shape() == want.shape(), what << ": shape " << shape_str(got.shape()) << ", expected "
                                                      << shape_str(want.shape()));
    double scale = 0;
    for (int64_t i = 0; i < want.numel(); ++i)
        if (std::isfinite(want.data()[i])) scale = std::max(scale, std::fabs(double(want.data()[i])));
    for (int64_t i = 0; i < want.numel(); ++i) {
        const float g = got.data()[i], w = want.data()[i];
        const bool ok = std::isnan(w)   ? std::isnan(g)
                        : std::isinf(w) ? g == w
                                        : std::fabs(g - w) <= tol * scale + tol * std::fabs(w);
        if (!ok) {
            FAIL_CHECK(what << ": element " << i << " is " << g << ", PyTorch gives " << w);
            return;
        }
    }
}

// Runs the case: fn on fresh leaves of the stored inputs, compares the output
// and, where the fixture has them, the input gradients for the stored dy.
void check_case(const std::string& name, int inputs,
                const std::function<Tensor(const std::vector<Tensor>&)>& fn) {
    CAPTURE(name);
    const SafetensorsFile& f = fixture();
    std::vector<Tensor> xs;
    for (int i = 0; i < inputs; ++i) {
        Tensor x = f.get(name + ".x" + std::to_string(i)).detach().clone();
        if (f.find(name + ".dx" + std::to_string(i))) x.requires_grad_();
        xs.push_back(x);
    }
    Tensor y = fn(xs);
    check_same(y.detach(), f.get(name + ".y"), name + ".y");
    if (const TensorEntry* dy = f.find(name + ".dy")) {
        y.backward(dy->tensor);
        for (int i = 0; i < inputs; ++i)
            if (const TensorEntry* dx = f.find(name + ".dx" + std::to_string(i)))
                check_same(xs[i].grad(), dx->tensor, name + ".dx" + std::to_string(i));
    }
}

}  // namespace

TEST_CASE("special values: unary ops propagate NaN and inf as PyTorch does") {
    const std::vector<std::pair<std::string, std::function<Tensor(const Tensor&)>>> ops{
        {"relu", relu}, {"sigmoid", sigmoid}, {"tanh", minnow::tanh}, {"exp", minnow::exp},   {"log", minnow::log},
        {"sqrt", minnow::sqrt}, {"abs", minnow::abs}, {"square", square}, {"neg", neg}};
    for (const auto& [name, op] : ops) check_case(name, 1, [&op = op](auto& v) { return op(v[0]); });
}

TEST_CASE("special values: maximum, max and argmax, sum and mean") {
    check_case("maximum", 2, [](auto& v) { return maximum(v[0], v[1]); });
    check_case("max_dim1", 1, [](auto& v) { return max(v[0], 1); });
    check_same(argmax(fixture().get("max_dim1.x0"), 1), fixture().get("max_dim1.indices"), "argmax");
    for (const char* name : {"sum", "sum_inf"}) check_case(name, 1, [](auto& v) { return sum(v[0]).reshape({1}); });
    check_case("mean", 1, [](auto& v) { return mean(v[0]).reshape({1}); });
}

TEST_CASE("special values: log_softmax and cross-entropy") {
    check_case("log_softmax", 1, [](auto& v) { return log_softmax(v[0], 1); });
    const Tensor& labels = fixture().get("cross_entropy.labels");
    check_case("cross_entropy_none", 1, [&](auto& v) { return cross_entropy(v[0], labels, 0.f, Reduction::None); });
    check_case("cross_entropy_mean", 1, [&](auto& v) { return cross_entropy(v[0], labels).reshape({1}); });
}

TEST_CASE("special values: pooling") {
    check_case("max_pool2d", 1, [](auto& v) { return max_pool2d(v[0], 2); });
    check_same(max_pool2d_with_indices(fixture().get("max_pool2d.x0"), 2).indices,
               fixture().get("max_pool2d.indices"), "max_pool2d indices");
    check_case("avg_pool2d", 1, [](auto& v) { return avg_pool2d(v[0], 2); });
    check_case("adaptive_avg_pool2d", 1, [](auto& v) { return adaptive_avg_pool2d(v[0], 1); });
}

TEST_CASE("special values: linear and conv2d (direct 3x3 kernels and im2col + GEMM)") {
    check_case("linear", 2, [](auto& v) { return linear(v[0], v[1]); });
    for (Isa isa : supported_isas()) {  // generic: im2col + GEMM; avx512: the direct 3x3 kernels
        CAPTURE(isa_name(isa));
        ScopedIsa scoped(isa);
        check_case("conv2d", 2, [](auto& v) { return conv2d(v[0], v[1], Tensor(), 1, 1); });
    }
}

TEST_CASE("special values: normalisation layers and BatchNorm's running statistics") {
    Tensor rm = Tensor::zeros({3}), rv = Tensor::ones({3});
    check_case("batch_norm", 1, [&](auto& v) { return batch_norm(v[0], rm, rv, Tensor(), Tensor(), true, 0.1f); });
    check_same(rm, fixture().get("batch_norm.running_mean"), "running_mean");
    check_same(rv, fixture().get("batch_norm.running_var"), "running_var");
    check_case("layer_norm", 1, [](auto& v) { return layer_norm(v[0], {3, 2, 2}, Tensor(), Tensor()); });
    check_case("group_norm", 1, [](auto& v) { return group_norm(v[0], 3, Tensor(), Tensor()); });
}

TEST_CASE("special values: binary ops, broadcasting, scalar ops and powers") {
    const std::vector<std::pair<std::string, std::function<Tensor(const Tensor&, const Tensor&)>>> binary{
        {"add", [](auto& a, auto& b) { return add(a, b); }},
        {"sub", [](auto& a, auto& b) { return sub(a, b); }},
        {"mul", [](auto& a, auto& b) { return mul(a, b); }},
        {"div", [](auto& a, auto& b) { return div(a, b); }},
        {"mul_broadcast", [](auto& a, auto& b) { return mul(a, b); }},
        {"maximum_broadcast", [](auto& a, auto& b) { return maximum(a, b); }}};
    for (const auto& [name, op] : binary) check_case(name, 2, [&op = op](auto& v) { return op(v[0], v[1]); });
    const std::vector<std::pair<std::string, std::function<Tensor(const Tensor&)>>> unary{
        {"rsqrt", [](auto& x) { return rsqrt(x); }},
        {"pow2", [](auto& x) { return pow(x, 2.f); }},
        {"pow_half", [](auto& x) { return pow(x, 0.5f); }},
        {"pow_neg1", [](auto& x) { return pow(x, -1.f); }},
        {"pow_neg_half", [](auto& x) { return pow(x, -0.5f); }},
        {"pow0", [](auto& x) { return pow(x, 0.f); }},
        {"pow3", [](auto& x) { return pow(x, 3.f); }},
        {"pow_neg2", [](auto& x) { return pow(x, -2.f); }},
        {"pow1_5", [](auto& x) { return pow(x, 1.5f); }},
        {"add_scalar", [](auto& x) { return x + 2.f; }},
        {"mul_scalar0", [](auto& x) { return x * 0.f; }},
        {"mul_scalar_inf", [](auto& x) { return x * std::numeric_limits<float>::infinity(); }}};
    for (const auto& [name, op] : unary) check_case(name, 1, [&op = op](auto& v) { return op(v[0]); });
}

TEST_CASE("special values: reductions along a dim, var, max of all elements, argmax") {
    check_case("sum_dim1", 1, [](auto& v) { return sum(v[0], {1}); });
    check_case("mean_dim0", 1, [](auto& v) { return mean(v[0], {0}); });
    check_case("var_dim1", 1, [](auto& v) { return var(v[0], {1}); });
    check_case("var_biased_dim0", 1, [](auto& v) { return var(v[0], {0}, false); });
    for (const char* name : {"max_all_ties", "max_all_nan", "max_all_inf"})
        check_case(name, 1, [](auto& v) { return max(v[0]).reshape({1}); });
    check_case("max_dim1_more", 1, [](auto& v) { return max(v[0], 1); });
    check_case("max_dim0", 1, [](auto& v) { return max(v[0], 0); });
    const Tensor& am = fixture().get("max_dim1_more.x0");
    check_same(argmax(am, 1), fixture().get("argmax_dim1.indices"), "argmax dim 1");
    check_same(argmax(am, 0), fixture().get("argmax_dim0.indices"), "argmax dim 0");
}

TEST_CASE("special values: log_softmax's gradient and cross-entropy with label smoothing") {
    check_case("log_softmax_grad", 1, [](auto& v) { return log_softmax(v[0], 1); });
    check_case("log_softmax_dim0", 1, [](auto& v) { return log_softmax(v[0], 0); });
    const Tensor& labels = fixture().get("ce_more.labels");
    for (auto [tag, eps] : {std::pair{"eps0", 0.f}, {"eps01", 0.1f}, {"eps1", 1.f}}) {
        const std::string t = tag;
        check_case("ce_none_" + t, 1, [&, eps = eps](auto& v) { return cross_entropy(v[0], labels, eps, Reduction::None); });
        check_case("ce_mean_" + t, 1, [&, eps = eps](auto& v) { return cross_entropy(v[0], labels, eps).reshape({1}); });
        check_case("ce_sum_" + t, 1,
                   [&, eps = eps](auto& v) { return cross_entropy(v[0], labels, eps, Reduction::Sum).reshape({1}); });
    }
    const Tensor& finite_labels = fixture().get("ce_finite.labels");
    check_case("ce_finite_eps0", 1, [&](auto& v) { return cross_entropy(v[0], finite_labels).reshape({1}); });
}

TEST_CASE("special values: max and average pooling, padded and strided; the inference max pool") {
    const std::vector<std::tuple<std::string, int64_t, int64_t, int64_t>> configs{
        {"k3s1p1", 3, 1, 1}, {"k3s2p0", 3, 2, 0}, {"k2s2p0", 2, 2, 0}, {"k2s1p1", 2, 1, 1}};
    for (const auto& [name, k, s, p] : configs) {
        CAPTURE(name);
        check_case("max_pool2d_" + name, 1, [k = k, s = s, p = p](auto& v) { return max_pool2d(v[0], k, s, p); });
        const Tensor& x = fixture().get("max_pool2d_" + name + ".x0");
        check_same(max_pool2d_with_indices(x, k, s, p).indices, fixture().get("max_pool2d_" + name + ".indices"),
                   "max_pool2d_" + name + " indices");
        check_case("avg_pool2d_" + name, 1, [k = k, s = s, p = p](auto& v) { return avg_pool2d(v[0], k, s, p); });
        EvalMaxPool2d eval_pool(MaxPool2d(k, s, p));
        eval_pool.eval();
        NoGradGuard ng;
        check_same(eval_pool(x), fixture().get("max_pool2d_" + name + ".y"), "EvalMaxPool2d " + name);
    }
}

TEST_CASE("special values: linear with a bias; conv2d with NaN and inf weights and inputs, at every ISA") {
    check_case("linear_bias", 3, [](auto& v) { return linear(v[0], v[1], v[2]); });
    for (Isa isa : supported_isas()) {  // generic: im2col + GEMM; avx512: the direct 3x3 kernels
        CAPTURE(isa_name(isa));
        ScopedIsa scoped(isa);
        check_case("conv2d_w", 3, [](auto& v) { return conv2d(v[0], v[1], v[2], 1, 1); });
        check_case("conv2d_x", 2, [](auto& v) { return conv2d(v[0], v[1], Tensor(), 1, 1); });
        check_case("conv2d_s2", 2, [](auto& v) { return conv2d(v[0], v[1], Tensor(), 2, 1); });
        check_case("conv2d_1x1", 2, [](auto& v) { return conv2d(v[0], v[1], Tensor(), 2, 0); });
        check_case("conv2d_wide", 2, [](auto& v) { return conv2d(v[0], v[1], Tensor(), 1, 1); });
    }
    check_case("matmul", 2, [](auto& v) { return matmul(v[0], v[1]); });
    check_case("matmul_batched", 2, [](auto& v) { return matmul(v[0], v[1]); });
}

TEST_CASE("special values: the bfloat16 convolution (im2col and direct paths) keeps NaN and inf") {
    for (bf16::Kernel kernel : {bf16::Kernel::Portable, bf16::Kernel::Amx}) {
        if (!bf16::kernel_available(kernel)) continue;
        CAPTURE(bf16::kernel_name(kernel));
        for (const char* name : {"conv2d_w", "conv2d_wide"}) {  // 8 channels: im2col; 32: direct
            CAPTURE(name);
            const SafetensorsFile& f = fixture();
            const Tensor& w = f.get(std::string(name) + ".x1");
            const bool has_bias = f.find(std::string(name) + ".x2") != nullptr;
            Conv2d conv(w.size(1), w.size(0), 3, 1, 1, has_bias);
            copy_(conv.weight, w);
            if (has_bias) copy_(conv.bias, f.get(std::string(name) + ".x2"));
            Bf16Conv2d bf(conv, kernel);
            bf.eval();
            NoGradGuard ng;
            // bfloat16 keeps 8 significant bits of the inputs: finite values agree to
            // about 1e-2 of the largest; NaN and inf sit where PyTorch's float32 ones do.
            check_same(bf(f.get(std::string(name) + ".x0")), f.get(std::string(name) + ".y"), name, 2e-2);
        }
    }
}

TEST_CASE("special values: normalisation with inf and affine parameters, BatchNorm's eval mode, Batch Renormalization") {
    Tensor rm = Tensor::zeros({3}), rv = Tensor::ones({3});
    check_case("batch_norm_inf", 3,
               [&](auto& v) { return batch_norm(v[0], rm, rv, v[1], v[2], true, 0.1f); });
    check_same(rm, fixture().get("batch_norm_inf.running_mean"), "running_mean");
    check_same(rv, fixture().get("batch_norm_inf.running_var"), "running_var");
    const Tensor erm = fixture().get("batch_norm_eval.running_mean"), erv = fixture().get("batch_norm_eval.running_var");
    check_case("batch_norm_eval", 3, [&](auto& v) { return batch_norm(v[0], erm, erv, v[1], v[2], false); });
    check_case("layer_norm_inf", 3, [](auto& v) { return layer_norm(v[0], {3, 2, 2}, v[1], v[2]); });
    check_case("group_norm_inf", 3, [](auto& v) { return group_norm(v[0], 3, v[1], v[2]); });
    check_case("group_norm_nan_g2", 3, [](auto& v) { return group_norm(v[0], 2, v[1], v[2]); });
    const Tensor r = fixture().get("batch_renorm.r"), d = fixture().get("batch_renorm.d");
    check_case("batch_renorm", 3, [&](auto& v) { return batch_renorm(v[0], r, d, v[1], v[2]); });
    BatchRenormOptions opts;
    opts.warmup_steps = 0;  // rmax = 3 and dmax = 5 from the first batch
    BatchRenorm2d renorm(3, opts);
    check_case("batch_renorm_module", 1, [&](auto& v) { return renorm(v[0]); });
    check_same(renorm.running_mean, fixture().get("batch_renorm_module.running_mean"), "renorm running_mean");
    check_same(renorm.running_var, fixture().get("batch_renorm_module.running_var"), "renorm running_var");
    // copies: the function updates them in place (with momentum 0, to what they were, or NaN)
    Tensor grm = fixture().get("gated_bn.running_mean").clone(), grv = fixture().get("gated_bn.running_var").clone();
    check_case("gated_bn", 4, [&](auto& v) { return gated_batch_norm(v[0], grm, grv, v[1], v[2], v[3], 0.f); });
}

TEST_CASE("special values: dropout multiplies by its mask, so a dropped NaN or inf is NaN") {
    check_case("dropout_p1", 1, [](auto& v) { return dropout(v[0], 1.f, true); });
    // p = 0.5: the NaN and the infinities are NaN or inf whatever the mask (x * 0 or x * 2).
    Tensor x = fixture().get("dropout_p1.x0");
    Tensor y = dropout(x, 0.5f, true);
    CHECK(std::isnan(y.data()[1]));
    CHECK((std::isnan(y.data()[3]) || std::isinf(y.data()[3])));
    CHECK((std::isnan(y.data()[4]) || std::isinf(y.data()[4])));
}

TEST_CASE("special values: clip_grad_norm_ with NaN and inf gradients") {
    for (const char* tag : {"nan", "inf", "finite"}) {
        CAPTURE(tag);
        const std::string t = std::string("clip_") + tag;
        Tensor p = Tensor::zeros({3});
        p.requires_grad_();
        p.set_grad(fixture().get(t + ".grad").clone());
        const double total = clip_grad_norm_({p}, 1.0);
        check_same(Tensor::scalar(static_cast<float>(total)).reshape({1}), fixture().get(t + ".total"), t + ".total");
        check_same(p.grad(), fixture().get(t + ".clipped"), t + ".clipped");
    }
}
