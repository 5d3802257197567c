#include "layers/fold_batchnorm.h"

#include <cmath>
#include <vector>

#include "core/random.h"
#include "layers/batchnorm.h"
#include "layers/conv2d.h"
#include "layers/flatten.h"
#include "layers/model_surgery.h"

namespace minnow {

namespace {

// The Conv2d that computes bn(conv(x)) (see the header for the algebra). The
// scale is computed in double, so W' and b' are the float roundings of the
// exact products.
std::shared_ptr<Conv2d> folded_conv(const Conv2d& conv, const BatchNorm& bn, const std::string& where) {
    if (bn.type_name() != "BatchNorm2d")
        throw Error("fold_batchnorm: " + where + " is a " + bn.type_name() + ", not a BatchNorm2d");
    if (!bn.track_running_stats())
        throw Error("fold_batchnorm: " + where + " has no running statistics (track_running_stats=False): "
                    "it normalises with batch statistics even in eval mode and cannot be folded");
    const int64_t O = conv.out_channels;
    if (bn.num_features() != O)
        throw Error("fold_batchnorm: " + where + " has " + std::to_string(bn.num_features()) +
                    " channels but the conv before it has " + std::to_string(O) + " outputs");
    // Its initial values are all overwritten below; a local generator keeps
    // the initialisation from drawing on default_generator() (folding must
    // not shift the random stream of whoever calls it).
    Generator unused_init;
    auto out = std::make_shared<Conv2d>(conv.in_channels, O, conv.kernel_size, conv.stride, conv.padding, true,
                                        &unused_init);
    const int64_t per_output = conv.weight.numel() / O;  // C * k * k weights per output channel
    const float* W = conv.weight.data();
    const float* mean = bn.running_mean.data();
    const float* var = bn.running_var.data();
    float* Wf = out->weight.data();
    float* bf = out->bias.data();
    for (int64_t o = 0; o < O; ++o) {
        const double gamma = bn.affine() ? bn.weight.data()[o] : 1.0;
        const double beta = bn.affine() ? bn.bias.data()[o] : 0.0;
        const double s = gamma / std::sqrt(static_cast<double>(var[o]) + bn.eps());
        for (int64_t e = o * per_output; e < (o + 1) * per_output; ++e) Wf[e] = static_cast<float>(s * W[e]);
        const double b = conv.bias.defined() ? conv.bias.data()[o] : 0.0;
        bf[o] = static_cast<float>(s * (b - mean[o]) + beta);
    }
    return out;
}

struct Pair {
    std::string conv_path, bn_path;
    Conv2d* conv;
    BatchNorm* bn;
};

// The conv -> BatchNorm pairs among the children of `parent` (see the header).
void find_pairs(Module& parent, const std::string& prefix, std::vector<Pair>& out) {
    const auto& children = parent.named_children();
    auto path = [&](const std::string& name) { return prefix.empty() ? name : prefix + "." + name; };
    if (dynamic_cast<Sequential*>(&parent)) {
        for (size_t i = 0; i + 1 < children.size(); ++i) {
            auto* conv = dynamic_cast<Conv2d*>(children[i].second.get());
            auto* bn = dynamic_cast<BatchNorm*>(children[i + 1].second.get());
            if (conv && bn) out.push_back({path(children[i].first), path(children[i + 1].first), conv, bn});
        }
        return;
    }
    for (const auto& [name, child] : children) {
        if (name.rfind("conv", 0) != 0) continue;
        auto* conv = dynamic_cast<Conv2d*>(child.get());
        const std::string bn_name = "bn" + name.substr(4);
        for (const auto& [other, bn_child] : children) {
            auto* bn = dynamic_cast<BatchNorm*>(bn_child.get());
            if (other == bn_name && conv && bn) out.push_back({path(name), path(bn_name), conv, bn});
        }
    }
}

}  // namespace

int fold_batchnorm(Module& model) {
    std::vector<Pair> pairs;
    for (auto& [name, m] : model.named_modules()) {
        if (m->is_training())
            throw Error("fold_batchnorm: " + (name.empty() ? std::string("the model") : "'" + name + "'") +
                        " is in training mode, where BatchNorm normalises with batch statistics; "
                        "call eval() first");
        find_pairs(*m, name, pairs);
    }
    // Build every folded conv before changing anything, so that an Error
    // leaves the model as it was.
    std::vector<std::shared_ptr<Conv2d>> folded;
    for (const Pair& p : pairs) folded.push_back(folded_conv(*p.conv, *p.bn, "'" + p.bn_path + "'"));
    for (size_t i = 0; i < pairs.size(); ++i) {
        replace_submodule(model, pairs[i].conv_path, folded[i]);
        replace_submodule(model, pairs[i].bn_path, std::make_shared<Identity>());
    }
    return static_cast<int>(pairs.size());
}

}  // namespace minnow
