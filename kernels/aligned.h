// minnow/kernels/aligned.h (internal): storage that starts at a 64-byte
// boundary (a cache line), for the buffers the kernels load 64 bytes at a time.
//
// A 64-byte load (an AVX-512 vector, a row of an AMX tile) from an address
// that is not a multiple of 64 straddles two cache lines. With the 16-byte
// alignment of plain new, the AMX tile loads of the int8 convolution's
// packed weights and activations ran the whole int8 cnn at about half speed
// (Intel Xeon, family 6 model 167, one thread: 3.16 against 1.85 ms for a
// 128x128 image).
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

namespace minnow {

template <class T>
struct CacheLineAllocator {
    using value_type = T;
    CacheLineAllocator() = default;
    template <class U>
    CacheLineAllocator(const CacheLineAllocator<U>&) {}
    T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{64})); }
    void deallocate(T* p, size_t) { ::operator delete(p, std::align_val_t{64}); }
    bool operator==(const CacheLineAllocator&) const { return true; }
    bool operator!=(const CacheLineAllocator&) const { return false; }
};

// A std::vector whose data() is a multiple of 64.
template <class T>
using AlignedVector = std::vector<T, CacheLineAllocator<T>>;

// n elements of v, grown and never shrunk: a per-thread scratch buffer
// (callers keep v thread_local), so no allocation after the first call of
// the largest layer.
template <class T>
T* scratch(AlignedVector<T>& v, int64_t n) {
    if (static_cast<int64_t>(v.size()) < n) v.resize(n);
    return v.data();
}

}  // namespace minnow
