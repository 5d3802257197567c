// minnow/layers/norm_factory.h: a normalisation layer for a conv net, by name.
//
// make_norm2d(kind, C) returns the layer that follows a conv with C output
// channels, for input [N, C, H, W]:
//
//   "batch"   BatchNorm2d(C)                          (the experiment's default)
//   "none"    Identity (layers/flatten.h): keeps the layer's index, and so the
//             state_dict names of every later layer, the same as with "batch"
//   "renorm"  BatchRenorm2d(C) with its default options (rmax 3, dmax 5,
//             ramped over 5000 steps)
//   "group"   GroupNorm(group_count(C), C): 32 groups as in Wu & He 2018 when
//             that leaves at least 2 channels per group; otherwise the largest
//             divisor of C that does (C = 64 -> 32 groups, 16 -> 8, 2 -> 1)
//   "layer"   GroupNorm(1, C): LayerNorm over (C, H, W) for each sample, but
//             with a per-CHANNEL affine instead of nn.LayerNorm's per-element
//             one; so it does not depend on the spatial size (the reference
//             CNN takes any image size) and has 2C parameters, like the others.
//   "gated"   GatedBatchNorm2d(C) (layers/gated_batchnorm.h): BatchNorm with a
//             learned per-channel gate between batch and running statistics,
//             initial gate logit 4 (g = 0.982: nearly BatchNorm at the start); 3C
//             parameters
//
// An unknown kind is an Error listing the valid ones.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "layers/module.h"

namespace minnow {

std::shared_ptr<Module> make_norm2d(const std::string& kind, int64_t channels);

// The valid kinds, in the order above.
const std::vector<std::string>& norm2d_kinds();

// The number of groups "group" uses for C channels (see above).
int64_t group_count(int64_t channels);

}  // namespace minnow
