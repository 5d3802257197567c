#include "core/gradcheck.h"

#include <cmath>
#include <sstream>

#include "core/autograd.h"
#include "core/ops.h"
#include "core/random.h"

namespace minnow {

// L = sum_i w_i y_i, accumulated in double.
static double weighted_sum(const Tensor& y, const Tensor& w) {
    double s = 0;
    for (int64_t i = 0; i < y.numel(); ++i) s += static_cast<double>(w.data()[i]) * y.data()[i];
    return s;
}

GradcheckResult gradcheck(const TensorFn& f, const std::vector<Tensor>& inputs, const GradcheckOptions& opts) {
    GradcheckResult result;
    // Fresh leaves so the caller's tensors keep their own grads.
    std::vector<Tensor> xs;
    for (const Tensor& x : inputs) {
        Tensor leaf = x.detach().clone();
        if (x.requires_grad()) leaf.requires_grad_();
        xs.push_back(leaf);
    }

    // Analytic: dL/dx through backward(), with dL/dy = w.
    Tensor y = f(xs);
    const uint64_t piece = opts.piece ? opts.piece() : 0;
    Generator gen(opts.seed);
    Tensor w = Tensor::uniform(y.shape(), -1.f, 1.f, &gen);
    if (!y.requires_grad()) {
        result.ok = false;
        result.message = "the function's output does not require grad";
        return result;
    }
    y.backward(w);

    // Numeric: central differences, one element at a time.
    NoGradGuard no_grad;
    for (size_t k = 0; k < xs.size(); ++k) {
        if (!inputs[k].requires_grad()) continue;
        Tensor analytic = xs[k].grad();
        float* p = xs[k].data();
        for (int64_t j = 0; j < xs[k].numel(); ++j) {
            const float orig = p[j];
            p[j] = static_cast<float>(orig + opts.eps);
            const double lp = weighted_sum(f(xs), w);
            const bool left_piece_plus = opts.piece && opts.piece() != piece;
            p[j] = static_cast<float>(orig - opts.eps);
            const double lm = weighted_sum(f(xs), w);
            const bool left_piece_minus = opts.piece && opts.piece() != piece;
            p[j] = orig;
            if (left_piece_plus || left_piece_minus) {
                ++result.skipped;
                continue;
            }
            ++result.checked;
            // Divide by the step actually taken (float rounding of orig +- eps).
            const double step = static_cast<double>(static_cast<float>(orig + opts.eps)) -
                                static_cast<double>(static_cast<float>(orig - opts.eps));
            const double numeric = (lp - lm) / step;
            const double a = analytic.defined() ? analytic.data()[j] : 0.0;
            const double err = std::fabs(a - numeric);
            result.max_abs_error = std::max(result.max_abs_error, err);
            if (result.ok && !(err <= opts.atol + opts.rtol * std::fabs(numeric))) {
                std::ostringstream os;
                os << "input " << k << " element " << j << ": backward gives " << a
                   << ", finite differences give " << numeric << " (|diff| " << err << ")";
                result.ok = false;
                result.message = os.str();
            }
        }
    }
    return result;
}

}  // namespace minnow
