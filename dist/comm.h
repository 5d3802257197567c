// minnow/dist/comm.h: the processes of a data-parallel job, and the
// collectives it needs, over MPI.
//
// A job is size() processes ("ranks") 0 .. size()-1, each running the same
// program on its own slice of every batch (`mpirun -np K build/train_cifar
// ...`). Rank 0 is the one that prints and writes files. Everything here is
// a thin layer over MPI (OpenMPI from Debian, found by CMake; -DMINNOW_MPI=ON,
// the default when it is found), so that the rest of minnow names no MPI
// type. In a build without MPI, and in a process started without mpirun,
// the job is one process: rank 0 of 1, and every collective returns its
// input.
//
// Every rank must make the same collective calls in the same order (MPI's
// rule); the results are the same bits on every rank: sums are combined in
// rank order from an allgather, never in the order messages arrive, so
// weights and BatchNorm buffers stay identical across ranks.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace minnow::dist {

// Starts MPI for this process (MPI_Init_thread with MPI_THREAD_FUNNELED:
// OpenMP threads compute, only the main thread communicates) and finishes it
// at exit. Call once, first thing in main; calling it again does nothing.
// Without MPI, before init, or in a process no launcher (mpirun) started,
// the job is one process and MPI is never started.
void init(int* argc, char*** argv);
bool built_with_mpi();

int rank();
int size();
inline bool is_root() { return rank() == 0; }
// The ranks of the job on this machine (MPI_COMM_TYPE_SHARED), for sharing
// its cores between them; 1 in a job of one process.
int local_size();

// data[i] = the sum over ranks of every rank's data[i], in rank order (the
// same bits everywhere). n may differ from call to call but not between
// ranks in one call.
void sum_in_rank_order(double* data, int64_t n);
// out (size() * n values) = every rank's n values, rank 0's first.
void allgather(const double* in, int64_t n, double* out);
// float sums by MPI_Allreduce, for the gradients of data-parallel training.
void allreduce_sum(float* data, int64_t n);
// The same sum without waiting: start() returns at once and the sum runs
// while the caller computes; test() reports whether it is done and, as
// OpenMPI moves a nonblocking collective on only inside MPI calls, is what
// to call now and then meanwhile; wait() returns once `data` holds the sum.
// Every rank starts its requests in the same order (with the blocking
// collectives in between in the same order too), as MPI requires.
class AllreduceRequest {
public:
    AllreduceRequest();
    ~AllreduceRequest();  // waits, if the sum is still running
    AllreduceRequest(AllreduceRequest&&) noexcept;
    AllreduceRequest& operator=(AllreduceRequest&&) noexcept;
    static AllreduceRequest start(float* data, int64_t n);
    bool test();
    void wait();

private:
    struct Pending;
    std::unique_ptr<Pending> pending_;
};
// data = rank root's data, on every rank.
void broadcast(float* data, int64_t n, int root = 0);
// Rank root's bytes on every rank (its size too: the others' `data` may
// hold anything before), e.g. a file only rank 0 can read.
void broadcast_bytes(std::vector<uint8_t>& data, int root = 0);
void barrier();

// Stops every rank of the job: the message is printed on this rank's stderr
// prefixed with its rank, then MPI_Abort (or exit, without MPI).
[[noreturn]] void abort_job(const std::string& message, int exit_code);

}  // namespace minnow::dist
