// The entry point shared by every kmim program:
//
//   int main(int argc, char** argv) {
//     return kmim::dist::run_program("kmim_kmeans", argc, argv, run_kmeans);
//   }
//
// run_program initialises MPI (singleton without mpirun), configures the rank-aware logger and
// turns errors into one line on stderr and exit code 1:
// - a UsageError (bad option; every rank sees the same options) is printed once by rank 0 and
//   all ranks exit 1 normally;
// - any other error is printed by the rank that hit it, "kmim_x: error: [rank 1/4] <message>",
//   and with more than one rank the job is aborted (MPI_Abort) so the other ranks do not hang
//   in a collective waiting for it.
#pragma once

#include <functional>
#include <string_view>

#include "kmim/dist/mpi.hpp"

namespace kmim::dist {

using ProgramBody = std::function<int(Communicator& comm, int argc, char** argv)>;

/// Exit code of a program that stopped because of an error.
inline constexpr int kExitError = 1;

int run_program(std::string_view name, int argc, char** argv, const ProgramBody& body);

}  // namespace kmim::dist
