// Fuzz target: arbitrary bytes as a CIFAR-10 image folder, root/{train,test}/
// <class>/<file>, written to a fresh folder under /dev/shm (or /tmp) and read
// by load_cifar10 with a cache, as train_cifar reads ../shared/data/cifar10.
// The input is a list of records [kind][class][length: 2 bytes][bytes]:
//   kind & 3 == 0, 1: a file in train/ or test/ of class folder "c<class % 12>"
//               (12 names: a split may have more or fewer than CIFAR's 10),
//               named f<record>.png, or, with kind & 4, .f<record> (hidden);
//               with kind & 8 a folder of that name instead (empty, or holding
//               the file: a class folder with a sub-folder)
//   kind & 3 == 2: after the first load, the cache file is overwritten with
//               these bytes (a damaged cache)
//   kind & 3 == 3: a plain file beside the class folders of train/.
// The train split is loaded twice (the second time from the cache, or after a
// damaged cache is refused), the test split once. Accepted means consistent:
// both loads of train give the same labels and class names, and, with an
// untouched cache, the same pixels.
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include "core/parallel.h"
#include "core/tensor.h"
#include "data/cifar10.h"

namespace fs = std::filesystem;

namespace {
fs::path g_dir;            // this process's scratch folder
std::ostringstream g_sink;  // the cache's warnings (one per damaged cache) go here, not to the terminal

void write(const fs::path& p, const uint8_t* data, size_t n) {
    std::ofstream(p, std::ios::binary).write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(n));
}
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    minnow::set_num_threads(1);  // the fuzzer is one job on a shared machine
    std::string tmpl = (fs::is_directory("/dev/shm") ? "/dev/shm" : "/tmp") + std::string("/fuzz_image_folder.XXXXXX");
    if (!mkdtemp(tmpl.data())) std::abort();
    g_dir = tmpl;
    std::cerr.rdbuf(g_sink.rdbuf());
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    const fs::path root = g_dir / "cifar", cache = g_dir / "cache";
    fs::remove_all(root);
    fs::remove_all(cache);
    fs::create_directories(root / "train");
    fs::create_directories(root / "test");
    fs::create_directories(cache);
    const uint8_t* damaged_cache = nullptr;
    size_t damaged_size = 0;
    size_t record = 0;
    for (size_t at = 0; at + 4 <= size; ++record) {
        const uint8_t kind = data[at], cls = data[at + 1];
        size_t n = size_t{data[at + 2]} << 8 | data[at + 3];
        at += 4;
        n = std::min(n, size - at);
        const uint8_t* bytes = data + at;
        at += n;
        const std::string file = (kind & 4 ? ".f" : "f") + std::to_string(record) + ".png";
        switch (kind & 3) {
            case 0:
            case 1: {
                const fs::path dir = root / (kind & 3 ? "test" : "train") / ("c" + std::to_string(cls % 12));
                fs::create_directories(dir);
                if (kind & 8) {
                    fs::create_directories(dir / file);
                    if (n) write(dir / file / "inner.png", bytes, n);
                } else {
                    write(dir / file, bytes, n);
                }
                break;
            }
            case 2: damaged_cache = bytes, damaged_size = n; break;
            case 3: write(root / "train" / file, bytes, n); break;
        }
    }
    g_sink.str("");

    minnow::ImageSet first;
    try {
        first = minnow::load_cifar10(root.string(), true, cache.string());
    } catch (const minnow::Error&) {
        return 0;  // refused with a message: fine (and nothing to compare)
    }
    if (damaged_cache)
        for (const auto& e : fs::directory_iterator(cache)) write(e.path(), damaged_cache, damaged_size);
    try {
        const minnow::ImageSet again = minnow::load_cifar10(root.string(), true, cache.string());
        if (again.n != first.n || again.labels != first.labels || again.class_names != first.class_names)
            __builtin_trap();
        if (!damaged_cache && again.pixels != first.pixels) __builtin_trap();
    } catch (const minnow::Error&) {
        __builtin_trap();  // the folder read once must read again
    }
    try {
        minnow::load_cifar10(root.string(), false, "");
    } catch (const minnow::Error&) {
    }
    return 0;
}
