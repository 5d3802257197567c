// The bfloat16 GEMM: rounding, packing, and the kernels (AMX, AVX512-BF16,
// AVX2, portable).
// Layouts and the choice of kernel are described in gemm_bf16.h.
#include "kernels/gemm_bf16.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "kernels/cpu.h"

#if MINNOW_X86
#include <immintrin.h>

#include "kernels/amx.h"
#endif

namespace minnow::bf16 {

// ---------------------------------------------------------------- rounding
// float32 bits: sign (1) | exponent (8) | mantissa (23); bfloat16 keeps the
// top 16. Round to nearest even: add 0x7fff plus the lowest kept bit, then
// cut (a carry into the exponent is the correct rounding up, up to infinity).
bf16_t from_float(float x) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<bf16_t>((u >> 16) | 0x0040u);  // NaN: quiet, keep sign
    if ((u & 0x7f800000u) == 0) return static_cast<bf16_t>((u >> 16) & 0x8000u);          // zero, subnormal: signed 0
    u += 0x7fffu + ((u >> 16) & 1u);
    return static_cast<bf16_t>(u >> 16);
}

float to_float(bf16_t b) {
    const uint32_t u = static_cast<uint32_t>(b) << 16;
    float x;
    std::memcpy(&x, &u, 4);
    return x;
}

// ---------------------------------------------------------------- dispatch
namespace {

Kernel resolve(Kernel k) {
    if (k == Kernel::Auto) return best_kernel();
    if (!kernel_available(k))
        throw Error(std::string("bf16 GEMM: the ") + kernel_name(k) + " kernel is not available on this machine");
    return k;
}

}  // namespace

bool kernel_available(Kernel k) {
    switch (k) {
        case Kernel::Auto:
        case Kernel::Portable: return true;
        case Kernel::Amx: return isa_supported(Isa::amx);  // the CPU and Linux allow AMX (kernels/cpu.h)
        case Kernel::Avx512Bf16: return isa_supported(Isa::avx512_bf16);
        case Kernel::Avx2: return isa_supported(Isa::avx2);
    }
    return false;
}

Kernel best_kernel() {
    if (isa_active(Isa::amx)) return Kernel::Amx;
    if (isa_active(Isa::avx512_bf16)) return Kernel::Avx512Bf16;
    if (isa_active(Isa::avx2)) return Kernel::Avx2;  // at level avx512 too: it has no bf16 instructions
    return Kernel::Portable;
}

bool kernel_has_bf16_arithmetic(Kernel k) {
    k = k == Kernel::Auto ? best_kernel() : k;
    return k == Kernel::Amx || k == Kernel::Avx512Bf16;
}

const char* kernel_name(Kernel k) {
    switch (k) {
        case Kernel::Auto: return "auto";
        case Kernel::Amx: return "amx";
        case Kernel::Avx512Bf16: return "avx512_bf16";
        case Kernel::Avx2: return "avx2";
        case Kernel::Portable: return "portable";
    }
    return "?";
}

// ---------------------------------------------------------------- packing
PackedA pack_a(const float* A, int64_t M, int64_t K, int64_t lda, const float* bias) {
    if (M < 1 || K < 1 || lda < K)
        throw Error("bf16::pack_a: need M, K >= 1 and lda >= K (got M " + std::to_string(M) + ", K " +
                    std::to_string(K) + ", lda " + std::to_string(lda) + ")");
    PackedA p;
    p.rows = M, p.depth = K;
    p.padded_rows = round_up(M, kRowBlock), p.padded_depth = round_up(K, kDepthBlock);
    p.values.assign(p.padded_rows * p.padded_depth, 0);
    for (int64_t m = 0; m < M; ++m)
        for (int64_t k = 0; k < K; ++k) p.values[m * p.padded_depth + k] = from_float(A[m * lda + k]);
    if (bias) {
        p.bias_tile.assign(p.padded_rows * kColBlock, 0.f);
        for (int64_t m = 0; m < M; ++m) std::fill_n(p.bias_tile.begin() + m * kColBlock, kColBlock, bias[m]);
    }
    return p;
}

int64_t packed_b_size(int64_t K, int64_t N) { return round_up(K, kDepthBlock) * round_up(N, kColBlock); }

namespace {

// out[n * 2 + r] = row r of (even, odd) at column n: the two rows
// interleaved, zeros for a null row and past column N (up to Np).
void pack_pair_portable(const float* even, const float* odd, int64_t N, bf16_t* out) {
    const int64_t Np = round_up(N, kColBlock);
    for (int64_t n = 0; n < Np; ++n) {
        out[2 * n] = even && n < N ? from_float(even[n]) : 0;
        out[2 * n + 1] = odd && n < N ? from_float(odd[n]) : 0;
    }
}

#if MINNOW_X86
// The same with AVX-512: 16 columns of both rows at a time, converted by one
// VCVTNE2PS2BF16 (rounding as from_float) into [even | odd], then
// interleaved into pairs by one permute.
__attribute__((target("avx512f,avx512bw,avx512bf16"))) void pack_pair_avx512(const float* even, const float* odd,
                                                                            int64_t N, bf16_t* out) {
    const int64_t Np = round_up(N, kColBlock);
    alignas(64) static const uint16_t interleave[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
                                                        8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
    const __m512i index = _mm512_load_si512(interleave);
    for (int64_t n = 0; n < Np; n += 16) {
        const __mmask16 valid = n + 16 <= N ? __mmask16(0xffff) : n < N ? __mmask16((1u << (N - n)) - 1) : 0;
        const __m512 e = even ? _mm512_maskz_loadu_ps(valid, even + n) : _mm512_setzero_ps();
        const __m512 o = odd ? _mm512_maskz_loadu_ps(valid, odd + n) : _mm512_setzero_ps();
        const __m512i both = (__m512i)_mm512_cvtne2ps_pbh(o, e);  // low half: e, high half: o
        _mm512_storeu_si512(out + 2 * n, _mm512_permutexvar_epi16(index, both));
    }
}

// The same with AVX2, 8 columns at a time: from_float on 8 lanes with
// integer operations (AVX2 has no conversion to bfloat16), each result in the
// high half of its lane; then pair (even, odd) of a column = one 32-bit lane
// (odd << 16 | even), and 8 lanes are 8 consecutive pairs.
__attribute__((target("avx2"))) inline __m256i round_high(__m256i u) {
    const __m256i abs = _mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff));
    const __m256i nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f800000));
    const __m256i tiny = _mm256_cmpeq_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7f800000)), _mm256_setzero_si256());
    const __m256i odd_bit = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    const __m256i rounded = _mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), odd_bit));
    const __m256i quiet = _mm256_or_si256(u, _mm256_set1_epi32(0x00400000));     // NaN: quiet, keep sign
    const __m256i zero = _mm256_and_si256(u, _mm256_set1_epi32(int(0x80000000)));  // zero, subnormal: signed 0
    return _mm256_blendv_epi8(_mm256_blendv_epi8(rounded, quiet, nan), zero, tiny);
}

__attribute__((target("avx2"))) void pack_pair_avx2(const float* even, const float* odd, int64_t N, bf16_t* out) {
    const int64_t Np = round_up(N, kColBlock);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), high = _mm256_set1_epi32(int(0xffff0000));
    for (int64_t n = 0; n < Np; n += 8) {
        const __m256i valid = _mm256_cmpgt_epi32(_mm256_set1_epi32(int(std::clamp<int64_t>(N - n, 0, 8))), lane);
        const __m256i e = even ? _mm256_castps_si256(_mm256_maskload_ps(even + n, valid)) : _mm256_setzero_si256();
        const __m256i o = odd ? _mm256_castps_si256(_mm256_maskload_ps(odd + n, valid)) : _mm256_setzero_si256();
        const __m256i pairs =
            _mm256_or_si256(_mm256_srli_epi32(round_high(e), 16), _mm256_and_si256(round_high(o), high));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 2 * n), pairs);
    }
}
#endif

}  // namespace

void pack_b_pair(const float* even, const float* odd, int64_t N, bf16_t* out, Kernel kernel) {
#if MINNOW_X86
    switch (resolve(kernel)) {
        case Kernel::Amx:
        case Kernel::Avx512Bf16: return pack_pair_avx512(even, odd, N, out);
        case Kernel::Avx2: return pack_pair_avx2(even, odd, N, out);
        default: break;
    }
#endif
    resolve(kernel);
    pack_pair_portable(even, odd, N, out);
}

// Pair-row t holds rows 2t and 2t+1; rows from K up to Kp are zeros.
void pack_b(const float* B, int64_t K, int64_t N, int64_t ldb, bf16_t* out, Kernel kernel) {
    if (K < 1 || N < 1 || ldb < N)
        throw Error("bf16::pack_b: need K, N >= 1 and ldb >= N (got K " + std::to_string(K) + ", N " +
                    std::to_string(N) + ", ldb " + std::to_string(ldb) + ")");
    kernel = resolve(kernel);
    const int64_t Kp = round_up(K, kDepthBlock), Np = round_up(N, kColBlock);
    for (int64_t t = 0; t < Kp / 2; ++t) {
        const float* even = 2 * t < K ? B + 2 * t * ldb : nullptr;
        const float* odd = 2 * t + 1 < K ? B + (2 * t + 1) * ldb : nullptr;
        pack_b_pair(even, odd, N, out + t * Np * 2, kernel);
    }
}

// ---------------------------------------------------------------- kernels
namespace {

// max(x, 0), and NaN stays NaN (as the AVX-512 epilogue's MAXPS(0, x)).
inline float relu(float x) { return x > 0.f || x != x ? x : 0.f; }

// C = A B + bias over the tile tables, in plain loops: for each row m of C
// and column tile n, 16 accumulators summed over the depth steps s and the
// 16 pairs t of a step:
//   c[q] = bias[m] + sum_{s,t} a[m][32s+2t] b(s,n)[t][q][0] + a[m][32s+2t+1] b(s,n)[t][q][1]
void gemm_portable(const PackedA& A, const TiledB& B, const TiledC& C) {
    const int64_t Kp = A.padded_depth, steps = Kp / kDepthBlock;
    for (int64_t m = 0; m < A.rows; ++m) {
        const bf16_t* a = A.values.data() + m * Kp;
        const float bias = A.bias_tile.empty() ? 0.f : A.bias_tile[m * kColBlock];
        for (size_t n = 0; n < C.column_tiles.size(); ++n) {
            float acc[kColBlock];
            std::fill(acc, acc + kColBlock, bias);
            for (int64_t s = 0; s < steps; ++s)
                for (int64_t t = 0; t < kDepthBlock / 2; ++t) {
                    const float a0 = to_float(a[s * kDepthBlock + 2 * t]), a1 = to_float(a[s * kDepthBlock + 2 * t + 1]);
                    if (a0 == 0.f && a1 == 0.f) continue;  // K padding (and zero weights) add nothing
                    const bf16_t* b = B.column_tiles[n] + B.step_offsets[s] + t * B.row_stride;
                    for (int64_t q = 0; q < kColBlock; ++q) acc[q] += a0 * to_float(b[2 * q]) + a1 * to_float(b[2 * q + 1]);
                }
            float* c = C.column_tiles[n] + m * C.ldc;
            for (int q = 0; q < C.columns[n]; ++q) c[q] = C.relu ? relu(acc[q]) : acc[q];
        }
    }
}

#if MINNOW_X86
// The AMX tile configuration (kernels/amx.h): tiles 0-7 all 16 rows of 64
// bytes, i.e. 16x16 floats (C) or 16x32 bfloat16 (A, and B's 16 pair-rows x
// 16 columns).
using amx::TileConfig;

constexpr TileConfig full_tiles() {
    TileConfig config;
    for (int t = 0; t < 8; ++t) config.set(t, 16, 64);
    return config;
}

__attribute__((target("amx-tile"))) void configure_tiles() {
    static const TileConfig config = full_tiles();
    amx::configure(config);
}

// A block of C of MT x NT tiles (each 16x16, MT, NT in {1, 2}): row blocks
// at m0 (and m0 + 16), column tiles n (and n + 1). Tiles 0..3 hold C (tile
// 2i+j is row block i, column tile j), 4 and 5 the two 16-row slices of A, 6
// and 7 the B tiles of the two column tiles. Every depth step loads them and
// does up to four tile multiply-adds. A tile is named by an immediate, hence
// the macros.
template <int MT, int NT>
__attribute__((target("amx-tile,amx-bf16,avx512f"))) void amx_block(const PackedA& A, const TiledB& B, const TiledC& C,
                                                             int64_t m0, size_t n) {
    const int64_t Kp = A.padded_depth, steps = Kp / kDepthBlock;
    const int64_t a_stride = Kp * 2, b_stride = B.row_stride * 2;  // bytes between tile rows
    const bf16_t* a_rows = A.values.data() + m0 * Kp;
    const bf16_t* b0 = B.column_tiles[n];
    const bf16_t* b1 = NT == 2 ? B.column_tiles[n + 1] : b0;
    const float* bias = A.bias_tile.empty() ? nullptr : A.bias_tile.data() + m0 * kColBlock;
    // Accumulators start as the bias (each row of the bias tile is bias[m] 16 times) or 0.
#define MINNOW_INIT_C(t, i)                                         \
    if (bias) _tile_loadd(t, bias + (i) * 16 * kColBlock, 64);     \
    else _tile_zero(t);
    MINNOW_INIT_C(0, 0)
    if constexpr (NT == 2) { MINNOW_INIT_C(1, 0) }
    if constexpr (MT == 2) { MINNOW_INIT_C(2, 1) }
    if constexpr (MT == 2 && NT == 2) { MINNOW_INIT_C(3, 1) }
#undef MINNOW_INIT_C
    for (int64_t s = 0; s < steps; ++s) {
        const int64_t offset = B.step_offsets[s];
        _tile_loadd(4, a_rows + s * kDepthBlock, a_stride);
        _tile_loadd(6, b0 + offset, b_stride);
        if constexpr (MT == 2) _tile_loadd(5, a_rows + 16 * Kp + s * kDepthBlock, a_stride);
        if constexpr (NT == 2) _tile_loadd(7, b1 + offset, b_stride);
        _tile_dpbf16ps(0, 4, 6);
        if constexpr (NT == 2) _tile_dpbf16ps(1, 4, 7);
        if constexpr (MT == 2) _tile_dpbf16ps(2, 5, 6);
        if constexpr (MT == 2 && NT == 2) _tile_dpbf16ps(3, 5, 7);
    }
    // A tile that lies wholly inside C goes straight there, unless a ReLU is
    // to be applied; one over the edge of M or of its column tile, or to be
    // relu'd, goes through a scratch tile (in L1), from which its inside is
    // copied row by row (16 floats: one vector), through max(0, x) if asked.
    alignas(64) float edge[16 * 16];
    const int64_t M = A.rows;
    const __m512 zero = _mm512_setzero_ps();
#define MINNOW_STORE_C(t, i, j)                                                              \
    {                                                                                        \
        const int64_t r0 = m0 + 16 * (i), cols = C.columns[n + (j)];                         \
        float* c = C.column_tiles[n + (j)] + r0 * C.ldc;                                     \
        if (r0 + 16 <= M && cols == 16 && !C.relu) {                                         \
            _tile_stored(t, c, C.ldc * 4);                                                   \
        } else {                                                                             \
            _tile_stored(t, edge, 64);                                                       \
            asm volatile("" : "=m"(edge)); /* tell the compiler the tile store wrote edge */ \
            const __mmask16 inside = static_cast<__mmask16>((1u << cols) - 1);              \
            for (int64_t r = 0; r < std::min<int64_t>(16, M - r0); ++r) {                    \
                __m512 v = _mm512_load_ps(edge + r * 16);                                    \
                if (C.relu) v = _mm512_maskz_max_ps(0xffff, zero, v); /* NaN: MAXPS gives v */ \
                _mm512_mask_storeu_ps(c + r * C.ldc, inside, v);                             \
            }                                                                                \
        }                                                                                    \
    }
    MINNOW_STORE_C(0, 0, 0)
    if constexpr (NT == 2) MINNOW_STORE_C(1, 0, 1)
    if constexpr (MT == 2) MINNOW_STORE_C(2, 1, 0)
    if constexpr (MT == 2 && NT == 2) MINNOW_STORE_C(3, 1, 1)
#undef MINNOW_STORE_C
}

// Pairs of column tiles outside, pairs of row blocks inside: the B tiles of
// two column tiles (Kp x 32 bfloat16) are reused by every row block while they
// are in cache; A (a layer's weights) stays in the L2 cache across columns.
__attribute__((target("amx-tile,amx-bf16,avx512f"))) void gemm_amx(const PackedA& A, const TiledB& B,
                                                                    const TiledC& C) {
    configure_tiles();
    const size_t tiles = C.column_tiles.size();
    const int64_t Mp = A.padded_rows;
    for (size_t n = 0; n < tiles; n += 2) {
        const bool two_cols = n + 2 <= tiles;
        for (int64_t m0 = 0; m0 < Mp; m0 += 2 * kRowBlock) {
            const bool two_rows = m0 + 2 * kRowBlock <= Mp;
            if (two_rows && two_cols) amx_block<2, 2>(A, B, C, m0, n);
            else if (two_rows) amx_block<2, 1>(A, B, C, m0, n);
            else if (two_cols) amx_block<1, 2>(A, B, C, m0, n);
            else amx_block<1, 1>(A, B, C, m0, n);
        }
    }
}

// ---- AVX512-BF16 (Cooper Lake, Sapphire Rapids, Zen 4 and later)
// VDPBF16PS does, for each of 16 float lanes q, c[q] += a0 b[q][0] + a1 b[q][1]
// with (a0, a1) one pair of A broadcast to every lane and b one pair-row of a
// B tile (16 pairs, one register): a depth step of 32 is 16 of them. A block
// is 8 rows of C x NT column tiles (NT = 2: 16 accumulators, 2 loads of B
// and 8 broadcasts of A pairs a pair-row).
template <int NT>
__attribute__((target("avx512f,avx512bf16"))) void avx512_bf16_block(const PackedA& A, const TiledB& B,
                                                                     const TiledC& C, int64_t m0, size_t n) {
    constexpr int MR = 8;
    const int64_t Kp = A.padded_depth, steps = Kp / kDepthBlock;
    __m512 acc[MR][NT];
    for (int r = 0; r < MR; ++r)
        for (int t = 0; t < NT; ++t)
            acc[r][t] = A.bias_tile.empty() ? _mm512_setzero_ps() : _mm512_loadu_ps(&A.bias_tile[(m0 + r) * kColBlock]);
    const bf16_t* a = A.values.data() + m0 * Kp;
    for (int64_t s = 0; s < steps; ++s) {
        const bf16_t* b[NT];
        for (int t = 0; t < NT; ++t) b[t] = B.column_tiles[n + t] + B.step_offsets[s];
        for (int64_t p = 0; p < kDepthBlock / 2; ++p) {
            __m512bh bp[NT];
            for (int t = 0; t < NT; ++t) bp[t] = (__m512bh)_mm512_loadu_si512(b[t] + p * B.row_stride);
            for (int r = 0; r < MR; ++r) {
                int32_t pair;  // a[m0 + r][32s + 2p], a[..][32s + 2p + 1]
                std::memcpy(&pair, a + r * Kp + s * kDepthBlock + 2 * p, 4);
                const __m512bh ap = (__m512bh)_mm512_set1_epi32(pair);
                for (int t = 0; t < NT; ++t) acc[r][t] = _mm512_dpbf16_ps(acc[r][t], ap, bp[t]);
            }
        }
    }
    const __m512 zero = _mm512_setzero_ps();
    for (int r = 0; r < MR && m0 + r < A.rows; ++r)
        for (int t = 0; t < NT; ++t) {
            const __m512 v = C.relu ? _mm512_maskz_max_ps(0xffff, zero, acc[r][t]) : acc[r][t];  // NaN: MAXPS gives v
            const __mmask16 inside = static_cast<__mmask16>((1u << C.columns[n + t]) - 1);
            _mm512_mask_storeu_ps(C.column_tiles[n + t] + (m0 + r) * C.ldc, inside, v);
        }
}

// Pairs of column tiles outside (their B tiles stay in cache for every row
// block), blocks of 8 rows inside.
void gemm_avx512_bf16(const PackedA& A, const TiledB& B, const TiledC& C) {
    const size_t tiles = C.column_tiles.size();
    for (size_t n = 0; n < tiles; n += 2)
        for (int64_t m0 = 0; m0 < A.rows; m0 += 8) {
            if (n + 2 <= tiles) avx512_bf16_block<2>(A, B, C, m0, n);
            else avx512_bf16_block<1>(A, B, C, m0, n);
        }
}

// ---- AVX2 + FMA (any x86-64 CPU of the last decade)
// AVX2 has no bfloat16 arithmetic: a bfloat16 is widened to float32 by
// shifting its bits up 16 (exact), and the products are float32 FMAs. So
// this kernel does the work of a float32 GEMM plus the widening, and bf16 can
// be no faster than float32 here (it only halves the memory the weights and
// packed inputs take). The widening is done outside the inner loop, into
// per-thread buffers: B for up to 4 column tiles at a time (Kp x 64 floats,
// in L2), then A 4 rows at a time (4 x Kp, in L1), which serve those 4
// tiles; the inner loop is a plain float32 one, a block of 4 rows x 16
// columns (8 accumulators, 2 loads of B and 4 broadcasts of A per k).
// a: rows m0..m0+3 of A as float, Kp apart; b: column tile n as float [Kp][16].
__attribute__((target("avx2,fma"))) void avx2_block(const float* a, int64_t Kp, const float* b, const PackedA& A,
                                                    const TiledC& C, int64_t m0, size_t n) {
    constexpr int MR = 4;
    __m256 acc[MR][2];
    for (int r = 0; r < MR; ++r)
        for (int h = 0; h < 2; ++h)
            acc[r][h] = A.bias_tile.empty() ? _mm256_setzero_ps() : _mm256_loadu_ps(&A.bias_tile[(m0 + r) * kColBlock]);
    for (int64_t k = 0; k < Kp; ++k) {
        const __m256 b0 = _mm256_loadu_ps(b + k * 16), b1 = _mm256_loadu_ps(b + k * 16 + 8);
        for (int r = 0; r < MR; ++r) {
            const __m256 ar = _mm256_broadcast_ss(a + r * Kp + k);
            acc[r][0] = _mm256_fmadd_ps(ar, b0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(ar, b1, acc[r][1]);
        }
    }
    const int cols = C.columns[n];
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i inside[2] = {_mm256_cmpgt_epi32(_mm256_set1_epi32(std::min(cols, 8)), lane),
                               _mm256_cmpgt_epi32(_mm256_set1_epi32(std::max(cols - 8, 0)), lane)};
    const __m256 zero = _mm256_setzero_ps();
    for (int r = 0; r < MR && m0 + r < A.rows; ++r)
        for (int h = 0; h < 2; ++h) {
            const __m256 v = C.relu ? _mm256_max_ps(zero, acc[r][h]) : acc[r][h];  // NaN: MAXPS gives v
            _mm256_maskstore_ps(C.column_tiles[n] + (m0 + r) * C.ldc + 8 * h, inside[h], v);
        }
}

// b[k][q] = B(s, n)[p][q][e] as float, k = 32s + 2p + e: one column tile of B
// widened into the order avx2_block reads.
__attribute__((target("avx2"))) void widen_b_tile(const TiledB& B, size_t n, int64_t steps, float* b) {
    const __m256i high = _mm256_set1_epi32(int(0xffff0000));
    for (int64_t s = 0; s < steps; ++s)
        for (int64_t p = 0; p < kDepthBlock / 2; ++p) {
            const bf16_t* row = B.column_tiles[n] + B.step_offsets[s] + p * B.row_stride;  // 16 pairs
            float* even = b + (s * kDepthBlock + 2 * p) * 16;
            for (int h = 0; h < 2; ++h) {
                const __m256i pairs = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 16 * h));
                _mm256_storeu_ps(even + 8 * h, _mm256_castsi256_ps(_mm256_slli_epi32(pairs, 16)));
                _mm256_storeu_ps(even + 16 + 8 * h, _mm256_castsi256_ps(_mm256_and_si256(pairs, high)));
            }
        }
}

void gemm_avx2(const PackedA& A, const TiledB& B, const TiledC& C) {
    constexpr size_t kTiles = 4;  // column tiles whose widened B is reused by every row block
    const int64_t Kp = A.padded_depth, steps = Kp / kDepthBlock;
    thread_local std::vector<float> a, b;
    a.resize(4 * Kp);
    b.resize(kTiles * Kp * 16);
    const size_t tiles = C.column_tiles.size();
    for (size_t n0 = 0; n0 < tiles; n0 += kTiles) {
        const size_t n1 = std::min(tiles, n0 + kTiles);
        for (size_t n = n0; n < n1; ++n) widen_b_tile(B, n, steps, b.data() + (n - n0) * Kp * 16);
        for (int64_t m0 = 0; m0 < A.rows; m0 += 4) {
            for (int64_t i = 0; i < 4 * Kp; ++i) a[i] = to_float(A.values[m0 * Kp + i]);  // rows m0..m0+3 (< Mp)
            for (size_t n = n0; n < n1; ++n) avx2_block(a.data(), Kp, b.data() + (n - n0) * Kp * 16, A, C, m0, n);
        }
    }
}
#endif

}  // namespace

void gemm_tiled(const PackedA& A, const TiledB& B, const TiledC& C, Kernel kernel) {
    if (A.rows < 1 || static_cast<int64_t>(B.step_offsets.size()) != A.padded_depth / kDepthBlock ||
        B.column_tiles.size() != C.column_tiles.size() || C.columns.size() != C.column_tiles.size())
        throw Error("bf16::gemm_tiled: the tile tables do not fit (" + std::to_string(B.step_offsets.size()) +
                    " depth steps for K " + std::to_string(A.depth) + ", " + std::to_string(B.column_tiles.size()) +
                    " B column tiles, " + std::to_string(C.column_tiles.size()) + " C column tiles)");
#if MINNOW_X86
    switch (resolve(kernel)) {
        case Kernel::Amx: return gemm_amx(A, B, C);
        case Kernel::Avx512Bf16: return gemm_avx512_bf16(A, B, C);
        case Kernel::Avx2: return gemm_avx2(A, B, C);
        default: break;
    }
#endif
    resolve(kernel);
    gemm_portable(A, B, C);
}

void gemm(const PackedA& A, const bf16_t* B, int64_t N, float* C, int64_t ldc, Kernel kernel, bool relu) {
    if (N < 1 || ldc < N || A.rows < 1)
        throw Error("bf16::gemm: need N >= 1, ldc >= N and a packed A (got N " + std::to_string(N) + ", ldc " +
                    std::to_string(ldc) + ", A rows " + std::to_string(A.rows) + ")");
    // The packed B as tiles: column tile n starts at column 16n of pair-row 0,
    // depth step s at pair-row 16s; pair-rows are Np pairs apart.
    thread_local TiledB b;
    thread_local TiledC c;
    const int64_t Np = round_up(N, kColBlock), tiles = Np / kColBlock;
    b.row_stride = Np * 2;
    b.step_offsets.resize(A.padded_depth / kDepthBlock);
    for (size_t s = 0; s < b.step_offsets.size(); ++s) b.step_offsets[s] = static_cast<int64_t>(s) * 16 * Np * 2;
    b.column_tiles.resize(tiles);
    c.column_tiles.resize(tiles);
    c.columns.resize(tiles);
    c.ldc = ldc;
    c.relu = relu;
    for (int64_t n = 0; n < tiles; ++n) {
        b.column_tiles[n] = B + n * kColBlock * 2;
        c.column_tiles[n] = C + n * kColBlock;
        c.columns[n] = static_cast<int>(std::min(kColBlock, N - n * kColBlock));
    }
    gemm_tiled(A, b, c, kernel);
}

}  // namespace minnow::bf16
