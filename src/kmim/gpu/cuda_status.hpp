// Return-code checks for the CUDA runtime and cuBLAS, for the backend's own sources only (this
// header includes CUDA headers; the public kmim/gpu headers do not). Every call's status is
// checked and every kernel launch is followed by check_launch: an exit code of 0 proves nothing
// about asynchronous work, and a failure must name the step that failed.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <string>

#include "kmim/core/error.hpp"

namespace kmim::gpu::detail {

inline void check_cuda(cudaError_t rc, const char* what) {
  if (rc != cudaSuccess)
    throw Error(std::string("CUDA: ") + what + ": " + cudaGetErrorString(rc));
}

/// After a <<<...>>> launch: reports bad launch configurations at once (execution errors surface
/// at the next synchronising call, which is checked too).
inline void check_launch(const char* kernel) { check_cuda(cudaGetLastError(), kernel); }

inline void check_cublas(cublasStatus_t rc, const char* what) {
  if (rc != CUBLAS_STATUS_SUCCESS)
    throw Error(std::string("cuBLAS: ") + what + ": " + cublasGetStatusString(rc));
}

/// Grid size for `items` work items of `per_block` each, capped so that grid.x stays legal;
/// kernels launched with it loop (grid-stride) over what the cap leaves.
inline unsigned grid_for(std::size_t items, unsigned per_block, unsigned cap = 1u << 20) {
  const std::size_t blocks = (items + per_block - 1) / per_block;
  return static_cast<unsigned>(blocks == 0 ? 1 : (blocks < cap ? blocks : cap));
}

}  // namespace kmim::gpu::detail
