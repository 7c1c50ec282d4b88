// Device discovery for builds without the CUDA backend (KMIM_CUDA=OFF or no nvcc).
#include "kmim/core/error.hpp"
#include "kmim/gpu/device.hpp"

namespace kmim::gpu {

DeviceStatus query_devices() {
  DeviceStatus status;
  status.compiled = false;
  status.reason = "this kmim build has no CUDA backend (configure with -DKMIM_CUDA=ON)";
  return status;
}

void run_device_self_check(int) {
  throw Error("this kmim build has no CUDA backend (configure with -DKMIM_CUDA=ON)");
}

}  // namespace kmim::gpu
