// make_norm2d: every kind, the group-count rule, and the error for unknown kinds.
#include "layers/batchnorm.h"
#include "layers/batchrenorm.h"
#include "layers/groupnorm.h"
#include "layers/norm_factory.h"
#include "test_norm_common.h"

using namespace minnow;
using namespace minnow::testing;

TEST_CASE("norm: make_norm2d builds every kind") {
    CHECK(make_norm2d("batch", 16)->type_name() == "BatchNorm2d");
    CHECK(make_norm2d("none", 16)->type_name() == "Identity");
    CHECK(make_norm2d("renorm", 16)->type_name() == "BatchRenorm2d");
    auto g = std::dynamic_pointer_cast<GroupNorm>(make_norm2d("group", 64));
    REQUIRE(g.get() != nullptr);
    CHECK(g->num_groups() == 32);
    auto l = std::dynamic_pointer_cast<GroupNorm>(make_norm2d("layer", 64));
    REQUIRE(l.get() != nullptr);
    CHECK(l->num_groups() == 1);
    CHECK(make_norm2d("batch", 16)->state_dict().size() == 5);
    CHECK(make_norm2d("none", 16)->state_dict().empty());

    CHECK(group_count(64) == 32);
    CHECK(group_count(256) == 32);
    CHECK(group_count(16) == 8);
    CHECK(group_count(48) == 24);
    CHECK(group_count(2) == 1);
    CHECK(group_count(7) == 1);

    // every kind runs on [N, C, H, W] and keeps the shape
    Tensor x = Tensor::normal({2, 16, 4, 4}, 0, 1);
    for (const auto& kind : norm2d_kinds()) {
        CAPTURE(kind);
        CHECK(make_norm2d(kind, 16)->forward(x).shape() == x.shape());
    }
}

TEST_CASE("norm: one table gives the builders, the names and the help") {
    const auto& table = norm2d_table();
    REQUIRE(norm2d_kinds().size() == table.size());
    CHECK(std::string(table.front().name) == "batch");
    const std::string help = norm2d_help();
    for (size_t i = 0; i < table.size(); ++i) {
        const Norm2dKind& k = table[i];
        CAPTURE(k.name);
        CHECK(norm2d_kinds()[i] == k.name);  // in table order
        for (size_t j = 0; j < i; ++j) CHECK(norm2d_kinds()[j] != k.name);  // no name twice
        CHECK(help.find(std::string(k.name) + ": " + k.help) != std::string::npos);
        // each row builds a layer for C channels that runs forward, in both modes
        for (int64_t C : {1, 2, 6, 64}) {
            CAPTURE(C);
            auto layer = make_norm2d(k.name, C);
            Tensor x = Tensor::normal({2, C, 4, 4}, 0, 1);
            CHECK(layer->forward(x).shape() == x.shape());
            layer->eval();
            CHECK(layer->forward(x).shape() == x.shape());
        }
    }
}

TEST_CASE("norm: make_norm2d rejects unknown kinds, listing the valid ones") {
    try {
        make_norm2d("instance", 8);
        FAIL("no error");
    } catch (const Error& e) {
        const std::string m = e.what();
        CHECK(m.find("instance") != std::string::npos);
        for (const auto& kind : norm2d_kinds()) CHECK(m.find(kind) != std::string::npos);
    }
    CHECK_THROWS_AS(make_norm2d("batch", 0), Error);
}
