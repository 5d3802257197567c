// The int8 convolution kernels (kernels/conv_int8.h) on the reference CNN's
// convolutions of one 128x128 image (the int8 latency target's shape), one
// thread, every kernel this machine has:
//
//   build/bench-micro/minnow_bench_micro --benchmark_filter=ConvInt8
//
//   ConvInt8/i/k   layer i, kernel k (the Kernel enum: 1 amx, 2 avx512_vnni,
//                  3 avx_vnni, 4 avx2, 5 portable; kernels this machine
//                  lacks are skipped)
// with i = 0..5: the first conv as a 1x1 over 27 patch channels @128x128,
// 64->64 @128x128, 64->128 @64x64, 128->128 @64x64, 128->256 @32x32,
// 256->256 @32x32. Called one output row at a time, as the int8 model
// (layers/int8_model.cpp) calls its convs, into one row of int32 sums, which
// stays in cache: the convolution alone, without the requantization that
// conv_requantize adds. Counter GOPs: 2 x multiply-adds per second.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <vector>

#include "kernels/conv_int8.h"

namespace {
namespace q8 = minnow::int8;

const q8::ConvShape kShapes[] = {
    {27, 128, 128, 64, 1, 1, 1, 0}, {64, 128, 128, 64, 3, 3, 1, 1},  {64, 64, 64, 128, 3, 3, 1, 1},
    {128, 64, 64, 128, 3, 3, 1, 1}, {128, 32, 32, 256, 3, 3, 1, 1}, {256, 32, 32, 256, 3, 3, 1, 1},
};

void ConvInt8(benchmark::State& state) {
    const q8::ConvShape& s = kShapes[state.range(0)];
    const auto kernel = static_cast<q8::Kernel>(state.range(1));
    if (!q8::kernel_available(kernel)) {
        state.SkipWithError("kernel not available on this machine");
        return;
    }
    state.SetLabel(q8::kernel_name(kernel));
    std::mt19937 rng(1);
    std::vector<uint8_t> X(s.input_bytes());
    std::vector<int8_t> W(s.O * s.C * s.kh * s.kw);
    for (auto& v : X) v = static_cast<uint8_t>(rng() % (q8::kActivationMax + 1));
    for (auto& v : W) v = static_cast<int8_t>(static_cast<int>(rng() % 255) - q8::kWeightMax);
    const auto packed = q8::pack_weights(W.data(), s.O, s.C, s.kh, s.kw);
    std::vector<int32_t> acc(s.Wo() * s.Op());
    for (auto _ : state)
        for (int64_t oy = 0; oy < s.Ho(); ++oy) {
            q8::conv(X.data(), s, packed, oy, oy + 1, acc.data(), kernel);
            benchmark::DoNotOptimize(acc.data());
        }
    const double ops = 2.0 * s.Ho() * s.Wo() * s.O * s.C * s.kh * s.kw;
    state.counters["GOPs"] = benchmark::Counter(ops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(ConvInt8)->ArgsProduct({{0, 1, 2, 3, 4, 5}, {1, 2, 3, 4}})->Unit(benchmark::kMicrosecond);

}  // namespace
