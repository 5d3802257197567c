// Helpers shared by the data tests: a temporary directory that cleans up,
// small synthetic image sets, file writing, and a check that an error names
// what it should.
#pragma once

#include <stb/stb_image_write.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include "core/random.h"
#include "core/tensor.h"
#include "data/dataset.h"
#include "test_helpers.h"

namespace minnow::testing {

namespace fs = std::filesystem;

// A fresh directory under the system temp dir, removed with everything in it
// when it goes out of scope. Unique per process and per object: CTest runs
// test cases as parallel processes.
struct TempDir {
    fs::path path;
    TempDir() {
        static std::atomic<int> counter{0};
        path = fs::temp_directory_path() /
               ("minnow-data-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
        fs::remove_all(path);
        fs::create_directories(path);
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
    std::string operator/(const std::string& rel) const { return (path / rel).string(); }
};

inline void write_bytes(const std::string& path, const std::vector<uint8_t>& bytes) {
    fs::create_directories(fs::path(path).parent_path());
    std::ofstream f(path, std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    REQUIRE_MESSAGE(f.good(), "could not write " << path);
}

inline std::vector<uint8_t> read_bytes(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>()};
}

// n random images of c x h x w with labels cycling 0..classes-1.
inline ImageSet synthetic_set(int64_t n, int64_t c, int64_t h, int64_t w, int classes, uint64_t seed = 1) {
    ImageSet s;
    s.n = n;
    s.channels = c;
    s.height = h;
    s.width = w;
    Generator gen(seed);
    s.pixels.resize(n * c * h * w);
    for (auto& p : s.pixels) p = static_cast<uint8_t>(gen.randint(256));
    for (int64_t i = 0; i < n; ++i) s.labels.push_back(static_cast<int>(i % classes));
    for (int k = 0; k < classes; ++k) s.class_names.push_back("class" + std::to_string(k));
    return s;
}

// PNG or JPEG bytes of an image given channel-major (as ImageSet stores it).
inline std::vector<uint8_t> encode_image(const uint8_t* chw, int c, int h, int w, bool jpeg = false) {
    std::vector<uint8_t> hwc(static_cast<size_t>(c) * h * w);
    for (int ch = 0; ch < c; ++ch)
        for (int p = 0; p < h * w; ++p) hwc[p * c + ch] = chw[ch * h * w + p];
    std::vector<uint8_t> out;
    auto sink = [](void* ctx, void* data, int size) {
        auto* v = static_cast<std::vector<uint8_t>*>(ctx);
        v->insert(v->end(), static_cast<uint8_t*>(data), static_cast<uint8_t*>(data) + size);
    };
    const int ok = jpeg ? stbi_write_jpg_to_func(sink, &out, w, h, c, hwc.data(), 100)
                        : stbi_write_png_to_func(sink, &out, w, h, c, hwc.data(), w * c);
    REQUIRE(ok);
    return out;
}

inline std::vector<uint8_t> encode_image(const ImageSet& s, int64_t i, bool jpeg = false) {
    return encode_image(s.image(i), static_cast<int>(s.channels), static_cast<int>(s.height), static_cast<int>(s.width),
                        jpeg);
}

// Runs f, which must throw minnow::Error whose message contains every one of
// `parts` (typically the file's name and the problem).
inline void check_error(const std::function<void()>& f, std::initializer_list<std::string> parts) {
    try {
        f();
    } catch (const Error& e) {
        const std::string msg = e.what();
        for (const auto& part : parts)
            CHECK_MESSAGE(msg.find(part) != std::string::npos, "'" << msg << "' lacks '" << part << "'");
        return;
    } catch (const std::exception& e) {
        FAIL_CHECK("threw a non-minnow exception: " << e.what());
        return;
    }
    FAIL_CHECK("did not throw; expected an error mentioning " << *parts.begin());
}

inline bool same_set(const ImageSet& a, const ImageSet& b) {
    return a.n == b.n && a.channels == b.channels && a.height == b.height && a.width == b.width &&
           a.pixels == b.pixels && a.labels == b.labels;
}

}  // namespace minnow::testing
