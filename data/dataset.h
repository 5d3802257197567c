// minnow/data/dataset.h: a labelled set of small images, and ways to cut it.
//
// Images stay as bytes (uint8) until a DataLoader turns a batch into floats:
// CIFAR-10's 50,000 training images are 150 MB as bytes and would be 600 MB
// as floats. Each image is stored channel-major (all of R, then G, then B,
// each row-major), the layout of the CIFAR binary release and of a [C,H,W]
// tensor, so a batch is filled without transposing.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace minnow {

struct ImageSet {
    int64_t n = 0, channels = 0, height = 0, width = 0;
    std::vector<uint8_t> pixels;           // n * channels * height * width
    std::vector<int> labels;               // n, each in [0, class_names.size())
    std::vector<std::string> class_names;  // index = label

    int64_t image_size() const { return channels * height * width; }
    int64_t num_classes() const { return static_cast<int64_t>(class_names.size()); }
    const uint8_t* image(int64_t i) const { return pixels.data() + i * image_size(); }
};

// Throws minnow::Error (naming `what`) unless sizes agree and every label is
// in range. Every reader calls it on what it returns.
void check_image_set(const ImageSet& set, const std::string& what);

// How many images each class has.
std::vector<int64_t> class_counts(const ImageSet& set);

// The images at `indices` (repeats allowed), in that order.
ImageSet subset(const ImageSet& set, const std::vector<int64_t>& indices);

// The first n / K images of each of the K classes, in the set's order (the
// first n % K classes get one more). Deterministic: --train-limit uses it so a
// small run still sees every class equally.
ImageSet evenly_across_classes(const ImageSet& set, int64_t n);

// {train, validation}: n_val images picked uniformly at random by a
// minnow::Generator seeded with `seed`; both parts keep the set's order.
std::pair<ImageSet, ImageSet> split_validation(const ImageSet& set, int64_t n_val, uint64_t seed);

// Label l becomes mapping[l]. mapping has one entry per class, each a class
// index. The name of new class c joins the names of the old classes mapped to
// it with '+', so a permutation (the shift experiment swaps 0 and 1) moves the
// names with the images and "airplane" stays the name of the airplanes.
void remap_labels(ImageSet& set, const std::vector<int>& mapping);

}  // namespace minnow
