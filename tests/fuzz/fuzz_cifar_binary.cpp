// Fuzz target: arbitrary bytes as a CIFAR-10 binary file.
#include <cstdint>
#include <cstdlib>

#include "core/tensor.h"
#include "data/cifar10.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        const minnow::ImageSet s = minnow::parse_cifar10_binary(data, size, "fuzz-input");
        // Accepted: then it was whole records with labels 0..9, copied exactly.
        if (static_cast<size_t>(s.n * minnow::kCifarRecordBytes) != size) std::abort();
        for (int64_t i = 0; i < s.n; ++i)
            if (s.labels[i] != data[i * minnow::kCifarRecordBytes] || s.labels[i] > 9) std::abort();
    } catch (const minnow::Error&) {
        // refused with a message: fine
    }
    return 0;
}
