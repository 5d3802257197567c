#include "layers/norm_factory.h"

#include "layers/batchnorm.h"
#include "layers/batchrenorm.h"
#include "layers/flatten.h"  // Identity
#include "layers/gated_batchnorm.h"
#include "layers/groupnorm.h"

namespace minnow {

const std::vector<std::string>& norm2d_kinds() {
    static const std::vector<std::string> kinds{"batch", "none", "renorm", "group", "layer", "gated"};
    return kinds;
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
    if (kind == "batch") return std::make_shared<BatchNorm2d>(channels);
    if (kind == "none") return std::make_shared<Identity>();
    if (kind == "renorm") return std::make_shared<BatchRenorm2d>(channels);
    if (kind == "group") return std::make_shared<GroupNorm>(group_count(channels), channels);
    if (kind == "layer") return std::make_shared<GroupNorm>(1, channels);
    if (kind == "gated") return std::make_shared<GatedBatchNorm2d>(channels);
    std::string valid;
    for (const auto& k : norm2d_kinds()) valid += (valid.empty() ? "" : ", ") + k;
    throw Error("make_norm2d: unknown norm kind '" + kind + "' (valid: " + valid + ")");
}

}  // namespace minnow
