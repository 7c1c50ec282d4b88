// CUDA device discovery. Usable from any translation unit (no CUDA headers here), and present
// in every build: without the CUDA backend it reports that CUDA was not compiled in.
#pragma once

#include <string>
#include <vector>

namespace kmim::gpu {

struct DeviceInfo {
  int index = 0;
  std::string name;
  int compute_major = 0;
  int compute_minor = 0;
  std::size_t memory_bytes = 0;
  int multiprocessors = 0;
};

struct DeviceStatus {
  bool compiled = false;            ///< the CUDA backend is part of this build
  std::vector<DeviceInfo> devices;  ///< usable devices (empty without a GPU)
  std::string reason;               ///< why there is no device, when there is none
};

/// Queries the CUDA runtime. Never throws: "no GPU" is a status, not an error.
DeviceStatus query_devices();

/// Runs a tiny kernel on `device` and checks its output on the host: proves the driver,
/// runtime and our sm_XX code run there. Throws kmim::Error with the CUDA message on failure.
void run_device_self_check(int device);

}  // namespace kmim::gpu
