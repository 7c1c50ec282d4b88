// Global Boost.Test fixture of the GPU tests that run under MPI: initialises MPI, and when there
// are more ranks than CUDA devices (NCCL needs one GPU per rank) reports SKIPPED on rank 0,
// finalises MPI and exits 77 on every rank.
#pragma once

#include <mpi.h>

#include <cstdio>
#include <cstdlib>

#include "kmim/dist/mpi.hpp"
#include "kmim/gpu/device.hpp"

struct GpuMpiFixture {
  kmim::dist::MpiSession session;
  GpuMpiFixture() {
    const kmim::dist::Communicator world;
    const std::size_t devices = kmim::gpu::query_devices().devices.size();
    if (static_cast<std::size_t>(world.size()) > devices) {
      if (world.is_root())
        std::printf("SKIPPED: %d ranks but %zu CUDA device(s); NCCL needs one GPU per rank\n", world.size(), devices);
      MPI_Finalize();
      std::exit(77);
    }
  }
};

