// IDX (MNIST / Fashion-MNIST): raw and gzip files written here and read back,
// each kind of bad header or size refused with the file named, and the real
// Fashion-MNIST when Debian's dataset-fashion-mnist is installed.
#include <zlib.h>

#include "data/idx.h"
#include "test_data_helpers.h"

using namespace minnow;
using namespace minnow::testing;

namespace {
std::vector<uint8_t> idx_bytes(const std::vector<uint32_t>& dims, const std::vector<uint8_t>& values,
                               uint8_t type = 0x08) {
    std::vector<uint8_t> b{0, 0, type, static_cast<uint8_t>(dims.size())};
    for (uint32_t d : dims)
        for (int shift : {24, 16, 8, 0}) b.push_back(static_cast<uint8_t>(d >> shift));
    b.insert(b.end(), values.begin(), values.end());
    return b;
}

// Writes bytes gzip-compressed through zlib's own gzip writer.
void write_gz(const std::string& path, const std::vector<uint8_t>& bytes) {
    fs::create_directories(fs::path(path).parent_path());
    gzFile f = gzopen(path.c_str(), "wb");
    REQUIRE(f != nullptr);
    REQUIRE(gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size())) == static_cast<int>(bytes.size()));
    REQUIRE(gzclose(f) == Z_OK);
}

const std::string kFashion = "/usr/share/datasets/fashion-mnist";
}  // namespace

TEST_CASE("data: IDX images and labels read back, raw and gzipped") {
    TempDir tmp;
    const ImageSet s = synthetic_set(6, 1, 4, 3, 10);
    const auto images = idx_bytes({6, 4, 3}, s.pixels);
    std::vector<uint8_t> label_bytes(s.labels.begin(), s.labels.end());
    const auto labels = idx_bytes({6}, label_bytes);
    write_bytes(tmp / "raw/images", images);
    write_bytes(tmp / "raw/labels", labels);
    write_gz(tmp / "gz/images.gz", images);
    write_gz(tmp / "gz/labels.gz", labels);

    const ImageSet raw = load_idx(tmp / "raw/images", tmp / "raw/labels");
    CHECK(same_set(raw, s));
    CHECK(raw.channels == 1);
    CHECK(raw.height == 4);
    CHECK(raw.width == 3);
    CHECK(raw.class_names.size() == 10);
    CHECK(same_set(load_idx(tmp / "gz/images.gz", tmp / "gz/labels.gz"), s));
    // Detection is by content: a gzip file without .gz, raw with .gz.
    fs::rename(tmp / "gz/images.gz", tmp / "gz/images");
    fs::rename(tmp / "raw/labels", tmp / "raw/labels.gz");
    CHECK(same_set(load_idx(tmp / "gz/images", tmp / "raw/labels.gz"), s));

    // Two gzip members one after the other are one stream (as gzip(1) says).
    const auto a = read_bytes(tmp / "gz/images");
    write_gz(tmp / "half1.gz", std::vector<uint8_t>(images.begin(), images.begin() + 10));
    write_gz(tmp / "half2.gz", std::vector<uint8_t>(images.begin() + 10, images.end()));
    auto joined = read_bytes(tmp / "half1.gz");
    const auto h2 = read_bytes(tmp / "half2.gz");
    joined.insert(joined.end(), h2.begin(), h2.end());
    CHECK(gunzip(joined.data(), joined.size(), "joined") == images);
    CHECK(gunzip(a.data(), a.size(), "a") == images);
}

TEST_CASE("data: IDX bad input is refused with the file named") {
    TempDir tmp;
    auto parse = [](const std::vector<uint8_t>& b, const std::string& name) {
        return [b, name] { parse_idx(b.data(), b.size(), name); };
    };
    const std::vector<uint8_t> px(24, 9);
    check_error(parse({0, 0}, "short"), {"short", "too short"});
    check_error(parse({1, 2, 8, 1, 0, 0, 0, 0}, "magic"), {"magic", "not an IDX file"});
    check_error(parse(idx_bytes({2, 3, 4}, px, 0x0D), "float"), {"float", "type 0x0d", "not supported"});
    check_error(parse({0, 0, 8, 0}, "nodims"), {"nodims", "zero dimensions"});
    check_error(parse({0, 0, 8, 3, 0, 0, 0, 2}, "cuthead"), {"cuthead", "truncated IDX header"});
    auto cut = idx_bytes({2, 3, 4}, px);
    cut.pop_back();
    check_error(parse(cut, "cut"), {"cut", "2x3x4", "23", "truncated"});
    auto extra = idx_bytes({2, 3, 4}, px);
    extra.push_back(0);
    check_error(parse(extra, "extra"), {"extra", "extra bytes"});
    // Dimensions whose product overflows 64 bits must not wrap around to "fits".
    check_error(parse(idx_bytes({0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF}, px), "huge"), {"huge", "truncated"});

    // Gzip: truncated and corrupt streams.
    write_gz(tmp / "ok.gz", idx_bytes({2, 3, 4}, px));
    auto gz = read_bytes(tmp / "ok.gz");
    auto gz_cut = std::vector<uint8_t>(gz.begin(), gz.end() - 6);
    check_error(parse(gz_cut, "cut.gz"), {"cut.gz", "truncated gzip"});
    auto gz_bad = gz;
    gz_bad[gz_bad.size() - 5] ^= 0xff;  // the CRC-32 in the trailer
    check_error(parse(gz_bad, "bad.gz"), {"bad.gz", "corrupt gzip"});
    auto gz_trailing = gz;
    gz_trailing.push_back('x');
    check_error(parse(gz_trailing, "trail.gz"), {"trail.gz", "gzip"});

    // Pairs of files that do not belong together.
    const auto images = idx_bytes({2, 3, 4}, px);
    write_bytes(tmp / "images", images);
    write_bytes(tmp / "labels3", idx_bytes({3}, {1, 2, 3}));
    write_bytes(tmp / "labels_bad", idx_bytes({2}, {1, 10}));
    write_bytes(tmp / "labels_2d", idx_bytes({2, 1}, {1, 2}));
    check_error([&] { load_idx(tmp / "images", tmp / "labels3"); }, {"labels3", "3 labels", "2 images"});
    check_error([&] { load_idx(tmp / "images", tmp / "labels_bad"); }, {"labels_bad", "label 1 is 10", "0..9"});
    check_error([&] { load_idx(tmp / "images", tmp / "labels_2d"); }, {"labels_2d", "1 dimension"});
    check_error([&] { load_idx(tmp / "labels3", tmp / "labels3"); }, {"labels3", "3 dimensions"});
    check_error([&] { load_idx(tmp / "nope", tmp / "labels3"); }, {"nope", "cannot open"});
    check_error([&] { load_fashion_mnist(tmp / "nodir", true); }, {"nodir", "no such directory"});
    check_error([&] { load_fashion_mnist(tmp.path.string(), true); }, {"train-images-idx3-ubyte", "neither"});
}

TEST_CASE("data: Fashion-MNIST loads when dataset-fashion-mnist is installed") {
    if (!fs::is_directory(kFashion)) {
        MESSAGE("skipped: " << kFashion << " is not there (apt-get install dataset-fashion-mnist)");
        return;
    }
    const ImageSet test = load_fashion_mnist(kFashion, false);
    CHECK(test.n == 10000);
    CHECK(test.channels == 1);
    CHECK(test.height == 28);
    CHECK(test.width == 28);
    CHECK(test.class_names == fashion_mnist_class_names());
    CHECK(class_counts(test) == std::vector<int64_t>(10, 1000));
    const ImageSet train = load_fashion_mnist(kFashion, true);
    CHECK(train.n == 60000);
    CHECK(class_counts(train) == std::vector<int64_t>(10, 6000));
    // Fashion-MNIST's mean pixel is about 0.286 (the usual normalisation constant).
    double sum = 0;
    for (uint8_t p : train.pixels) sum += p;
    CHECK(sum / (train.pixels.size() * 255.0) == doctest::Approx(0.286).epsilon(0.01));
}
