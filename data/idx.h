// minnow/data/idx.h: the IDX format of MNIST and Fashion-MNIST.
//
// An IDX file is a 4-byte magic number (0, 0, a type code, the number of
// dimensions), each dimension as a big-endian uint32, then the values. Images
// are 3-d [count, rows, columns] and labels 1-d [count], both unsigned bytes
// (type 0x08), the only type read here. Files may be gzip-compressed, as they
// are distributed; the reader looks at the first two bytes (1f 8b), not the name.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "data/dataset.h"

namespace minnow {

struct IdxArray {
    std::vector<int64_t> dims;
    std::vector<uint8_t> data;  // product(dims) bytes
};

// Decompresses gzip data held in memory (concatenated members included).
// Refuses output above 1 GiB: no IDX dataset is that large, a gzip bomb is.
std::vector<uint8_t> gunzip(const uint8_t* data, size_t size, const std::string& name_for_errors);

// One IDX array, raw or gzipped. The header must be valid and the file exactly
// as long as its dimensions say.
IdxArray parse_idx(const uint8_t* data, size_t size, const std::string& name_for_errors);

// Pairs an images array with a labels array: counts must agree and every label
// be below num_classes. Class names are "0", "1", ... .
ImageSet idx_image_set(const IdxArray& images, const IdxArray& labels, int num_classes, const std::string& images_name,
                       const std::string& labels_name);

ImageSet load_idx(const std::string& images_path, const std::string& labels_path, int num_classes = 10);

// T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot.
const std::vector<std::string>& fashion_mnist_class_names();

// dir holds {train,t10k}-{images-idx3,labels-idx1}-ubyte, each raw or with .gz
// (Debian's dataset-fashion-mnist installs /usr/share/datasets/fashion-mnist).
ImageSet load_fashion_mnist(const std::string& dir, bool train);

}  // namespace minnow
