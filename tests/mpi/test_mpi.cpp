// Over 2 (or more) ranks: the collectives give every rank the same bits, and
// SyncBatchNorm over K ranks x B/K images equals BatchNorm over the B images
// in one process.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/autograd.h"
#include "core/ops.h"
#include "core/random.h"
#include "dist/comm.h"
#include "layers/batchnorm.h"
#include "layers/models.h"
#include "layers/syncbatchnorm.h"
#include "optim/sgd.h"
#include "train/data_parallel.h"
#include "train/evaluate.h"
#include "train/step.h"

using namespace minnow;

namespace {

// Rows [begin, end) of x along dim 0, as a new tensor.
Tensor rows(const Tensor& x, int64_t begin, int64_t end) {
    Shape s = x.shape();
    const int64_t per = x.numel() / s[0];
    s[0] = end - begin;
    Tensor out = Tensor::empty(s);
    std::memcpy(out.data(), x.data() + begin * per, sizeof(float) * (end - begin) * per);
    return out;
}

// max |a - b| / max |b|, over the tensor.
double rel_diff(const Tensor& a, const Tensor& b) {
    REQUIRE(a.shape() == b.shape());
    double scale = 0, worst = 0;
    for (int64_t i = 0; i < b.numel(); ++i) {
        scale = std::max(scale, std::fabs(static_cast<double>(b.data()[i])));
        worst = std::max(worst, std::fabs(static_cast<double>(a.data()[i]) - b.data()[i]));
    }
    return worst / scale;
}

// Every rank's copy of t, checked equal to rank 0's bit for bit.
bool same_on_every_rank(const Tensor& t) {
    std::vector<double> mine(t.data(), t.data() + t.numel()), all(mine.size() * dist::size());
    dist::allgather(mine.data(), static_cast<int64_t>(mine.size()), all.data());
    for (int r = 1; r < dist::size(); ++r)
        if (std::memcmp(all.data(), all.data() + r * mine.size(), sizeof(double) * mine.size()) != 0) return false;
    return true;
}

}  // namespace

TEST_CASE("dist: a job of more than one rank, and collectives with the same bits everywhere") {
    REQUIRE(dist::size() >= 2);
    std::vector<double> v{0.1 * (dist::rank() + 1), 1e-17, -3.0};
    dist::sum_in_rank_order(v.data(), 3);
    double expect = 0;
    for (int r = 0; r < dist::size(); ++r) expect += 0.1 * (r + 1);
    CHECK(v[0] == expect);
    CHECK(v[2] == -3.0 * dist::size());
    std::vector<float> f{static_cast<float>(dist::rank()), 1.f};
    dist::allreduce_sum(f.data(), 2);
    CHECK(f[1] == static_cast<float>(dist::size()));
    std::vector<float> b{static_cast<float>(dist::rank() + 7)};
    dist::broadcast(b.data(), 1, 0);
    CHECK(b[0] == 7.f);
}

TEST_CASE("SyncBatchNorm over the ranks equals BatchNorm over the whole batch in one process") {
    const int K = dist::size(), r = dist::rank();
    // Equal slices (64 = K x 64/K), and unequal ones (rank r takes 8 + 8r images).
    for (bool equal : {true, false}) {
        CAPTURE(equal);
        std::vector<int64_t> start(K + 1, 0);
        for (int q = 0; q < K; ++q) start[q + 1] = start[q] + (equal ? 64 / K : 8 + 8 * q);
        const int64_t B = start[K], C = 8;
        Generator gen(42);  // the same numbers on every rank
        // Channels with their own offsets and scales, |mean| = 100 std in one
        // (y = x * scale + shift then loses |mean| / std ulps in float32, in
        // one process as over ranks: the mean's float32 rounding, 1 ulp of
        // 100, moves y by 0.4e-5 of its range).
        Tensor x = Tensor::normal({B, C, 6, 6}, 0.f, 1.f, &gen), dy = Tensor::normal({B, C, 6, 6}, 0.f, 1.f, &gen);
        for (int64_t i = 0; i < x.numel(); ++i) {
            const int64_t c = (i / 36) % C;
            x.data()[i] = x.data()[i] * (0.5f + 0.25f * c) + (c == 3 ? 100.f : 0.1f * c);
        }
        Tensor gamma = Tensor::uniform({C}, 0.5f, 1.5f, &gen), beta = Tensor::uniform({C}, -1.f, 1.f, &gen);

        BatchNorm2d one(C);  // the whole batch, here, in one process
        SyncBatchNorm sync(C);
        copy_(one.weight, gamma);
        copy_(one.bias, beta);
        copy_(sync.weight, gamma);
        copy_(sync.bias, beta);
        Tensor xa = x.detach().clone().requires_grad_();
        Tensor ya = one(xa);
        ya.backward(dy);

        Tensor xs = rows(x, start[r], start[r + 1]).requires_grad_();
        Tensor ys = sync(xs);
        ys.backward(rows(dy, start[r], start[r + 1]));

        CHECK(rel_diff(ys, rows(ya, start[r], start[r + 1])) < 1e-5);
        CHECK(rel_diff(xs.grad(), rows(xa.grad(), start[r], start[r + 1])) < 1e-5);
        // gamma and beta: this rank's sums; over the ranks, the whole batch's.
        Tensor dgamma = sync.weight.grad().clone(), dbeta = sync.bias.grad().clone();
        dist::allreduce_sum(dgamma.data(), C);
        dist::allreduce_sum(dbeta.data(), C);
        CHECK(rel_diff(dgamma, one.weight.grad()) < 1e-5);
        CHECK(rel_diff(dbeta, one.bias.grad()) < 1e-5);
        CHECK(rel_diff(sync.running_mean, one.running_mean) < 1e-5);
        CHECK(rel_diff(sync.running_var, one.running_var) < 1e-5);
        // and every rank holds the same buffers, bit for bit
        CHECK(same_on_every_rank(sync.running_mean));
        CHECK(same_on_every_rank(sync.running_var));
    }
}

TEST_CASE("data-parallel SGD steps: the same weights on every rank, and those of one process on the whole batch") {
    const int K = dist::size(), r = dist::rank();
    for (bool sync_bn : {true, false}) {
        CAPTURE(sync_bn);
        manual_seed(5);
        auto parallel = make_model("cnn", "batch", 10), one = make_model("cnn", "batch", 10);
        one->load_state_dict(parallel->state_dict());
        if (sync_bn) convert_sync_batchnorm(*parallel);
        SGDOptions so(0.05);
        so.momentum = 0.9;
        so.weight_decay = 5e-4;
        SGD opt_p(parallel->parameters(), so), opt_1(one->parameters(), so);
        Generator gen(77);
        for (int step = 0; step < 3; ++step) {
            const int64_t B = 12;
            Batch whole;
            whole.images = Tensor::normal({B, 3, 32, 32}, 0.f, 1.f, &gen);
            whole.labels = Tensor::empty({B});
            for (int64_t i = 0; i < B; ++i) whole.labels.data()[i] = static_cast<float>((i * 7 + step) % 10);
            const int64_t k0 = B * r / K, k1 = B * (r + 1) / K;
            Batch mine;
            mine.images = rows(whole.images, k0, k1);
            mine.labels = rows(whole.labels, k0, k1);
            const StepResult rp = train_step(*parallel, opt_p, mine), r1 = train_step(*one, opt_1, whole);
            // Every rank reports the whole batch's loss and gradient norm; with
            // per-rank BatchNorm they are another model's than one process's.
            double reported[2] = {rp.loss, rp.grad_norm};
            std::vector<double> all(2 * K);
            dist::allgather(reported, 2, all.data());
            for (int q = 1; q < K; ++q) CHECK(std::memcmp(all.data(), all.data() + 2 * q, sizeof reported) == 0);
            // Step 1 (the same weights): the whole batch's loss, and its
            // gradient's norm; later steps drift by float rounding, which a
            // ReLU or max-pool kink can turn into a different gradient route
            // (tests/fixtures/README.md, kink_margin), so the
            // weights are compared loosely below.
            if (sync_bn && step == 0) {
                CHECK(rp.loss == doctest::Approx(r1.loss).epsilon(1e-5));
                CHECK(rp.grad_norm == doctest::Approx(r1.grad_norm).epsilon(1e-3));
            }
        }
        // Per-rank BatchNorm's running statistics are each rank's own until
        // average_buffers (the loop calls it after each epoch); with SyncBatchNorm
        // they are equal already, and averaging keeps their bits.
        std::vector<TensorEntry> before = parallel->state_dict();
        for (TensorEntry& e : before) e.tensor = e.tensor.clone();
        average_buffers(*parallel);
        const auto a = parallel->state_dict(), b = one->state_dict();
        for (size_t i = 0; i < a.size(); ++i) {
            CAPTURE(a[i].name);
            CHECK(same_on_every_rank(a[i].tensor));
            const bool own_statistics = !sync_bn && a[i].name.find("running_") != std::string::npos;
            if (!own_statistics) CHECK(std::memcmp(a[i].tensor.data(), before[i].tensor.data(),
                                                   sizeof(float) * a[i].tensor.numel()) == 0);
            // BatchNorm without sync normalises each rank's slice on its own:
            // only the synchronised model is the one-process model.
            // 5e-2 of the tensor's largest element: far inside what a wrong
            // weighting of the ranks' gradients (a factor of 2) would give.
            if (sync_bn) CHECK(rel_diff(a[i].tensor, b[i].tensor) < 5e-2);
        }
    }
}

TEST_CASE("gradient reducer: buckets summed during backward equal the blocking sum, with a shared and an unused parameter") {
    const int K = dist::size(), r = dist::rank();
    Generator gen(100 + static_cast<uint64_t>(r));  // each rank its own input
    const Tensor x = Tensor::normal({4, 6}, 0.f, 1.f, &gen);
    // Buckets of 30 floats: w_last (12) and bias (6) share one, w_shared (24)
    // and unused (24) have their own, so several buckets start in backward().
    Generator init(3);  // the same weights on every rank
    Tensor w_shared = Tensor::normal({6, 4}, 0.f, 1.f, &init).requires_grad_();
    Tensor unused = Tensor::normal({6, 4}, 0.f, 1.f, &init).requires_grad_();
    Tensor w_last = Tensor::normal({4, 3}, 0.f, 1.f, &init).requires_grad_();
    Tensor bias = Tensor::normal({6}, 0.f, 1.f, &init).requires_grad_();
    const std::vector<Tensor> params{w_shared, unused, w_last, bias};
    // w_shared is used twice (its gradient is final only after both uses add
    // into it), `unused` gets no gradient at all.
    auto loss_of = [&] {
        Tensor h = matmul(x, mul(w_shared, w_shared));  // [4,4]
        Tensor y = matmul(h, w_last);                    // [4,3]
        return add(sum(mul(y, y)), sum(mul(bias, bias)));
    };
    const double weight = (r + 1.0) / (K * (K + 1) / 2.0);
    // The reference: the same scaled gradients, one blocking allreduce each.
    loss_of().backward();
    std::vector<std::vector<float>> expected;
    for (const Tensor& p : params) {
        if (!p.grad().defined()) {
            expected.emplace_back();
            continue;
        }
        std::vector<float> g(p.grad().data(), p.grad().data() + p.numel());
        for (float& v : g) v *= static_cast<float>(weight);
        dist::allreduce_sum(g.data(), static_cast<int64_t>(g.size()));
        expected.push_back(g);
    }
    for (const Tensor& p : params) const_cast<Tensor&>(p).zero_grad();
    GradientReducer reducer(params, weight, 30);
    {
        BackwardListenerScope listen(reducer.listener());
        loss_of().backward();
    }
    reducer.finish();
    CHECK_FALSE(unused.grad().defined());
    for (size_t i = 0; i < params.size(); ++i) {
        CAPTURE(i);
        if (expected[i].empty()) continue;
        const Tensor g = params[i].grad();
        REQUIRE(g.defined());
        CHECK(same_on_every_rank(g));
        // Two ranks: a + b either way, the same bits. More: MPI may pick
        // another summation order for another message size.
        for (int64_t j = 0; j < g.numel(); ++j) {
            if (K == 2) CHECK(g.data()[j] == expected[i][static_cast<size_t>(j)]);
            else CHECK(g.data()[j] == doctest::Approx(expected[i][static_cast<size_t>(j)]).epsilon(1e-6));
        }
    }
}

TEST_CASE("batch totals: the whole batch's count, loss and correct images, and which rank went non-finite") {
    const int K = dist::size(), r = dist::rank();
    // Rank q has q + 1 images with mean loss q + 0.5 and q right.
    BatchTotals t = batch_totals(r + 1, r + 0.5, r);
    int64_t count = 0, correct = 0;
    double loss = 0;
    for (int q = 0; q < K; ++q) {
        count += q + 1;
        loss += (q + 1) * (q + 0.5);
        correct += q;
    }
    CHECK(t.count == count);
    CHECK(t.loss == loss / count);
    CHECK(t.correct == correct);
    CHECK(t.first_non_finite_rank == -1);
    t = batch_totals(4, r == 1 ? NAN : 1.0, 0);
    CHECK(std::isnan(t.loss));
    CHECK(t.first_non_finite_rank == 1);
    t = batch_totals(4, r >= 1 ? INFINITY : 1.0, 0);
    CHECK(t.first_non_finite_rank == 1);
}

TEST_CASE("evaluate over the ranks: each its slice of every batch, the totals of the whole set on every rank") {
    auto set = std::make_shared<ImageSet>();
    set->n = 37;  // batches of 8: the last has 5, and 1 image would leave some rank nothing
    set->channels = 3;
    set->height = set->width = 32;
    set->class_names = {"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"};
    Generator gen(3);
    for (int64_t i = 0; i < set->n * set->image_size(); ++i)
        set->pixels.push_back(static_cast<uint8_t>(gen.randint(256)));
    for (int64_t i = 0; i < set->n; ++i) set->labels.push_back(static_cast<int>(i % 10));
    manual_seed(9);
    auto model = make_model("cnn", "batch", 10);
    for (int64_t batch : {8, 1}) {
        CAPTURE(batch);
        LoaderOptions lo;
        lo.batch_size = batch;
        const EvalResult whole = evaluate(*model, set, lo);
        lo.rank = dist::rank();
        lo.ranks = dist::size();
        const EvalResult split = evaluate(*model, set, lo);
        CHECK(split.n == whole.n);
        CHECK(split.accuracy == whole.accuracy);
        CHECK(split.confusion == whole.confusion);
        CHECK(split.loss == doctest::Approx(whole.loss).epsilon(1e-6));
        double mine = split.loss, all[16] = {};
        REQUIRE(dist::size() <= 16);
        dist::allgather(&mine, 1, all);
        for (int q = 1; q < dist::size(); ++q) CHECK(all[q] == all[0]);
        CHECK_THROWS_WITH_AS(evaluate(*model, set, lo, /*keep_logits=*/true),
                             doctest::Contains("keep_logits needs the whole set"), Error);
    }
}
