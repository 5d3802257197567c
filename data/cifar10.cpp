#include "data/cifar10.h"

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>

#include "core/tensor.h"
#include "data/io.h"

namespace minnow {

namespace fs = std::filesystem;

const std::vector<std::string>& cifar10_class_names() {
    static const std::vector<std::string> names{"airplane", "automobile", "bird",  "cat",  "deer",
                                                "dog",      "frog",       "horse", "ship", "truck"};
    return names;
}

// ---------------------------------------------------------------- reading
namespace {
constexpr int64_t kPixels = kCifarRecordBytes - 1;
// The official files hold 10,000 records each; more means the file is not one of them.
constexpr int64_t kOfficialRecords = 10000;

ImageSet empty_cifar_set() {
    ImageSet s;
    s.channels = 3;
    s.height = 32;
    s.width = 32;
    s.class_names = cifar10_class_names();
    return s;
}

// The number of records in a file of `size` bytes, or an error naming it.
int64_t record_count(uint64_t size, const std::string& name) {
    if (size == 0) throw Error(name + ": empty file, expected 3073-byte CIFAR-10 records");
    if (size % kCifarRecordBytes != 0)
        throw Error(name + ": " + std::to_string(size) +
                    " bytes is not a whole number of 3073-byte records "
                    "(truncated or extended, or not a CIFAR-10 binary file)");
    return static_cast<int64_t>(size / kCifarRecordBytes);
}

// Appends `count` records; `first` is the number of the first one in its file.
void append_records(const uint8_t* data, int64_t count, int64_t first, const std::string& name, ImageSet& out) {
    for (int64_t r = 0; r < count; ++r) {
        const uint8_t* rec = data + r * kCifarRecordBytes;
        if (rec[0] > 9)
            throw Error(name + ": record " + std::to_string(first + r) + " has label " + std::to_string(rec[0]) +
                        ", expected 0..9 (a CIFAR-100 file, or not CIFAR at all?)");
        out.labels.push_back(rec[0]);
        out.pixels.insert(out.pixels.end(), rec + 1, rec + kCifarRecordBytes);
    }
    out.n += count;
}

uint64_t file_size_or_throw(const std::string& path) {
    std::error_code ec;
    if (!fs::exists(path, ec)) throw Error(path + ": no such file");
    if (fs::is_directory(path, ec)) throw Error(path + ": is a directory, expected a CIFAR-10 binary file");
    const uint64_t size = fs::file_size(path, ec);
    if (ec) throw Error(path + ": cannot read its size (" + ec.message() + ")");
    return size;
}

// Streams a file into `out` a chunk of records at a time, so a 150 MB cache
// file is never held twice in memory.
void append_file(const std::string& path, int64_t records, ImageSet& out) {
    std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(path.c_str(), "rb"), std::fclose);
    if (!f) throw Error(path + ": cannot open");
    constexpr int64_t kChunk = 1024;
    std::vector<uint8_t> buf(kChunk * kCifarRecordBytes);
    for (int64_t done = 0; done < records;) {
        const int64_t want = std::min(kChunk, records - done);
        const size_t bytes = static_cast<size_t>(want * kCifarRecordBytes);
        if (std::fread(buf.data(), 1, bytes, f.get()) != bytes)
            throw Error(path + ": truncated while reading (record " + std::to_string(done) + ")");
        append_records(buf.data(), want, done, path, out);
        done += want;
    }
}
}  // namespace

ImageSet parse_cifar10_binary(const uint8_t* data, size_t size, const std::string& name) {
    const int64_t n = record_count(size, name);
    ImageSet out = empty_cifar_set();
    out.pixels.reserve(n * kPixels);
    out.labels.reserve(n);
    append_records(data, n, 0, name, out);
    check_image_set(out, name);
    return out;
}

ImageSet load_cifar10_binary_file(const std::string& path) {
    const int64_t n = record_count(file_size_or_throw(path), path);
    ImageSet out = empty_cifar_set();
    out.pixels.reserve(n * kPixels);
    out.labels.reserve(n);
    append_file(path, n, out);
    check_image_set(out, path);
    return out;
}

ImageSet load_cifar10_binary(const std::string& dir, bool train) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) throw Error(dir + ": no such directory (expected cifar-10-batches-bin)");
    std::vector<std::string> files;
    if (train)
        for (int i = 1; i <= 5; ++i)
            files.push_back((fs::path(dir) / ("data_batch_" + std::to_string(i) + ".bin")).string());
    else
        files.push_back((fs::path(dir) / "test_batch.bin").string());
    // Check every file before reading any, so a missing batch 5 is reported at once.
    std::vector<int64_t> counts;
    int64_t total = 0;
    for (const auto& f : files) {
        counts.push_back(record_count(file_size_or_throw(f), f));
        if (counts.back() > kOfficialRecords)
            throw Error(f + ": holds " + std::to_string(counts.back()) + " records, more than the " +
                        std::to_string(kOfficialRecords) + " of an official CIFAR-10 batch file");
        total += counts.back();
    }
    ImageSet out = empty_cifar_set();
    out.pixels.reserve(total * kPixels);
    out.labels.reserve(total);
    for (size_t i = 0; i < files.size(); ++i) append_file(files[i], counts[i], out);
    check_image_set(out, dir);
    return out;
}

// ---------------------------------------------------------------- writing
void write_cifar10_binary(const ImageSet& set, const std::string& path) {
    check_image_set(set, path);
    if (set.channels != 3 || set.height != 32 || set.width != 32)
        throw Error(path + ": CIFAR-10 binary holds 3x32x32 images, the set has " + std::to_string(set.channels) + "x" +
                    std::to_string(set.height) + "x" + std::to_string(set.width));
    if (set.num_classes() > 10)
        throw Error(path + ": CIFAR-10 binary holds labels 0..9, the set has " + std::to_string(set.num_classes()) +
                    " classes");
    if (set.n == 0) throw Error(path + ": will not write an empty set (its file could not be read back)");
    write_file_atomically(path, [&](std::FILE* f) {
        for (int64_t i = 0; i < set.n; ++i) {
            const uint8_t label = static_cast<uint8_t>(set.labels[i]);
            std::fwrite(&label, 1, 1, f);
            std::fwrite(set.image(i), 1, kPixels, f);
        }
    });
}

// ---------------------------------------------------------------- either format, with a cache
namespace {
void warn(const std::string& message) { std::cerr << "minnow: warning: " << message << std::endl; }

std::string cache_file_name(const ImageFolderListing& listing, const std::string& split) {
    std::error_code ec;
    fs::path where = fs::weakly_canonical(listing.root, ec);
    if (ec) where = fs::absolute(listing.root);
    const std::string key = "minnow-cifar10-cache-v2\n" + where.string() + "\n" + std::to_string(listing.files.size()) +
                            "\n" + std::to_string(listing.signature);
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(fnv1a(key)));
    return "cifar10-" + split + "-" + hex + ".bin";
}

// The checksum beside a cache file: "crc32 <8 hex digits>\n".
std::string checksum_path(const std::string& cache_file) { return cache_file + ".crc32"; }

std::string crc_text(uint32_t crc) {
    char text[32];
    std::snprintf(text, sizeof text, "crc32 %08x\n", static_cast<unsigned>(crc));
    return text;
}

ImageSet load_folder_cached(const ImageFolderListing& listing, const std::string& split, const std::string& cache_dir) {
    const std::string path = (fs::path(cache_dir) / cache_file_name(listing, split)).string();
    std::error_code ec;
    if (fs::exists(path, ec)) {
        try {
            // A cache whose bytes are not those written (a disk error, a
            // truncated copy, a hand edit) would be silently wrong pixels.
            const std::vector<uint8_t> stored = fs::exists(checksum_path(path), ec)
                                                    ? read_file_bytes(checksum_path(path))
                                                    : std::vector<uint8_t>{};
            if (std::string(stored.begin(), stored.end()) != crc_text(file_crc32(path)))
                throw Error(path + ": its checksum (" + checksum_path(path) + ") is missing or does not match");
            ImageSet set = load_cifar10_binary_file(path);
            // The key matched; the labels must too, or the cache is not this folder's.
            if (set.labels == listing.labels) {
                set.class_names = listing.class_names;
                return set;
            }
            warn(path + ": cached labels do not match " + listing.root + "; decoding the images again");
        } catch (const Error& e) {
            warn(std::string(e.what()) + "; decoding the images again");
        }
    }
    ImageSet set = load_image_folder(listing);
    try {
        write_cifar10_binary(set, path);
        seal_cache_file(path);
    } catch (const Error& e) {
        warn(std::string(e.what()) + "; continuing without a cache");
    }
    return set;
}
}  // namespace

void seal_cache_file(const std::string& path) { write_text_atomically(checksum_path(path), crc_text(file_crc32(path))); }

ImageSet load_cifar10(const std::string& root, bool train, const std::string& cache_dir) {
    const fs::path r(root);
    std::error_code ec;
    if (!fs::is_directory(r, ec))
        throw Error(root + (fs::exists(r, ec) ? ": is a file" : ": no such directory") +
                    " (expected a CIFAR-10 folder: cifar-10-batches-bin, or one with train/ and test/)");
    if (fs::exists(r / "data_batch_1.bin", ec) || fs::exists(r / "test_batch.bin", ec))
        return load_cifar10_binary(root, train);
    if (fs::is_directory(r / "cifar-10-batches-bin", ec))
        return load_cifar10_binary((r / "cifar-10-batches-bin").string(), train);

    const std::string split = train ? "train" : "test", other = train ? "test" : "train";
    const bool has_split = fs::is_directory(r / split, ec), has_other = fs::is_directory(r / other, ec);
    if (!has_split && has_other) throw Error(root + ": has a " + other + "/ split but no " + split + "/");
    if (!has_split)
        throw Error(root +
                    ": holds neither CIFAR-10 binary files (data_batch_1.bin, test_batch.bin, "
                    "cifar-10-batches-bin/) nor train/ and test/ image folders");

    const ImageFolderListing listing = list_image_folder((r / split).string());
    // Labels are indices into the sorted class folders: a test/ whose folders
    // are named otherwise than train/'s would label its images wrongly.
    if (has_other) {
        const std::vector<std::string> others = image_folder_classes((r / other).string());
        if (others != listing.class_names) {
            size_t i = 0;
            while (i < others.size() && i < listing.class_names.size() && others[i] == listing.class_names[i]) ++i;
            auto at = [&](const std::vector<std::string>& v) { return i < v.size() ? "'" + v[i] + "'" : "nothing"; };
            throw Error(root + ": the class folders of train/ and test/ differ (class " + std::to_string(i) + " is " +
                        at(train ? listing.class_names : others) + " in train/ and " +
                        at(train ? others : listing.class_names) + " in test/); both splits need the same classes");
        }
    }
    if (listing.class_names.size() != 10)
        throw Error(listing.root + ": has " + std::to_string(listing.class_names.size()) +
                    " class folders, CIFAR-10 has 10");
    if (cache_dir.empty()) return load_image_folder(listing);
    return load_folder_cached(listing, split, cache_dir);
}

}  // namespace minnow
