// Fuzz target: arbitrary bytes as a safetensors file. Accepted means the
// format's rules held: the tensors, sorted by offset, tile the data after the
// header exactly, each holding as many elements as its dtype and bytes say,
// and its shape can be indexed (its strides do not overflow).
#include <cstdint>
#include <cstring>

#include "core/safetensors.h"
#include "core/tensor.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    try {
        const minnow::SafetensorsFile f = minnow::parse_safetensors(data, size, "fuzz-input");
        uint64_t header = 0;
        std::memcpy(&header, data, 8);
        uint64_t bytes = 0;
        for (const minnow::TensorEntry& e : f.tensors) {
            bytes += static_cast<uint64_t>(e.tensor.numel()) * (e.dtype == minnow::DType::F32 ? 4 : 8);
            if (f.find(e.name) == nullptr || e.name == "__metadata__") __builtin_trap();
            minnow::contiguous_strides(e.tensor.shape());  // what indexing it computes (overflow is UB)
        }
        if (8 + header + bytes != size) __builtin_trap();
    } catch (const minnow::Error&) {
        // refused with a message: fine
    }
    return 0;
}
