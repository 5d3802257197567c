// The hand-derived BatchNorm and the one built from autograd primitives agree:
// outputs, every gradient, running statistics, in training, eval and frozen mode.
#include "layers/batchnorm.h"
#include "layers/batchnorm_reference.h"
#include <set>

#include "test_norm_common.h"

using namespace minnow;
using namespace minnow::testing;
using namespace minnow::testing::norm;

namespace {

void compare(BatchNorm& fast, BatchNorm& ref, const Shape& s, Generator& gen, const std::string& what) {
    CAPTURE(what);
    Tensor x1 = channel_input(s, gen), x2 = leaf(x1);
    Tensor dy = Tensor::normal(s, 0, 1, &gen);
    Tensor y1 = fast.forward(x1), y2 = ref.forward(x2);
    check_close(y1, y2, 1e-5, 1e-5, what + " y");
    y1.backward(dy);
    y2.backward(dy);
    check_close(x1.grad(), x2.grad(), 1e-4, 1e-5, what + " dx");
    if (fast.affine()) {
        check_close(fast.weight.grad(), ref.weight.grad(), 1e-4, 1e-5, what + " dweight");
        check_close(fast.bias.grad(), ref.bias.grad(), 1e-4, 1e-5, what + " dbias");
    }
    if (fast.track_running_stats()) {
        check_close(fast.running_mean, ref.running_mean, 1e-5, 1e-6, what + " running_mean");
        check_close(fast.running_var, ref.running_var, 1e-5, 1e-6, what + " running_var");
        CHECK(fast.num_batches_tracked.item() == ref.num_batches_tracked.item());
    }
}

}  // namespace

TEST_CASE("norm: BatchNorm and its autograd-primitives reference give the same results") {
    Generator gen(41);
    for (const Shape& s : std::vector<Shape>{{2, 3}, {16, 4}, {3, 2, 5}, {2, 3, 3, 3}, {16, 4, 4, 4}}) {
        const int64_t C = s[1];
        BatchNorm fast(C);
        BatchNormReference ref(C);
        Tensor w = Tensor::uniform({C}, 0.5f, 1.5f, &gen), b = Tensor::uniform({C}, -0.5f, 0.5f, &gen);
        for (BatchNorm* m : {&fast, static_cast<BatchNorm*>(&ref)}) {
            copy_(m->weight, w);
            copy_(m->bias, b);
        }
        compare(fast, ref, s, gen, "train " + shape_str(s));
        compare(fast, ref, s, gen, "train again " + shape_str(s));
        fast.eval();
        ref.eval();
        compare(fast, ref, s, gen, "eval " + shape_str(s));
        fast.train();
        ref.train();
        fast.freeze_statistics();
        ref.freeze_statistics();
        compare(fast, ref, s, gen, "frozen " + shape_str(s));
    }
    // momentum = none, no affine, no running statistics
    BatchNorm f1(3, 1e-5f, std::nullopt, false), r1(3, 1e-5f, std::nullopt, false);
    BatchNormReference r1b(3, 1e-5f, std::nullopt, false);
    compare(f1, r1b, {4, 3, 2, 2}, gen, "cma, no affine");
    compare(f1, r1b, {4, 3, 2, 2}, gen, "cma, no affine, 2nd");
    BatchNorm f2(3, 1e-5f, 0.1f, true, false);
    BatchNormReference r2(3, 1e-5f, 0.1f, true, false);
    f2.eval();
    r2.eval();
    compare(f2, r2, {4, 3, 2, 2}, gen, "no running stats, eval");
}

TEST_CASE("norm: the reference graph is many nodes, the hand-derived one is one") {
    Tensor x = Tensor::normal({4, 3, 2, 2}, 0, 1).requires_grad_();
    BatchNorm2d fast(3);
    BatchNormReference ref(3);
    Tensor y1 = fast.forward(x), y2 = ref.forward(x);
    // count nodes reachable from each output (excluding the leaves' AccumulateGrad)
    auto count = [](const Tensor& y) {
        std::vector<Node*> stack{y.grad_fn().get()};
        std::set<Node*> seen;
        while (!stack.empty()) {
            Node* n = stack.back();
            stack.pop_back();
            if (!seen.insert(n).second) continue;
            for (auto& e : n->next_edges)
                if (e.fn && !dynamic_cast<AccumulateGrad*>(e.fn.get())) stack.push_back(e.fn.get());
        }
        return seen.size();
    };
    CHECK(count(y1) == 1);
    CHECK(count(y2) > 5);
}
