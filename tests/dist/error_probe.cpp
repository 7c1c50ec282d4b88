// A tiny kmim program for tests/dist/test_program_errors.sh: it fails on purpose in the ways
// run_program must handle (an error on one rank while the others wait in a collective; a bad
// option seen by every rank).
#include <string>

#include "kmim/core/error.hpp"
#include "kmim/core/options.hpp"
#include "kmim/dist/program.hpp"

namespace {
struct ProbeParams {
  int fail_rank = -1;  // this rank throws kmim::Error; the others wait in a barrier
  int k = 1;
};

int run(kmim::dist::Communicator& comm, int argc, char** argv) {
  ProbeParams p;
  kmim::OptionSet opts("kmim_error_probe", "Fails on purpose (test program).");
  opts.add("fail-rank", p.fail_rank, "rank that throws").add("k", p.k, "must be >= 1");
  if (!opts.parse(argc, argv)) return 0;
  opts.require("k", p.k >= 1, "must be at least 1");
  if (comm.rank() == p.fail_rank)
    throw kmim::FileError("input.h5", "probe failure on purpose");
  comm.barrier();  // without the abort, the other ranks would wait here forever
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  return kmim::dist::run_program("kmim_error_probe", argc, argv, run);
}
