#include "optim/grad_utils.h"

#include <cmath>

#include "core/ops.h"
#include "core/parallel.h"

namespace minnow {

static double sum_of_squares(const Tensor& t) {
    const float* x = t.data();
    const int64_t n = t.numel();
    double s = 0;
#pragma omp parallel for simd reduction(+ : s) if (n > kParallelGrain)
    for (int64_t i = 0; i < n; ++i) s += static_cast<double>(x[i]) * x[i];
    return s;
}

double global_grad_norm(const std::vector<Tensor>& params) {
    double s = 0;
    for (const Tensor& p : params) {
        const Tensor g = p.grad();
        if (g.defined()) s += sum_of_squares(g);
    }
    return std::sqrt(s);
}

std::vector<std::pair<std::string, double>> per_parameter_grad_norms(const NamedTensors& params) {
    std::vector<std::pair<std::string, double>> out;
    for (const auto& [name, p] : params) {
        const Tensor g = p.grad();
        if (g.defined()) out.emplace_back(name, std::sqrt(sum_of_squares(g)));
    }
    return out;
}

double clip_grad_norm_(const std::vector<Tensor>& params, double max_norm) {
    const double total = global_grad_norm(params);
    const double clip_coef = max_norm / (total + 1e-6);
    if (!(clip_coef >= 1.0)) {  // also NaN, as PyTorch's clamp(max=1) lets it through
        for (const Tensor& p : params) {
            Tensor g = p.grad();
            if (g.defined()) mul_(g, static_cast<float>(clip_coef));
        }
    }
    return total;
}

bool all_finite_grads(const NamedTensors& params, std::string* first_non_finite) {
    for (const auto& [name, p] : params) {
        const Tensor g = p.grad();
        if (!g.defined()) continue;
        const float* x = g.data();
        const int64_t n = g.numel();
        int64_t bad = 0;
#pragma omp parallel for simd reduction(+ : bad) if (n > kParallelGrain)
        for (int64_t i = 0; i < n; ++i) bad += std::isfinite(x[i]) ? 0 : 1;
        if (bad) {
            if (first_non_finite) *first_non_finite = name;
            return false;
        }
    }
    return true;
}

}  // namespace minnow
