// Writes a tiny CIFAR-10 binary folder (data_batch_1..5.bin, test_batch.bin)
// for the apps' tests: 32x32 images whose colour depends on the class, plus
// noise, so a network can learn something in a few steps.
//     make_tiny_cifar DIR [IMAGES_PER_FILE]
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "core/random.h"
#include "data/cifar10.h"

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s DIR [IMAGES_PER_FILE]\n", argv[0]);
        return 2;
    }
    const std::string dir = argv[1];
    const int64_t per_file = argc > 2 ? std::atoll(argv[2]) : 64;
    std::filesystem::create_directories(dir);
    minnow::Generator gen(7);
    auto make = [&](const std::string& name) {
        minnow::ImageSet set;
        set.n = per_file;
        set.channels = 3;
        set.height = set.width = 32;
        set.class_names = minnow::cifar10_class_names();
        set.pixels.resize(per_file * 3072);
        for (int64_t i = 0; i < per_file; ++i) {
            const int label = static_cast<int>(i % 10);
            set.labels.push_back(label);
            for (int c = 0; c < 3; ++c)
                for (int p = 0; p < 1024; ++p) {
                    const int base = 40 + 20 * ((label + 3 * c) % 10);
                    set.pixels[i * 3072 + c * 1024 + p] = static_cast<uint8_t>(base + gen.randint(40));
                }
        }
        minnow::write_cifar10_binary(set, dir + "/" + name);
    };
    for (int b = 1; b <= 5; ++b) make("data_batch_" + std::to_string(b) + ".bin");
    make("test_batch.bin");
    return 0;
}
