// The tests that need several processes: run as
//     mpirun -np 2 build/tests/minnow_mpi_tests
// (ctest does, test mpi_2_ranks). Every rank runs every test case; a failure
// on any rank fails mpirun.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include "dist/comm.h"

int main(int argc, char** argv) {
    minnow::dist::init(&argc, &argv);
    doctest::Context context(argc, argv);
    const int failed = context.run();
    // Every rank reports: one that passed while another failed still exits 0,
    // and mpirun returns the first non-zero code.
    return failed ? 1 : 0;
}
