// minnow/kernels/gemm_bf16.h: a bfloat16 GEMM for inference, accumulating in float.
//
//     C [M, N] = A [M, K] B [K, N] + bias[m]          (A, B rounded to bfloat16)
//
// bfloat16 is a float32 with the low 16 bits of the mantissa dropped: the same
// exponent range, 8 significant bits (rounding to nearest errs by at most
// 2^-8 = 0.4% of the value). The product of two bfloat16 numbers is exact in float32, so the
// only errors are the roundings of A and B and the float32 summation.
//
// Used by the bfloat16 convolution (layers/conv2d_bf16.h): A is a layer's
// weights, converted and packed once; B is the im2col matrix of the input,
// rounded and packed on every call. Both are packed so that the kernels read
// them as they are:
//   * A: row-major bfloat16, rows padded to a multiple of 16 and K to a
//     multiple of 32 (zeros), i.e. [Mp][Kp];
//   * B: "VNNI" pairs: the two entries of rows 2t and 2t+1 of one column lie
//     side by side, [Kp/2][Np][2] (Np = N padded to a multiple of 16, zeros).
//     An instruction that multiplies a pair of A by a pair of B and adds both
//     products to one float (AMX's TDPBF16PS, AVX-512's VDPBF16PS) reads them so.
//
// Kernels, chosen at run time (best_kernel(): by the instruction-set level of
// kernels/cpu.h, so MINNOW_ISA and set_isa() choose here too):
//   * Amx: Intel AMX tiles (Sapphire Rapids and later), at level amx: the CPU
//     flags amx-tile and amx-bf16, AVX512-BF16 for the packing, and Linux's
//     permission to use the tile registers, asked for once. A tile
//     multiply-add does C[16x16] += A[16x32] B[32x16] in one instruction.
//   * Avx512Bf16: AVX512-BF16's VDPBF16PS (Cooper Lake, Sapphire Rapids, AMD
//     Zen 4 and later), at level avx512_bf16: 16 lanes of c += a0 b0 + a1 b1
//     on a pair of bfloat16 each, one instruction.
//   * Avx2: AVX2 + FMA, at levels avx2 and avx512: bfloat16 widened to
//     float32 in registers (a shift) and float32 FMAs. It does the work of a
//     float32 GEMM and more, so bf16 is NO FASTER THAN float32 on such a CPU:
//     it only halves the memory of the weights and packed inputs, and gives
//     the same numbers as the other kernels (up to summation order).
//   * Portable: plain C++ on the same packed data, for any CPU: the same
//     products summed in a different order, so the same numbers up to float
//     summation rounding (tests/test_gemm_bf16.cpp compares the two).
// The rounding to bfloat16 is the same everywhere: round to nearest even,
// NaN kept a NaN, and subnormal floats flushed to a signed zero, as the
// AVX-512 conversion instruction does.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace minnow::bf16 {

using bf16_t = uint16_t;  // the bits of a bfloat16 number

bf16_t from_float(float x);
float to_float(bf16_t b);
inline float round(float x) { return to_float(from_float(x)); }

enum class Kernel { Auto, Amx, Avx512Bf16, Avx2, Portable };
// By the active instruction-set level (kernels/cpu.h): amx -> Amx,
// avx512_bf16 -> Avx512Bf16, avx512 and avx2 -> Avx2, generic -> Portable.
Kernel best_kernel();
// Whether this machine can run kernel k (Amx: the CPU and the OS allow it).
bool kernel_available(Kernel k);
const char* kernel_name(Kernel k);  // "amx", "avx512_bf16", "avx2", "portable" ("auto" resolves first)
// Whether kernel k can be faster than float32 at all: false for Avx2 and
// Portable, which widen bfloat16 to float32 and do float32 arithmetic.
bool kernel_has_bf16_arithmetic(Kernel k);

// Block sizes of the packed layouts.
constexpr int64_t kRowBlock = 16;    // rows of A (and of C) per tile
constexpr int64_t kColBlock = 16;    // columns of B (and of C) per tile
constexpr int64_t kDepthBlock = 32;  // K per tile multiply
inline int64_t round_up(int64_t n, int64_t block) { return (n + block - 1) / block * block; }

// A [M, K] (row stride lda) rounded to bfloat16 and packed; with a bias, the
// GEMM adds bias[m] to row m of C (kept as a 16-wide tile per row, which is
// how the AMX kernel starts its accumulators).
struct PackedA {
    int64_t rows = 0, depth = 0;                // M, K
    int64_t padded_rows = 0, padded_depth = 0;  // Mp, Kp
    std::vector<bf16_t> values;                 // [Mp][Kp]
    std::vector<float> bias_tile;               // [Mp][16]: bias[m] 16 times, or empty (no bias)
};
PackedA pack_a(const float* A, int64_t M, int64_t K, int64_t lda, const float* bias = nullptr);

// Elements of a packed B of K rows and N columns: Kp * Np.
int64_t packed_b_size(int64_t K, int64_t N);
// B [K, N] (row stride ldb) rounded to bfloat16 into `out` (packed_b_size elements).
void pack_b(const float* B, int64_t K, int64_t N, int64_t ldb, bf16_t* out, Kernel kernel = Kernel::Auto);
// One pair-row of it: rows 2t (`even`) and 2t+1 (`odd`) of N columns into
// out [Np][2], which starts at element 2 t Np of the packed B. A null row is
// zeros (the padding past K). For a producer that makes B two rows at a time
// (the conv's im2col), so that B never exists in float32 as a whole.
void pack_b_pair(const float* even, const float* odd, int64_t N, bf16_t* out, Kernel kernel = Kernel::Auto);

// C [M, N] (row stride ldc) = A B (+ bias), B packed by pack_b with A.depth
// rows and N columns; with relu, C = max(A B + bias, 0) (NaN stays NaN),
// applied as C is stored. Single-threaded: callers split the columns over threads.
void gemm(const PackedA& A, const bf16_t* B, int64_t N, float* C, int64_t ldc, Kernel kernel = Kernel::Auto,
          bool relu = false);

// ---------------------------------------------------------------- tiles
// The form of the GEMM that the kernels run, with B and C addressed tile by
// tile through tables, so that B need not be one packed matrix: the
// convolution reads its B tiles straight from the (packed) input image, one
// depth step per kernel offset (i, j) and block of 32 channels, which is
// im2col without the copy.
//
// C's columns come in tiles of 16; B has, for column tile n and depth step s
// (K = 32s .. 32s+31), a tile of 16 pair-rows of 16 pairs starting at element
//     column_tiles[n] + step_offsets[s]
// with its pair-rows row_stride elements apart (each pair-row: 16 columns x
// the pair (k, k+1) = 32 contiguous bfloat16). C's tile n is the first
// columns[n] (<= 16) columns starting at column_tiles[n], rows ldc floats apart.
struct TiledB {
    std::vector<const bf16_t*> column_tiles;
    std::vector<int64_t> step_offsets;  // A.padded_depth / 32 of them
    int64_t row_stride = 0;
};
struct TiledC {
    std::vector<float*> column_tiles;
    std::vector<int> columns;
    int64_t ldc = 0;
    bool relu = false;  // store max(C, 0) (NaN stays NaN)
};
void gemm_tiled(const PackedA& A, const TiledB& B, const TiledC& C, Kernel kernel = Kernel::Auto);

}  // namespace minnow::bf16
