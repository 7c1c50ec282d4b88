// Nearest-centroid assignment on the GPU: the CUDA twin of kmim::kmeans::assign_nearest_centroid
// (SPEC §2, "Targets": squared L2 distance ||x||² − 2 x·c + ||c||², clamped at 0, ties to the
// lowest centroid index).
//
// How it runs: x is processed in row chunks. For each chunk cuBLAS computes the tile
// G = −2 · X_chunk · Cᵀ (rows × k floats) into a reusable workspace, then one kernel (a warp per
// row) computes ||x||² in fp64 (rounded to float, as the CPU does), forms
// (||x||² + G[r][j]) + ||c_j||² in the CPU's order, clamps at 0 and keeps the lowest-index
// minimum. Only one chunk's tile ever exists; the n×k matrix is never materialised.
//
// Chunk size: rows = tile_bytes / (4 k), rounded down to a multiple of 128 and at least 128 (so
// the GEMM keeps the whole GPU busy even for k = 65536), at most n. With the default 32 MiB the
// tile mostly stays in the H100/H200's 50–60 MB L2 between the GEMM that writes it and the argmin
// that reads it: k = 8192 gives 1024-row chunks (a 12.9 GFLOP GEMM at d = 768), k = 256 gives
// 32768-row chunks.
//
// Precision (docs/gpu.md):
//   fp32  cuBLAS CUBLAS_COMPUTE_32F (IEEE fp32 products and sums): the same arithmetic as the CPU
//         path up to summation order; dist2 agrees with the CPU to ≤ 1e-5 relative on data whose
//         distances are not dominated by cancellation (tested).
//   tf32  CUBLAS_COMPUTE_32F_FAST_TF32: inputs of the product rounded to TF32 (10-bit mantissa),
//         fp32 accumulation. Bound (worst case, truncating conversion):
//           |dist2_tf32 − dist2_exact| ≤ tf32_distance_error_bound(||x||, ||c||, d)
//                                     = (2^-8 + 2 d 2^-24) ||x|| ||c|| + 2^-22 (||x||² + ||c||²)
//         and a label can differ from the exact one only when the two distances are within twice
//         that bound. About 4–8× faster GEMMs on Hopper.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "kmim/gpu/resources.hpp"

namespace kmim::gpu {

enum class MatmulPrecision { fp32, tf32 };

/// "fp32" / "tf32".
std::string_view precision_name(MatmulPrecision precision);
/// Parses "fp32" or "tf32"; throws OptionError for option `option` otherwise.
MatmulPrecision precision_from_name(std::string_view name, std::string_view option = "precision");

/// The documented worst-case |dist2_tf32 − dist2_exact| for one (x, c) pair (see above).
double tf32_distance_error_bound(double x_norm, double c_norm, std::size_t d);

struct AssignOptions {
  MatmulPrecision precision = MatmulPrecision::fp32;
  /// Budget of the per-chunk distance tile (rows × k floats); sets the chunk size (see above).
  std::size_t tile_bytes = std::size_t{32} << 20;
};

/// Rows per chunk for n rows and k centroids under `tile_bytes` (the rule above).
std::size_t assignment_chunk_rows(std::size_t n, std::size_t k, std::size_t tile_bytes);

/// Squared row norms of x [n, d] (device), accumulated in fp64 and rounded once to float, as the
/// CPU path computes them. Ordered on `stream`.
void compute_row_norms2(const float* x, std::size_t n, std::size_t d, float* norms2,
                        const Stream& stream);

/// Assignment with reusable workspace (cuBLAS handle, tile, centroid norms). Not thread-safe;
/// one per host thread/stream.
class CentroidAssigner {
 public:
  explicit CentroidAssigner(AssignOptions options = {});
  ~CentroidAssigner();
  CentroidAssigner(CentroidAssigner&&) noexcept;
  CentroidAssigner& operator=(CentroidAssigner&&) noexcept;

  const AssignOptions& options() const { return options_; }

  /// All pointers are device pointers: x [n, d], c [k, d] row-major, labels [n], dist2 [n].
  /// c_norms2 [k] may be null (computed here) or hold ||c_j||² (e.g. from compute_row_norms2);
  /// x_norms2 [n] likewise — K-means assigns the same x every iteration, so a caller can compute
  /// them once (otherwise the argmin kernel recomputes them, one extra read of x per call).
  /// Asynchronous on `stream`; every labels/dist2 element is written. k = 0 gives labels −1 and
  /// dist2 +inf, as on the CPU.
  void assign(const float* x, std::size_t n, std::size_t d, const float* c, std::size_t k,
              std::int32_t* labels, float* dist2, const Stream& stream,
              const float* c_norms2 = nullptr, const float* x_norms2 = nullptr);

 private:
  struct Workspace;
  AssignOptions options_;
  std::unique_ptr<Workspace> workspace_;
};

/// Host-pointer convenience with the CPU function's signature (plus options): copies x (in
/// pieces of at most 256 MiB) and c to the device, assigns, copies labels and dist2 back.
void assign_nearest_centroid(const float* x, std::size_t n, std::size_t d, const float* c,
                             std::size_t k, std::int32_t* labels, float* dist2,
                             const float* c_norms2 = nullptr, const AssignOptions& options = {});

}  // namespace kmim::gpu
