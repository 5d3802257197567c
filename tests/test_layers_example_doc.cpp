// The out-of-library layer of docs/new-layer.md, built and checked here so
// the walk-through never goes stale; and every code block the doc quotes
// from it must still be in the file, word for word.
#include <fstream>
#include <sstream>

#include "core/gradcheck.h"
#include "core/ops.h"
#include "docs/examples/leaky_relu.h"
#include "layers/conv2d.h"
#include "test_helpers.h"

using namespace minnow;

TEST_CASE("layers: doc example LeakyReLU: values, gradcheck, in a model") {
    example::LeakyReLU act(0.1f);
    Tensor x = Tensor::from_vector({-2.f, -0.5f, 0.f, 0.5f, 3.f}, {5});
    x.requires_grad_();
    Tensor y = act(x);
    CHECK(y.to_vector() == std::vector<float>{-0.2f, -0.05f, 0.f, 0.5f, 3.f});
    y.backward(Tensor::ones({5}));
    CHECK(x.grad().to_vector() == std::vector<float>{0.1f, 0.1f, 0.1f, 1.f, 1.f});  // slope at 0, as PyTorch

    // the test every new layer gets: its backward against finite differences
    Generator g(1);
    Tensor v = Tensor::uniform({3, 4, 5}, 0.2f, 1.f, &g);
    for (int64_t i = 0; i < v.numel(); i += 2) v.data()[i] = -v.data()[i];  // stay off the kink at 0
    v.requires_grad_();
    GradcheckResult r = gradcheck([](auto& in) { return example::leaky_relu(in[0], 0.2f); }, {v});
    CHECK_MESSAGE(r.ok, r.message);

    // and it composes with library layers
    Sequential model({std::make_shared<Conv2d>(2, 3, 3, 1, 1), std::make_shared<example::LeakyReLU>()});
    CHECK(model(Tensor::zeros({1, 2, 4, 4})).shape() == Shape{1, 3, 4, 4});
    CHECK(model.repr().find("LeakyReLU(negative_slope=0.010000)") != std::string::npos);
}

// Each line without its leading spaces, and without a leading "//" and the
// spaces after it: a quoted block may be indented differently, and a plain
// ``` block quotes a comment of PATH as text.
static std::string dedent(const std::string& text) {
    std::string out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        size_t at = line.find_first_not_of(' ');
        if (at != std::string::npos && line.compare(at, 2, "//") == 0) at = line.find_first_not_of(' ', at + 2);
        out += (at == std::string::npos ? "" : line.substr(at)) + "\n";
    }
    return out;
}

static std::string read_source(const std::string& rel) {
    std::ifstream in(testing::source_path(rel));
    REQUIRE_MESSAGE(in.good(), "cannot open " << rel);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// Every ```cpp (or plain ```) block right after a line "<!-- quoted from PATH -->"
// of the doc `rel` must be in PATH. Returns the number of such blocks.
static int check_quotes(const std::string& rel) {
    const std::string doc = read_source(rel);
    const std::string marker = "<!-- quoted from ";
    int quoted = 0;
    for (size_t at = doc.find(marker); at != std::string::npos; at = doc.find(marker, at + 1)) {
        const size_t path_end = doc.find(" -->\n```", at);
        REQUIRE(path_end != std::string::npos);
        const std::string path = doc.substr(at + marker.size(), path_end - at - marker.size());
        const size_t fence = path_end + std::string(" -->\n").size();
        const size_t begin = doc.find('\n', fence) + 1, end = doc.find("```", begin);
        REQUIRE(end != std::string::npos);
        const std::string block = doc.substr(begin, end - begin);
        CHECK_MESSAGE(dedent(read_source(path)).find(dedent(block)) != std::string::npos,
                      rel << " quotes a block that is no longer in " << path << ":\n" << block);
        ++quoted;
    }
    return quoted;
}

TEST_CASE("layers: docs/new-layer.md quotes its example files verbatim") { CHECK(check_quotes("docs/new-layer.md") >= 4); }

// The derivation in docs/batchnorm.md section 2 is the comment above
// BatchNormBackward in layers/batchnorm.cpp: the two cannot drift apart.
TEST_CASE("layers: docs/batchnorm.md quotes the BatchNorm derivation from layers/batchnorm.cpp") {
    CHECK(check_quotes("docs/batchnorm.md") >= 1);
}
