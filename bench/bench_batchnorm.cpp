// BatchNorm2d on the experiment's biggest activation, (128, 64, 32, 32), on
// 2 threads: the hand-derived node against the same layer built from autograd
// primitives (layers/batchnorm_reference.h), in time and in memory, with a
// plain copy of the tensor as the memory-bandwidth floor.
//
//   build/bench-micro/minnow_bench_micro --benchmark_filter=BatchNorm
//
// What each one times:
//   BatchNorm2d_Forward            forward only, no graph (inference)
//   BatchNorm2d_FwdBwd             forward + the node's backward (dx, dgamma, dbeta)
//   BatchNorm2d_FwdBwd_Engine      the same through Tensor::backward() with x a leaf
//                                  (as PyTorch is timed): adds the engine's bookkeeping
//   BatchNormReference_FwdBwd      the autograd-primitives version, through the engine
//   BatchNorm2d_CopyFloor          memcpy of one such tensor (the memory-bandwidth floor)
//   BatchNorm2d_Relu_Fused         BatchNorm2d + ReLU, forward + backward through the
//                                  engine, as one node (Module::call_relu)
//   BatchNorm2d_Relu_Unfused       the same as two nodes, relu(bn(x)): ReLU's own
//                                  pass each way and its saved output
//   BatchNorm2d_Relu_FusedForward  the fused forward alone, training mode, no graph
//                                  (its floor: read x, write y, two passes over memory)
//   BatchNorm2d_Relu_FusedBackward the fused node's backward alone (dx, dgamma, dbeta;
//                                  its floor: read dy and x, write dx, three passes)
//
// Memory counters (MB), measured with glibc's mallinfo2() after emptying
// minnow's block cache (release_cached_memory()), so every block the step
// needs is a fresh malloc:
//   graph_MB   what is still allocated once forward has run (the cache
//              emptied again): the output plus what the graph saved
//   saved_MB   graph_MB minus the output: the saved tensors alone
//   peak_MB    heap growth over forward + backward through the engine: freed
//              blocks go back to the cache and are reused for the same size,
//              so this is the step's high-water mark (it includes dx, kept as
//              x.grad)
// The hand-derived node saves x (shared with the caller, not a new
// allocation) and two [C] vectors, so its saved_MB is ~0; the reference keeps
// several full-size intermediates alive until backward.
//
// PyTorch's number for the same step:
//   /usr/bin/python3 bench/pytorch_bench.py --what batchnorm --threads 2
#include <benchmark/benchmark.h>
#include <malloc.h>

#include <cstdio>
#include <cstring>
#include <functional>

#include "core/autograd.h"
#include "core/ops.h"
#include "core/parallel.h"
#include "core/random.h"
#include "layers/batchnorm.h"
#include "layers/batchnorm_reference.h"

namespace {
using namespace minnow;

const Shape kShape{128, 64, 32, 32};
constexpr double kMB = 1024.0 * 1024.0;

// Bytes currently allocated through malloc (heap chunks + mmap'ed blocks).
double allocated_bytes() {
    const struct mallinfo2 mi = mallinfo2();
    return static_cast<double>(mi.uordblks + mi.hblkhd);
}

struct Inputs {
    Tensor x, dy;
    Inputs() {
        Generator gen(7);
        x = Tensor::normal(kShape, 0.5f, 2.f, &gen);
        x.requires_grad_();
        dy = Tensor::normal(kShape, 0.f, 1.f, &gen);
    }
};

// The layer's step, by default its forward().
using Forward = std::function<Tensor(BatchNorm&, const Tensor&)>;
Tensor plain_forward(BatchNorm& bn, const Tensor& x) { return bn.forward(x); }

void memory_counters(benchmark::State& state, BatchNorm& bn, Tensor& x, const Tensor& dy,
                     const Forward& forward = plain_forward) {
    {  // what the graph holds once forward has run
        release_cached_memory();
        const double before = allocated_bytes();
        Tensor y = forward(bn, x);
        release_cached_memory();  // drop the intermediates forward already freed
        const double graph = allocated_bytes() - before;
        state.counters["graph_MB"] = graph / kMB;
        state.counters["saved_MB"] = (graph - static_cast<double>(y.numel()) * sizeof(float)) / kMB;
    }
    {  // the high-water mark of a whole step
        release_cached_memory();
        const double before = allocated_bytes();
        Tensor y = forward(bn, x);
        y.backward(dy);
        state.counters["peak_MB"] = (allocated_bytes() - before) / kMB;
    }
    x.zero_grad();
    bn.zero_grad();
}

void BatchNorm2d_Forward(benchmark::State& state) {
    set_num_threads(static_cast<int>(state.range(0)));
    Inputs in;
    BatchNorm2d bn(64);
    NoGradGuard no_grad;
    for (auto _ : state) {
        Tensor y = bn.forward(in.x);
        benchmark::DoNotOptimize(y.data());
    }
}

void BatchNorm2d_FwdBwd(benchmark::State& state) {
    set_num_threads(static_cast<int>(state.range(0)));
    Inputs in;
    BatchNorm2d bn(64);
    for (auto _ : state) {
        Tensor y = bn.forward(in.x);
        std::vector<Tensor> grads = y.grad_fn()->backward(in.dy);  // dx, dgamma, dbeta
        benchmark::DoNotOptimize(grads[0].data());
    }
    memory_counters(state, bn, in.x, in.dy);
}

// Forward + backward through Tensor::backward() with x a leaf, for any layer
// (the hand-derived BatchNorm2d and the autograd-primitives reference alike).
template <class Layer>
void FwdBwdThroughEngine(benchmark::State& state, const Forward& forward = plain_forward) {
    set_num_threads(static_cast<int>(state.range(0)));
    Inputs in;
    Layer bn(64);
    for (auto _ : state) {
        Tensor y = forward(bn, in.x);
        y.backward(in.dy);
        in.x.zero_grad();
        bn.zero_grad();
    }
    memory_counters(state, bn, in.x, in.dy, forward);
}

void BatchNorm2d_FwdBwd_Engine(benchmark::State& state) { FwdBwdThroughEngine<BatchNorm2d>(state); }
void BatchNormReference_FwdBwd(benchmark::State& state) { FwdBwdThroughEngine<BatchNormReference>(state); }
void BatchNorm2d_Relu_Fused(benchmark::State& state) {
    FwdBwdThroughEngine<BatchNorm2d>(state, [](BatchNorm& bn, const Tensor& x) { return bn.call_relu(x); });
}
void BatchNorm2d_Relu_Unfused(benchmark::State& state) {
    FwdBwdThroughEngine<BatchNorm2d>(state, [](BatchNorm& bn, const Tensor& x) { return relu(bn(x)); });
}

void BatchNorm2d_CopyFloor(benchmark::State& state) {
    Tensor src = Tensor::normal(kShape, 0.f, 1.f);
    Tensor dst = Tensor::zeros(kShape);
    for (auto _ : state) {
        std::memcpy(dst.data(), src.data(), sizeof(float) * static_cast<size_t>(src.numel()));
        benchmark::DoNotOptimize(dst.data());
    }
}

BENCHMARK(BatchNorm2d_Forward)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BatchNorm2d_FwdBwd)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BatchNorm2d_FwdBwd_Engine)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BatchNormReference_FwdBwd)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);
void BatchNorm2d_Relu_FusedForward(benchmark::State& state) {
    set_num_threads(static_cast<int>(state.range(0)));
    Inputs in;
    BatchNorm2d bn(64);
    NoGradGuard no_grad;
    for (auto _ : state) {
        Tensor y = bn.call_relu(in.x);
        benchmark::DoNotOptimize(y.data());
    }
}

void BatchNorm2d_Relu_FusedBackward(benchmark::State& state) {
    set_num_threads(static_cast<int>(state.range(0)));
    Inputs in;
    BatchNorm2d bn(64);
    Tensor y = bn.call_relu(in.x);
    for (auto _ : state) {
        std::vector<Tensor> grads = y.grad_fn()->backward(in.dy);  // dx, dgamma, dbeta
        benchmark::DoNotOptimize(grads[0].data());
    }
}

BENCHMARK(BatchNorm2d_Relu_FusedForward)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BatchNorm2d_Relu_FusedBackward)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BatchNorm2d_Relu_Fused)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BatchNorm2d_Relu_Unfused)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BatchNorm2d_CopyFloor)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
