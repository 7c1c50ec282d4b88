// A downstream project built against an installed kmim through find_package(kmim).
#include <cstdio>

#include "kmim/core/rng.hpp"
#include "kmim/dist/program.hpp"

int main(int argc, char** argv) {
  return kmim::dist::run_program("consumer", argc, argv, [](kmim::dist::Communicator& comm, int, char**) {
    std::printf("consumer rank %d of %d, philox word %u\n", comm.rank(), comm.size(),
                kmim::RandomStream(1, 2).next_u32());
    return 0;
  });
}
