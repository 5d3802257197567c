// minnow/data/image_folder.h: a folder of JPEG/PNG images, one sub-folder per class.
//
//     root/<class>/<file>     e.g. cifar10/train/airplane/0000.jpg
//
// Class indices follow the sorted folder names, images the sorted file names
// inside each class, so the same folder always gives the same ImageSet.
// Names starting with '.' are skipped (.DS_Store, editor files); every other
// file in a class folder must be a JPEG or PNG of the expected size and
// channel count, and every class folder must hold at least one: anything else
// is an error naming the file. Plain files beside the class folders (a
// README) are ignored.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "data/dataset.h"

namespace minnow {

// Decodes one JPEG or PNG held in memory into `out` (channels * height *
// width bytes, channel-major). The image must be exactly expected_h x
// expected_w with `channels` channels in the file (a grey JPEG is not
// silently turned into RGB). Errors name `name_for_errors`. This is the whole
// path from bytes to pixels, so it is what the fuzz target calls.
void decode_image(const uint8_t* data, size_t size, int expected_h, int expected_w, int channels, uint8_t* out,
                  const std::string& name_for_errors);

// What a folder holds, without decoding anything: the class names, every
// image path with its label, and a summary used to key caches.
struct ImageFolderListing {
    std::string root;
    std::vector<std::string> class_names;
    std::vector<std::string> files;  // full paths, class by class
    std::vector<int> labels;         // one per file
    uint64_t total_bytes = 0;        // sum of the file sizes
    // FNV-1a (64-bit) over every file's name, size, modification time and
    // status-change time (ns), in listing order: a file replaced by another
    // of the same size with its old modification time kept (cp -p, rsync -t)
    // still changes its status-change time, which no user can set.
    uint64_t signature = 0;
};
ImageFolderListing list_image_folder(const std::string& root);
// The class names alone: root's sub-folders, sorted (label = index).
std::vector<std::string> image_folder_classes(const std::string& root);

// Reads and decodes every image of the folder, in parallel (OpenMP).
ImageSet load_image_folder(const std::string& root, int expected_h = 32, int expected_w = 32, int channels = 3);
ImageSet load_image_folder(const ImageFolderListing& listing, int expected_h = 32, int expected_w = 32,
                           int channels = 3);

}  // namespace minnow
