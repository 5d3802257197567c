// minnow/layers/conv2d_paths.h: what the files of Conv2d share (internal).
//
// layers/conv2d.cpp makes one Plan per call (forward or backward) and hands it
// to the paths, each in its own file:
//   conv2d_gemm.cpp       im2col + GEMM, the batch spread over the threads
//   conv2d_split.cpp      im2col + GEMM, one image at a time over every thread
//   conv2d_direct3x3.cpp  the direct 3x3 kernels (kernels/conv3x3.h)
// conv2d.cpp explains the paths and the rules that choose between them.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/im2col.h"

namespace minnow::conv2d_detail {

// Which kernels compute a result.
enum class Path {
    none,    // not wanted (a gradient nobody asked for)
    gemm,    // im2col + GEMM: conv2d_gemm.cpp, or conv2d_split.cpp when Plan::split
    direct,  // the direct 3x3 kernels: conv2d_direct3x3.cpp
};

// Everything one call decides before it computes (made by plan() in conv2d.cpp).
struct Plan {
    // How the threads share the work: split, each image over every thread
    // (fewer images than threads); else parallel, the images over the
    // threads; else neither, the images in turn (OpenBLAS may thread each GEMM).
    bool split = false, parallel = false;
    int threads = 1;  // the team: every thread when split or parallel, else 1
    Path forward = Path::gemm, input_grad = Path::none, weight_grad = Path::none;
    bool bias_grad = false;
    // The GEMM chunks of the batch (conv2d.cpp, "chunks"): `group` whole images
    // per GEMM, or bands of `band_rows` output rows; `chunks` of them in all.
    int64_t group = 1, band_rows = 0, chunks = 0;
    // When split: each thread a band of output rows (else a block of output channels).
    bool by_columns = false;
};

// The scratch buffers, kept between calls (per calling thread and per kind)
// and grown, never shrunk.
enum class Scratch {
    col,             // im2col matrices (then their gradients), one per thread
    partials,        // each thread's partial dW [O*K] and db [O]
    group_output,    // the output (or gradient) of a group of images, [O, G*P]
    direct_input,    // the direct kernels' padded images
};
constexpr int kScratchKinds = 4;
// `threads` buffers of at least `floats` floats each.
std::vector<float*> scratch_buffers(Scratch kind, int threads, int64_t floats);

// Part t of `parts` near-equal parts of [0, n), cut at multiples of `align`:
// its range [*begin, *end) (empty when there is not enough to go round).
void share(int64_t n, int parts, int t, int64_t align, int64_t* begin, int64_t* end);

// ---------------------------------------------------------------- the paths
// X [N, C, H, W], Wt [O, C, kh, kw], b [O] or null, Y [N, O, Ho, Wo]; dY as Y;
// dx as X, dw as Wt, db [O]: null where not wanted.

// conv2d_gemm.cpp: the batch over the threads (or in turn), in chunks.
void forward_gemm(const Plan& p, const ConvGeometry& g, const float* X, const float* Wt, const float* b, float* Y);
// dx (Path::gemm), and each thread's partial dW into part[t] (see Scratch::partials).
void backward_gemm(const Plan& p, const ConvGeometry& g, const float* X, const float* Wt, const float* dY, float* dx,
                   const std::vector<float*>* part);

// conv2d_split.cpp: one image at a time, every thread on a share of it.
void forward_split(const Plan& p, const ConvGeometry& g, const float* X, const float* Wt, const float* b, float* Y);
void backward_split(const Plan& p, const ConvGeometry& g, const float* X, const float* Wt, const float* dY, float* dx,
                    float* dw, float* db);

// conv2d_direct3x3.cpp: the direct kernels (3x3, stride 1, padding 1).
void forward_direct(const Plan& p, const ConvGeometry& g, const float* X, const float* Wt, const float* b, float* Y);
void input_grad_direct(const Plan& p, const ConvGeometry& g, const float* Wt, const float* dY, float* dx);
// Each thread's partial dW into part[t], as backward_gemm.
void weight_grad_direct(const Plan& p, const ConvGeometry& g, const float* X, const float* dY,
                        const std::vector<float*>& part);
// The direct kernels' packed weights, kept between calls per calling thread
// (conv2d_direct3x3.cpp): at most kPackedCacheFloats floats, weights and
// packings, or the one packing in use where that alone is more.
constexpr int64_t kPackedCacheFloats = int64_t{1} << 23;  // 32 MB
int64_t packed_cache_floats();  // what this thread's cache holds now

}  // namespace minnow::conv2d_detail
