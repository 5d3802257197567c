// The reference CNN's five 3x3 convolutions (shared/reference/models.py,
// RefCNN) at batch 128, forward and forward + backward, on the threads that
// MINNOW_NUM_THREADS / set_num_threads give (2 on the project's machine):
//
//   build/bench-micro/minnow_bench_micro --benchmark_filter=Conv
//
//   Conv_Forward/i   conv2d forward only, no graph (inference)
//   Conv_FwdBwd/i    forward + Conv2dBackward (dx except for layer 0, whose
//                    input is the image batch; dW; db)
//   Conv_Bf16/i      the same forward by Bf16Conv2d (layers/conv2d_bf16.h),
//                    bfloat16 operands, with the bf16 GEMM kernel of the
//                    active level (kernels/gemm_bf16.h)
// with i = 0..4 the layers in order: 3->64 @32x32, 64->64 @32x32,
// 64->128 @16x16, 128->128 @16x16, 128->256 @8x8. Counter GFLOPs: useful
// multiply-adds x2 per second (forward 2*N*O*K*P, backward twice that, or
// once for layer 0).
//
// PyTorch's number for the same layers: time nn.Conv2d(cin, cout, 3, padding=1)
// on torch.randn(128, cin, hw, hw) (requires_grad except for layer 0) with
// torch.set_num_threads(2), y = conv(x); y.backward(dy), best of several runs.
// MINNOW_ISA=generic|avx2|avx512|avx512_bf16 chooses the kernels (kernels/cpu.h).
#include <benchmark/benchmark.h>

#include "core/autograd.h"
#include "core/parallel.h"
#include "core/random.h"
#include "layers/conv2d.h"
#include "layers/conv2d_bf16.h"

namespace {
using namespace minnow;

struct Layer {
    int64_t cin, cout, hw;
};
const Layer kLayers[] = {{3, 64, 32}, {64, 64, 32}, {64, 128, 16}, {128, 128, 16}, {128, 256, 8}};
constexpr int64_t kBatch = 128;

double forward_flops(const Layer& l) { return 2.0 * kBatch * l.cout * l.cin * 9 * l.hw * l.hw; }

void Conv_Forward(benchmark::State& state) {
    init_threads_from_env();
    const Layer& l = kLayers[state.range(0)];
    Generator gen(1);
    Conv2d conv(l.cin, l.cout, 3, 1, 1, true, &gen);
    Tensor x = Tensor::normal({kBatch, l.cin, l.hw, l.hw}, 0.f, 1.f, &gen);
    NoGradGuard no_grad;
    for (auto _ : state) benchmark::DoNotOptimize(conv(x).data());
    state.counters["GFLOPs"] =
        benchmark::Counter(forward_flops(l) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void Conv_FwdBwd(benchmark::State& state) {
    init_threads_from_env();
    const Layer& l = kLayers[state.range(0)];
    Generator gen(1);
    Conv2d conv(l.cin, l.cout, 3, 1, 1, true, &gen);
    Tensor x = Tensor::normal({kBatch, l.cin, l.hw, l.hw}, 0.f, 1.f, &gen);
    if (l.cin != 3) x.requires_grad_();  // the first layer sees images: no dx
    Tensor dy = Tensor::normal({kBatch, l.cout, l.hw, l.hw}, 0.f, 1.f, &gen);
    for (auto _ : state) {
        conv.zero_grad();
        x.zero_grad();
        conv(x).backward(dy);
    }
    const double passes = l.cin != 3 ? 3.0 : 2.0;
    state.counters["GFLOPs"] =
        benchmark::Counter(passes * forward_flops(l) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void Conv_Bf16(benchmark::State& state) {
    init_threads_from_env();
    const Layer& l = kLayers[state.range(0)];
    Generator gen(1);
    Conv2d conv(l.cin, l.cout, 3, 1, 1, true, &gen);
    Bf16Conv2d fast(conv);
    fast.eval();
    Tensor x = Tensor::normal({kBatch, l.cin, l.hw, l.hw}, 0.f, 1.f, &gen);
    NoGradGuard no_grad;
    for (auto _ : state) benchmark::DoNotOptimize(fast(x).data());
    state.counters["GFLOPs"] =
        benchmark::Counter(forward_flops(l) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
    state.SetLabel(fast.extra_repr());
}

}  // namespace

BENCHMARK(Conv_Forward)->DenseRange(0, 4)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(Conv_FwdBwd)->DenseRange(0, 4)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(Conv_Bf16)->DenseRange(0, 4)->Unit(benchmark::kMillisecond)->UseRealTime();
