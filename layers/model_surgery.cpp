#include "layers/model_surgery.h"

#include "layers/linear.h"
#include "layers/models.h"

namespace minnow {

namespace {

// handle = m, if m is a T (the handle's declared type).
template <class T>
void set_handle(std::shared_ptr<T>& handle, const std::shared_ptr<Module>& m, const std::string& path) {
    auto typed = std::dynamic_pointer_cast<T>(m);
    if (!typed)
        throw Error("replace_submodule: '" + path + "' is held as a " + handle->type_name() +
                    " by its model, and a " + m->type_name() + " cannot take its place");
    handle = typed;
}

// The reference models call their children through member handles, not
// through the registry: keep those pointing at the registered module.
void update_model_handles(Module& parent, const std::string& name, const std::shared_ptr<Module>& m,
                          const std::string& path) {
    if (auto* cnn = dynamic_cast<ReferenceCNN*>(&parent)) {
        if (name == "features") set_handle(cnn->features, m, path);
        if (name == "classifier") set_handle(cnn->classifier, m, path);
    } else if (auto* block = dynamic_cast<BasicBlock*>(&parent)) {
        if (name == "conv1") block->conv1 = m;
        if (name == "bn1") block->bn1 = m;
        if (name == "conv2") block->conv2 = m;
        if (name == "bn2") block->bn2 = m;
        if (name == "shortcut") set_handle(block->shortcut, m, path);
    } else if (auto* resnet = dynamic_cast<ResNet20*>(&parent)) {
        if (name == "conv1") resnet->conv1 = m;
        if (name == "bn1") resnet->bn1 = m;
        if (name == "layer1") set_handle(resnet->layer1, m, path);
        if (name == "layer2") set_handle(resnet->layer2, m, path);
        if (name == "layer3") set_handle(resnet->layer3, m, path);
        if (name == "linear") set_handle(resnet->linear, m, path);
    }
    // Sequential (and any other module) calls its children from the registry.
}

}  // namespace

void replace_submodule(Module& root, const std::string& path, std::shared_ptr<Module> replacement) {
    const size_t dot = path.rfind('.');
    const std::string parent_path = dot == std::string::npos ? "" : path.substr(0, dot);
    const std::string name = dot == std::string::npos ? path : path.substr(dot + 1);
    if (name.empty()) throw Error("replace_submodule: invalid path '" + path + "'");
    if (!replacement) throw Error("replace_submodule: the replacement for '" + path + "' is null");
    Module* parent = nullptr;
    for (auto& [n, m] : root.named_modules())
        if (n == parent_path) parent = m;
    if (!parent) throw Error("replace_submodule: the model has no module '" + parent_path + "' (in '" + path + "')");
    // Check the typed handle first, so a refused replacement leaves the model as it was.
    for (const auto& [n, child] : parent->named_children())
        if (n == name) {
            update_model_handles(*parent, name, replacement, path);
            parent->replace_child(name, std::move(replacement));
            return;
        }
    throw Error("replace_submodule: the model has no module '" + path + "'");
}

}  // namespace minnow
