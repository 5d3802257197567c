// minnow/kernels/amx.h (internal): the tile configuration of Intel AMX, which
// the bf16 GEMM (gemm_bf16.cpp) and the int8 convolution (conv_int8_amx.cpp)
// load before their tile instructions. x86-64 only: include it under
// MINNOW_X86 (kernels/cpu.h).
//
// AMX has 8 tile registers, each up to 16 rows of up to 64 bytes. LDTILECFG
// reads a 64-byte block that gives each tile its rows and bytes per row
// (palette 1); a tile instruction then works on those shapes. Loading a
// configuration also zeroes every tile.
//
// The kernels load a configuration through configure(), which skips the load
// when this thread's tiles already have that one, and never release the
// tiles (TILERELEASE): the int8 model calls its convolution one output row at
// a time, and releasing and reloading around each call took 40% of the time
// of a 64 -> 64 channel conv on a 128x128 image (Intel Xeon, family 6 model
// 167: 734 against 428 us; bench/bench_conv_int8.cpp). The cost of keeping
// them is 8 KB more for the OS to save when it switches threads.
//
// Whether this process may use the tiles at all (CPUID and Linux's
// permission) is decided in kernels/cpu.cpp (level amx).
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace minnow::amx {

struct alignas(64) TileConfig {
    uint8_t palette = 1, start_row = 0;
    uint8_t reserved[14] = {};
    uint16_t bytes_per_row[16] = {};
    uint8_t rows[16] = {};
    constexpr void set(int tile, int n_rows, int n_bytes) {
        rows[tile] = static_cast<uint8_t>(n_rows);
        bytes_per_row[tile] = static_cast<uint16_t>(n_bytes);
    }
};

// Loads c into this thread's tiles unless they have it already (the last
// configuration loaded through here: every AMX kernel loads through here).
__attribute__((target("amx-tile"))) inline void configure(const TileConfig& c) {
    thread_local TileConfig loaded{};
    if (std::memcmp(&loaded, &c, sizeof c) == 0) return;  // (the first call: loaded has palette 0)
    loaded = c;
    // The intrinsic's asm tells the compiler it reads only 8 bytes of the
    // configuration: the barrier keeps the copy's other 56 bytes before it.
    asm volatile("" : : : "memory");
    _tile_loadconfig(&loaded);
}

}  // namespace minnow::amx
