// minnow/core/safetensors.h: reading and writing safetensors files.
//
// The format (https://huggingface.co/docs/safetensors): 8 bytes little-endian
// header length N, N bytes of JSON {name: {"dtype", "shape", "data_offsets":
// [begin, end]}, "__metadata__": {string: string}}, then raw little-endian
// data, offsets relative to the end of the header. It is what PyTorch users
// exchange weights in, and ../shared/reference/models.py reads and writes it
// with plain numpy.
//
// minnow tensors are float32; a tensor stored as I64 (PyTorch's
// num_batches_tracked), F64 or U8 (image pixels) is converted on load and can
// be written back so (see TensorEntry::dtype), so files keep PyTorch's dtypes
// both ways. Writing a value the dtype cannot hold exactly (a fraction as
// I64, 300 as U8) is an Error.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace minnow {

enum class DType { F32, I64, F64, U8 };
const char* dtype_name(DType d);

struct TensorEntry {
    std::string name;
    Tensor tensor;
    DType dtype = DType::F32;  // as stored in (or to be written to) the file
};

struct SafetensorsFile {
    std::vector<TensorEntry> tensors;  // in file order of data offsets
    std::map<std::string, std::string> metadata;
    const TensorEntry* find(const std::string& name) const;
    // The tensor called `name`, or an Error naming the file and the tensor.
    const Tensor& get(const std::string& name) const;
    std::string path;
};

// Throws Error (naming the file and the problem) for a missing, truncated or
// corrupt file: a bad header length, bad JSON, unknown dtypes, offsets out of
// range or overlapping, a shape that disagrees with its byte count.
SafetensorsFile load_safetensors(const std::string& path);
SafetensorsFile parse_safetensors(const uint8_t* bytes, size_t size, const std::string& name_for_errors);

// Metadata values are strings. The counts minnow stores there are written by
// std::to_string; this reads one back and refuses anything else (a sign, a
// space, a fraction, an empty string, more than fits in 64 bits): nullopt.
std::optional<uint64_t> parse_whole_number(const std::string& text);
// `text` in single quotes for an error message, cut after 40 characters (a
// corrupt metadata value can be megabytes long).
std::string quote_for_error(const std::string& text);

// Writes atomically: to `path.tmp` first, then renames over `path`, so a crash
// mid-write never leaves a half-written checkpoint in place of the old one.
void save_safetensors(const std::string& path, const std::vector<TensorEntry>& tensors,
                      const std::map<std::string, std::string>& metadata = {});

}  // namespace minnow
