// main() for GPU test executables. Without a usable CUDA device the executable prints why,
// "SKIPPED: ...", and exits 77, which CTest reports as skipped (never as passed). With one, it
// runs the Boost.Test cases of the executable.
//
// Use: in exactly one source of a GPU test executable,
//   #define BOOST_TEST_MODULE kmim_gpu_xxx
//   #include "gpu_test_main.hpp"
#pragma once

#define BOOST_TEST_NO_MAIN
#define BOOST_TEST_ALTERNATIVE_INIT_API
#include <boost/test/unit_test.hpp>

#include <cstdio>

#include "kmim/gpu/device.hpp"

int main(int argc, char* argv[]) {
  const kmim::gpu::DeviceStatus status = kmim::gpu::query_devices();
  if (status.devices.empty()) {
    std::printf("SKIPPED: no CUDA device available (%s); GPU tests did not run\n",
                status.reason.c_str());
    return 77;
  }
  for (const auto& d : status.devices)
    std::printf("GPU %d: %s (sm_%d%d, %.1f GiB, %d SMs)\n", d.index, d.name.c_str(),
                d.compute_major, d.compute_minor, double(d.memory_bytes) / (1ull << 30),
                d.multiprocessors);
  return boost::unit_test::unit_test_main(&init_unit_test, argc, argv);
}
