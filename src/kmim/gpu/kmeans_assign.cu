#include "kmim/gpu/kmeans_assign.hpp"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <string>

#include "kmim/gpu/cuda_status.hpp"

namespace kmim::gpu {
namespace {

using detail::check_cublas;
using detail::check_cuda;
using detail::check_launch;

constexpr int kWarp = 32;
constexpr int kRowsPerBlock = 8;  // one warp per row, 256 threads per block
constexpr unsigned kFull = 0xffffffffu;

__device__ inline double warp_sum(double v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(kFull, v, offset);
  return v;
}

/// ||row||² accumulated in fp64 over the warp's lanes, rounded once to float (every lane gets it).
/// Each product of two floats is exact in double, so only the order of the fp64 sum differs from
/// the CPU's sequential loop, which changes the rounded float only in rare half-way cases.
__device__ inline float row_norm2(const float* __restrict__ row, int d, int lane) {
  double s = 0.0;
  for (int t = lane; t < d; t += kWarp) {
    const double v = row[t];
    s += v * v;
  }
  return static_cast<float>(warp_sum(s));
}

__global__ void __launch_bounds__(kWarp* kRowsPerBlock)
    row_norms2_kernel(const float* __restrict__ x, std::size_t n, int d, float* __restrict__ out) {
  const int lane = threadIdx.x % kWarp;
  const std::size_t warps = static_cast<std::size_t>(gridDim.x) * kRowsPerBlock;
  for (std::size_t r = blockIdx.x * std::size_t{kRowsPerBlock} + threadIdx.x / kWarp; r < n; r += warps) {
    const float s = row_norm2(x + r * static_cast<std::size_t>(d), d, lane);
    if (lane == 0) out[r] = s;
  }
}

/// Keeps the lower of (best, best_j) and (v, j); equal values go to the lower index.
__device__ inline void keep_lower(float& best, int& best_j, float v, int j) {
  if (v < best || (v == best && j < best_j)) {
    best = v;
    best_j = j;
  }
}

/// The CPU's distance formula in the CPU's order: (||x||² + (−2x·c)) + ||c||², clamped at 0.
/// A NaN never wins: `v < best` is false for it.
__device__ inline void consider(float xn, float g, float cn, int j, float& best, int& best_j) {
  float v = (xn + g) + cn;
  v = v < 0.0f ? 0.0f : v;
  if (v < best) {  // a lane visits its indices in ascending order: strict < keeps the lowest
    best = v;
    best_j = j;
  }
}

/// One warp per tile row: fused ||x||² (unless given), distance, clamp and argmin. Vector4 reads the tile and
/// the centroid norms 16 bytes at a time (needs k % 4 == 0 and 16-byte aligned c_norms2).
template <bool Vector4>
__global__ void __launch_bounds__(kWarp* kRowsPerBlock)
    argmin_tile_kernel(const float* __restrict__ tile, int rows, int k, const float* __restrict__ x,
                       int d, const float* __restrict__ x_norms2, const float* __restrict__ c_norms2,
                       std::int32_t* __restrict__ labels, float* __restrict__ dist2) {
  const int lane = threadIdx.x % kWarp;
  const int row = blockIdx.x * kRowsPerBlock + threadIdx.x / kWarp;
  if (row >= rows) return;  // uniform over the warp
  const float xn = x_norms2 != nullptr ? x_norms2[row] : row_norm2(x + static_cast<std::size_t>(row) * d, d, lane);
  const float* g = tile + static_cast<std::size_t>(row) * k;
  float best = INFINITY;
  int best_j = INT_MAX;
  if constexpr (Vector4) {
    const float4* g4 = reinterpret_cast<const float4*>(g);
    const float4* c4 = reinterpret_cast<const float4*>(c_norms2);
    const int quads = k / 4;
#pragma unroll 4
    for (int q = lane; q < quads; q += kWarp) {
      const float4 gv = g4[q];
      const float4 cv = __ldg(c4 + q);
      consider(xn, gv.x, cv.x, 4 * q, best, best_j);
      consider(xn, gv.y, cv.y, 4 * q + 1, best, best_j);
      consider(xn, gv.z, cv.z, 4 * q + 2, best, best_j);
      consider(xn, gv.w, cv.w, 4 * q + 3, best, best_j);
    }
  } else {
#pragma unroll 4
    for (int j = lane; j < k; j += kWarp) consider(xn, g[j], __ldg(c_norms2 + j), j, best, best_j);
  }
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    const float other = __shfl_xor_sync(kFull, best, offset);
    const int other_j = __shfl_xor_sync(kFull, best_j, offset);
    keep_lower(best, best_j, other, other_j);
  }
  if (lane == 0) {
    // No finite candidate (all NaN/inf): index 0 with +inf, as the CPU path reports.
    labels[row] = best_j == INT_MAX ? 0 : best_j;
    dist2[row] = best;
  }
}

__global__ void fill_no_centroid_kernel(std::size_t n, std::int32_t* labels, float* dist2) {
  for (std::size_t i = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    labels[i] = -1;
    dist2[i] = INFINITY;
  }
}

int checked_int(std::size_t value, const char* what) {
  if (value > static_cast<std::size_t>(INT_MAX))
    throw Error(std::string("GPU assignment: ") + what + " = " + std::to_string(value) +
                " exceeds the supported maximum " + std::to_string(INT_MAX));
  return static_cast<int>(value);
}

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

}  // namespace

void compute_row_norms2(const float* x, std::size_t n, std::size_t d, float* norms2, const Stream& stream) {
  if (n == 0) return;
  const int di = checked_int(d, "d");
  row_norms2_kernel<<<detail::grid_for(n, kRowsPerBlock), kWarp * kRowsPerBlock, 0, stream.get()>>>(
      x, n, di, norms2);
  check_launch("row_norms2_kernel");
}

struct CentroidAssigner::Workspace {
  BlasHandle blas;
  DeviceBuffer<float> tile;
  DeviceBuffer<float> c_norms2;
};

CentroidAssigner::CentroidAssigner(AssignOptions options)
    : options_(options), workspace_(std::make_unique<Workspace>()) {}
CentroidAssigner::~CentroidAssigner() = default;
CentroidAssigner::CentroidAssigner(CentroidAssigner&&) noexcept = default;
CentroidAssigner& CentroidAssigner::operator=(CentroidAssigner&&) noexcept = default;

void CentroidAssigner::assign(const float* x, std::size_t n, std::size_t d, const float* c,
                              std::size_t k, std::int32_t* labels, float* dist2, const Stream& stream,
                              const float* c_norms2, const float* x_norms2) {
  if (n == 0) return;
  if (k == 0) {
    fill_no_centroid_kernel<<<detail::grid_for(n, 256), 256, 0, stream.get()>>>(n, labels, dist2);
    check_launch("fill_no_centroid_kernel");
    return;
  }
  Workspace& ws = *workspace_;
  const int ki = checked_int(k, "k");
  const int di = checked_int(d, "d");
  if (c_norms2 == nullptr || !aligned16(c_norms2)) {
    ws.c_norms2.ensure_capacity(k);
    if (c_norms2 == nullptr)
      compute_row_norms2(c, k, d, ws.c_norms2.data(), stream);
    else
      copy_device_to_device(ws.c_norms2.data(), c_norms2, k * sizeof(float), stream);
    c_norms2 = ws.c_norms2.data();
  }
  const std::size_t rows = assignment_chunk_rows(n, k, options_.tile_bytes);
  checked_int(rows * k, "chunk rows × k");
  ws.tile.ensure_capacity(rows * k);
  cublasHandle_t handle = ws.blas.get();
  check_cublas(cublasSetStream(handle, stream.get()), "cublasSetStream");
  const cublasComputeType_t compute = options_.precision == MatmulPrecision::tf32
                                          ? CUBLAS_COMPUTE_32F_FAST_TF32
                                          : CUBLAS_COMPUTE_32F;
  const float alpha = -2.0f;
  const float beta = 0.0f;
  const bool vector4 = k % 4 == 0;  // tile rows and the norms buffer are then 16-byte aligned
  for (std::size_t first = 0; first < n; first += rows) {
    const std::size_t count = std::min(rows, n - first);
    const int ci = static_cast<int>(count);
    const float* xb = x + first * d;
    const float* xnb = x_norms2 != nullptr ? x_norms2 + first : nullptr;
    if (d > 0) {
      // cuBLAS is column-major: row-major c [k, d] is the d×k matrix C, row-major x [count, d]
      // the d×count matrix X, and row-major G [count, k] the k×count matrix −2 Cᵀ X.
      check_cublas(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, ki, ci, di, &alpha, c, CUDA_R_32F,
                                di, xb, CUDA_R_32F, di, &beta, ws.tile.data(), CUDA_R_32F, ki,
                                compute, CUBLAS_GEMM_DEFAULT),
                   "distance GEMM");
    } else {
      fill_device_bytes(ws.tile.data(), 0, count * k * sizeof(float), stream);
    }
    const unsigned blocks = static_cast<unsigned>((count + kRowsPerBlock - 1) / kRowsPerBlock);
    if (vector4)
      argmin_tile_kernel<true><<<blocks, kWarp * kRowsPerBlock, 0, stream.get()>>>(
          ws.tile.data(), ci, ki, xb, di, xnb, c_norms2, labels + first, dist2 + first);
    else
      argmin_tile_kernel<false><<<blocks, kWarp * kRowsPerBlock, 0, stream.get()>>>(
          ws.tile.data(), ci, ki, xb, di, xnb, c_norms2, labels + first, dist2 + first);
    check_launch("argmin_tile_kernel");
  }
}

void assign_nearest_centroid(const float* x, std::size_t n, std::size_t d, const float* c,
                             std::size_t k, std::int32_t* labels, float* dist2,
                             const float* c_norms2, const AssignOptions& options) {
  if (n == 0) return;
  Stream stream;
  CentroidAssigner assigner(options);
  DeviceBuffer<float> c_dev(k * d);
  c_dev.upload({c, k * d}, stream);
  DeviceBuffer<float> norms_dev;
  if (c_norms2 != nullptr && k > 0) {
    norms_dev = DeviceBuffer<float>(k);
    norms_dev.upload({c_norms2, k}, stream);
  }
  const std::size_t piece = std::max<std::size_t>(
      1, std::min(n, (std::size_t{256} << 20) / (sizeof(float) * std::max<std::size_t>(d, 1))));
  DeviceBuffer<float> x_dev(piece * d);
  DeviceBuffer<std::int32_t> labels_dev(piece);
  DeviceBuffer<float> dist2_dev(piece);
  for (std::size_t first = 0; first < n; first += piece) {
    const std::size_t count = std::min(piece, n - first);
    x_dev.upload({x + first * d, count * d}, stream);
    assigner.assign(x_dev.data(), count, d, c_dev.data(), k, labels_dev.data(), dist2_dev.data(),
                    stream, norms_dev.empty() ? nullptr : norms_dev.data());
    copy_to_host(labels + first, labels_dev.data(), count * sizeof(std::int32_t), stream);
    copy_to_host(dist2 + first, dist2_dev.data(), count * sizeof(float), stream);
  }
}

}  // namespace kmim::gpu
