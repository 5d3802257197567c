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
#include "layers/batchnorm.h"
#include "layers/conv2d.h"
#include "layers/groupnorm.h"
#include "layers/layernorm.h"
#include "layers/linear.h"
#include "layers/loss.h"
#include "layers/pooling.h"
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
// the tensor's largest finite value).
void check_same(const Tensor& got, const Tensor& want, const std::string& what) {
    REQUIRE_MESSAGE(got.shape() == want.shape(), what << ": shape " << shape_str(got.shape()) << ", expected "
                                                      << shape_str(want.shape()));
    double scale = 0;
    for (int64_t i = 0; i < want.numel(); ++i)
        if (std::isfinite(want.data()[i])) scale = std::max(scale, std::fabs(double(want.data()[i])));
    for (int64_t i = 0; i < want.numel(); ++i) {
        const float g = got.data()[i], w = want.data()[i];
        const bool ok = std::isnan(w)   ? std::isnan(g)
                        : std::isinf(w) ? g == w
                                        : std::fabs(g - w) <= 1e-5 * scale + 1e-5 * std::fabs(w);
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
