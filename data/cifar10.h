// minnow/data/cifar10.h: CIFAR-10 in the two forms it comes in.
//
// 1. The official binary release, cifar-10-batches-bin/: data_batch_1..5.bin
//    (training) and test_batch.bin, each a run of 3073-byte records: one label
//    byte (0..9), then 3072 pixel bytes, channel-major (1024 R, 1024 G, 1024 B,
//    each 32x32 row-major). A file whose size is not a whole number of records
//    is truncated or is not CIFAR; it is refused, as is a label above 9.
// 2. An image folder root/{train,test}/<class>/*.jpg (see image_folder.h),
//    which is what ../shared/data/cifar10 holds. Decoding its 60,000 JPEGs
//    takes seconds; load_cifar10 can cache the result in the binary format so
//    later runs read it in a fraction of a second.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/image_folder.h"

namespace minnow {

constexpr int64_t kCifarRecordBytes = 1 + 3 * 32 * 32;

// airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck.
const std::vector<std::string>& cifar10_class_names();

// The records held in memory; errors name `name_for_errors`.
ImageSet parse_cifar10_binary(const uint8_t* data, size_t size, const std::string& name_for_errors);

// One binary file, or (for a directory) the split's files: data_batch_1..5.bin
// when train, test_batch.bin otherwise. Every file must be present.
ImageSet load_cifar10_binary_file(const std::string& path);
ImageSet load_cifar10_binary(const std::string& dir, bool train);

// Writes `set` (3x32x32 images, labels 0..9) as one binary file, atomically.
void write_cifar10_binary(const ImageSet& set, const std::string& path);

// Either format, detected from what `root` holds:
//   root/data_batch_1.bin or root/test_batch.bin         -> binary
//   root/cifar-10-batches-bin/                          -> binary, in there
//   root/train/ or root/test/ with 10 class folders     -> image folder
// For an image folder and a non-empty cache_dir, the decoded split is kept in
// cache_dir as a binary file whose name hashes the folder's path, file count
// and every file's name, size and times (ImageFolderListing::signature), with
// the file's CRC-32 beside it (NAME.bin.crc32); a later call with the same
// folder reads that instead, once the checksum and the labels match. A cache
// that cannot be written or read, or does not match, only costs time (a
// warning goes to stderr, and the images are decoded again).
ImageSet load_cifar10(const std::string& root, bool train, const std::string& cache_dir = "");
// Writes the checksum load_cifar10 checks before it trusts the cache file at
// `path` (load_cifar10 does so for the caches it writes).
void seal_cache_file(const std::string& path);

}  // namespace minnow
