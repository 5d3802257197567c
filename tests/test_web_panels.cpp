// The interactive page's computations (web/panels.h), natively, on small
// data made here in web_data's format.
#include <cmath>
#include <filesystem>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "core/random.h"
#include "core/safetensors.h"
#include "test_helpers.h"
#include "web/panels.h"

using namespace minnow;
using namespace minnow::web;
using nlohmann::json;

namespace {

// Images whose class shows in their brightness (so a net can learn them), U8.
std::vector<TensorEntry> images(int64_t n, Generator& g) {
    Tensor img = Tensor::empty({n, 3, 32, 32}), labels = Tensor::empty({n});
    for (int64_t i = 0; i < n; ++i) {
        const int label = static_cast<int>(i % 2);
        labels.data()[i] = static_cast<float>(label);
        for (int64_t k = 0; k < 3 * 1024; ++k)
            img.data()[i * 3 * 1024 + k] = std::floor(label * 120.f + g.uniform() * 130.f);
    }
    return {{"images", img, DType::U8}, {"labels", labels, DType::U8}};
}

// web_data's three files in `dir`: a pool of P images whose 2 activation
// channels are an offset per image plus noise per position.
void write_page_data(const std::string& dir, int64_t P = 96) {
    std::filesystem::create_directories(dir);
    Generator g(7);
    const int64_t C = 2;
    std::vector<TensorEntry> pool = images(P, g);
    Tensor act = Tensor::empty({P, C, 32, 32}), m = Tensor::empty({P, C}), ms = Tensor::empty({P, C});
    for (int64_t i = 0; i < P; ++i)
        for (int64_t c = 0; c < C; ++c) {
            const float offset = g.normal() * 0.5f + static_cast<float>(c);
            double s = 0, s2 = 0;
            for (int64_t p = 0; p < 1024; ++p) {
                const float v = offset + g.normal();
                act.data()[(i * C + c) * 1024 + p] = v;
                s += v, s2 += static_cast<double>(v) * v;
            }
            m.data()[i * C + c] = static_cast<float>(s / 1024);
            ms.data()[i * C + c] = static_cast<float>(s2 / 1024);
        }
    pool.push_back({"activations", act});
    pool.push_back({"image_mean", m});
    pool.push_back({"image_mean_sq", ms});
    pool.push_back({"bn_weight", Tensor::from_vector({1.5f, 0.75f}, {2})});
    pool.push_back({"bn_bias", Tensor::from_vector({0.25f, -0.5f}, {2})});
    save_safetensors(dir + "/pool.safetensors", pool, {{"classes", R"(["dark", "bright"])"}, {"checkpoint", "made by the test"}});
    const std::map<std::string, std::string> norm{{"mean", "[0.5, 0.5, 0.5]"}, {"std", "[0.25, 0.25, 0.25]"}};
    save_safetensors(dir + "/train.safetensors", images(256, g), norm);
    save_safetensors(dir + "/test.safetensors", images(64, g), norm);
}

// Each test case runs in its own process (CTest), so the folder is named by it.
struct Page {
    std::string dir = (std::filesystem::temp_directory_path() / ("minnow_web_" + std::to_string(::getpid()))).string();
    PageData d;
    json info;
    Page() {
        write_page_data(dir);
        info = json::parse(load_data(d, dir));
    }
    ~Page() { std::filesystem::remove_all(dir); }
};

}  // namespace

TEST_CASE("web: load_data reads web_data's files and says what it holds") {
    Page page;
    CHECK(page.info["pool_images"] == 96);
    CHECK(page.info["channels"] == 2);
    CHECK(page.info["channels_shown"] == 2);
    CHECK(page.info["train_images"] == 256);
    CHECK(page.info["test_images"] == 64);
    CHECK(page.info["classes"] == json{"dark", "bright"});
    const json img = json::parse(pool_image(page.d, 3));
    CHECK(img["rgba"].size() == 32 * 32 * 4);
    CHECK(img["label"] == 1);
}

TEST_CASE("web: the batch statistics are the layer's, and their spread follows 1/sqrt(B)") {
    Page page;
    for (int64_t b : {1, 4, 16, 64}) {
        CAPTURE(b);
        const json r = json::parse(batch_stats(page.d, b, 400, 11));
        // What BatchNorm2d itself computed for the first batch.
        CHECK(r["layer_check"]["mean_difference"].get<double>() < 1e-5);
        CHECK(r["layer_check"]["var_relative_difference"].get<double>() < 1e-4);
        const double m = r["mean_spread"], pm = r["mean_spread_predicted"], se = r["mean_spread_se"];
        CHECK(std::fabs(m - pm) < 3 * se + 0.1 * pm);  // the batch mean's law is exact
        if (b >= 4) {  // the variance's is to leading order in 1/B
            const double v = r["var_spread"], pv = r["var_spread_predicted"], sev = r["var_spread_se"];
            CHECK(std::fabs(v - pv) < 3 * sev + 0.15 * pv);
        }
        CHECK(r["example"]["batch_means"].size() == 400);
    }
    const double s4 = json::parse(batch_stats(page.d, 4, 400, 1))["mean_spread"];
    const double s64 = json::parse(batch_stats(page.d, 64, 400, 1))["mean_spread"];
    CHECK(s4 / s64 == doctest::Approx(4.0).epsilon(0.2));
}

TEST_CASE("web: the probe's BatchNorm output moves less in bigger batches; LayerNorm's not at all") {
    Page page;
    const json small = json::parse(probe(page.d, 2, 8, 3)), big = json::parse(probe(page.d, 64, 8, 3));
    CHECK(small["outputs"].size() == 8);
    CHECK(small["outputs"][0].size() == 1024);
    CHECK(small["pixel_spread"].get<double>() > 3 * big["pixel_spread"].get<double>());
    CHECK(big["pixel_spread"].get<double>() > 0);
    const json r = json::parse(independence(page.d, 5, 8, 1, 2));
    CHECK(r["ln"]["max_change"].get<double>() == 0.0);  // the same bits: only the image itself counts
    CHECK(r["bn"]["max_change"].get<double>() > 1e-3);
    CHECK(r["bn"]["a"].size() == 1024);
}

TEST_CASE("web: the panel-2 trainer learns, and its train-mode evaluation leaves the running statistics alone") {
    Page page;
    Trainer t(page.d, "batch", 16, 0.1, 0.05, 1);
    const json first = json::parse(t.step(10));
    json last;
    for (int i = 0; i < 5; ++i) last = json::parse(t.step(10));
    CHECK(last["step"] == 60);
    CHECK(last["loss"].get<double>() < first["loss"].get<double>());
    const json e = json::parse(t.evaluate(64));
    CHECK(e["images"] == 64);
    CHECK(e["eval_mode_accuracy"].get<double>() > 60);
    // Evaluating again gives the same numbers: the train-mode pass put the
    // running statistics back.
    CHECK(json::parse(t.evaluate(64)) == e);
    for (const char* norm : {"layer", "group", "none"}) {
        Trainer other(page.d, norm, 8, 0.1, 0.05, 1);
        CHECK(std::isfinite(json::parse(other.step(3))["loss"].get<double>()));
    }
}

TEST_CASE("web: bad arguments and missing data are errors that say what is wrong") {
    PageData empty;
    CHECK_THROWS_WITH_AS(batch_stats(empty, 4, 100, 1), doctest::Contains("load_data first"), Error);
    CHECK_THROWS_WITH_AS(load_data(empty, "/nonexistent"), doctest::Contains("/nonexistent/pool.safetensors"), Error);
    Page page;
    CHECK_THROWS_WITH_AS(batch_stats(page.d, 0, 100, 1), doctest::Contains("batch size must be from 1"), Error);
    CHECK_THROWS_WITH_AS(pool_image(page.d, 96), doctest::Contains("index must be from 0 to 95"), Error);
    CHECK_THROWS_WITH_AS(independence(page.d, 0, 1, 1, 2), doctest::Contains("batch size"), Error);
    CHECK_THROWS_WITH_AS(Trainer(page.d, "bogus", 8, 0.1, 0.05, 1), doctest::Contains("batch"), Error);
    CHECK_THROWS_WITH_AS(Trainer(page.d, "batch", 8, 1.5, 0.05, 1), doctest::Contains("momentum"), Error);
}

TEST_CASE("web: the parity report holds every output and gradient, finite") {
    const json r = json::parse(parity_report());
    CHECK(r.size() == 16);
    for (const auto& [name, values] : r.items()) {
        CAPTURE(name);
        CHECK(!values.empty());
        for (const auto& v : values) CHECK(std::isfinite(v.get<double>()));
    }
}
