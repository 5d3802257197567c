#include "core/parallel.h"

#include <cblas.h>
#include <omp.h>

#include <cstdlib>
#include <string>

#include "core/tensor.h"

namespace minnow {

void set_num_threads(int n) {
    if (n < 1 || n > kMaxThreads)
        throw Error("set_num_threads: need 1 to " + std::to_string(kMaxThreads) + " threads, got " + std::to_string(n));
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
}

int get_num_threads() { return omp_get_max_threads(); }

void init_threads_from_env() {
    const char* s = std::getenv("MINNOW_NUM_THREADS");
    if (!s || !*s) return;
    char* end = nullptr;
    const long n = std::strtol(s, &end, 10);
    if (end == s || *end != '\0' || n < 1 || n > kMaxThreads)
        throw Error(std::string("MINNOW_NUM_THREADS must be a whole number from 1 to ") + std::to_string(kMaxThreads) +
                    ", got '" + s + "'");
    set_num_threads(static_cast<int>(n));
}

std::string threading_info() {
    // openblas_get_parallel(): 0 sequential, 1 pthreads, 2 OpenMP.
    const int mode = openblas_get_parallel();
    const char* kind = mode == 2 ? "OpenMP" : mode == 1 ? "pthreads (may oversubscribe)" : "sequential";
    return std::to_string(get_num_threads()) + " threads, OpenBLAS " + kind + " build (" +
           openblas_get_config() + ")";
}

}  // namespace minnow
