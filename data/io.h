// minnow/data/io.h: whole-file reads and atomic writes for the dataset readers.
//
// Every error names the file, so a user who pointed a reader at the wrong
// place learns which path was wrong and why.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

namespace minnow {

// The bytes of a file. Throws minnow::Error naming the path if it is missing,
// a directory, or cannot be read completely.
std::vector<uint8_t> read_file_bytes(const std::string& path);

// Writes a file (creating its folder if needed) through a temporary beside it
// and a rename, so a reader (or a second process filling the same cache)
// never sees half a file. `fill` is called with the open FILE* and writes the
// contents; write errors (a full disk) are caught here and name the path.
void write_file_atomically(const std::string& path, const std::function<void(std::FILE*)>& fill);

// write_file_atomically of a whole text.
void write_text_atomically(const std::string& path, const std::string& text);

// FNV-1a, 64-bit, of s, continuing from h (fnv1a("") is the start): a hash
// that is the same in every build (std::hash need not be), for cache keys.
uint64_t fnv1a(const std::string& s, uint64_t h = 0xcbf29ce484222325ULL);
// zlib's CRC-32 of a file's bytes (an Error naming it if it cannot be read).
uint32_t file_crc32(const std::string& path);

}  // namespace minnow
