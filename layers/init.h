// minnow/layers/init.h: parameter initialisation, with PyTorch's formulas.
//
// Each function fills a tensor in place (never recorded by autograd) and
// returns it. Random ones draw from `gen`, or minnow::default_generator() if
// null: the numbers differ from PyTorch's (another generator), the
// distributions are the same.
//
// Fans (torch.nn.init._calculate_fan_in_and_fan_out), for a weight of shape
// [out, in, k...] (Linear [out, in], Conv2d [out, in, kh, kw]):
//     receptive = prod(k...)      fan_in = in * receptive      fan_out = out * receptive
//
// The formulas, with fan = fan_in or fan_out (`mode`):
//     kaiming_uniform_:  U(-b, b),     b = gain * sqrt(3 / fan)
//     kaiming_normal_:   N(0, s^2),    s = gain / sqrt(fan)
//     xavier_uniform_:   U(-b, b),     b = gain * sqrt(6 / (fan_in + fan_out))
//     xavier_normal_:    N(0, s^2),    s = gain * sqrt(2 / (fan_in + fan_out))
//
// PyTorch's default for Linear and Conv2d (reset_parameters) is
//     weight: kaiming_uniform_(w, a = sqrt(5))   gain = sqrt(2 / (1 + 5)), so b = 1 / sqrt(fan_in)
//     bias:   U(-1 / sqrt(fan_in), 1 / sqrt(fan_in))
// which default_linear_init_() does.
#pragma once

#include <optional>
#include <string>

#include "core/random.h"
#include "core/tensor.h"

namespace minnow::init {

struct Fans {
    int64_t fan_in = 0, fan_out = 0;
};
// Throws for tensors with fewer than 2 dims (as PyTorch does).
Fans calculate_fan_in_and_fan_out(const Tensor& t);

// torch.nn.init.calculate_gain: "linear", "conv1d", "conv2d", "conv3d",
// "sigmoid" -> 1; "tanh" -> 5/3; "relu" -> sqrt(2); "selu" -> 3/4;
// "leaky_relu" -> sqrt(2 / (1 + slope^2)), slope = param or 0.01.
float calculate_gain(const std::string& nonlinearity, std::optional<float> param = std::nullopt);

Tensor& uniform_(Tensor& t, float low = 0.f, float high = 1.f, Generator* gen = nullptr);
Tensor& normal_(Tensor& t, float mean = 0.f, float std = 1.f, Generator* gen = nullptr);
Tensor& constant_(Tensor& t, float value);
Tensor& zeros_(Tensor& t);
Tensor& ones_(Tensor& t);

// mode: "fan_in" or "fan_out"; `a` is the negative slope of leaky_relu (only
// used when nonlinearity is "leaky_relu"), as in PyTorch.
Tensor& kaiming_uniform_(Tensor& t, float a = 0.f, const std::string& mode = "fan_in",
                         const std::string& nonlinearity = "leaky_relu", Generator* gen = nullptr);
Tensor& kaiming_normal_(Tensor& t, float a = 0.f, const std::string& mode = "fan_in",
                        const std::string& nonlinearity = "leaky_relu", Generator* gen = nullptr);
Tensor& xavier_uniform_(Tensor& t, float gain = 1.f, Generator* gen = nullptr);
Tensor& xavier_normal_(Tensor& t, float gain = 1.f, Generator* gen = nullptr);

// PyTorch's reset_parameters() of nn.Linear and nn.Conv2d (see the top);
// `bias` may be undefined.
void default_linear_init_(Tensor& weight, Tensor& bias, Generator* gen = nullptr);

}  // namespace minnow::init
