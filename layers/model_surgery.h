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

// Puts `replacement` where the submodule `path` of `root` is, with its
// parent's replace_child (layers/module.h): names and state_dict keys stay,
// and the parent's Child<T> handles, which its forward() calls through, see
// the replacement. This works for any module, the reference models as much as
// one of your own. A handle of a narrower type than Module (a Sequential, a
// Linear) only takes a replacement of that type; anything else is an Error
// that leaves the model as it was, as is an unknown path.
void replace_submodule(Module& root, const std::string& path, std::shared_ptr<Module> replacement);

}  // namespace minnow
