// Conv2d by the direct 3x3 kernels of kernels/conv3x3.h (3x3, stride 1,
// padding 1, and the sizes direct3x3_supported() accepts): no im2col and no
// GEMM. The forward and the input gradient are the same kernel (the latter
// with the weights flipped and transposed, kernels/conv3x3.cpp), an image per
// thread, or, with fewer images than threads (Plan::split), each image cut by
// output channels in panels of 8, each thread padding its own copy of the
// image: no waiting at all. The weight gradient has its own kernel, run over
// a few images at a time into each thread's partial dW. The packed weights
// are kept from call to call while the weights stay the same (below).

#include <algorithm>
#include <cstring>

#include "core/parallel.h"
#include "core/tensor.h"
#include "kernels/conv3x3.h"
#include "layers/conv2d_paths.h"

namespace minnow::conv2d_detail {

namespace {

// ---------------------------------------------------------------- packed weights
// The kernels read the weights packed (pack3x3_weights). Packed on every call,
// the reference CNN's 2.2 MB of weights were written again on every forward,
// the same panels each time when the weights do not change (inference). So
// each thread keeps the packings it made, each beside a copy of the weights it
// came from, and reuses one only while the weights are still those, bit for
// bit: the memcmp costs about a third of packing again. After an optimizer
// step the memcmp stops at the first changed weight, and the weights are
// packed (and copied) once for the forward and once for the input gradient.
//
// Why the contents and not a version stamp on the storage, bumped whenever
// data() hands out a float*: such a pointer may be kept and written to at any
// time later (gradcheck perturbs its inputs that way between calls), and no
// stamp sees those writes. The comparison sees every change, whoever made it
// (an optimizer step, load_state_dict, an op in place, a write through a kept
// pointer, a new tensor where a freed one was). The packed layout is the same
// at every instruction-set level (kRows = 8, kernels/conv3x3.h), so a change
// of level needs nothing. Per thread, like the scratch buffers: no locks, and
// a packing handed out stays put until the same thread's next call.
struct PackedWeights {
    const float* source;  // where the weights were read
    int64_t O, C;
    bool transposed;
    Tensor weights, packed;  // a copy of the weights, and their packing
    uint64_t last_use;
};
thread_local std::vector<PackedWeights> packed_cache;

const float* packed_weights(const ConvGeometry& g, const float* Wt, bool transposed) {
    thread_local uint64_t clock = 0;
    const int64_t n = direct3x3_packed_floats(g.O, g.C);
    auto e = std::find_if(packed_cache.begin(), packed_cache.end(), [&](const PackedWeights& c) {
        return c.source == Wt && c.O == g.O && c.C == g.C && c.transposed == transposed;
    });
    if (e != packed_cache.end() && std::memcmp(e->weights.data(), Wt, n * sizeof(float)) == 0) {
        e->last_use = ++clock;
        return e->packed.data();
    }
    if (e == packed_cache.end()) {  // a new entry: drop the least recently used ones to make room
        while (!packed_cache.empty() && packed_cache_floats() + 2 * n > kPackedCacheFloats)
            packed_cache.erase(std::min_element(
                packed_cache.begin(), packed_cache.end(),
                [](const PackedWeights& a, const PackedWeights& b) { return a.last_use < b.last_use; }));
        e = packed_cache.insert(packed_cache.end(), {Wt, g.O, g.C, transposed, Tensor::empty({n}),
                                                     Tensor::empty({n}), 0});
    }
    std::copy(Wt, Wt + n, e->weights.data());
    pack3x3_weights(Wt, g.O, g.C, transposed, e->packed.data());
    e->last_use = ++clock;
    return e->packed.data();
}

}  // namespace

int64_t packed_cache_floats() {
    int64_t total = 0;
    for (const PackedWeights& e : packed_cache) total += e.weights.numel() + e.packed.numel();
    return total;
}

void forward_direct(const Plan& p, const ConvGeometry& g, const float* X, const float* Wt, const float* b, float* Y) {
    const float* packed = packed_weights(g, Wt, /*transposed=*/false);
    std::vector<float*> pad = scratch_buffers(Scratch::direct_input, p.threads, direct3x3_scratch_floats(g.C, g.H, g.W));
    const int64_t CHW = g.C * g.H * g.W, P = g.P();
    if (p.split) {  // by output channels, each thread on its panels of 8
        const int64_t K = g.K();
#pragma omp parallel num_threads(p.threads)
        {
            const int t = thread_index();
            int64_t o0, o1;  // this thread's output channels, whole panels of 8
            share(g.O, team_size(), t, 8, &o0, &o1);
            for (int64_t n = 0; n < g.N && o1 > o0; ++n)  // each thread pads the image for itself: no waiting
                conv3x3_direct(X + n * CHW, g.C, g.H, g.W, packed + o0 * K, o1 - o0, b ? b + o0 : nullptr,
                               Y + (n * g.O + o0) * P, pad[t]);
        }
        return;
    }
#pragma omp parallel for num_threads(p.threads) schedule(static) if (p.parallel)
    for (int64_t n = 0; n < g.N; ++n)
        conv3x3_direct(X + n * CHW, g.C, g.H, g.W, packed, g.O, b, Y + n * g.O * P, pad[thread_index()]);
}

// dx[n] = conv(G_n, W flipped and transposed): see kernels/conv3x3.cpp.
void input_grad_direct(const Plan& p, const ConvGeometry& g, const float* Wt, const float* dY, float* dx) {
    const float* packed = packed_weights(g, Wt, /*transposed=*/true);
    std::vector<float*> pad = scratch_buffers(Scratch::direct_input, p.threads, direct3x3_scratch_floats(g.O, g.H, g.W));
    const int64_t CHW = g.C * g.H * g.W, OP = g.O * g.P();
#pragma omp parallel for num_threads(p.threads) schedule(static) if (p.parallel)
    for (int64_t n = 0; n < g.N; ++n)
        conv3x3_direct(dY + n * OP, g.O, g.H, g.W, packed, g.C, nullptr, dx + n * CHW, pad[thread_index()]);
}

// dW_t += sum_n G_n (x) x_n, a run of images at a time (the kernel adds its
// accumulators into dw once per run).
void weight_grad_direct(const Plan& p, const ConvGeometry& g, const float* X, const float* dY,
                        const std::vector<float*>& part) {
    std::vector<float*> pad = scratch_buffers(Scratch::direct_input, p.threads,
                                              direct3x3_weight_grad_scratch_floats(g.C, g.O, g.H, g.W));
    const int64_t CHW = g.C * g.H * g.W, OP = g.O * g.P();
    const int64_t run = direct3x3_weight_grad_images(g.H, g.W), runs = (g.N + run - 1) / run;
#pragma omp parallel for num_threads(p.threads) schedule(static) if (p.parallel)
    for (int64_t r = 0; r < runs; ++r) {
        const int t = thread_index();
        const int64_t n0 = r * run, m = std::min(run, g.N - n0);
        conv3x3_direct_weight_grad(X + n0 * CHW, dY + n0 * OP, m, g.C, g.H, g.W, g.O, part[t], pad[t]);
    }
}

}  // namespace minnow::conv2d_detail
