// minnow/layers/scratch.h (internal): per-thread scratch buffers of the inference layers.
#pragma once

#include <cstdint>
#include <vector>

namespace minnow {

// v's storage for at least n elements, grown and never shrunk (no allocation
// after the first call of the largest layer). Callers keep v thread_local.
template <class T>
T* scratch(std::vector<T>& v, int64_t n) {
    if (static_cast<int64_t>(v.size()) < n) v.resize(n);
    return v.data();
}

}  // namespace minnow
