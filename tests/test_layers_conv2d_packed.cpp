// Conv2d's direct 3x3 kernels keep their packed weights between calls
// (layers/conv2d_direct3x3.cpp): the kept packing gives the bits of a fresh
// one, every way of changing the weights is seen by the next call, and the
// cache stays bounded.
#include <cstring>
#include <vector>

#include "core/autograd.h"
#include "core/parallel.h"
#include "kernels/conv3x3.h"
#include "kernels/cpu.h"
#include "layers/conv2d.h"
#include "layers/conv2d_paths.h"
#include "optim/sgd.h"
#include "test_layers_common.h"

using namespace minnow;
using namespace minnow::testing;

namespace {

// conv3x3_direct image by image on weights packed just now: what Conv2d's
// direct forward (transposed = false: x [N, C, H, W], w [O, C, 3, 3]) and
// direct input gradient (transposed = true: x = dy [N, O, H, W]) compute.
Tensor fresh_direct(const Tensor& x, const Tensor& w, const Tensor& b, bool transposed) {
    const int64_t O = w.size(0), C = w.size(1), N = x.size(0), H = x.size(2), W = x.size(3);
    const int64_t ins = transposed ? O : C, outs = transposed ? C : O;
    std::vector<float> packed(direct3x3_packed_floats(O, C)), pad(direct3x3_scratch_floats(ins, H, W));
    pack3x3_weights(w.data(), O, C, transposed, packed.data());
    Tensor y = Tensor::empty({N, outs, H, W});
    for (int64_t n = 0; n < N; ++n)
        conv3x3_direct(x.data() + n * ins * H * W, ins, H, W, packed.data(), outs, b.defined() ? b.data() : nullptr,
                       y.data() + n * outs * H * W, pad.data());
    return y;
}

// One forward and backward of `conv` on x against fresh packings: the output
// and (when the direct kernel computes it, not when each image is split over
// the threads) the input gradient, bit for bit.
void check_fresh(Conv2d& conv, Tensor x, const Tensor& dy, const char* after, bool direct_dx = true) {
    const std::string what = after;
    CAPTURE(what);
    x.zero_grad();
    Tensor y = conv(x);
    y.backward(dy);
    CHECK(same_bits(y.detach(), fresh_direct(x, conv.weight, conv.bias, false)));
    if (direct_dx) CHECK(same_bits(x.grad(), fresh_direct(dy, conv.weight, Tensor(), true)));
}

}  // namespace

TEST_CASE("layers: Conv2d's kept packed weights give the bits of a fresh packing") {
    const int saved = get_num_threads();
    Generator g(21);
    for (Isa isa : direct_isas())
        for (int threads : {1, 2})
            for (int64_t N : {1, 3}) {  // N = 1 with 2 threads: each image split by output channels
                const std::string isa_text = isa_name(isa);
                CAPTURE(isa_text);
                CAPTURE(threads);
                CAPTURE(N);
                ScopedIsa scoped(isa);
                set_num_threads(threads);
                Conv2d conv(64, 64, 3, 1, 1, true, &g);
                Tensor x = rand_leaf({N, 64, 16, 16}, g), dy = Tensor::uniform({N, 64, 16, 16}, -1.f, 1.f, &g);
                const bool split = threads > N;  // dx by im2col + GEMM
                for (const char* call : {"first call: packs", "second call: the kept packing"})
                    check_fresh(conv, x, dy, call, !split);
            }
    set_num_threads(saved);
}

TEST_CASE("layers: Conv2d's packed weights follow every write to the weights") {
    if (direct_isas().empty()) {
        MESSAGE("this CPU has no AVX2: the direct 3x3 kernels are not used");
        return;
    }
    Generator g(22);
    Conv2d conv(16, 32, 3, 1, 1, true, &g);
    Tensor x = rand_leaf({2, 16, 8, 8}, g), dy = Tensor::uniform({2, 32, 8, 8}, -1.f, 1.f, &g);
    check_fresh(conv, x, dy, "start");

    SGD sgd(conv.parameters(), SGDOptions(0.1));
    sgd.step();  // the gradient of the last backward
    check_fresh(conv, x, dy, "an SGD step");

    Conv2d other(16, 32, 3, 1, 1, true, &g);
    conv.load_state_dict(other.state_dict());
    CHECK(same_bits(conv.weight, other.weight));
    check_fresh(conv, x, dy, "load_state_dict");

    conv.weight.data()[7] = 0.5f;
    check_fresh(conv, x, dy, "a write through data()");

    // A pointer kept from before a call and written after it (gradcheck's way).
    float* kept = conv.weight.data();
    check_fresh(conv, x, dy, "before the write through a kept pointer");
    kept[100] = -0.75f;
    check_fresh(conv, x, dy, "a write through a kept pointer");

    mul_(conv.weight, 0.5f);
    check_fresh(conv, x, dy, "mul_");
    copy_(conv.weight, other.weight);
    check_fresh(conv, x, dy, "copy_");
    fill_(conv.weight, 0.01f);
    check_fresh(conv, x, dy, "fill_");

    Tensor flat = conv.weight.reshape({-1});  // a view of the same storage
    flat.data()[flat.numel() - 1] = 2.f;
    check_fresh(conv, x, dy, "a write through a view");
}

TEST_CASE("layers: Conv2d's packed weights are not those of a freed tensor at the same address") {
    if (direct_isas().empty()) return;
    Generator g(23);
    Tensor x = Tensor::uniform({1, 64, 4, 4}, -1.f, 1.f, &g);
    const float* first_address = nullptr;
    {
        Tensor w1 = Tensor::uniform({64, 64, 3, 3}, -1.f, 1.f, &g);
        first_address = w1.data();
        CHECK(same_bits(conv2d(x, w1, Tensor(), 1, 1), fresh_direct(x, w1, Tensor(), false)));
    }
    // The storage's block cache (core/tensor.cpp: blocks of 64 KB and more)
    // hands the freed block to the next tensor of its size.
    Tensor w2 = Tensor::uniform({64, 64, 3, 3}, -1.f, 1.f, &g);
    CHECK(w2.data() == first_address);
    CHECK(same_bits(conv2d(x, w2, Tensor(), 1, 1), fresh_direct(x, w2, Tensor(), false)));
}

TEST_CASE("layers: Conv2d's packed weights across a change of instruction-set level") {
    if (direct_isas().empty()) return;
    Generator g(24);
    Conv2d conv(16, 16, 3, 1, 1, true, &g);
    Tensor x = rand_leaf({2, 16, 8, 8}, g), dy = Tensor::uniform({2, 16, 8, 8}, -1.f, 1.f, &g);
    for (Isa isa : direct_isas()) {
        const std::string isa_text = isa_name(isa);
        CAPTURE(isa_text);
        ScopedIsa scoped(isa);
        check_fresh(conv, x, dy, "at this level");
        Tensor direct = conv(x).detach();
        {
            // im2col + GEMM while the weights change: the next direct call must see it.
            ScopedIsa generic(Isa::generic);
            check_close(conv(x).detach(), direct, 1e-5, 1e-5, "im2col + GEMM");
            mul_(conv.weight, -1.f);
        }
        check_fresh(conv, x, dy, "weights changed at level generic");
    }
}

TEST_CASE("layers: gradcheck of a direct 3x3 Conv2d (inputs written through kept pointers)") {
    if (direct_isas().empty()) return;
    Generator g(25);
    auto f = [](const std::vector<Tensor>& v) { return conv2d(v[0], v[1], v[2], 1, 1); };
    expect_gradcheck(f, {rand_leaf({1, 8, 4, 4}, g), rand_leaf({8, 8, 3, 3}, g), rand_leaf({8}, g)});
}

TEST_CASE("layers: Conv2d's packed-weight cache stays bounded") {
    if (direct_isas().empty()) return;
    using conv2d_detail::kPackedCacheFloats;
    using conv2d_detail::packed_cache_floats;
    Generator g(26);
    // Distinct weights, all alive: 2 x 256*256*9 floats an entry, 7 fit.
    Tensor x = Tensor::uniform({1, 256, 4, 4}, -1.f, 1.f, &g);
    std::vector<Tensor> ws;
    for (int k = 0; k < 10; ++k) {
        ws.push_back(Tensor::uniform({256, 256, 3, 3}, -0.1f, 0.1f, &g));
        conv2d(x, ws.back(), Tensor(), 1, 1);
        CHECK(packed_cache_floats() <= kPackedCacheFloats);
    }
    CHECK(packed_cache_floats() > kPackedCacheFloats / 2);
    // The first weights were dropped; packed again, they are right.
    CHECK(same_bits(conv2d(x, ws[0], Tensor(), 1, 1), fresh_direct(x, ws[0], Tensor(), false)));
    // A packing bigger than the bound alone: the cache holds just it.
    Tensor big = Tensor::uniform({1024, 1024, 3, 3}, -0.01f, 0.01f, &g);
    Tensor xb = Tensor::uniform({1, 1024, 4, 4}, -1.f, 1.f, &g);
    CHECK(same_bits(conv2d(xb, big, Tensor(), 1, 1), fresh_direct(xb, big, Tensor(), false)));
    CHECK(packed_cache_floats() == 2 * big.numel());
}
