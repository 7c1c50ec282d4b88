#include "synthetic_data.hpp"

#include <cuda_runtime.h>

#include <string>

#include "kmim/core/error.hpp"

namespace kmim_bench {
namespace {

__host__ __device__ inline std::uint32_t hash32(std::uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

__global__ void synthetic_matrix_kernel(float* out, std::size_t rows, std::uint32_t cols, std::uint32_t mix) {
  const std::size_t total = rows * cols;
  for (std::size_t e = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x; e < total;
       e += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const auto row = static_cast<std::uint32_t>(e / cols);
    const auto col = static_cast<std::uint32_t>(e % cols);
    const std::uint32_t h = hash32(hash32(row ^ mix) + col);
    out[e] = static_cast<float>(static_cast<std::int32_t>(h >> 8) - (1 << 23)) * (1.0f / 4194304.0f);
  }
}

}  // namespace

std::uint32_t lowbias32(std::uint32_t x) { return hash32(x); }

void generate_synthetic(float* out, std::size_t rows, std::size_t cols, std::uint32_t seed,
                        const kmim::gpu::Stream& stream) {
  if (rows == 0 || cols == 0) return;
  synthetic_matrix_kernel<<<4096, 256, 0, stream.get()>>>(out, rows, static_cast<std::uint32_t>(cols), hash32(seed));
  const cudaError_t rc = cudaGetLastError();
  if (rc != cudaSuccess) throw kmim::Error(std::string("synthetic data kernel: ") + cudaGetErrorString(rc));
  stream.synchronize();
}

}  // namespace kmim_bench
