#include "layers/norm_factory.h"

#include "layers/batchnorm.h"
#include "layers/batchrenorm.h"
#include "layers/flatten.h"  // Identity
#include "layers/gated_batchnorm.h"
#include "layers/groupnorm.h"

namespace minnow {

template <class M, class... Args>
static std::shared_ptr<Module> make(Args... args) {
    return std::make_shared<M>(args...);
}

const std::vector<Norm2dKind>& norm2d_table() {
    static const std::vector<Norm2dKind> table{
        {"batch", "BatchNorm2d", [](int64_t c) { return make<BatchNorm2d>(c); }},
        // Identity keeps the layer's index, and so the state_dict names of
        // every later layer, the same as with "batch".
        {"none", "no normalisation (an Identity in its place)", [](int64_t) { return make<Identity>(); }},
        {"renorm", "BatchRenorm2d with its default options (layers/batchrenorm.h)",
         [](int64_t c) { return make<BatchRenorm2d>(c); }},
        {"group", "GroupNorm with up to 32 groups of at least 2 channels (group_count)",
         [](int64_t c) { return make<GroupNorm>(group_count(c), c); }},
        // LayerNorm over (C, H, W) for each sample, but with a per-CHANNEL
        // affine instead of nn.LayerNorm's per-element one: so it does not
        // depend on the spatial size (the reference CNN takes any image size)
        // and has 2C parameters, like the others.
        {"layer", "GroupNorm with 1 group (LayerNorm with a per-channel affine)",
         [](int64_t c) { return make<GroupNorm>(1, c); }},
        // Initial gate logit 4 (g = 0.982: nearly BatchNorm at the start); 3C parameters.
        {"gated", "GatedBatchNorm2d, a learned per-channel gate between batch and running statistics",
         [](int64_t c) { return make<GatedBatchNorm2d>(c); }},
    };
    return table;
}

const std::vector<std::string>& norm2d_kinds() {
    static const std::vector<std::string> names = [] {
        std::vector<std::string> out;
        for (const auto& k : norm2d_table()) out.push_back(k.name);
        return out;
    }();
    return names;
}

std::string norm2d_help() {
    std::string out;
    for (const auto& k : norm2d_table()) out += (out.empty() ? "" : "; ") + std::string(k.name) + ": " + k.help;
    return out;
}

int64_t group_count(int64_t channels) {
    if (channels < 1) throw Error("group_count: channels must be positive, got " + std::to_string(channels));
    // the largest G <= 32 dividing C with C / G >= 2 (1 if there is none)
    for (int64_t g = std::min<int64_t>(32, channels / 2); g > 1; --g)
        if (channels % g == 0) return g;
    return 1;
}

std::shared_ptr<Module> make_norm2d(const std::string& kind, int64_t channels) {
    if (channels < 1)
        throw Error("make_norm2d: channels must be positive, got " + std::to_string(channels));
    for (const auto& k : norm2d_table())
        if (kind == k.name) return k.make(channels);
    std::string valid;
    for (const auto& k : norm2d_kinds()) valid += (valid.empty() ? "" : ", ") + k;
    throw Error("make_norm2d: unknown norm kind '" + kind + "' (valid: " + valid + ")");
}

}  // namespace minnow
