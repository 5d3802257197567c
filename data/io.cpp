#include "data/io.h"

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>

#include "core/tensor.h"

namespace minnow {

namespace fs = std::filesystem;

namespace {
struct FileCloser {
    void operator()(std::FILE* f) const { std::fclose(f); }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

std::string errno_text() { return std::strerror(errno); }
}  // namespace

std::vector<uint8_t> read_file_bytes(const std::string& path) {
    std::error_code ec;
    if (fs::is_directory(path, ec)) throw Error(path + ": is a directory, expected a file");
    // A pipe is read to its end; a device such as /dev/zero or a terminal
    // would never end (or wait for typing).
    const fs::file_status st = fs::status(path, ec);
    if (!ec && !fs::is_regular_file(st) && !fs::is_fifo(st)) throw Error(path + ": is not a regular file or a pipe");
    File f(std::fopen(path.c_str(), "rb"));
    if (!f) throw Error(path + ": cannot open (" + errno_text() + ")");
    std::vector<uint8_t> bytes;
    // Grow as we read rather than trusting a size taken before the read: the
    // file may be a pipe, or change underneath us.
    uint8_t buf[1 << 16];
    size_t got;
    while ((got = std::fread(buf, 1, sizeof buf, f.get())) > 0) bytes.insert(bytes.end(), buf, buf + got);
    if (std::ferror(f.get())) throw Error(path + ": read error (" + errno_text() + ")");
    return bytes;
}

void write_file_atomically(const std::string& path, const std::function<void(std::FILE*)>& fill) {
    // A name no other thread or process uses: pid + a per-process counter.
    static std::atomic<uint64_t> counter{0};
    const std::string tmp = path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(counter++);
    try {
        const fs::path parent = fs::path(path).parent_path();
        std::error_code ec;
        if (!parent.empty()) fs::create_directories(parent, ec);
        if (ec) throw Error(path + ": cannot create its folder (" + ec.message() + ")");
        File f(std::fopen(tmp.c_str(), "wb"));
        if (!f) throw Error(tmp + ": cannot create (" + errno_text() + ")");
        fill(f.get());
        if (std::fflush(f.get()) != 0 || std::ferror(f.get()))
            throw Error(tmp + ": write error (" + errno_text() + ")");
        if (std::fclose(f.release()) != 0) throw Error(tmp + ": write error on close (" + errno_text() + ")");
        fs::rename(tmp, path, ec);
        if (ec) throw Error(path + ": cannot rename " + tmp + " to it (" + ec.message() + ")");
    } catch (...) {
        std::error_code ignored;
        fs::remove(tmp, ignored);
        throw;
    }
}

void write_text_atomically(const std::string& path, const std::string& text) {
    write_file_atomically(path, [&](std::FILE* f) { std::fwrite(text.data(), 1, text.size(), f); });
}

uint64_t fnv1a(const std::string& s, uint64_t h) {
    for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ULL;
    return h;
}

uint32_t file_crc32(const std::string& path) {
    const std::vector<uint8_t> bytes = read_file_bytes(path);
    uLong crc = crc32(0L, Z_NULL, 0);
    // crc32 takes a uInt length: a file of several GB goes in pieces.
    for (size_t i = 0; i < bytes.size(); i += size_t{1} << 30)
        crc = crc32(crc, bytes.data() + i, static_cast<uInt>(std::min(bytes.size() - i, size_t{1} << 30)));
    return static_cast<uint32_t>(crc);
}

}  // namespace minnow
