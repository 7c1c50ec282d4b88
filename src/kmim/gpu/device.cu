#include "kmim/gpu/device.hpp"

#include <cuda_runtime.h>

#include <string>
#include <vector>

#include "kmim/core/error.hpp"

namespace kmim::gpu {
namespace {

void check_cuda(cudaError_t rc, const char* what) {
  if (rc != cudaSuccess)
    throw Error(std::string(what) + ": " + cudaGetErrorString(rc));
}

__global__ void write_affine(float* out, int n, float a, float b) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = a * static_cast<float>(i) + b;
}

}  // namespace

DeviceStatus query_devices() {
  DeviceStatus status;
  status.compiled = true;
  int count = 0;  // left untouched by the runtime when there is no driver (error 35)
  const cudaError_t rc = cudaGetDeviceCount(&count);
  if (rc != cudaSuccess) {
    status.reason = std::string("CUDA runtime reports: ") + cudaGetErrorString(rc);
    cudaGetLastError();  // clear the sticky error
    return status;
  }
  if (count == 0) status.reason = "the CUDA runtime found no device";
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
    status.devices.push_back({i, p.name, p.major, p.minor, p.totalGlobalMem, p.multiProcessorCount});
  }
  return status;
}

void run_device_self_check(int device) {
  check_cuda(cudaSetDevice(device), "cudaSetDevice");
  constexpr int n = 1 << 20;
  float* d = nullptr;
  check_cuda(cudaMalloc(&d, n * sizeof(float)), "cudaMalloc");
  write_affine<<<(n + 255) / 256, 256>>>(d, n, 0.5f, 3.0f);
  cudaError_t rc = cudaGetLastError();
  std::vector<float> h(n);
  if (rc == cudaSuccess) rc = cudaMemcpy(h.data(), d, n * sizeof(float), cudaMemcpyDeviceToHost);
  cudaFree(d);
  check_cuda(rc, "device self-check kernel");
  for (int i = 0; i < n; ++i)
    if (h[i] != 0.5f * static_cast<float>(i) + 3.0f)
      throw Error("device self-check: kernel output differs from the host computation at element " +
                  std::to_string(i));
}

}  // namespace kmim::gpu
