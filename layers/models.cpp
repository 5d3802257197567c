#include "layers/models.h"

#include "core/ops.h"
#include "layers/activation.h"
#include "layers/conv2d.h"
#include "layers/flatten.h"
#include "layers/linear.h"
#include "layers/norm_factory.h"
#include "layers/pooling.h"

namespace minnow {

// ---------------------------------------------------------------- cnn
ReferenceCNN::ReferenceCNN(const std::string& norm, int64_t num_classes) {
    auto f = std::make_shared<Sequential>();
    auto block = [&](int64_t cin, int64_t cout) {  // conv, norm, relu: 3 indices
        f->push_back(std::make_shared<Conv2d>(cin, cout, 3, 1, 1));
        f->push_back(make_norm2d(norm, cout));
        f->push_back(std::make_shared<ReLU>());
    };
    block(3, 64);                                  // 0..2
    block(64, 64);                                 // 3..5
    f->push_back(std::make_shared<MaxPool2d>(2));  // 6
    block(64, 128);                                // 7..9
    block(128, 128);                               // 10..12
    f->push_back(std::make_shared<MaxPool2d>(2));  // 13
    block(128, 256);                               // 14..16
    f->push_back(std::make_shared<AdaptiveAvgPool2d>(1));  // 17
    features = register_module("features", f);
    classifier = register_module("classifier", std::make_shared<Linear>(256, num_classes));
}

Tensor ReferenceCNN::forward(const Tensor& x) { return (*classifier)((*features)(x).flatten(1)); }

// ---------------------------------------------------------------- resnet20
BasicBlock::BasicBlock(int64_t cin, int64_t cout, int64_t stride, const std::string& norm) {
    conv1 = register_module("conv1", std::make_shared<Conv2d>(cin, cout, 3, stride, 1, false));
    bn1 = register_module("bn1", make_norm2d(norm, cout));
    conv2 = register_module("conv2", std::make_shared<Conv2d>(cout, cout, 3, 1, 1, false));
    bn2 = register_module("bn2", make_norm2d(norm, cout));
    shortcut = register_module("shortcut", std::make_shared<Sequential>());
    if (stride != 1 || cin != cout) {
        shortcut->push_back(std::make_shared<Conv2d>(cin, cout, 1, stride, 0, false));
        shortcut->push_back(make_norm2d(norm, cout));
    }
}

// out = relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)); call_relu is
// relu(bn1(...)), as one pass for BatchNorm (layers/module.h).
Tensor BasicBlock::forward(const Tensor& x) {
    Tensor out = bn1->call_relu((*conv1)(x));
    out = (*bn2)((*conv2)(out));
    return relu(add(out, (*shortcut)(x)));
}

ResNet20::ResNet20(const std::string& norm, int64_t num_classes, int64_t n) {
    conv1 = register_module("conv1", std::make_shared<Conv2d>(3, 16, 3, 1, 1, false));
    bn1 = register_module("bn1", make_norm2d(norm, 16));
    int64_t cin = 16;
    Child<Sequential>* stages[] = {&layer1, &layer2, &layer3};
    const int64_t widths[] = {16, 32, 64};
    for (int i = 0; i < 3; ++i) {
        auto stage = std::make_shared<Sequential>();
        for (int64_t j = 0; j < n; ++j) {
            stage->push_back(std::make_shared<BasicBlock>(cin, widths[i], (i > 0 && j == 0) ? 2 : 1, norm));
            cin = widths[i];
        }
        *stages[i] = register_module("layer" + std::to_string(i + 1), stage);
    }
    linear = register_module("linear", std::make_shared<Linear>(64, num_classes));
}

Tensor ResNet20::forward(const Tensor& x) {
    Tensor out = bn1->call_relu((*conv1)(x));
    out = (*layer3)((*layer2)((*layer1)(out)));
    return (*linear)(adaptive_avg_pool2d(out, 1).flatten(1));
}

// ---------------------------------------------------------------- by name
const std::vector<std::string>& model_names() {
    static const std::vector<std::string> names{"cnn", "resnet20"};
    return names;
}

std::shared_ptr<Module> make_model(const std::string& name, const std::string& norm, int64_t num_classes) {
    if (name == "cnn") return std::make_shared<ReferenceCNN>(norm, num_classes);
    if (name == "resnet20") return std::make_shared<ResNet20>(norm, num_classes);
    std::string valid;
    for (const auto& n : model_names()) valid += (valid.empty() ? "" : ", ") + n;
    throw Error("unknown model '" + name + "' (valid: " + valid + ")");
}

}  // namespace minnow
