// BatchNorm from autograd primitives: every line below is an op from
// core/ops.h, and the autograd engine derives the backward by itself.
#include "layers/batchnorm_reference.h"

#include "core/autograd.h"
#include "core/ops.h"

namespace minnow {

Tensor batch_norm_reference(const Tensor& x, const Tensor& running_mean, const Tensor& running_var,
                            const Tensor& weight, const Tensor& bias, bool training, float momentum,
                            float eps) {
    if (x.dim() < 2)
        throw Error("batch_norm_reference: expected an input [N, C, *], got shape " + shape_str(x.shape()));
    const int64_t C = x.size(1);
    // Reduce over every dim but the channel one; per-channel tensors are
    // shaped [1, C, 1, ...] so they broadcast against x.
    std::vector<int64_t> dims{0};
    Shape per_channel{1, C};
    for (int64_t d = 2; d < x.dim(); ++d) {
        dims.push_back(d);
        per_channel.push_back(1);
    }
    const int64_t m = x.numel() / C;

    Tensor xc, invstd;  // x - mu and 1 / sqrt(var + eps)
    if (training) {
        if (m <= 1)
            throw Error("batch_norm_reference: expected more than 1 value per channel when training, got "
                        "input of shape " + shape_str(x.shape()));
        Tensor mu = mean(x, dims, /*keepdim=*/true);           // mu
        xc = x - mu;                                           // x - mu
        Tensor var_ = mean(square(xc), dims, /*keepdim=*/true);  // biased variance
        invstd = rsqrt(var_ + eps);
        NoGradGuard no_grad;  // the running statistics are not part of the graph
        const float unbias = static_cast<float>(m) / static_cast<float>(m - 1);
        if (running_mean.defined()) {
            Tensor dst = running_mean;
            copy_(dst, running_mean * (1.f - momentum) + mu.reshape({C}) * momentum);
        }
        if (running_var.defined()) {
            Tensor dst = running_var;
            copy_(dst, running_var * (1.f - momentum) + var_.reshape({C}) * (momentum * unbias));
        }
    } else {
        if (!running_mean.defined() || !running_var.defined())
            throw Error("batch_norm_reference: eval mode needs running_mean and running_var");
        // constants: no gradient flows into the running statistics
        xc = x - running_mean.reshape(per_channel);
        invstd = rsqrt(running_var.reshape(per_channel) + eps);
    }
    Tensor xhat = xc * invstd;
    Tensor y = weight.defined() ? xhat * weight.reshape(per_channel) : xhat;  // gamma * xhat
    return bias.defined() ? y + bias.reshape(per_channel) : y;                 // + beta
}

Tensor BatchNormReference::forward(const Tensor& x) {
    const Plan p = plan();
    check_input(x, p.batch_stats);
    if (!p.batch_stats)
        return batch_norm_reference(x, running_mean, running_var, weight, bias, false, 0.f, eps());
    const float factor = p.update_running ? count_batch() : 0.f;
    return batch_norm_reference(x, p.update_running ? running_mean : Tensor(),
                                p.update_running ? running_var : Tensor(), weight, bias, true, factor, eps());
}

}  // namespace minnow
