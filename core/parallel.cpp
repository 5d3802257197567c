#include "core/parallel.h"

#include <cstdlib>
#include <string>

#include "core/tensor.h"
#include "kernels/gemm.h"

#if MINNOW_BLAS
#include <cblas.h>
#endif

namespace minnow {

void set_num_threads(int n) {
    if (n < 1 || n > kMaxThreads)
        throw Error("set_num_threads: need 1 to " + std::to_string(kMaxThreads) + " threads, got " + std::to_string(n));
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
#if MINNOW_BLAS
    openblas_set_num_threads(n);
#endif
}

int get_num_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;  // without OpenMP every region runs on the calling thread
#endif
}

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
#ifdef _OPENMP
    std::string threads = std::to_string(get_num_threads()) + " threads";
#else
    std::string threads = "1 thread (built without OpenMP)";
#endif
#if MINNOW_BLAS
    // openblas_get_parallel(): 0 sequential, 1 pthreads, 2 OpenMP.
    const int mode = openblas_get_parallel();
    const char* kind = mode == 2 ? "OpenMP" : mode == 1 ? "pthreads (may oversubscribe)" : "sequential";
    return threads + ", OpenBLAS " + kind + " build (" + openblas_get_config() + ")";
#else
    return threads + ", " + sgemm_name() + " GEMM (built without OpenBLAS)";
#endif
}

}  // namespace minnow
