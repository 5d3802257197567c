// The machine's peaks, the yardsticks the speed targets are fractions of:
// fp32 FMA throughput (the convolutions' and GEMMs' limit) and memory
// bandwidth (BatchNorm's, ReLU's, pooling's, the optimiser's). Each on 1
// thread and on all threads (MINNOW_NUM_THREADS, else every core), OpenMP
// threads as in minnow's kernels:
//
//   build/bench-micro/minnow_bench_micro --benchmark_filter='FmaPeak|Memory'
//   MINNOW_NUM_THREADS=2 build/bench-micro/minnow_bench_micro --benchmark_filter='FmaPeak/avx512/threads:2'
//
// FmaPeak/<level>  the independent FMA chains of bench/peak_fma.h on every
//                  thread, no memory traffic, at every instruction-set level
//                  with vector FMA that the CPU supports (kernels/cpu.h: avx2
//                  with ymm, avx512 with zmm; a level the CPU lacks is not
//                  registered, so its code is never entered). Counter
//                  GFLOPs: 2 FLOPs per FMA per lane, per second of wall time,
//                  all threads together.
// Memory_<kind>    buffers of 256 MB each, far beyond any cache, each thread
//                  on its own contiguous share (OpenMP's static schedule: the
//                  share it first touched, so on a NUMA machine its pages are
//                  local). Counter GBs: 10^9 bytes per second, counting
//   Memory_Read    s += a[i]                    1 buffer
//   Memory_Write   a[i] = 1                     1 buffer
//   Memory_Copy    memcpy(a, b) of each share   2 buffers (glibc's memcpy uses
//                                               streaming stores on copies this big)
//   Memory_Triad   a[i] = b[i] + s * c[i]       3 buffers (STREAM's triad)
//                  The stores of a compiled loop also read each cache line
//                  before they write it (read-for-ownership); like STREAM,
//                  the count leaves that out. Up to 768 MB while they run.
//
// bench/compare.sh runs FmaPeak once, at the level and thread count of its
// configurations, and prints each one's fraction of it.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <cstring>
#include <memory>
#include <string>

#include "bench/peak_fma.h"
#include "core/parallel.h"

namespace {
using namespace minnow;
using namespace minnow::peak;

// ---------------------------------------------------------------- FMA peak

// Per thread and iteration: 2^20 rounds, 0.5 GFLOP of zmm FMAs (about 2 ms
// on one Zen 5 core), so starting the threads costs nothing measurable.
constexpr int64_t kRounds = 1 << 20;

void FmaPeak(benchmark::State& state, const FmaKernel& k) {
    const int threads = static_cast<int>(state.range(0));
    for (auto _ : state) {
        float sum = 0;
#pragma omp parallel num_threads(threads) reduction(+ : sum)
        sum += k.run(kRounds);
        benchmark::DoNotOptimize(sum);
    }
    state.counters["GFLOPs"] = benchmark::Counter(threads * kRounds * k.flops_per_round() * 1e-9,
                                                  benchmark::Counter::kIsIterationInvariantRate);
    state.SetLabel(std::to_string(k.chains) + " chains x " + std::to_string(k.lanes) + " floats per thread");
}

// ---------------------------------------------------------------- memory bandwidth

constexpr int64_t kFloats = (int64_t{256} << 20) / sizeof(float);  // 256 MB
// 20 passes: 5 GB per buffer, under a second at 10 GB/s; fixed, so each
// benchmark allocates and first touches its buffers once.
constexpr int kPasses = 20;

// kFloats of `value`, each page first touched by the thread that will use it.
std::unique_ptr<float[]> buffer(int threads, float value) {
    std::unique_ptr<float[]> p(new float[kFloats]);
    float* a = p.get();
#pragma omp parallel for simd num_threads(threads) schedule(static)
    for (int64_t i = 0; i < kFloats; ++i) a[i] = value;
    return p;
}

void bytes_counter(benchmark::State& state, int buffers) {
    state.counters["GBs"] = benchmark::Counter(buffers * kFloats * sizeof(float) * 1e-9,
                                               benchmark::Counter::kIsIterationInvariantRate);
}

void Memory_Read(benchmark::State& state) {
    const int threads = static_cast<int>(state.range(0));
    const auto a = buffer(threads, 1.f);
    const float* pa = a.get();
    for (auto _ : state) {
        float s = 0;
#pragma omp parallel for simd num_threads(threads) schedule(static) reduction(+ : s)
        for (int64_t i = 0; i < kFloats; ++i) s += pa[i];
        benchmark::DoNotOptimize(s);
    }
    bytes_counter(state, 1);
}

void Memory_Write(benchmark::State& state) {
    const int threads = static_cast<int>(state.range(0));
    const auto a = buffer(threads, 0.f);
    float* pa = a.get();
    for (auto _ : state) {
#pragma omp parallel for simd num_threads(threads) schedule(static)
        for (int64_t i = 0; i < kFloats; ++i) pa[i] = 1.f;
        benchmark::ClobberMemory();
    }
    bytes_counter(state, 1);
}

void Memory_Copy(benchmark::State& state) {
    const int threads = static_cast<int>(state.range(0));
    const auto a = buffer(threads, 0.f), b = buffer(threads, 1.f);
    for (auto _ : state) {
#pragma omp parallel num_threads(threads)
        {  // this thread's share, as schedule(static) gives it
            const int64_t t = omp_get_thread_num(), n = omp_get_num_threads();
            const int64_t begin = kFloats * t / n, end = kFloats * (t + 1) / n;
            std::memcpy(a.get() + begin, b.get() + begin, (end - begin) * sizeof(float));
        }
        benchmark::ClobberMemory();
    }
    bytes_counter(state, 2);
}

void Memory_Triad(benchmark::State& state) {
    const int threads = static_cast<int>(state.range(0));
    const auto a = buffer(threads, 0.f), b = buffer(threads, 1.f), c = buffer(threads, 2.f);
    float* pa = a.get();
    const float *pb = b.get(), *pc = c.get();
    const float s = 0.5f;
    for (auto _ : state) {
#pragma omp parallel for simd num_threads(threads) schedule(static)
        for (int64_t i = 0; i < kFloats; ++i) pa[i] = pb[i] + s * pc[i];
        benchmark::ClobberMemory();
    }
    bytes_counter(state, 3);
}

// ---------------------------------------------------------------- registration

// threads:1 and threads:N, N = MINNOW_NUM_THREADS or every core.
void one_and_all_threads(benchmark::internal::Benchmark* b) {
    init_threads_from_env();
    b->ArgName("threads")->Arg(1);
    if (get_num_threads() > 1) b->Arg(get_num_threads());
    b->Unit(benchmark::kMillisecond)->UseRealTime();
}

const bool registered = [] {
    for (const FmaKernel* k : {&avx2_fma, &avx512_fma})
        if (isa_supported(k->isa))
            benchmark::RegisterBenchmark((std::string("FmaPeak/") + isa_name(k->isa)).c_str(), FmaPeak, *k)
                ->Apply(one_and_all_threads);
    return true;
}();
BENCHMARK(Memory_Read)->Apply(one_and_all_threads)->Iterations(kPasses);
BENCHMARK(Memory_Write)->Apply(one_and_all_threads)->Iterations(kPasses);
BENCHMARK(Memory_Copy)->Apply(one_and_all_threads)->Iterations(kPasses);
BENCHMARK(Memory_Triad)->Apply(one_and_all_threads)->Iterations(kPasses);

}  // namespace
