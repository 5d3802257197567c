// minnow/layers/fold_batchnorm.h: BatchNorm folded into the convolution before it.
//
// In eval mode a BatchNorm2d is a fixed per-channel affine map of its input:
//
//     bn(z)[o] = gamma[o] * (z[o] - running_mean[o]) / sqrt(running_var[o] + eps) + beta[o]
//              = s[o] * z[o] + (beta[o] - s[o] * running_mean[o]),   s = gamma / sqrt(running_var + eps)
//
// and when z is a convolution, z[o] = sum_{c,i,j} W[o,c,i,j] x[c,..] + b[o],
// the map goes into the convolution's weights:
//
//     bn(conv(x))[o] = sum W'[o,c,i,j] x[c,..] + b'[o]   with
//     W'[o, :, :, :] = s[o] * W[o, :, :, :]
//     b'[o]          = s[o] * (b[o] - running_mean[o]) + beta[o]      (b = 0 for a conv without bias)
//
// so inference runs one layer instead of two, with the same output up to
// float rounding (tests/test_fold_batchnorm.cpp checks 1e-5 of the output's scale).
#pragma once

#include "layers/module.h"

namespace minnow {

// Rewrites `model` in place: every Conv2d directly followed by a BatchNorm2d
// becomes one Conv2d (with a bias) holding W' and b' above, and the
// BatchNorm2d becomes an Identity, so every other module keeps its name and
// index (features.3 is still the second conv). The pairs it finds:
//   * consecutive children of a Sequential: Conv2d at i, BatchNorm2d at i+1
//     (the cnn's features, a BasicBlock's shortcut);
//   * children named "conv<X>" and "bn<X>" of one module (a BasicBlock's
//     conv1/bn1 and conv2/bn2, ResNet20's conv1/bn1), as in the reference
//     models, whose forward applies bn<X> right after conv<X>.
// Returns the number of pairs folded. Refuses (Error) a model that is in
// training mode, where BatchNorm uses batch statistics and cannot be folded,
// and a pair whose BatchNorm has no running statistics or a different
// channel count. The new convs are new modules with new tensors: tensors of
// the old ones held elsewhere are unchanged. To keep the original model, fold
// a copy (make_model + load_state_dict(original.state_dict())).
int fold_batchnorm(Module& model);

}  // namespace minnow
