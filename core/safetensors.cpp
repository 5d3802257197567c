#include "core/safetensors.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

namespace minnow {

const char* dtype_name(DType d) {
    switch (d) {
        case DType::F32: return "F32";
        case DType::I64: return "I64";
        case DType::F64: return "F64";
        case DType::U8: return "U8";
    }
    return "?";
}

static size_t dtype_size(DType d) { return d == DType::F32 ? 4 : d == DType::U8 ? 1 : 8; }

const TensorEntry* SafetensorsFile::find(const std::string& name) const {
    for (const auto& e : tensors)
        if (e.name == name) return &e;
    return nullptr;
}

const Tensor& SafetensorsFile::get(const std::string& name) const {
    const TensorEntry* e = find(name);
    if (!e) throw Error(path + ": no tensor named '" + name + "'");
    return e->tensor;
}

// The files are little-endian; so is every machine minnow targets (x86-64,
// aarch64), which lets the data be copied as is.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors I/O assumes a little-endian host");

// The format's rules, as the reference implementation (huggingface/safetensors)
// enforces them: a header of at most 100,000,000 bytes holding a JSON object,
// each tensor named once, integer shapes and offsets, and data offsets that,
// sorted, tile the data buffer exactly: the first starts at 0, each starts
// where the previous one ended, the last ends at the end of the file.
static constexpr uint64_t kMaxHeaderBytes = 100000000;
// minnow's own cap: a tensor of at most 2^40 elements (4 TiB of float32).
static constexpr uint64_t kMaxElements = uint64_t{1} << 40;

// nlohmann keeps the last of two equal keys without a word, and its parser
// callback (which could watch the keys) rescans the parent object at the end of
// every entry: quadratic in a header of many tensors. So a second, linear pass
// with a SAX handler that sees only the keys of the top-level object.
struct TopLevelKeys : nlohmann::json_sax<nlohmann::json> {
    int depth = 0;
    std::set<std::string> seen;
    std::string repeated;
    bool key(string_t& k) override {
        if (depth == 1 && !seen.insert(k).second && repeated.empty()) repeated = k;
        return true;
    }
    bool start_object(std::size_t) override { return ++depth, true; }
    bool end_object() override { return --depth, true; }
    bool start_array(std::size_t) override { return ++depth, true; }
    bool end_array() override { return --depth, true; }
    bool null() override { return true; }
    bool boolean(bool) override { return true; }
    bool number_integer(number_integer_t) override { return true; }
    bool number_unsigned(number_unsigned_t) override { return true; }
    bool number_float(number_float_t, const string_t&) override { return true; }
    bool string(string_t&) override { return true; }
    bool binary(binary_t&) override { return true; }
    bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception&) override { return false; }
};

static std::string first_repeated_top_level_key(const uint8_t* begin, const uint8_t* end) {
    TopLevelKeys keys;
    nlohmann::json::sax_parse(begin, end, &keys);
    return keys.repeated;
}


SafetensorsFile parse_safetensors(const uint8_t* bytes, size_t size, const std::string& name) {
    auto fail = [&](const std::string& what) -> Error { return Error(name + ": not a valid safetensors file: " + what); };
    if (size < 8) throw fail("only " + std::to_string(size) + " bytes, shorter than the 8-byte header length");
    uint64_t n = 0;
    std::memcpy(&n, bytes, 8);
    if (n > kMaxHeaderBytes)
        throw fail("header length " + std::to_string(n) + " is over the format's limit of " +
                   std::to_string(kMaxHeaderBytes) + " bytes");
    if (n > size - 8) throw fail("header length " + std::to_string(n) + " runs past the end of the file (" +
                                 std::to_string(size) + " bytes)");
    nlohmann::json header;
    try {
        header = nlohmann::json::parse(bytes + 8, bytes + 8 + n);
    } catch (const std::exception& e) {
        throw fail(std::string("header is not JSON (") + e.what() + ")");
    }
    const std::string duplicate = first_repeated_top_level_key(bytes + 8, bytes + 8 + n);
    if (!duplicate.empty()) throw fail("the header names '" + duplicate + "' twice");
    if (!header.is_object()) throw fail("header is not a JSON object");
    const uint8_t* data = bytes + 8 + n;
    const size_t data_size = size - 8 - n;

    SafetensorsFile file;
    file.path = name;
    std::vector<std::pair<uint64_t, uint64_t>> ranges;
    for (auto it = header.begin(); it != header.end(); ++it) {
        const std::string& key = it.key();
        const auto& info = it.value();
        if (key == "__metadata__") {
            if (!info.is_object()) throw fail("__metadata__ is not an object");
            for (auto m = info.begin(); m != info.end(); ++m) {
                if (!m.value().is_string()) throw fail("metadata value of '" + m.key() + "' is not a string");
                file.metadata[m.key()] = m.value().get<std::string>();
            }
            continue;
        }
        try {
            const std::string dt = info.at("dtype").get<std::string>();
            DType dtype;
            if (dt == "F32") dtype = DType::F32;
            else if (dt == "I64") dtype = DType::I64;
            else if (dt == "F64") dtype = DType::F64;
            else if (dt == "U8") dtype = DType::U8;
            else throw fail("tensor '" + key + "' has dtype " + dt + " (minnow reads F32, F64, I64 and U8)");
            // The product of the dimensions other than 0 is capped too, not only
            // the element count: the strides of [0, 2^62, 2^62] overflow.
            Shape shape;
            uint64_t extent = 1;
            bool empty = false;
            if (!info.at("shape").is_array()) throw fail("tensor '" + key + "': shape is not a list");
            for (const auto& d : info.at("shape")) {
                if (!d.is_number_integer()) throw fail("tensor '" + key + "' has a shape entry that is no integer");
                if (!d.is_number_unsigned()) throw fail("tensor '" + key + "' has a negative dimension " + d.dump());
                const uint64_t v = d.get<uint64_t>();
                if (v > 0 && extent > kMaxElements / v)
                    throw fail("tensor '" + key + "' has a shape of more than 2^40 elements");
                shape.push_back(static_cast<int64_t>(v));
                if (v == 0) empty = true;
                else extent *= v;
            }
            const uint64_t count = empty ? 0 : extent;
            const auto& off = info.at("data_offsets");
            if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
                throw fail("tensor '" + key + "': data_offsets is not [begin, end] of two non-negative integers");
            const uint64_t b = off[0].get<uint64_t>(), e = off[1].get<uint64_t>();
            if (b > e || e > data_size)
                throw fail("tensor '" + key + "': data_offsets [" + std::to_string(b) + ", " + std::to_string(e) +
                           "] outside the " + std::to_string(data_size) + " data bytes (truncated file?)");
            if (e - b != count * dtype_size(dtype))
                throw fail("tensor '" + key + "': shape " + shape_str(shape) + " of " + dt + " needs " +
                           std::to_string(count * dtype_size(dtype)) + " bytes, offsets give " +
                           std::to_string(e - b));
            ranges.push_back({b, e});
            Tensor t = Tensor::empty(shape);
            const uint8_t* src = data + b;
            float* dst = t.data();
            if (dtype == DType::F32) {
                std::memcpy(dst, src, count * 4);
            } else if (dtype == DType::F64) {
                for (uint64_t i = 0; i < count; ++i) {
                    double v;
                    std::memcpy(&v, src + 8 * i, 8);
                    dst[i] = static_cast<float>(v);
                }
            } else if (dtype == DType::U8) {
                for (uint64_t i = 0; i < count; ++i) dst[i] = static_cast<float>(src[i]);
            } else {
                for (uint64_t i = 0; i < count; ++i) {
                    int64_t v;
                    std::memcpy(&v, src + 8 * i, 8);
                    dst[i] = static_cast<float>(v);
                }
            }
            file.tensors.push_back({key, t, dtype});
        } catch (const nlohmann::json::exception& e) {
            throw fail("entry '" + key + "' is malformed (" + e.what() + ")");
        }
    }
    // Sorted by offset, the tensors tile the data: no gap, no overlap, nothing after the last.
    std::vector<size_t> order(ranges.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return ranges[a] < ranges[b]; });
    uint64_t end = 0;
    for (size_t i = 0; i < order.size(); ++i) {
        const auto [b, e] = ranges[order[i]];
        if (b < end)
            throw fail("tensors '" + file.tensors[order[i - 1]].name + "' and '" + file.tensors[order[i]].name +
                       "' overlap");
        if (b > end)
            throw fail("tensor '" + file.tensors[order[i]].name + "' starts at data byte " + std::to_string(b) +
                       ", leaving bytes " + std::to_string(end) + ".." + std::to_string(b) + " unused");
        end = e;
    }
    if (end != data_size)
        throw fail("the tensors cover " + std::to_string(end) + " of the " + std::to_string(data_size) +
                   " data bytes (trailing bytes, or a file of another format)");
    std::vector<TensorEntry> sorted;
    for (size_t i : order) sorted.push_back(std::move(file.tensors[i]));
    file.tensors = std::move(sorted);
    return file;
}

std::optional<uint64_t> parse_whole_number(const std::string& text) {
    // from_chars of an unsigned type takes digits only: no space, no sign.
    uint64_t v = 0;
    const char* end = text.data() + text.size();
    const auto [ptr, ec] = std::from_chars(text.data(), end, v);
    if (ec != std::errc() || ptr != end) return std::nullopt;
    return v;
}

std::string quote_for_error(const std::string& text) {
    return "'" + (text.size() <= 40 ? text : text.substr(0, 40) + "...") + "'";
}

SafetensorsFile load_safetensors(const std::string& path) {
    std::error_code ec;
    if (std::filesystem::exists(path, ec) && !std::filesystem::is_regular_file(path, ec))
        throw Error(path + ": is " + (std::filesystem::is_directory(path, ec) ? "a directory" : "not a regular file") +
                    ", not a safetensors file");
    std::ifstream in(path, std::ios::binary | std::ios::ate);
    if (!in) throw Error(path + ": cannot open (" + std::strerror(errno) + ")");
    const std::streamsize size = in.tellg();
    in.seekg(0);
    std::vector<uint8_t> bytes(static_cast<size_t>(size));
    if (size > 0 && !in.read(reinterpret_cast<char*>(bytes.data()), size))
        throw Error(path + ": read failed");
    return parse_safetensors(bytes.data(), bytes.size(), path);
}

void save_safetensors(const std::string& path, const std::vector<TensorEntry>& tensors,
                      const std::map<std::string, std::string>& metadata) {
    nlohmann::ordered_json header;
    uint64_t off = 0;
    for (const auto& e : tensors) {
        if (e.name == "__metadata__") throw Error(path + ": '__metadata__' is not a tensor name");
        const uint64_t bytes = static_cast<uint64_t>(e.tensor.numel()) * dtype_size(e.dtype);
        header[e.name] = {{"dtype", dtype_name(e.dtype)}, {"shape", e.tensor.shape()}, {"data_offsets", {off, off + bytes}}};
        off += bytes;
    }
    if (!metadata.empty()) header["__metadata__"] = metadata;
    std::string h = header.dump();
    h.append((8 - h.size() % 8) % 8, ' ');  // align the data to 8 bytes, as the reference writer does

    const std::string tmp = path + ".tmp";
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        if (!out) throw Error(tmp + ": cannot open for writing (" + std::strerror(errno) + ")");
        const uint64_t n = h.size();
        out.write(reinterpret_cast<const char*>(&n), 8);
        out.write(h.data(), static_cast<std::streamsize>(h.size()));
        for (const auto& e : tensors) {
            const float* p = e.tensor.data();
            const int64_t count = e.tensor.numel();
            if (e.dtype == DType::F32) {
                out.write(reinterpret_cast<const char*>(p), count * 4);
            } else if (e.dtype == DType::U8) {
                std::vector<uint8_t> bytes(static_cast<size_t>(count));
                for (int64_t i = 0; i < count; ++i) {
                    if (!(p[i] >= 0.f && p[i] <= 255.f && p[i] == std::nearbyint(p[i])))
                        throw Error(path + ": tensor '" + e.name + "' is stored as U8 but holds " +
                                    std::to_string(p[i]));
                    bytes[static_cast<size_t>(i)] = static_cast<uint8_t>(p[i]);
                }
                out.write(reinterpret_cast<const char*>(bytes.data()), count);
            } else {
                for (int64_t i = 0; i < count; ++i) {
                    if (e.dtype == DType::I64) {
                        if (p[i] != std::nearbyint(p[i]))
                            throw Error(path + ": tensor '" + e.name + "' is stored as I64 but holds " +
                                        std::to_string(p[i]));
                        const int64_t v = static_cast<int64_t>(p[i]);
                        out.write(reinterpret_cast<const char*>(&v), 8);
                    } else {
                        const double v = p[i];
                        out.write(reinterpret_cast<const char*>(&v), 8);
                    }
                }
            }
        }
        out.flush();
        if (!out) {
            std::remove(tmp.c_str());
            throw Error(tmp + ": write failed (disk full?)");
        }
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        const std::string why = std::strerror(errno);
        std::remove(tmp.c_str());
        throw Error(path + ": cannot rename the written temp file into place (" + why + ")");
    }
}

}  // namespace minnow
