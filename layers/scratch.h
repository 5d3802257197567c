// minnow/layers/scratch.h (internal): per-thread scratch buffers of the inference layers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace minnow {

// n elements of v's storage, starting at a 64-byte boundary (a cache line:
// a kernel's 64-byte loads and stores then never straddle two lines), grown
// and never shrunk (no allocation after the first call of the largest
// layer). Callers keep v thread_local.
template <class T>
T* scratch(std::vector<T>& v, int64_t n) {
    static_assert(64 % sizeof(T) == 0);
    constexpr int64_t room = 64 / sizeof(T);
    if (static_cast<int64_t>(v.size()) < n + room) v.resize(n + room);
    const auto misalignment = reinterpret_cast<uintptr_t>(v.data()) % 64;
    return v.data() + (misalignment ? (64 - misalignment) / sizeof(T) : 0);
}

}  // namespace minnow
