// The collectives of dist/comm.h, over MPI when the build has it.
#include "dist/comm.h"

#include <cstdio>
#include <algorithm>
#include <cstdlib>

#include "core/error.h"

#if MINNOW_MPI
#include <mpi.h>
#endif

namespace minnow::dist {

namespace {

// MPI counts are int: a long array goes in pieces.
[[maybe_unused]] constexpr int64_t kMaxCount = int64_t{1} << 30;

#if MINNOW_MPI
bool mpi_running() {
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    return initialized && !finalized;
}

void check(int rc, const char* what) {
    if (rc == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(rc, text, &len);
    throw Error(std::string("MPI: ") + what + " failed on rank " + std::to_string(rank()) + ": " +
                std::string(text, static_cast<size_t>(len)));
}

void finalize_at_exit() {
    if (mpi_running()) MPI_Finalize();
}
#endif

}  // namespace

bool built_with_mpi() { return MINNOW_MPI != 0; }

#if MINNOW_MPI
// Whether a launcher (mpirun, mpiexec, srun) started this process: each sets
// its rank in the environment. A process started by hand is a job of one and
// does not start MPI at all (a singleton MPI_Init would spawn a helper
// daemon and keep allocations the leak checker reports).
static bool started_by_launcher() {
    for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"})
        if (std::getenv(v)) return true;
    return false;
}
#endif

void init(int* argc, char*** argv) {
#if MINNOW_MPI
    if (mpi_running() || !started_by_launcher()) return;
    int provided = 0;
    check(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
    // Errors come back as return codes (and become minnow Errors) instead of
    // aborting inside MPI without a word about what minnow was doing.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    std::atexit(finalize_at_exit);
    if (provided < MPI_THREAD_FUNNELED)
        throw Error("MPI: the library gives thread level " + std::to_string(provided) +
                    ", minnow needs MPI_THREAD_FUNNELED (OpenMP threads beside MPI)");
#else
    (void)argc;
    (void)argv;
#endif
}

int rank() {
#if MINNOW_MPI
    if (!mpi_running()) return 0;
    int r = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    return r;
#else
    return 0;
#endif
}

int size() {
#if MINNOW_MPI
    if (!mpi_running()) return 1;
    int s = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &s);
    return s;
#else
    return 1;
#endif
}

int local_size() {
    if (size() == 1) return 1;
#if MINNOW_MPI
    MPI_Comm local;
    check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local),
          "MPI_Comm_split_type");
    int s = 1;
    MPI_Comm_size(local, &s);
    MPI_Comm_free(&local);
    return s;
#else
    return 1;
#endif
}

void allgather(const double* in, int64_t n, double* out) {
    if (size() == 1) {
        std::copy(in, in + n, out);
        return;
    }
#if MINNOW_MPI
    if (n > kMaxCount) throw Error("dist::allgather: " + std::to_string(n) + " values per rank is too many");
    check(MPI_Allgather(in, static_cast<int>(n), MPI_DOUBLE, out, static_cast<int>(n), MPI_DOUBLE, MPI_COMM_WORLD),
          "MPI_Allgather");
#endif
}

void sum_in_rank_order(double* data, int64_t n) {
    const int k = size();
    if (k == 1) return;
    std::vector<double> all(static_cast<size_t>(k * n));
    allgather(data, n, all.data());
    for (int64_t i = 0; i < n; ++i) {
        double s = 0;
        for (int r = 0; r < k; ++r) s += all[static_cast<size_t>(r * n + i)];
        data[i] = s;
    }
}

void allreduce_sum([[maybe_unused]] float* data, [[maybe_unused]] int64_t n) {
    if (size() == 1) return;
#if MINNOW_MPI
    for (int64_t i = 0; i < n; i += kMaxCount)
        check(MPI_Allreduce(MPI_IN_PLACE, data + i, static_cast<int>(std::min(kMaxCount, n - i)), MPI_FLOAT, MPI_SUM,
                            MPI_COMM_WORLD),
              "MPI_Allreduce");
#endif
}

struct AllreduceRequest::Pending {
#if MINNOW_MPI
    std::vector<MPI_Request> requests;  // one per piece of at most kMaxCount floats
#endif
};

AllreduceRequest::AllreduceRequest() = default;
AllreduceRequest::AllreduceRequest(AllreduceRequest&&) noexcept = default;
AllreduceRequest& AllreduceRequest::operator=(AllreduceRequest&& other) noexcept {
    if (this != &other) {
        try {
            wait();
        } catch (const Error&) {  // MPI failed: the job is stopping anyway
        }
        pending_ = std::move(other.pending_);
    }
    return *this;
}
AllreduceRequest::~AllreduceRequest() {
    try {
        wait();
    } catch (const Error&) {
    }
}

AllreduceRequest AllreduceRequest::start(float* data, int64_t n) {
    AllreduceRequest r;
    if (size() == 1) return r;
#if MINNOW_MPI
    r.pending_ = std::make_unique<Pending>();
    for (int64_t i = 0; i < n; i += kMaxCount) {
        MPI_Request q;
        check(MPI_Iallreduce(MPI_IN_PLACE, data + i, static_cast<int>(std::min(kMaxCount, n - i)), MPI_FLOAT, MPI_SUM,
                             MPI_COMM_WORLD, &q),
              "MPI_Iallreduce");
        r.pending_->requests.push_back(q);
    }
#else
    (void)data;
    (void)n;
#endif
    return r;
}

bool AllreduceRequest::test() {
    if (!pending_) return true;
#if MINNOW_MPI
    int done = 0;
    check(MPI_Testall(static_cast<int>(pending_->requests.size()), pending_->requests.data(), &done,
                      MPI_STATUSES_IGNORE),
          "MPI_Testall");
    if (!done) return false;
#endif
    pending_.reset();
    return true;
}

void AllreduceRequest::wait() {
    if (!pending_) return;
#if MINNOW_MPI
    std::unique_ptr<Pending> p = std::move(pending_);
    check(MPI_Waitall(static_cast<int>(p->requests.size()), p->requests.data(), MPI_STATUSES_IGNORE), "MPI_Waitall");
#endif
    pending_.reset();
}

void broadcast([[maybe_unused]] float* data, [[maybe_unused]] int64_t n, [[maybe_unused]] int root) {
    if (size() == 1) return;
#if MINNOW_MPI
    for (int64_t i = 0; i < n; i += kMaxCount)
        check(MPI_Bcast(data + i, static_cast<int>(std::min(kMaxCount, n - i)), MPI_FLOAT, root, MPI_COMM_WORLD),
              "MPI_Bcast");
#endif
}

void broadcast_bytes([[maybe_unused]] std::vector<uint8_t>& data, [[maybe_unused]] int root) {
    if (size() == 1) return;
#if MINNOW_MPI
    int64_t n = static_cast<int64_t>(data.size());
    check(MPI_Bcast(&n, 1, MPI_INT64_T, root, MPI_COMM_WORLD), "MPI_Bcast");
    data.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; i += kMaxCount)
        check(MPI_Bcast(data.data() + i, static_cast<int>(std::min(kMaxCount, n - i)), MPI_BYTE, root,
                        MPI_COMM_WORLD),
              "MPI_Bcast");
#endif
}

void barrier() {
    if (size() == 1) return;
#if MINNOW_MPI
    check(MPI_Barrier(MPI_COMM_WORLD), "MPI_Barrier");
#endif
}

void abort_job(const std::string& message, int exit_code) {
    std::fprintf(stderr, "%s%s\n", size() > 1 ? ("rank " + std::to_string(rank()) + ": ").c_str() : "",
                 message.c_str());
    std::fflush(stderr);
#if MINNOW_MPI
    if (mpi_running() && size() > 1) MPI_Abort(MPI_COMM_WORLD, exit_code);
#endif
    std::exit(exit_code);
}

}  // namespace minnow::dist
