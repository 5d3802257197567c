#include "layers/eval_pooling.h"

#include "core/autograd.h"

namespace minnow {

namespace {

// max(a, b), and NaN if either is NaN (as PyTorch's max pooling).
inline float nan_max(float a, float b) { return (a > b || a != a) ? a : b; }

// 2x2 windows, stride 2, no padding: y[pl, oh, ow] = max of x[pl, 2oh..2oh+1, 2ow..2ow+1]
// (an odd last row or column is dropped, as the floor in Ho = H / 2 says).
void max_pool_2x2(const float* x, int64_t planes, int64_t H, int64_t W, float* y) {
    const int64_t Ho = H / 2, Wo = W / 2;
#pragma omp parallel for if (planes * H * W > (int64_t{1} << 16))
    for (int64_t pl = 0; pl < planes; ++pl)
        for (int64_t oh = 0; oh < Ho; ++oh) {
            const float* top = x + (pl * H + 2 * oh) * W;
            const float* bottom = top + W;
            float* out = y + (pl * Ho + oh) * Wo;
#pragma omp simd
            for (int64_t ow = 0; ow < Wo; ++ow)
                out[ow] = nan_max(nan_max(top[2 * ow], top[2 * ow + 1]), nan_max(bottom[2 * ow], bottom[2 * ow + 1]));
        }
}

}  // namespace

Tensor EvalMaxPool2d::forward(const Tensor& x) {
    const std::string me = "EvalMaxPool2d(" + extra_repr() + ")";
    if (is_training()) throw Error(me + ": inference only (no backward); call eval() first");
    if (GradMode::is_enabled() && x.requires_grad())
        throw Error(me + ": inference only, and the input wants a gradient; run it under NoGradGuard");
    if (kernel_size != 2 || stride != 2 || padding != 0 || x.dim() != 4 || x.size(2) < 2 || x.size(3) < 2)
        return max_pool2d(x, kernel_size, stride, padding);  // the general case, with its checks
    Tensor y = Tensor::empty({x.size(0), x.size(1), x.size(2) / 2, x.size(3) / 2});
    max_pool_2x2(x.data(), x.size(0) * x.size(1), x.size(2), x.size(3), y.data());
    return y;
}

std::string EvalMaxPool2d::extra_repr() const {
    return "kernel_size=" + std::to_string(kernel_size) + ", stride=" + std::to_string(stride) +
           ", padding=" + std::to_string(padding);
}

}  // namespace minnow
