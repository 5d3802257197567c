// CIFAR-10 readers: the binary format (written here and read back exactly),
// single-image decoding, image folders (real images from ../shared), the
// format detection and the cache, and an error naming the file for every
// kind of bad input.
#include <algorithm>
#include <array>

#include "data/cifar10.h"
#include "data/io.h"
#include "test_data_helpers.h"

using namespace minnow;
using namespace minnow::testing;

namespace {
ImageSet cifar_like(int64_t n, uint64_t seed = 3) {
    ImageSet s = synthetic_set(n, 3, 32, 32, 10, seed);
    s.class_names = cifar10_class_names();
    return s;
}

std::vector<int64_t> range(int64_t a, int64_t b) {
    std::vector<int64_t> v;
    for (int64_t i = a; i < b; ++i) v.push_back(i);
    return v;
}

// A record file of `n` records with the given first label byte.
std::vector<uint8_t> records(int64_t n, uint8_t label = 1) {
    std::vector<uint8_t> bytes(n * kCifarRecordBytes, 7);
    for (int64_t i = 0; i < n; ++i) bytes[i * kCifarRecordBytes] = label;
    return bytes;
}

const std::string kRealRoot = shared_path("data/cifar10");
}  // namespace

// ---------------------------------------------------------------- binary format
TEST_CASE("data: CIFAR binary folder written and read back exactly") {
    TempDir tmp;
    const ImageSet all = cifar_like(70);
    // Batches of 10, 12, 14, 16, 8 training records, and 10 test records.
    const std::array<int64_t, 6> cuts{0, 10, 22, 36, 52, 60};
    for (int b = 0; b < 5; ++b)
        write_cifar10_binary(subset(all, range(cuts[b], cuts[b + 1])),
                             tmp / ("bin/data_batch_" + std::to_string(b + 1) + ".bin"));
    write_cifar10_binary(subset(all, range(60, 70)), tmp / "bin/test_batch.bin");

    const ImageSet train = load_cifar10_binary(tmp / "bin", true), test = load_cifar10_binary(tmp / "bin", false);
    CHECK(same_set(train, subset(all, range(0, 60))));
    CHECK(same_set(test, subset(all, range(60, 70))));
    CHECK(train.class_names == cifar10_class_names());
    CHECK(fs::file_size(tmp / "bin/test_batch.bin") == 10 * 3073);

    // load_cifar10 finds the files directly, or in cifar-10-batches-bin/.
    CHECK(same_set(load_cifar10(tmp / "bin", true), train));
    fs::create_directories(tmp / "root");
    fs::rename(tmp / "bin", tmp / "root/cifar-10-batches-bin");
    CHECK(same_set(load_cifar10(tmp / "root", false), test));

    // The memory parser sees the same records.
    const auto bytes = read_bytes(tmp / "root/cifar-10-batches-bin/test_batch.bin");
    CHECK(same_set(parse_cifar10_binary(bytes.data(), bytes.size(), "mem"), test));
    // No stray temporary files from the atomic writes.
    for (const auto& e : fs::directory_iterator(tmp / "root/cifar-10-batches-bin"))
        CHECK(e.path().filename().string().find(".tmp") == std::string::npos);
}

TEST_CASE("data: CIFAR binary bad input is refused with the file named") {
    TempDir tmp;
    const std::string f = tmp / "x.bin";
    write_bytes(f, {});
    check_error([&] { load_cifar10_binary_file(f); }, {f, "empty"});
    auto truncated = records(3);
    truncated.resize(truncated.size() - 100);
    write_bytes(f, truncated);
    check_error([&] { load_cifar10_binary_file(f); }, {f, "not a whole number of 3073-byte records"});
    auto oversized = records(3);
    oversized.push_back(0);
    write_bytes(f, oversized);
    check_error([&] { load_cifar10_binary_file(f); }, {f, "not a whole number"});
    auto bad_label = records(4);
    bad_label[2 * kCifarRecordBytes] = 10;
    write_bytes(f, bad_label);
    check_error([&] { load_cifar10_binary_file(f); }, {f, "record 2 has label 10", "0..9"});
    check_error([&] { parse_cifar10_binary(bad_label.data(), bad_label.size(), "buffer"); }, {"buffer", "label 10"});
    check_error([&] { load_cifar10_binary_file(tmp / "nope.bin"); }, {"nope.bin", "no such file"});
    check_error([&] { load_cifar10_binary_file(tmp.path.string()); }, {"is a directory"});

    // A folder missing one of the five training batches.
    for (int b : {1, 2, 4, 5}) write_bytes(tmp / ("d/data_batch_" + std::to_string(b) + ".bin"), records(2));
    check_error([&] { load_cifar10_binary(tmp / "d", true); }, {"data_batch_3.bin", "no such file"});
    check_error([&] { load_cifar10_binary(tmp / "d", false); }, {"test_batch.bin", "no such file"});
    // An official-name file with more records than the official 10,000.
    write_bytes(tmp / "d/data_batch_3.bin", records(2));
    write_bytes(tmp / "d/test_batch.bin", records(10001));
    check_error([&] { load_cifar10_binary(tmp / "d", false); }, {"test_batch.bin", "10001 records"});
    CHECK(load_cifar10_binary(tmp / "d", true).n == 10);

    // Writing something that is not CIFAR-shaped.
    check_error([&] { write_cifar10_binary(synthetic_set(2, 1, 32, 32, 2), tmp / "w.bin"); }, {"w.bin", "3x32x32"});
    check_error([&] { write_cifar10_binary(synthetic_set(2, 3, 32, 32, 11), tmp / "w.bin"); }, {"w.bin", "11 classes"});
    CHECK(!fs::exists(tmp / "w.bin"));
}

TEST_CASE("data: load_cifar10 names a missing root or split") {
    TempDir tmp;
    check_error([&] { load_cifar10(tmp / "missing", true); }, {"missing", "no such directory"});
    fs::create_directories(tmp / "empty");
    check_error([&] { load_cifar10(tmp / "empty", true); }, {"empty", "neither CIFAR-10 binary files"});
    fs::create_directories(tmp / "only_train/train");
    check_error([&] { load_cifar10(tmp / "only_train", false); }, {"only_train", "no test/"});
    const ImageSet s = synthetic_set(2, 3, 32, 32, 2);
    for (int c = 0; c < 2; ++c) write_bytes(tmp / ("two/train/c" + std::to_string(c) + "/0.png"), encode_image(s, c));
    check_error([&] { load_cifar10(tmp / "two", true); }, {"two/train", "2 class folders"});
}

// ---------------------------------------------------------------- single images
TEST_CASE("data: decode_image reads PNG exactly and JPEG closely, channel-major") {
    const ImageSet s = synthetic_set(1, 3, 8, 6, 1);  // 8 rows, 6 columns: catches h/w swaps
    std::vector<uint8_t> out(s.image_size());
    const auto png = encode_image(s, 0);
    decode_image(png.data(), png.size(), 8, 6, 3, out.data(), "a.png");
    CHECK(out == s.pixels);

    // A smooth image so JPEG at quality 100 stays close.
    ImageSet g = s;
    for (int c = 0; c < 3; ++c)
        for (int y = 0; y < 8; ++y)
            for (int x = 0; x < 6; ++x) g.pixels[(c * 8 + y) * 6 + x] = static_cast<uint8_t>(40 * c + 10 * y + 5 * x);
    const auto jpg = encode_image(g, 0, true);
    decode_image(jpg.data(), jpg.size(), 8, 6, 3, out.data(), "a.jpg");
    int worst = 0;
    for (size_t i = 0; i < out.size(); ++i) worst = std::max(worst, std::abs(int(out[i]) - int(g.pixels[i])));
    CHECK(worst <= 8);

    const ImageSet grey = synthetic_set(1, 1, 5, 5, 1);
    const auto gpng = encode_image(grey, 0);
    std::vector<uint8_t> gout(25);
    decode_image(gpng.data(), gpng.size(), 5, 5, 1, gout.data(), "g.png");
    CHECK(gout == grey.pixels);
}

TEST_CASE("data: decode_image refuses bad images with the name and the problem") {
    std::vector<uint8_t> out(3 * 32 * 32);
    auto decode = [&](const std::vector<uint8_t>& b, const std::string& name) {
        return [&, name] { decode_image(b.data(), b.size(), 32, 32, 3, out.data(), name); };
    };
    const std::vector<uint8_t> empty, text{'h', 'e', 'l', 'l', 'o', ' ', 'w', 'o', 'r', 'l', 'd'};
    check_error(decode(empty, "e.jpg"), {"e.jpg", "empty"});
    check_error(decode(text, "t.jpg"), {"t.jpg", "not a JPEG or PNG"});

    const ImageSet s = synthetic_set(1, 3, 32, 32, 1);
    auto png = encode_image(s, 0);
    auto cut_png = std::vector<uint8_t>(png.begin(), png.begin() + png.size() / 2);
    check_error(decode(cut_png, "cut.png"), {"cut.png", "truncated or corrupt PNG", "claims"});
    auto no_end = std::vector<uint8_t>(png.begin(), png.end() - 12);  // without its IEND chunk
    check_error(decode(no_end, "noend.png"), {"noend.png", "no IEND chunk"});
    // A chunk claiming 2 GB in a tiny file (stb_image would allocate it first).
    auto huge = png;
    huge[33] = 0x7f;  // the first chunk after IHDR (8 + 25 bytes): its length's top byte
    check_error(decode(huge, "huge.png"), {"huge.png", "claims"});
    auto jpg = encode_image(s, 0, true);
    auto cut_jpg = std::vector<uint8_t>(jpg.begin(), jpg.begin() + jpg.size() / 2);
    check_error(decode(cut_jpg, "cut.jpg"), {"cut.jpg", "truncated JPEG"});
    auto header_only = std::vector<uint8_t>(jpg.begin(), jpg.begin() + 4);
    header_only.push_back(0xFF);
    header_only.push_back(0xD9);
    check_error(decode(header_only, "h.jpg"), {"h.jpg", "corrupt JPEG"});
    // A Huffman table claiming more than 256 codes (stb_image 2.27 would write past its tables).
    auto bad_dht = jpg;
    const std::array<uint8_t, 2> dht_marker{0xFF, 0xC4};
    const auto dht = std::search(bad_dht.begin(), bad_dht.end(), dht_marker.begin(), dht_marker.end());
    REQUIRE(dht != bad_dht.end());
    dht[5] = dht[6] = 200;  // after FF C4, length (2 bytes) and class/id: the first code counts
    check_error(decode(bad_dht, "dht.jpg"), {"dht.jpg", "Huffman table with", "at most 256"});
    // A scan or frame naming a table the file does not define (stb_image 2.27
    // would decode with whatever an earlier image left in that memory).
    const std::array<uint8_t, 2> sos_marker{0xFF, 0xDA}, sof_marker{0xFF, 0xC0};
    auto no_ac = jpg;
    const auto sos = std::search(no_ac.begin(), no_ac.end(), sos_marker.begin(), sos_marker.end());
    REQUIRE(sos != no_ac.end());
    sos[6] = 0x03;  // after FF DA, length and count: the first component's id, then DC 0 / AC 3
    check_error(decode(no_ac, "noac.jpg"), {"noac.jpg", "a scan uses Huffman table AC 3, which the file does not define"});
    auto no_quant = jpg;
    const auto sof = std::search(no_quant.begin(), no_quant.end(), sof_marker.begin(), sof_marker.end());
    REQUIRE(sof != no_quant.end());
    sof[12] = 3;  // after FF C0, length, precision, height, width, count, id, sampling: the first table
    check_error(decode(no_quant, "noq.jpg"), {"noq.jpg", "quantization table 3, which the file does not define"});
    std::vector<uint8_t> garbled = png;
    for (size_t i = 40; i < garbled.size() - 20; ++i) garbled[i] ^= 0x5a;
    check_error(decode(garbled, "garbled.png"), {"garbled.png", "corrupt PNG"});

    const ImageSet small = synthetic_set(1, 3, 16, 32, 1), grey = synthetic_set(1, 1, 32, 32, 1),
                   rgba = synthetic_set(1, 4, 32, 32, 1);
    const auto small_png = encode_image(small, 0), grey_png = encode_image(grey, 0), rgba_png = encode_image(rgba, 0);
    check_error(decode(small_png, "small.png"), {"small.png", "32x16", "expected 32x32"});
    check_error(decode(grey_png, "grey.png"), {"grey.png", "1 channel(s), expected 3"});
    check_error(decode(rgba_png, "rgba.png"), {"rgba.png", "4 channel(s), expected 3"});
}

// ---------------------------------------------------------------- image folders
TEST_CASE("data: image folder errors name the folder or file") {
    TempDir tmp;
    const ImageSet s = synthetic_set(4, 3, 32, 32, 2);
    check_error([&] { load_image_folder(tmp / "missing"); }, {"missing", "no such directory"});
    write_bytes(tmp / "file", {1});
    check_error([&] { load_image_folder(tmp / "file"); }, {"file", "not a directory"});
    fs::create_directories(tmp / "noclasses");
    write_bytes(tmp / "noclasses/readme.txt", {'x'});
    check_error([&] { load_image_folder(tmp / "noclasses"); }, {"noclasses", "no class sub-folders"});

    write_bytes(tmp / "f/a/0.png", encode_image(s, 0));
    fs::create_directories(tmp / "f/b");
    check_error([&] { load_image_folder(tmp / "f"); }, {"f/b", "empty class folder"});
    write_bytes(tmp / "f/b/.DS_Store", {0});  // hidden: skipped, so b is still empty
    check_error([&] { load_image_folder(tmp / "f"); }, {"f/b", "empty class folder"});
    write_bytes(tmp / "f/b/0.png", encode_image(s, 1));
    write_bytes(tmp / "f/b/1.png", encode_image(s, 2));
    write_bytes(tmp / "f/README", {'h', 'i'});  // plain files beside the classes: ignored
    const ImageSet ok = load_image_folder(tmp / "f");
    CHECK(ok.n == 3);
    CHECK(ok.labels == std::vector<int>{0, 1, 1});
    CHECK(ok.class_names == std::vector<std::string>{"a", "b"});
    CHECK(std::equal(ok.pixels.begin(), ok.pixels.end(), s.pixels.begin()));

    write_bytes(tmp / "f/b/2.png", {'n', 'o', 't'});
    check_error([&] { load_image_folder(tmp / "f"); }, {"f/b/2.png", "not a JPEG or PNG"});
    write_bytes(tmp / "f/b/2.png", encode_image(synthetic_set(1, 3, 32, 30, 1), 0));
    check_error([&] { load_image_folder(tmp / "f"); }, {"f/b/2.png", "30x32"});
    write_bytes(tmp / "f/b/2.png", encode_image(synthetic_set(1, 1, 32, 32, 1), 0));
    check_error([&] { load_image_folder(tmp / "f"); }, {"f/b/2.png", "1 channel(s)"});
    fs::remove(tmp / "f/b/2.png");
    fs::create_directories(tmp / "f/b/nested");
    check_error([&] { load_image_folder(tmp / "f"); }, {"f/b", "holds a folder 'nested'"});
}

TEST_CASE("data: load_cifar10 refuses image folders whose train/ and test/ classes differ") {
    TempDir tmp;
    const ImageSet s = synthetic_set(1, 3, 32, 32, 1);
    const std::vector<std::string> names = cifar10_class_names();
    for (const std::string split : {"train", "test"})
        for (const std::string& c : names) {
            // test/ spells one class otherwise: every later label would shift by one
            const std::string folder = split == "test" && c == "cat" ? "cats" : c;
            write_bytes(tmp / (split + "/" + folder + "/0.png"), encode_image(s, 0));
        }
    for (bool train : {true, false})
        check_error([&] { load_cifar10(tmp.path.string(), train); }, {"train/ and test/ differ", "'cat' in train/", "test/"});
}

TEST_CASE("data: real CIFAR-10 images: shape, label order, range and channel means") {
    if (!fs::is_directory(kRealRoot + "/train")) {
        MESSAGE("skipped: " << kRealRoot << " is not there");
        return;
    }
    // 50 images per class of each split, spread over the folder, linked into
    // a small folder of the same layout (decoding all 60,000 is for benchmarks).
    TempDir tmp;
    const std::vector<std::string>& names = cifar10_class_names();
    for (const std::string split : {"train", "test"}) {
        const int step = split == "train" ? 100 : 20;
        for (const auto& cls : names)
            for (int i = 0; i < 50; ++i) {
                char file[16];
                std::snprintf(file, sizeof file, "%04d.jpg", i * step);
                fs::create_directories(tmp.path / split / cls);
                fs::create_symlink(fs::path(kRealRoot) / split / cls / file, tmp.path / split / cls / file);
            }
    }
    const std::array<std::array<double, 3>, 2> expected_means{{{0.4913, 0.4821, 0.4465}, {0.4941, 0.4851, 0.4504}}};
    for (int t = 0; t < 2; ++t) {
        const bool train = t == 0;
        const ImageSet s = load_cifar10(tmp.path.string(), train);
        REQUIRE(s.n == 500);
        CHECK(s.channels == 3);
        CHECK(s.height == 32);
        CHECK(s.width == 32);
        CHECK(s.class_names == names);  // sorted folder names = official order
        for (int64_t i = 0; i < s.n; ++i) REQUIRE(s.labels[i] == i / 50);
        const auto [lo, hi] = std::minmax_element(s.pixels.begin(), s.pixels.end());
        CHECK(*lo <= 5);
        CHECK(*hi >= 250);
        for (int c = 0; c < 3; ++c) {
            double sum = 0;
            for (int64_t i = 0; i < s.n; ++i)
                for (int p = 0; p < 1024; ++p) sum += s.image(i)[c * 1024 + p];
            const double mean = sum / (s.n * 1024.0 * 255.0);
            INFO((train ? "train" : "test") << " channel " << c << " mean " << mean);
            CHECK(std::abs(mean - expected_means[t][c]) < 0.02);
        }
        // The same images read one by one are the same bytes.
        std::vector<uint8_t> one(3072);
        const auto bytes = read_bytes(kRealRoot + (train ? "/train" : "/test") + "/horse/0000.jpg");
        decode_image(bytes.data(), bytes.size(), 32, 32, 3, one.data(), "horse/0000.jpg");
        CHECK(std::equal(one.begin(), one.end(), s.image(7 * 50)));
    }
}

TEST_CASE("data: load_cifar10 caches a decoded image folder") {
    TempDir tmp;
    const ImageSet s = cifar_like(40);  // 4 per class
    const auto& names = cifar10_class_names();
    auto fill = [&](const std::string& split) {
        for (int64_t i = 0; i < s.n; ++i)
            write_bytes(tmp / ("root/" + split + "/" + names[s.labels[i]] + "/" + std::to_string(i) + ".png"),
                        encode_image(s, i));
    };
    fill("train");
    fill("test");
    const std::string cache = tmp / "cache";
    const ImageSet first = load_cifar10(tmp / "root", true, cache);
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(cache))
        if (e.path().extension() == ".bin") files.push_back(e.path());
    REQUIRE(files.size() == 1);
    CHECK(files[0].filename().string().rfind("cifar10-train-", 0) == 0);
    CHECK(fs::file_size(files[0]) == 40 * 3073);
    CHECK(fs::exists(files[0].string() + ".crc32"));
    auto cache_files = [&] {
        int64_t n = 0;
        for (const auto& e : fs::directory_iterator(cache)) n += e.path().extension() == ".bin";
        return n;
    };

    // The cached read gives the same set, class names included.
    const ImageSet second = load_cifar10(tmp / "root", true, cache);
    CHECK(same_set(first, second));
    CHECK(second.class_names == names);
    CHECK(same_set(first, load_cifar10(tmp / "root", true)));  // and so does no cache
    // Images sorted by file name within a class: 0, 10, 20, 30 for airplane.
    CHECK(std::equal(first.image(1), first.image(2), s.image(10)));

    // The cache is read, not the images: a cache with other pixels and its
    // checksum shows through.
    ImageSet doctored = second;
    doctored.pixels[0] ^= 0xff;
    write_cifar10_binary(doctored, files[0].string());
    seal_cache_file(files[0].string());
    CHECK(load_cifar10(tmp / "root", true, cache).pixels[0] == doctored.pixels[0]);
    // Without a matching checksum it is not trusted: the images are decoded again.
    doctored.pixels[1] ^= 0xff;
    write_cifar10_binary(doctored, files[0].string());
    CHECK(same_set(load_cifar10(tmp / "root", true, cache), first));
    CHECK(same_set(load_cifar10(tmp / "root", true, cache), first));  // the rewritten cache
    fs::remove(files[0].string() + ".crc32");
    CHECK(same_set(load_cifar10(tmp / "root", true, cache), first));
    CHECK(fs::exists(files[0].string() + ".crc32"));


    // A corrupt cache costs a decode, not a failure, and is rewritten.
    write_bytes(files[0].string(), {1, 2, 3});
    CHECK(same_set(load_cifar10(tmp / "root", true, cache), first));
    CHECK(fs::file_size(files[0]) == 40 * 3073);

    // Another image in the folder changes the key: a second cache file.
    write_bytes(tmp / "root/train/cat/zz.png", encode_image(s, 0));
    const ImageSet grown = load_cifar10(tmp / "root", true, cache);
    CHECK(grown.n == 41);
    const int64_t before = cache_files();
    CHECK(before == 2);

    // The test split has its own cache file.
    CHECK(same_set(load_cifar10(tmp / "root", false, cache), first));
    CHECK(cache_files() == before + 1);

    // An image replaced by another of the same size, its modification time
    // kept (as cp -p does): a new key, so the old cache is not used.
    {
        const fs::path img = tmp / "root/train/airplane/0.png";
        const auto mtime = fs::last_write_time(img);
        const int64_t files_before = cache_files();
        ImageSet other = s;
        for (int64_t k = 0; k < other.image_size(); ++k) other.pixels[k] = static_cast<uint8_t>(255 - s.pixels[k]);
        std::vector<uint8_t> bytes = encode_image(other, 0);
        bytes.resize(fs::file_size(img));  // the same size (PNG ignores trailing bytes after IEND)
        write_bytes(img, bytes);
        fs::last_write_time(img, mtime);
        const ImageSet replaced = load_cifar10(tmp / "root", true, cache);
        CHECK(replaced.pixels[0] == static_cast<uint8_t>(255 - s.pixels[0]));
        CHECK(cache_files() == files_before + 1);
    }
}

TEST_CASE("read_file_bytes: a folder or a device where a file is expected is an error naming it") {
    TempDir tmp;
    check_error([&] { read_file_bytes(tmp.path.string()); }, {tmp.path.string(), "is a directory"});
    check_error([&] { read_file_bytes("/dev/zero"); }, {"/dev/zero", "not a regular file or a pipe"});
}
