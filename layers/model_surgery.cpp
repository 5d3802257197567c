#include "layers/model_surgery.h"

namespace minnow {

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
    for (const auto& [n, child] : parent->named_children())
        if (n == name) {
            try {
                parent->replace_child(name, std::move(replacement));
            } catch (const Error& e) {
                throw Error("replace_submodule: '" + path + "': " + e.what());
            }
            return;
        }
    throw Error("replace_submodule: the model has no module '" + path + "'");
}

}  // namespace minnow
