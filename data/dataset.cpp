#include "data/dataset.h"

#include <algorithm>

#include "core/random.h"
#include "core/tensor.h"

namespace minnow {

void check_image_set(const ImageSet& s, const std::string& what) {
    if (s.n < 0 || s.channels <= 0 || s.height <= 0 || s.width <= 0)
        throw Error(what + ": bad image set shape n=" + std::to_string(s.n) + " c=" + std::to_string(s.channels) +
                    " h=" + std::to_string(s.height) + " w=" + std::to_string(s.width));
    if (static_cast<int64_t>(s.pixels.size()) != s.n * s.image_size())
        throw Error(what + ": holds " + std::to_string(s.pixels.size()) + " pixel bytes, expected " +
                    std::to_string(s.n * s.image_size()));
    if (static_cast<int64_t>(s.labels.size()) != s.n)
        throw Error(what + ": holds " + std::to_string(s.labels.size()) + " labels for " + std::to_string(s.n) +
                    " images");
    for (int64_t i = 0; i < s.n; ++i)
        if (s.labels[i] < 0 || s.labels[i] >= s.num_classes())
            throw Error(what + ": image " + std::to_string(i) + " has label " + std::to_string(s.labels[i]) +
                        ", expected 0.." + std::to_string(s.num_classes() - 1));
}

std::vector<int64_t> class_counts(const ImageSet& s) {
    std::vector<int64_t> counts(s.num_classes(), 0);
    for (int label : s.labels) counts.at(label)++;
    return counts;
}

ImageSet subset(const ImageSet& s, const std::vector<int64_t>& indices) {
    ImageSet out;
    out.n = static_cast<int64_t>(indices.size());
    out.channels = s.channels;
    out.height = s.height;
    out.width = s.width;
    out.class_names = s.class_names;
    out.pixels.resize(out.n * s.image_size());
    out.labels.resize(out.n);
    for (int64_t k = 0; k < out.n; ++k) {
        const int64_t i = indices[k];
        if (i < 0 || i >= s.n)
            throw Error("subset: index " + std::to_string(i) + " is out of range for a set of " + std::to_string(s.n) +
                        " images");
        std::copy_n(s.image(i), s.image_size(), out.pixels.data() + k * s.image_size());
        out.labels[k] = s.labels[i];
    }
    return out;
}

ImageSet evenly_across_classes(const ImageSet& s, int64_t n) {
    const int64_t k = s.num_classes();
    if (k == 0 || n <= 0 || n > s.n)
        throw Error("evenly_across_classes: cannot take " + std::to_string(n) + " images from a set of " +
                    std::to_string(s.n) + " in " + std::to_string(k) + " classes");
    std::vector<int64_t> want(k, n / k);
    for (int64_t c = 0; c < n % k; ++c) want[c]++;
    const std::vector<int64_t> have = class_counts(s);
    for (int64_t c = 0; c < k; ++c)
        if (have[c] < want[c])
            throw Error("evenly_across_classes: class " + std::to_string(c) + " ('" + s.class_names[c] + "') has " +
                        std::to_string(have[c]) + " images, " + std::to_string(want[c]) + " wanted");
    std::vector<int64_t> picked;
    picked.reserve(n);
    for (int64_t i = 0; i < s.n; ++i)
        if (want[s.labels[i]] > 0) {
            want[s.labels[i]]--;
            picked.push_back(i);
        }
    return subset(s, picked);
}

std::pair<ImageSet, ImageSet> split_validation(const ImageSet& s, int64_t n_val, uint64_t seed) {
    if (n_val < 0 || n_val > s.n)
        throw Error("split_validation: cannot hold out " + std::to_string(n_val) + " of " + std::to_string(s.n) +
                    " images");
    // The first n_val of a random order are the validation set.
    const std::vector<int64_t> perm = Generator(seed).permutation(s.n);
    std::vector<int64_t> val(perm.begin(), perm.begin() + n_val), train(perm.begin() + n_val, perm.end());
    std::sort(val.begin(), val.end());
    std::sort(train.begin(), train.end());
    return {subset(s, train), subset(s, val)};
}

void remap_labels(ImageSet& s, const std::vector<int>& mapping) {
    check_image_set(s, "remap_labels");
    const int64_t k = s.num_classes();
    if (static_cast<int64_t>(mapping.size()) != k)
        throw Error("remap_labels: the mapping has " + std::to_string(mapping.size()) + " entries for " +
                    std::to_string(k) + " classes");
    std::vector<std::string> names(k);
    for (int64_t c = 0; c < k; ++c) {
        if (mapping[c] < 0 || mapping[c] >= k)
            throw Error("remap_labels: class " + std::to_string(c) + " maps to " + std::to_string(mapping[c]) +
                        ", expected 0.." + std::to_string(k - 1));
        std::string& name = names[mapping[c]];
        name += (name.empty() ? "" : "+") + s.class_names[c];
    }
    for (int& label : s.labels) label = mapping.at(label);
    s.class_names = std::move(names);
}

}  // namespace minnow
