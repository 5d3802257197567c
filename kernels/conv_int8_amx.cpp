// The AMX tiles of the int8 convolution (kernels/conv_int8.h), for CPUs with
// AMX-INT8 (Intel Sapphire Rapids and later).
//
// TDPBUSD multiplies tiles: for a tile A of M rows of 4k unsigned bytes and a
// tile B of k rows of 16 x 4 signed bytes,
//     C[m][n] += sum_{q < k} sum_{e < 4} A[m][4q + e] * B[q][4n + e]      (int32)
// up to 16 x 16 x 64 multiply-adds in one instruction (VPDPBUSD on a zmm
// does 64). That is the convolution's sum over one tap and up to 64 input
// channels, for M pixels x 16 output channels, with
//   * A's rows = M consecutive output pixels' input bytes at tap (i, j): in
//     the padded channels-last input they lie stride * Cp bytes apart, so A
//     is loaded straight from the image, no copy (a tile load takes any
//     row stride);
//   * B = the packed weights of one block of 16 output channels at that tap,
//     for k groups of 4 channels: [k][16][4], consecutive in the packing of
//     pack_weights(), 64 bytes per row;
//   * C = M pixels x 16 channels of int32 sums, stored into the output row
//     [Wo][Op] (rows_amx) or into 1 KB on the stack that is requantized at
//     once (rows_amx_requantize).
// The channels are taken in `chunks` equal parts of kc bytes (kc <= 64, a
// multiple of 4 dividing Cp): 64 for the usual multiples of 64, 28 for the
// 27 channels of an image's first conv as patches (conv_int8.h).
//
// Tiles: 0-3 hold C (tile 2i + j: pixel tile i, block j), 4 and 5 the two A
// tiles, 6 and 7 the two B tiles; a step does up to 4 TDPBUSD on 2 loads of A
// and 2 of B. A row's pixels go in tiles of M = min(16, Wo); when 16 does
// not divide Wo the last tile starts at Wo - 16 and recomputes a few pixels
// of the one before: the same integers, written again.
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "kernels/amx.h"
#include "kernels/conv_int8.h"
#include "kernels/conv_int8_requantize.h"

#define MINNOW_AMX_TARGET __attribute__((target("amx-tile,amx-int8,avx512f,avx512bw,avx512vl")))

namespace minnow::int8 {

namespace {

struct Geometry {
    int64_t M;       // pixels per tile
    int64_t kc;      // bytes of channels per step
    int64_t chunks;  // steps per tap: Cp / kc
};

Geometry geometry(const ConvShape& s) {
    const int64_t groups = s.Cp() / kChannelGroup;
    int64_t chunks = (groups + 15) / 16;
    while (groups % chunks) ++chunks;  // equal parts of whole groups (at worst one group each)
    return {std::min<int64_t>(16, s.Wo()), s.Cp() / chunks, chunks};
}

// Where a step stores its C tiles: tile 2i + j (pixel tile i, block j) at
// c[2i + j], rows (pixels) c_stride bytes apart.
struct Sums {
    int32_t* c[4];
    int64_t c_stride;
};

// The tile instructions name their tiles by immediates: one function per
// number of pixel tiles (MT) and of blocks (NT), each 1 or 2. x0, x1: the
// first pixel of each pixel tile; w: the packed weights of the first block.
template <int MT, int NT>
MINNOW_AMX_TARGET void step_tiles(const uint8_t* X, const ConvShape& s, const Geometry& g, const int8_t* w,
                                  int64_t oy, int64_t x0, int64_t x1, const Sums& out) {
    const int64_t Cp = s.Cp(), groups = Cp / kChannelGroup, Wp = s.Wp(), org = s.origin();
    const int64_t block_stride = s.kh * s.kw * groups * kChannelGroup * kOutputBlock;  // bytes per packed block
    const int64_t a_stride = s.stride * Cp;
    _tile_zero(0);
    if constexpr (NT == 2) _tile_zero(1);
    if constexpr (MT == 2) _tile_zero(2);
    if constexpr (MT == 2 && NT == 2) _tile_zero(3);
    for (int64_t i = 0; i < s.kh; ++i)
        for (int64_t j = 0; j < s.kw; ++j) {
            const uint8_t* row = X + ((oy * s.stride + i + org) * Wp + j + org) * Cp;
            const uint8_t* a0 = row + x0 * s.stride * Cp;
            const uint8_t* a1 = row + x1 * s.stride * Cp;
            const int8_t* b0 = w + (i * s.kw + j) * groups * kChannelGroup * kOutputBlock;
            const int8_t* b1 = b0 + block_stride;
            for (int64_t k = 0; k < g.chunks; ++k) {
                const int64_t a_off = k * g.kc, b_off = k * g.kc * kOutputBlock;  // kc/4 rows of 64 bytes
                _tile_loadd(4, a0 + a_off, a_stride);
                _tile_loadd(6, b0 + b_off, 64);
                if constexpr (MT == 2) _tile_loadd(5, a1 + a_off, a_stride);
                if constexpr (NT == 2) _tile_loadd(7, b1 + b_off, 64);
                _tile_dpbusd(0, 4, 6);
                if constexpr (NT == 2) _tile_dpbusd(1, 4, 7);
                if constexpr (MT == 2) _tile_dpbusd(2, 5, 6);
                if constexpr (MT == 2 && NT == 2) _tile_dpbusd(3, 5, 7);
            }
        }
    _tile_stored(0, out.c[0], out.c_stride);
    if constexpr (NT == 2) _tile_stored(1, out.c[1], out.c_stride);
    if constexpr (MT == 2) _tile_stored(2, out.c[2], out.c_stride);
    if constexpr (MT == 2 && NT == 2) _tile_stored(3, out.c[3], out.c_stride);
}

// Every step of output rows [oy0, oy1): pairs of blocks outside, pairs of
// pixel tiles inside, so that a pair of blocks' weights at every tap (2 KB
// per tap and 64 channels) stay in L1 across the row. sums(oy, b, x0, x1)
// says where the step of blocks b, b+1 and pixel tiles from x0, x1 stores
// its C tiles; done(oy, b, x0, x1, mt, nt, M) is called after it, with its
// numbers of pixel tiles and blocks and the pixels per tile.
template <class Where, class Done>
MINNOW_AMX_TARGET void for_each_step(const uint8_t* X, const ConvShape& s, const PackedWeights& w, int64_t oy0,
                                     int64_t oy1, Where sums, Done done) {
    const Geometry g = geometry(s);
    amx::TileConfig config;
    for (int t = 0; t < 4; ++t) config.set(t, static_cast<int>(g.M), 64);          // C: M x 16 int32
    for (int t = 4; t < 6; ++t) config.set(t, static_cast<int>(g.M), static_cast<int>(g.kc));  // A: M x kc bytes
    for (int t = 6; t < 8; ++t) config.set(t, static_cast<int>(g.kc / 4), 64);     // B: kc/4 x 64 bytes
    amx::configure(config);
    const int64_t blocks = s.Op() / kOutputBlock, Wo = s.Wo();
    const int64_t block_stride = s.kh * s.kw * s.Cp() * kOutputBlock;
    const int64_t pixel_tiles = (Wo + g.M - 1) / g.M;
    auto start = [&](int64_t t) { return std::min(t * g.M, Wo - g.M); };
    for (int64_t oy = oy0; oy < oy1; ++oy)
        for (int64_t b = 0; b < blocks; b += 2) {
            const int8_t* wb = w.values.data() + b * block_stride;
            const bool two_blocks = b + 2 <= blocks;
            for (int64_t t = 0; t < pixel_tiles; t += 2) {
                const int64_t x0 = start(t), x1 = start(t + 1);
                const bool two_tiles = t + 2 <= pixel_tiles;
                const Sums out = sums(oy, b, x0, x1);
                if (two_tiles && two_blocks) step_tiles<2, 2>(X, s, g, wb, oy, x0, x1, out);
                else if (two_tiles) step_tiles<2, 1>(X, s, g, wb, oy, x0, x1, out);
                else if (two_blocks) step_tiles<1, 2>(X, s, g, wb, oy, x0, x1, out);
                else step_tiles<1, 1>(X, s, g, wb, oy, x0, x1, out);
                done(oy, b, x0, x1, two_tiles ? 2 : 1, two_blocks ? 2 : 1, g.M);
            }
        }
}

}  // namespace

// Output rows [oy0, oy1): acc [oy1-oy0][Wo][Op], the C tiles stored straight into it.
MINNOW_AMX_TARGET void rows_amx(const uint8_t* X, const ConvShape& s, const PackedWeights& w, int64_t oy0,
                                int64_t oy1, int32_t* acc) {
    const int64_t Op = s.Op(), row = s.Wo() * Op;
    auto sums = [&](int64_t oy, int64_t b, int64_t x0, int64_t x1) {
        int32_t* r = acc + (oy - oy0) * row + b * kOutputBlock;
        return Sums{{r + x0 * Op, r + x0 * Op + kOutputBlock, r + x1 * Op, r + x1 * Op + kOutputBlock}, Op * 4};
    };
    for_each_step(X, s, w, oy0, oy1, sums, [](int64_t, int64_t, int64_t, int64_t, int, int, int64_t) {});
}

// conv_requantize (conv_int8.h): each step's C tiles go to 4 KB on the
// stack, still in L1 when requantize16 turns them into bytes.
MINNOW_AMX_TARGET void rows_amx_requantize(const uint8_t* X, const ConvShape& s, const PackedWeights& w, int64_t oy0,
                                           int64_t oy1, const Requantization& r) {
    alignas(64) int32_t tiles[4][16 * 16];
    auto sums = [&](int64_t, int64_t, int64_t, int64_t) {
        return Sums{{tiles[0], tiles[1], tiles[2], tiles[3]}, 64};
    };
    auto requantize = [&](int64_t oy, int64_t b, int64_t x0, int64_t x1, int mt, int nt, int64_t M) {
        uint8_t* out = r.out + (oy - oy0) * r.out_row_stride;
        const uint8_t* residual = r.residual.bytes ? r.residual.bytes + (oy - oy0) * r.residual_row_stride : nullptr;
        for (int i = 0; i < mt; ++i)
            for (int j = 0; j < nt; ++j) {
                const int64_t x = i ? x1 : x0, o = (b + j) * kOutputBlock;
                const Requantize16 k = requantize16_constants(r.multiplier + o, r.offset + o, r.residual.multiplier,
                                                              r.lo, lanes_from(o, s.O));
                const int32_t* tile = tiles[2 * i + j];
                uint8_t* to = out + x * r.out_stride + o;
                const int64_t out_stride = r.out_stride;
                if (residual) {
                    const uint8_t* from = residual + x * r.residual.stride + o;
                    for (int64_t m = 0; m < M; ++m)
                        requantize16(tile + m * 16, from + m * r.residual.stride, k, to + m * out_stride);
                } else {
                    for (int64_t m = 0; m < M; ++m) requantize16(tile + m * 16, nullptr, k, to + m * out_stride);
                }
            }
    };
    for_each_step(X, s, w, oy0, oy1, sums, requantize);
}

}  // namespace minnow::int8
