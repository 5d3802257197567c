#include "data/image_folder.h"

#include <stb_image.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>
#include <memory>

#include "core/tensor.h"
#include "data/io.h"

namespace minnow {

namespace fs = std::filesystem;

// ---------------------------------------------------------------- one image
namespace {
bool is_jpeg(const uint8_t* d, size_t n) { return n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF; }
bool is_png(const uint8_t* d, size_t n) { return n >= 8 && std::memcmp(d, "\x89PNG\r\n\x1a\n", 8) == 0; }

// stb_image decodes a JPEG cut short without complaint (the missing blocks
// come out grey), so look for the end-of-image marker FF D9 ourselves. It
// cannot occur inside the entropy-coded data, where FF is always followed by
// 00 or a restart marker. Some writers append bytes after it, so search.
bool has_jpeg_end(const uint8_t* d, size_t n) {
    for (size_t i = n; i >= 2; --i)
        if (d[i - 2] == 0xFF && d[i - 1] == 0xD9) return true;
    return false;
}

// stb_image 2.27 (Debian 12's libstb) trusts the 16 code counts of a JPEG
// Huffman table (DHT segment): counts adding up to more than 256 make it
// write past its tables (our fuzzer found this; upstream 2.28 checks it). It
// also does not zero its decoder state: a scan that uses a Huffman or
// quantization table the file never defined reads whatever an earlier decode
// left in that memory, and an index computed from it can point outside the
// table (our fuzzer found an index of -88). So we walk every segment
// stb_image would read, across all scans of a progressive JPEG, refuse such a
// Huffman table, and refuse a scan that uses a table not defined before it.
// The walk reads segments the way stb_image does (bytes past the end count as
// 0) and, like it, skips bytes that are not a marker. Anything else malformed
// is left to stb_image.
bool jpeg_tables_ok(const uint8_t* d, size_t n, std::string& why) {
    auto byte = [&](size_t i) -> size_t { return i < n ? d[i] : 0; };
    bool dc[4] = {}, ac[4] = {}, quant[4] = {};  // defined so far
    bool progressive = false;
    size_t frame_ids[4] = {}, frame_quant[4] = {}, frame_components = 0;  // from the frame header (SOF)
    size_t pos = 2;  // after SOI
    while (pos + 1 < n) {
        const uint8_t marker = d[pos + 1];
        if (d[pos] != 0xFF || marker == 0xFF) {  // not a marker yet, or a fill byte
            ++pos;
            continue;
        }
        if (marker == 0x00 || marker == 0x01 || (marker >= 0xD0 && marker <= 0xD8)) {
            pos += 2;  // markers without a length
            continue;
        }
        if (marker == 0xD9) return true;  // end of image
        const size_t len = byte(pos + 2) << 8 | byte(pos + 3);
        if (marker == 0xC4)
            for (long left = static_cast<long>(len) - 2, t = pos + 4; left > 0;) {  // one or more tables
                size_t codes = 0;
                for (int i = 1; i <= 16; ++i) codes += byte(t + i);
                if (codes > 256) {
                    why = "Huffman table with " + std::to_string(codes) + " codes (at most 256)";
                    return false;
                }
                const size_t cls = byte(t) >> 4, id = byte(t) & 15;
                if (id < 4 && cls < 2) (cls ? ac : dc)[id] = true;  // other ids: stb_image refuses them
                left -= 17 + static_cast<long>(codes);
                t += 17 + static_cast<long>(codes);
            }
        if (marker == 0xDB)
            for (long left = static_cast<long>(len) - 2, t = pos + 4; left > 0;) {  // one or more tables
                const bool sixteen_bit = byte(t) >> 4 != 0;
                quant[byte(t) & 3] = true;
                left -= sixteen_bit ? 129 : 65;
                t += sixteen_bit ? 129 : 65;
            }
        if (marker == 0xC0 || marker == 0xC1 || marker == 0xC2) {  // the frames stb_image decodes
            progressive = marker == 0xC2;
            frame_components = std::min<size_t>(byte(pos + 9), 4);
            for (size_t i = 0; i < frame_components; ++i) {
                frame_ids[i] = byte(pos + 10 + 3 * i);
                frame_quant[i] = byte(pos + 12 + 3 * i) & 3;
            }
        }
        if (marker == 0xDA) {  // start of scan: the tables its components use must be there
            const size_t count = byte(pos + 4), first_coefficient = byte(pos + 5 + 2 * count),
                         refining = byte(pos + 7 + 2 * count) >> 4;
            for (size_t i = 0; i < count && i < 4; ++i) {
                const size_t id = byte(pos + 5 + 2 * i), dc_id = byte(pos + 6 + 2 * i) >> 4,
                             ac_id = byte(pos + 6 + 2 * i) & 15;
                if (dc_id > 3 || ac_id > 3) continue;  // stb_image refuses these itself
                // What stb_image decodes with: both tables in a sequential scan; in a
                // progressive one the DC table in a first DC scan, the AC table in an AC scan.
                const bool uses_dc = !progressive || (first_coefficient == 0 && refining == 0);
                const bool uses_ac = !progressive || first_coefficient != 0;
                if ((uses_dc && !dc[dc_id]) || (uses_ac && !ac[ac_id])) {
                    why = "a scan uses Huffman table " + std::string(uses_dc && !dc[dc_id] ? "DC " : "AC ") +
                          std::to_string(uses_dc && !dc[dc_id] ? dc_id : ac_id) + ", which the file does not define";
                    return false;
                }
                for (size_t c = 0; c < frame_components; ++c)
                    if (frame_ids[c] == id && !quant[frame_quant[c]]) {
                        why = "a scan uses quantization table " + std::to_string(frame_quant[c]) +
                              ", which the file does not define";
                        return false;
                    }
            }
        }
        pos += 2 + len;
        if (marker == 0xDA)  // start of scan: skip its entropy-coded data
            while (pos + 1 < n && !(d[pos] == 0xFF && d[pos + 1] != 0x00 && (d[pos + 1] & 0xF8) != 0xD0)) ++pos;
    }
    return true;
}

// stb_image grows its buffer to a PNG chunk's declared length before
// checking the bytes are there, so a 100-byte file claiming a 2 GB chunk costs
// 2 GB (our fuzzer found this). Every chunk must fit in the file, and the
// file must reach its IEND chunk; this also names a truncated PNG as such.
bool png_chunks_ok(const uint8_t* d, size_t n, std::string& why) {
    for (size_t pos = 8; pos + 12 <= n;) {  // length, type, data, CRC
        const size_t len = size_t{d[pos]} << 24 | size_t{d[pos + 1]} << 16 | size_t{d[pos + 2]} << 8 | d[pos + 3];
        if (len > n - pos - 12) {
            why = "a chunk claims " + std::to_string(len) + " bytes, the file has " + std::to_string(n - pos - 12) +
                  " left";
            return false;
        }
        if (std::memcmp(d + pos + 4, "IEND", 4) == 0) return true;
        pos += 12 + len;
    }
    why = "no IEND chunk";
    return false;
}

std::string stb_reason() {
    const char* r = stbi_failure_reason();  // thread-local in stb_image
    return r ? r : "unknown";
}
}  // namespace

void decode_image(const uint8_t* data, size_t size, int expected_h, int expected_w, int channels, uint8_t* out,
                  const std::string& name) {
    if (expected_h <= 0 || expected_w <= 0 || channels < 1 || channels > 4)
        throw Error(name + ": cannot decode to " + std::to_string(channels) + "x" + std::to_string(expected_h) + "x" +
                    std::to_string(expected_w) + " (channels must be 1..4, sizes positive)");
    if (size == 0) throw Error(name + ": empty file, expected a JPEG or PNG image");
    const bool jpeg = is_jpeg(data, size);
    if (!jpeg && !is_png(data, size)) throw Error(name + ": not a JPEG or PNG image (unrecognised first bytes)");
    const char* kind = jpeg ? "JPEG" : "PNG";
    if (size > static_cast<size_t>(INT_MAX)) throw Error(name + ": " + kind + " file too large to decode");
    if (jpeg && !has_jpeg_end(data, size)) throw Error(name + ": truncated JPEG (no end-of-image marker)");
    std::string why;
    if (jpeg && !jpeg_tables_ok(data, size, why)) throw Error(name + ": corrupt JPEG (" + why + ")");
    if (!jpeg && !png_chunks_ok(data, size, why)) throw Error(name + ": truncated or corrupt PNG (" + why + ")");

    // Check the header before decoding, so a corrupt header claiming a huge
    // image is refused before stb_image allocates for it.
    int w = 0, h = 0, comp = 0;
    if (!stbi_info_from_memory(data, static_cast<int>(size), &w, &h, &comp))
        throw Error(name + ": corrupt " + kind + " header");  // (stb's reason here is just "unknown image type")
    if (w != expected_w || h != expected_h)
        throw Error(name + ": image is " + std::to_string(w) + "x" + std::to_string(h) +
                    " (width x height), expected " + std::to_string(expected_w) + "x" + std::to_string(expected_h));
    if (comp != channels)
        throw Error(name + ": image has " + std::to_string(comp) + " channel(s), expected " + std::to_string(channels));

    std::unique_ptr<stbi_uc, void (*)(void*)> px(
        stbi_load_from_memory(data, static_cast<int>(size), &w, &h, &comp, channels), stbi_image_free);
    if (!px) throw Error(name + ": corrupt " + kind + " data (stb_image: " + stb_reason() + ")");
    if (w != expected_w || h != expected_h)  // the header said otherwise; be safe anyway
        throw Error(name + ": decoded to " + std::to_string(w) + "x" + std::to_string(h) + ", expected " +
                    std::to_string(expected_w) + "x" + std::to_string(expected_h));
    // stb_image gives interleaved rows (HWC); we store channel-major (CHW).
    const int64_t plane = int64_t{w} * h;
    for (int c = 0; c < channels; ++c)
        for (int64_t p = 0; p < plane; ++p) out[c * plane + p] = px.get()[p * channels + c];
}

// ---------------------------------------------------------------- a folder
namespace {
struct Entry {
    std::string name;
    bool is_dir;
};

// The non-hidden entries of a directory sorted by name; errors name it.
// Sorting plain strings, not directory_entry objects, keeps listing CIFAR's
// 50,000 files quick.
std::vector<Entry> sorted_entries(const std::string& dir) {
    std::error_code ec;
    std::vector<Entry> entries;
    fs::directory_iterator it(dir, ec), end;
    for (; !ec && it != end; it.increment(ec)) {
        std::string name = it->path().filename().string();
        if (name[0] != '.') entries.push_back({std::move(name), it->is_directory(ec)});
    }
    if (ec) throw Error(dir + ": cannot list (" + ec.message() + ")");
    std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.name < b.name; });
    return entries;
}
}  // namespace

std::vector<std::string> image_folder_classes(const std::string& root) {
    std::error_code ec;
    if (!fs::exists(root, ec)) throw Error(root + ": no such directory");
    if (!fs::is_directory(root, ec)) throw Error(root + ": is not a directory");
    std::vector<std::string> names;
    for (const auto& e : sorted_entries(root))
        if (e.is_dir) names.push_back(e.name);  // plain files beside classes: ignored
    if (names.empty()) throw Error(root + ": no class sub-folders (expected " + root + "/<class>/<image>)");
    return names;
}

ImageFolderListing list_image_folder(const std::string& root) {
    ImageFolderListing out;
    out.root = root;
    out.class_names = image_folder_classes(root);
    out.signature = fnv1a("");

    for (size_t label = 0; label < out.class_names.size(); ++label) {
        const std::string dir = (fs::path(root) / out.class_names[label]).string();
        const std::vector<Entry> entries = sorted_entries(dir);
        if (entries.empty()) throw Error(dir + ": empty class folder (no images)");
        for (const auto& e : entries) {
            if (e.is_dir)
                throw Error(dir + ": holds a folder '" + e.name + "', expected only images (is " + root +
                            " the folder of one split, whose sub-folders are the classes?)");
            const std::string file = dir + "/" + e.name;
            // One stat() for size and time (std::filesystem would make two).
            struct stat st;
            if (::stat(file.c_str(), &st) != 0) throw Error(file + ": cannot stat (" + std::strerror(errno) + ")");
            out.files.push_back(file);
            out.labels.push_back(static_cast<int>(label));
            out.total_bytes += static_cast<uint64_t>(st.st_size);
            const auto ns = [](const timespec& t) { return std::to_string(int64_t{t.tv_sec} * 1000000000 + t.tv_nsec); };
            out.signature = fnv1a(file + "\t" + std::to_string(st.st_size) + "\t" + ns(st.st_mtim) + "\t" +
                                      ns(st.st_ctim) + "\n",
                                  out.signature);
        }
    }
    return out;
}

ImageSet load_image_folder(const ImageFolderListing& listing, int expected_h, int expected_w, int channels) {
    ImageSet out;
    out.n = static_cast<int64_t>(listing.files.size());
    out.channels = channels;
    out.height = expected_h;
    out.width = expected_w;
    out.class_names = listing.class_names;
    out.labels = listing.labels;
    out.pixels.resize(out.n * out.image_size());

    // Exceptions must not leave an OpenMP region: each failure is recorded and
    // the one with the lowest index rethrown, so the message does not depend
    // on thread timing. Images after a known failure are skipped.
    std::atomic<int64_t> first_bad{out.n};
    std::string first_message;
#pragma omp parallel for schedule(dynamic, 64)
    for (int64_t i = 0; i < out.n; ++i) {
        if (i > first_bad.load(std::memory_order_relaxed)) continue;
        try {
            const std::vector<uint8_t> bytes = read_file_bytes(listing.files[i]);
            decode_image(bytes.data(), bytes.size(), expected_h, expected_w, channels,
                         out.pixels.data() + i * out.image_size(), listing.files[i]);
        } catch (const std::exception& e) {
#pragma omp critical(minnow_image_folder_error)
            if (i < first_bad.load()) {
                first_bad = i;
                first_message = e.what();
            }
        }
    }
    if (first_bad < out.n) throw Error(first_message);
    check_image_set(out, listing.root);
    return out;
}

ImageSet load_image_folder(const std::string& root, int expected_h, int expected_w, int channels) {
    return load_image_folder(list_image_folder(root), expected_h, expected_w, channels);
}

}  // namespace minnow
