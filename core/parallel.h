// minnow/core/parallel.h: one switch for the number of threads.
//
// minnow's kernels use OpenMP, and it links the OpenMP build of OpenBLAS
// (Debian's libopenblas0-openmp), which runs its GEMMs on the same OpenMP
// thread pool: the two never oversubscribe the cores. A GEMM called from
// inside one of our parallel regions runs single-threaded in that thread.
//
// The count comes from, in order: set_num_threads(), the environment variable
// MINNOW_NUM_THREADS, and otherwise every core.
#pragma once

#include <cstdint>
#include <string>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace minnow {

// Below this many elements an elementwise loop is not worth waking the
// OpenMP threads for (`#pragma omp parallel for if (n > kParallelGrain)`).
constexpr int64_t kParallelGrain = 1 << 15;

// The most threads minnow starts: far beyond the cores of the machines it runs
// on, and below the point where the threads' stacks alone exhaust memory.
constexpr int kMaxThreads = 256;
void set_num_threads(int n);  // 1 <= n <= kMaxThreads; also sets OpenBLAS's count
int get_num_threads();
// Applies MINNOW_NUM_THREADS if set (every minnow app calls it at start;
// a malformed value is an error). Without it, OpenMP's defaults hold.
void init_threads_from_env();
// One line for logs: thread count and the OpenBLAS build in use.
std::string threading_info();

// Inside a parallel region: this thread's index and the region's number of
// threads (0 and 1 outside one). A build without OpenMP (the WebAssembly page,
// -DMINNOW_OPENMP=OFF) ignores the `#pragma omp` lines and runs every region
// on the one thread it has.
#ifdef _OPENMP
inline int thread_index() { return omp_get_thread_num(); }
inline int team_size() { return omp_get_num_threads(); }
#else
inline int thread_index() { return 0; }
inline int team_size() { return 1; }
#endif

}  // namespace minnow
