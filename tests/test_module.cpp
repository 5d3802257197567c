// Module: names, parameters vs buffers, train/eval, state_dict round trips
// through safetensors and the errors of a bad load.
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/ops.h"
#include "layers/module.h"
#include "test_helpers.h"

using namespace minnow;
using minnow::testing::check_close;

namespace {

// A toy layer: y = x * scale + shift, with a running counter buffer.
struct Toy : Module {
    Tensor scale, shift, seen;
    explicit Toy(int64_t n) {
        scale = register_parameter("weight", Tensor::ones({n}));
        shift = register_parameter("bias", Tensor::zeros({n}));
        seen = register_buffer("num_batches_tracked", Tensor::zeros({}), DType::I64);
    }
    Tensor forward(const Tensor& x) override {
        if (is_training()) seen.data()[0] += 1;
        return add(mul(x, scale), shift);
    }
    std::string type_name() const override { return "Toy"; }
};

struct Net : Module {
    Child<Sequential> features;
    Child<Toy> head;
    Net() {
        features = register_module("features", std::make_shared<Sequential>(
                                                   std::vector<std::shared_ptr<Module>>{std::make_shared<Toy>(3),
                                                                                        std::make_shared<Toy>(3)}));
        head = register_module("head", std::make_shared<Toy>(3));
    }
    Tensor forward(const Tensor& x) override { return (*head)((*features)(x)); }
    std::string type_name() const override { return "Net"; }
};

std::string temp_file(const std::string& name) {
    return (std::filesystem::temp_directory_path() / ("minnow_test_module_" + name)).string();
}

}  // namespace

TEST_CASE("module: dotted names in PyTorch's order, parameters vs buffers") {
    Net net;
    std::vector<std::string> names;
    for (const auto& e : net.state_dict()) names.push_back(e.name);
    CHECK(names == std::vector<std::string>{"features.0.weight", "features.0.bias", "features.0.num_batches_tracked",
                                            "features.1.weight", "features.1.bias", "features.1.num_batches_tracked",
                                            "head.weight", "head.bias", "head.num_batches_tracked"});
    CHECK(net.parameters().size() == 6);
    CHECK(net.buffers().size() == 3);
    for (const Tensor& p : net.parameters()) CHECK(p.requires_grad());
    for (const Tensor& b : net.buffers()) CHECK_FALSE(b.requires_grad());
    CHECK(net.named_modules().size() == 5);  // net, features, features.0, features.1, head
    CHECK(net.named_modules()[2].first == "features.0");
}

TEST_CASE("module: train()/eval() reach every descendant, each module keeps its own flag") {
    Net net;
    net.eval();
    for (auto& [n, m] : net.named_modules()) CHECK_FALSE(m->is_training());
    net.features->train();
    CHECK(net.features->is_training());
    CHECK((*net.features)[0]->is_training());
    CHECK_FALSE(net.head->is_training());
}

TEST_CASE("module: zero_grad drops every parameter's gradient") {
    Net net;
    sum(net(Tensor::ones({2, 3}))).backward();
    for (const Tensor& p : net.parameters()) CHECK(p.grad().defined());
    net.zero_grad();
    for (const Tensor& p : net.parameters()) CHECK_FALSE(p.grad().defined());
}

TEST_CASE("module: state round-trips through a safetensors file, with I64 buffers") {
    Net a, b;
    fill_(a.head->scale, 2.5f);
    a(Tensor::ones({1, 3}));  // bumps the counters
    const std::string path = temp_file("roundtrip.safetensors");
    a.save(path, {{"note", "test"}});
    SafetensorsFile f = load_safetensors(path);
    CHECK(f.metadata.at("note") == "test");
    CHECK(f.find("head.num_batches_tracked")->dtype == DType::I64);
    b.load(path);
    check_close(b.head->scale, a.head->scale);
    CHECK(b.head->seen.item() == 1.f);
    CHECK_FALSE(std::filesystem::exists(path + ".tmp"));
    std::filesystem::remove(path);
}

TEST_CASE("safetensors: U8 tensors (image pixels) round-trip, and a value a byte cannot hold is refused") {
    const std::string path = temp_file("pixels.safetensors");
    const Tensor pixels = Tensor::from_vector({0.f, 1.f, 128.f, 255.f}, {2, 2});
    save_safetensors(path, {{"images", pixels, DType::U8}});
    SafetensorsFile f = load_safetensors(path);
    CHECK(f.find("images")->dtype == DType::U8);
    check_close(f.get("images"), pixels);
    for (float bad : {256.f, -1.f, 0.5f, NAN}) {
        CHECK_THROWS_WITH_AS(save_safetensors(path, {{"images", Tensor::full({1}, bad), DType::U8}}),
                             doctest::Contains("stored as U8"), Error);
        CHECK(load_safetensors(path).get("images").numel() == 4);  // the old file stays
    }
    std::filesystem::remove(path);
}

TEST_CASE("module: a bad load names what is missing, unexpected or of the wrong shape, and changes nothing") {
    Net net;
    auto state = net.state_dict();
    state.erase(state.begin());  // drop features.0.weight
    state.push_back({"extra.weight", Tensor::zeros({1}), DType::F32});
    state[0].tensor = Tensor::zeros({5});  // features.0.bias now has the wrong shape
    const float before = net.head->scale.data()[0];
    try {
        net.load_state_dict(state, true, "ckpt.safetensors");
        FAIL("no error");
    } catch (const Error& e) {
        const std::string msg = e.what();
        CHECK(msg.find("ckpt.safetensors") != std::string::npos);
        CHECK(msg.find("missing: features.0.weight") != std::string::npos);
        CHECK(msg.find("unexpected: extra.weight") != std::string::npos);
        CHECK(msg.find("features.0.bias (expected [3], got [5])") != std::string::npos);
    }
    CHECK(net.head->scale.data()[0] == before);
}

TEST_CASE("module: truncated and corrupt safetensors files are clear errors") {
    Net net;
    const std::string path = temp_file("trunc.safetensors");
    net.save(path);
    const auto size = std::filesystem::file_size(path);
    std::filesystem::resize_file(path, size - 5);
    try {
        net.load(path);
        FAIL("no error");
    } catch (const Error& e) {
        CHECK(std::string(e.what()).find(path) != std::string::npos);
    }
    {
        std::ofstream out(path, std::ios::binary | std::ios::trunc);
        out << "garbage!garbage";
    }
    CHECK_THROWS_AS(net.load(path), Error);
    std::filesystem::remove(path);
    CHECK_THROWS_AS(net.load(path), Error);  // missing file
    // fuzz-ish: every truncation of a valid file is an error, never a crash
    Net small;
    small.save(path);
    std::ifstream in(path, std::ios::binary);
    std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), {});
    for (size_t cut = 0; cut < bytes.size(); cut += 7) CHECK_THROWS_AS(parse_safetensors(bytes.data(), cut, "cut"), Error);
    std::filesystem::remove(path);
}

// A safetensors file from its header text and data bytes (the header padded
// with spaces to 8 bytes, as the reference writer does).
static std::vector<uint8_t> safetensors_bytes(std::string header, size_t data_bytes) {
    header.append((8 - header.size() % 8) % 8, ' ');
    std::vector<uint8_t> bytes(8 + header.size() + data_bytes, 0);
    const uint64_t n = header.size();
    std::memcpy(bytes.data(), &n, 8);
    std::memcpy(bytes.data() + 8, header.data(), header.size());
    return bytes;
}

static std::string parse_error(const std::vector<uint8_t>& bytes) {
    try {
        parse_safetensors(bytes.data(), bytes.size(), "f.safetensors");
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

TEST_CASE("module: the safetensors reader follows the format's rules") {
    const std::string a = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
    const std::string b = R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]})";
    CHECK(parse_error(safetensors_bytes("{" + a + "," + b + "}", 12)).empty());
    CHECK(parse_error(safetensors_bytes("{}", 0)).empty());  // no tensors at all is a valid file
    // each name once
    CHECK(parse_error(safetensors_bytes("{" + a + "," + a + "}", 8)).find("names 'a' twice") != std::string::npos);
    // integer offsets and shapes
    CHECK(parse_error(safetensors_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8.5]}})", 8))
              .find("two non-negative integers") != std::string::npos);
    CHECK(parse_error(safetensors_bytes(R"({"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}})", 8))
              .find("no integer") != std::string::npos);
    // shapes: no negative dimension, at most 2^40 elements, and the dimensions
    // beside a 0 capped as well (the strides of [0, 2^62, 2^62] would overflow)
    CHECK(parse_error(safetensors_bytes(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}})", 0))
              .find("tensor 'a' has a negative dimension -1") != std::string::npos);
    CHECK(parse_error(safetensors_bytes(R"({"a":{"dtype":"F32","shape":[1048576,1048577],"data_offsets":[0,0]}})", 0))
              .find("tensor 'a' has a shape of more than 2^40 elements") != std::string::npos);
    CHECK(parse_error(safetensors_bytes(
                          R"({"a":{"dtype":"F32","shape":[0,4611686018427387904,4611686018427387904],"data_offsets":[0,0]}})",
                          0))
              .find("more than 2^40 elements") != std::string::npos);
    CHECK(parse_error(safetensors_bytes(R"({"a":{"dtype":"F32","shape":[0,1099511627776],"data_offsets":[0,0]}})", 0))
              .empty());
    // the offsets tile the data: a gap, an overlap, bytes after the last tensor
    CHECK(parse_error(safetensors_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8))
              .find("unused") != std::string::npos);
    CHECK(parse_error(safetensors_bytes("{" + a + R"(,"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8))
              .find("overlap") != std::string::npos);
    CHECK(parse_error(safetensors_bytes("{" + a + "}", 12)).find("cover 8 of the 12") != std::string::npos);
    // a header over the reference implementation's 100,000,000 bytes, whatever the file holds
    std::vector<uint8_t> huge = safetensors_bytes("{}", 0);
    const uint64_t n = 200000000;
    std::memcpy(huge.data(), &n, 8);
    CHECK(parse_error(huge).find("over the format's limit") != std::string::npos);
    // a directory where a file is expected
    const std::string dir = temp_file("a_directory.safetensors");
    std::filesystem::create_directories(dir);
    try {
        load_safetensors(dir);
        FAIL("no error");
    } catch (const Error& e) {
        CHECK(std::string(e.what()).find("is a directory") != std::string::npos);
    }
    std::filesystem::remove(dir);
}

TEST_CASE("module: forward hooks see every module's output") {
    Net net;
    std::vector<std::string> seen;
    for (auto& [name, m] : net.named_modules())
        m->register_forward_hook([&seen, name = name](Module&, const Tensor&) { seen.push_back(name); });
    net(Tensor::ones({1, 3}));
    CHECK(seen == std::vector<std::string>{"features.0", "features.1", "features", "head", ""});
}
