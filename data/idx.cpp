#include "data/idx.h"

#include <zlib.h>

#include <climits>
#include <cstdio>
#include <filesystem>

#include "core/tensor.h"
#include "data/io.h"

namespace minnow {

namespace fs = std::filesystem;

std::vector<uint8_t> gunzip(const uint8_t* data, size_t size, const std::string& name) {
    constexpr size_t kMaxOut = size_t{1} << 30;
    if (size > UINT_MAX) throw Error(name + ": gzip file too large");
    z_stream zs{};
    // 16 + MAX_WBITS: expect a gzip header and trailer (and check its CRC).
    if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) throw Error(name + ": zlib could not start");
    zs.next_in = const_cast<Bytef*>(data);
    zs.avail_in = static_cast<uInt>(size);
    std::vector<uint8_t> out;
    std::string problem;
    uint8_t buf[1 << 16];
    for (;;) {
        zs.next_out = buf;
        zs.avail_out = sizeof buf;
        const int rc = inflate(&zs, Z_NO_FLUSH);
        out.insert(out.end(), buf, buf + (sizeof buf - zs.avail_out));
        if (out.size() > kMaxOut) {
            problem = "decompresses to more than 1 GiB";
            break;
        }
        if (rc == Z_OK) continue;
        if (rc == Z_STREAM_END) {
            if (zs.avail_in == 0) break;  // done
            inflateReset(&zs);            // another gzip member follows
            continue;
        }
        // Z_BUF_ERROR with room to write means the input ran out mid-stream.
        problem = rc == Z_BUF_ERROR ? "truncated gzip data"
                                    : "corrupt gzip data (" + std::string(zs.msg ? zs.msg : "zlib error") + ")";
        break;
    }
    inflateEnd(&zs);
    if (!problem.empty()) throw Error(name + ": " + problem);
    return out;
}

static std::string hex_byte(uint8_t b) {
    char s[5];
    std::snprintf(s, sizeof s, "0x%02x", b);
    return s;
}

IdxArray parse_idx(const uint8_t* data, size_t size, const std::string& name) {
    if (size >= 2 && data[0] == 0x1f && data[1] == 0x8b) {
        const std::vector<uint8_t> raw = gunzip(data, size, name);
        return parse_idx(raw.data(), raw.size(), name + " (gunzipped)");
    }
    if (size < 4) throw Error(name + ": " + std::to_string(size) + " bytes, too short for an IDX header");
    if (data[0] != 0 || data[1] != 0)
        throw Error(name + ": not an IDX file (its magic number does not start with two zero bytes)");
    if (data[2] != 0x08)
        throw Error(name + ": IDX value type " + hex_byte(data[2]) + " is not supported (only 0x08, unsigned bytes)");
    const size_t ndim = data[3];
    if (ndim == 0) throw Error(name + ": IDX header has zero dimensions");
    if (size < 4 + 4 * ndim)
        throw Error(name + ": truncated IDX header (" + std::to_string(ndim) + " dimensions need " +
                    std::to_string(4 + 4 * ndim) + " bytes)");
    IdxArray out;
    const size_t payload = size - 4 - 4 * ndim;
    // The number of values; it saturates at payload + 1 because the product
    // of up to 255 dimensions could overflow, and a zero dimension makes it 0.
    size_t count = 1;
    bool zero = false;
    for (size_t d = 0; d < ndim; ++d) {
        const uint8_t* p = data + 4 + 4 * d;
        const uint32_t dim = uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | p[3];
        out.dims.push_back(dim);
        zero = zero || dim == 0;
        if (dim != 0 && count <= payload) count = count > payload / dim ? payload + 1 : count * dim;
    }
    if (zero) count = 0;
    if (count != payload) {
        std::string shape;
        for (int64_t d : out.dims) shape += (shape.empty() ? "" : "x") + std::to_string(d);
        throw Error(name + ": header says " + shape + " values but the file holds " + std::to_string(payload) +
                    (count > payload ? " (truncated)" : " (extra bytes at the end)"));
    }
    out.data.assign(data + size - payload, data + size);
    return out;
}

ImageSet idx_image_set(const IdxArray& images, const IdxArray& labels, int num_classes, const std::string& images_name,
                       const std::string& labels_name) {
    if (images.dims.size() != 3)
        throw Error(images_name + ": an images file has 3 dimensions (count, rows, columns), this has " +
                    std::to_string(images.dims.size()));
    if (labels.dims.size() != 1)
        throw Error(labels_name + ": a labels file has 1 dimension, this has " + std::to_string(labels.dims.size()));
    if (images.dims[0] == 0 || images.dims[1] == 0 || images.dims[2] == 0)
        throw Error(images_name + ": holds no pixels (a dimension is zero)");
    if (labels.dims[0] != images.dims[0])
        throw Error(labels_name + ": holds " + std::to_string(labels.dims[0]) + " labels but " + images_name +
                    " holds " + std::to_string(images.dims[0]) + " images");
    if (num_classes < 1 || num_classes > 256) throw Error("load_idx: num_classes must be 1..256");
    ImageSet out;
    out.n = images.dims[0];
    out.channels = 1;
    out.height = images.dims[1];
    out.width = images.dims[2];
    out.pixels = images.data;
    out.labels.resize(out.n);
    for (int64_t i = 0; i < out.n; ++i) {
        if (labels.data[i] >= num_classes)
            throw Error(labels_name + ": label " + std::to_string(i) + " is " + std::to_string(labels.data[i]) +
                        ", expected 0.." + std::to_string(num_classes - 1));
        out.labels[i] = labels.data[i];
    }
    for (int c = 0; c < num_classes; ++c) out.class_names.push_back(std::to_string(c));
    check_image_set(out, images_name);
    return out;
}

ImageSet load_idx(const std::string& images_path, const std::string& labels_path, int num_classes) {
    const std::vector<uint8_t> ib = read_file_bytes(images_path), lb = read_file_bytes(labels_path);
    return idx_image_set(parse_idx(ib.data(), ib.size(), images_path), parse_idx(lb.data(), lb.size(), labels_path),
                         num_classes, images_path, labels_path);
}

const std::vector<std::string>& fashion_mnist_class_names() {
    static const std::vector<std::string> names{"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
    return names;
}

ImageSet load_fashion_mnist(const std::string& dir, bool train) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) throw Error(dir + ": no such directory (expected Fashion-MNIST IDX files)");
    const std::string prefix = train ? "train" : "t10k";
    // The raw name, or the same with .gz.
    auto find = [&](const std::string& stem) {
        const fs::path raw = fs::path(dir) / stem, gz = fs::path(dir) / (stem + ".gz");
        if (fs::exists(raw, ec)) return raw.string();
        if (fs::exists(gz, ec)) return gz.string();
        throw Error(dir + ": has neither " + stem + " nor " + stem + ".gz");
    };
    const std::string images = find(prefix + "-images-idx3-ubyte"), labels = find(prefix + "-labels-idx1-ubyte");
    ImageSet set = load_idx(images, labels, 10);
    set.class_names = fashion_mnist_class_names();
    return set;
}

}  // namespace minnow
