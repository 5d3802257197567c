// cross_entropy / CrossEntropyLoss and core's log_softmax: PyTorch parity,
// gradcheck, label errors.
#include "core/autograd.h"
#include "layers/loss.h"
#include "test_layers_common.h"

using namespace minnow;
using namespace minnow::testing;

TEST_CASE("layers: cross_entropy matches PyTorch (mean, label smoothing, none)") {
    SafetensorsFile f = layer_fixture("cross_entropy");
    struct Case {
        const char* name;
        float eps;
        Reduction red;
    };
    for (const Case& c : {Case{"mean", 0.f, Reduction::Mean}, Case{"smooth", 0.1f, Reduction::Mean},
                          Case{"none", 0.f, Reduction::None}}) {
        const std::string n = c.name;
        CAPTURE(n);
        Tensor z = leaf(f, n + ".logits");
        CrossEntropyLoss criterion(c.eps, c.red);
        Tensor loss = criterion(z, f.get(n + ".labels"));
        if (c.red != Reduction::None) CHECK(loss.dim() == 0);
        check_parity(loss.reshape({-1}), f.get(n + ".loss"), n + " loss");
        loss.backward(f.get(n + ".dy").reshape(loss.shape()));
        check_parity(z.grad(), f.get(n + ".dlogits"), n + " dlogits");
    }
}

TEST_CASE("layers: core log_softmax matches PyTorch (also on large logits)") {
    SafetensorsFile f = layer_fixture("log_softmax");
    for (const std::string n : {"std", "large"}) {
        CAPTURE(n);
        Tensor x = leaf(f, n + ".x");
        Tensor y = log_softmax(x, 1);
        check_parity(y, f.get(n + ".y"), n + " y");
        y.backward(f.get(n + ".dy"));
        check_parity(x.grad(), f.get(n + ".dx"), n + " dx");
    }
}

TEST_CASE("layers: cross_entropy gradcheck and agreement with log_softmax") {
    Generator g(4);
    Tensor z = rand_leaf({5, 4}, g, -2.f, 2.f);
    Tensor labels = T({0, 3, 1, 1, 2}, {5});
    for (float eps : {0.f, 0.2f})
        for (Reduction r : {Reduction::Mean, Reduction::Sum, Reduction::None})
            expect_gradcheck([&](auto& v) { return cross_entropy(v[0], labels, eps, r); }, {z});
    // mean of -log_softmax at the labels
    Tensor lp = log_softmax(z, 1);
    double expect = 0;
    for (int i = 0; i < 5; ++i) expect -= lp.at({i, static_cast<int64_t>(labels.data()[i])});
    CHECK(cross_entropy(z, labels).item() == doctest::Approx(expect / 5).epsilon(1e-6));
}

TEST_CASE("layers: cross_entropy rejects bad labels and shapes") {
    Tensor z = Tensor::zeros({3, 10});
    const std::string m = error_of([&] { cross_entropy(z, T({1, 12, 0}, {3})); });
    CHECK(m.find("label 12") != std::string::npos);
    CHECK(m.find("index 1") != std::string::npos);
    CHECK(m.find("[0, 10)") != std::string::npos);
    CHECK(m.find("N = 3") != std::string::npos);
    CHECK(error_of([&] { cross_entropy(z, T({1, -1, 0}, {3})); }).find("label -1") != std::string::npos);
    CHECK(error_of([&] { cross_entropy(z, T({1, 2.5f, 0}, {3})); }).find("label 2.5") != std::string::npos);
    CHECK(error_of([&] { cross_entropy(z, T({1, 2}, {2})); }).find("[3]") != std::string::npos);
    CHECK(error_of([&] { cross_entropy(Tensor::zeros({3}), T({1, 2, 0}, {3})); }).find("[N, C]") !=
          std::string::npos);
}
