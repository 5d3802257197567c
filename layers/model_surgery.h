// minnow/layers/model_surgery.h: swapping one layer of a built model for another.
//
// Used by the inference rewrites (layers/fold_batchnorm.h folds BatchNorm into
// the conv before it; layers/conv2d_bf16.h swaps each Conv2d for a bfloat16
// one). A module is reached by its dotted name, as named_modules() gives it
// ("features.3", "layer2.0.shortcut.1").
#pragma once

#include <memory>
#include <string>

#include "layers/module.h"

namespace minnow {

// Puts `replacement` where the submodule `path` of `root` is: in its parent's
// registry (so names and state_dict keys stay) AND in the typed handles the
// reference models keep to their children (ReferenceCNN::features,
// BasicBlock::conv1, ResNet20::bn1, ...), which their forward() calls through.
// A handle of a narrower type than Module (a Sequential, a Linear) only takes
// a replacement of that type; anything else is an Error, as is an unknown path.
void replace_submodule(Module& root, const std::string& path, std::shared_ptr<Module> replacement);

}  // namespace minnow
