// minnow/layers/models.h: the reference networks of the BatchNorm experiment.
//
// Built layer for layer as ../shared/reference/models.py defines them, so
// state_dict() has exactly PyTorch's names and shapes and a checkpoint moves
// between minnow and PyTorch unchanged:
//
//   cnn       features.{0,3,7,10,14} Conv2d 3x3 (64, 64, 128, 128, 256),
//             features.{1,4,8,11,15} the norm layer (absent with norm "none"),
//             ReLU after each, MaxPool2d(2) at 6 and 13, global average pooling
//             at 17, then classifier = Linear(256, classes). Any input size.
//   resnet20  conv1, bn1, layer{1,2,3}.{0,1,2}.{conv1,bn1,conv2,bn2,shortcut},
//             linear: ResNet-20 for CIFAR (He et al. 2016), widths 16/32/64,
//             1x1 conv + norm shortcut where the shape changes.
//
// `norm` is any kind of norm2d_table() (layers/norm_factory.h); the reference
// defines cnn with "batch" and "none" and resnet20 with "batch", and the other
// kinds slot into the same places.
//
// The models call their children through Child<T> handles (layers/module.h),
// which read the registry: model surgery needs nothing model-specific.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "layers/module.h"

namespace minnow {

// "cnn" or "resnet20"; an unknown name is an Error listing the valid ones.
// Weights are initialised from default_generator() (seed it first).
std::shared_ptr<Module> make_model(const std::string& name, const std::string& norm = "batch",
                                   int64_t num_classes = 10);
const std::vector<std::string>& model_names();

class Sequential;
class Linear;

class ReferenceCNN : public Module {
public:
    explicit ReferenceCNN(const std::string& norm = "batch", int64_t num_classes = 10);
    Tensor forward(const Tensor& x) override;
    std::string type_name() const override { return "ReferenceCNN"; }
    Child<Sequential> features;
    Child<Linear> classifier;
};

class BasicBlock : public Module {
public:
    BasicBlock(int64_t in_channels, int64_t out_channels, int64_t stride, const std::string& norm);
    Tensor forward(const Tensor& x) override;
    std::string type_name() const override { return "BasicBlock"; }
    Child<Module> conv1, bn1, conv2, bn2;
    Child<Sequential> shortcut;  // empty (identity) unless the shape changes
};

class ResNet20 : public Module {
public:
    explicit ResNet20(const std::string& norm = "batch", int64_t num_classes = 10, int64_t blocks_per_stage = 3);
    Tensor forward(const Tensor& x) override;
    std::string type_name() const override { return "ResNet20"; }
    Child<Module> conv1, bn1;
    Child<Sequential> layer1, layer2, layer3;
    Child<Linear> linear;
};

}  // namespace minnow
