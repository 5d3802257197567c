// Fuzz target: arbitrary bytes as one image file, through the whole decode
// and validate path. The first byte picks the expected channel count (1..4)
// and the second the expected side (1..64), so the size and channel checks
// are exercised as well as the decoder; the rest is the file.
#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "data/image_folder.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 2) return 0;
    const int channels = 1 + data[0] % 4, side = 1 + data[1] % 64;
    std::vector<uint8_t> out(static_cast<size_t>(channels) * side * side);
    try {
        minnow::decode_image(data + 2, size - 2, side, side, channels, out.data(), "fuzz-input");
    } catch (const minnow::Error&) {
        // refused with a message: fine
    }
    return 0;
}
