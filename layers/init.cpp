#include "layers/init.h"

#include <cmath>

#include "core/ops.h"

namespace minnow::init {

Fans calculate_fan_in_and_fan_out(const Tensor& t) {
    if (t.dim() < 2)
        throw Error("init: fan in and fan out need a tensor with at least 2 dims, got shape " +
                    shape_str(t.shape()));
    int64_t receptive = 1;
    for (int64_t d = 2; d < t.dim(); ++d) receptive *= t.size(d);
    return {t.size(1) * receptive, t.size(0) * receptive};
}

float calculate_gain(const std::string& nl, std::optional<float> param) {
    if (nl == "linear" || nl == "conv1d" || nl == "conv2d" || nl == "conv3d" || nl == "sigmoid" ||
        nl == "conv_transpose1d" || nl == "conv_transpose2d" || nl == "conv_transpose3d")
        return 1.f;
    if (nl == "tanh") return 5.f / 3.f;
    if (nl == "relu") return std::sqrt(2.f);
    if (nl == "selu") return 3.f / 4.f;
    if (nl == "leaky_relu") {
        const float slope = param.value_or(0.01f);
        return std::sqrt(2.f / (1.f + slope * slope));
    }
    throw Error("init: unsupported nonlinearity '" + nl + "'");
}

static int64_t fan_for(const Tensor& t, const std::string& mode) {
    const Fans f = calculate_fan_in_and_fan_out(t);
    if (mode == "fan_in") return f.fan_in;
    if (mode == "fan_out") return f.fan_out;
    throw Error("init: mode must be 'fan_in' or 'fan_out', got '" + mode + "'");
}

Tensor& uniform_(Tensor& t, float low, float high, Generator* gen) {
    Generator& g = gen ? *gen : default_generator();
    float* p = t.data();
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = low + (high - low) * g.uniform();
    return t;
}

Tensor& normal_(Tensor& t, float mean, float std, Generator* gen) {
    Generator& g = gen ? *gen : default_generator();
    float* p = t.data();
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = mean + std * g.normal();
    return t;
}

Tensor& constant_(Tensor& t, float value) {
    fill_(t, value);
    return t;
}
Tensor& zeros_(Tensor& t) { return constant_(t, 0.f); }
Tensor& ones_(Tensor& t) { return constant_(t, 1.f); }

Tensor& kaiming_uniform_(Tensor& t, float a, const std::string& mode, const std::string& nonlinearity,
                         Generator* gen) {
    const float gain = calculate_gain(nonlinearity, a);
    const float bound = gain * std::sqrt(3.f / static_cast<float>(fan_for(t, mode)));
    return uniform_(t, -bound, bound, gen);
}

Tensor& kaiming_normal_(Tensor& t, float a, const std::string& mode, const std::string& nonlinearity,
                        Generator* gen) {
    const float gain = calculate_gain(nonlinearity, a);
    const float std = gain / std::sqrt(static_cast<float>(fan_for(t, mode)));
    return normal_(t, 0.f, std, gen);
}

Tensor& xavier_uniform_(Tensor& t, float gain, Generator* gen) {
    const Fans f = calculate_fan_in_and_fan_out(t);
    const float bound = gain * std::sqrt(6.f / static_cast<float>(f.fan_in + f.fan_out));
    return uniform_(t, -bound, bound, gen);
}

Tensor& xavier_normal_(Tensor& t, float gain, Generator* gen) {
    const Fans f = calculate_fan_in_and_fan_out(t);
    const float std = gain * std::sqrt(2.f / static_cast<float>(f.fan_in + f.fan_out));
    return normal_(t, 0.f, std, gen);
}

void default_linear_init_(Tensor& weight, Tensor& bias, Generator* gen) {
    kaiming_uniform_(weight, std::sqrt(5.f), "fan_in", "leaky_relu", gen);
    if (bias.defined()) {
        const int64_t fan_in = calculate_fan_in_and_fan_out(weight).fan_in;
        const float bound = fan_in > 0 ? 1.f / std::sqrt(static_cast<float>(fan_in)) : 0.f;
        uniform_(bias, -bound, bound, gen);
    }
}

}  // namespace minnow::init
