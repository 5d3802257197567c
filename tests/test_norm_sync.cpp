// SyncBatchNorm in one process (the job of one rank): BatchNorm's bits in
// every mode, and convert_sync_batchnorm. The test over 2 ranks is
// tests/mpi/test_mpi.cpp.
#include <doctest/doctest.h>

#include <cstring>

#include "dist/comm.h"
#include "layers/models.h"
#include "layers/syncbatchnorm.h"
#include "test_norm_common.h"

using namespace minnow;
using namespace minnow::testing::norm;

using minnow::testing::same_bits;

TEST_CASE("norm: SyncBatchNorm in a job of one process is BatchNorm, bit for bit") {
    REQUIRE(dist::size() == 1);
    for (const Shape& shape : {Shape{6, 5}, Shape{4, 3, 7}, Shape{16, 32, 16, 16}}) {
        for (int mode = 0; mode < 3; ++mode) {  // train, eval, frozen
            CAPTURE(shape_str(shape));
            CAPTURE(mode);
            Generator gen(2);
            const int64_t C = shape[1];
            BatchNorm bn(C);
            SyncBatchNorm sync(C);
            copy_(bn.weight, param(C, gen, -1.5f, 1.5f));
            copy_(bn.bias, param(C, gen, -1.f, 1.f));
            copy_(bn.running_var, param(C, gen, 0.5f, 2.f));
            sync.load_state_dict(bn.state_dict());
            for (BatchNorm* m : {static_cast<BatchNorm*>(&bn), static_cast<BatchNorm*>(&sync)}) {
                if (mode == 1) m->eval();
                if (mode == 2) m->freeze_statistics();
            }
            Tensor x = channel_input(shape, gen, false), dy = Tensor::normal(shape, 0.f, 1.f, &gen);
            Tensor x1 = leaf(x), x2 = leaf(x);
            Tensor y1 = bn(x1), y2 = sync(x2);
            CHECK(same_bits(y1, y2));
            y1.backward(dy);
            y2.backward(dy);
            CHECK(same_bits(x1.grad(), x2.grad()));
            CHECK(same_bits(bn.weight.grad(), sync.weight.grad()));
            CHECK(same_bits(bn.bias.grad(), sync.bias.grad()));
            CHECK(same_bits(bn.running_mean, sync.running_mean));
            CHECK(same_bits(bn.running_var, sync.running_var));
            CHECK(bn.num_batches_tracked.item() == sync.num_batches_tracked.item());
        }
    }
}

TEST_CASE("norm: SyncBatchNorm errors name the layer; one value per channel over all ranks is refused") {
    SyncBatchNorm sync(4);
    CHECK_THROWS_WITH_AS(sync(Tensor::zeros({1, 4})), doctest::Contains("more than 1 value per channel"), Error);
    CHECK_THROWS_WITH_AS(sync(Tensor::zeros({2, 3})), doctest::Contains("SyncBatchNorm(4)"), Error);
    sync.eval();
    CHECK(sync(Tensor::zeros({1, 4})).shape() == Shape{1, 4});  // eval mode: the running statistics
}

TEST_CASE("norm: convert_sync_batchnorm swaps every BatchNorm and keeps the state_dict") {
    for (const auto& [model, count] : {std::pair<const char*, int>{"cnn", 5}, {"resnet20", 21}}) {
        CAPTURE(model);
        auto m = make_model(model, "batch", 10);
        m->eval();
        const auto before = m->state_dict();
        CHECK(convert_sync_batchnorm(*m) == count);
        CHECK(convert_sync_batchnorm(*m) == 0);  // nothing left to convert
        const auto after = m->state_dict();
        REQUIRE(before.size() == after.size());
        for (size_t i = 0; i < before.size(); ++i) {
            CHECK(before[i].name == after[i].name);
            CHECK(same_bits(before[i].tensor, after[i].tensor));
        }
        int syncs = 0;
        for (auto& [name, mod] : m->named_modules())
            if (auto* s = dynamic_cast<SyncBatchNorm*>(mod)) {
                ++syncs;
                CHECK(!s->is_training());  // the parent's mode
            }
        CHECK(syncs == count);
    }
}
