// Fuzz target: arbitrary bytes as IDX files, raw or gzip. The whole input is
// parsed as one file; then, cut in two where its first two bytes say, as an
// images file and a labels file to be paired.
#include <cstdint>

#include "core/tensor.h"
#include "data/idx.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        const minnow::IdxArray a = minnow::parse_idx(data, size, "fuzz-input");
        size_t count = 1;
        for (int64_t d : a.dims) count *= static_cast<size_t>(d);
        if (count != a.data.size()) __builtin_trap();  // accepted means consistent
    } catch (const minnow::Error&) {
    }
    if (size < 2) return 0;
    const size_t cut = 2 + (size_t{data[0]} << 8 | data[1]) % (size - 1);  // in [2, size]
    try {
        const minnow::IdxArray images = minnow::parse_idx(data + 2, cut - 2, "images");
        const minnow::IdxArray labels = minnow::parse_idx(data + cut, size - cut, "labels");
        minnow::idx_image_set(images, labels, 10, "images", "labels");
    } catch (const minnow::Error&) {
    }
    return 0;
}
