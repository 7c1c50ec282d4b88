// Host-only parts of the GPU K-means API, compiled in every build (with or without CUDA): names,
// bounds and sizing rules that programs and tests use without a device.
#include <algorithm>
#include <cmath>
#include <string>

#include "kmim/core/error.hpp"
#include "kmim/gpu/kmeans_assign.hpp"

namespace kmim::gpu {

std::string_view precision_name(MatmulPrecision precision) {
  return precision == MatmulPrecision::tf32 ? "tf32" : "fp32";
}

MatmulPrecision precision_from_name(std::string_view name, std::string_view option) {
  if (name == "fp32") return MatmulPrecision::fp32;
  if (name == "tf32") return MatmulPrecision::tf32;
  throw OptionError(option, name, "must be 'fp32' or 'tf32'");
}

double tf32_distance_error_bound(double x_norm, double c_norm, std::size_t d) {
  // Each product input is converted to TF32 (10 explicit mantissa bits): relative error below
  // 2^-10 when truncated, so |Δ(x_i c_i)| < (2·2^-10 + 2^-20)|x_i c_i|; fp32 accumulation of d
  // terms adds at most d·2^-24 Σ|x_i c_i|. The GEMM result is −2x·c, so both double, and
  // Σ|x_i c_i| ≤ ||x|| ||c|| (Cauchy–Schwarz). The final (||x||² + g) + ||c||² in fp32 adds two
  // roundings of at most 2^-24 of magnitudes below ||x||² + 2|x·c| + ||c||² ≤ 2(||x||² + ||c||²).
  const double u_tf32 = std::ldexp(1.0, -10);
  const double u_fp32 = std::ldexp(1.0, -24);
  const double product_term = 2.0 * (2.0 * u_tf32 + u_tf32 * u_tf32 + static_cast<double>(d) * u_fp32);
  return product_term * x_norm * c_norm + 4.0 * u_fp32 * (x_norm * x_norm + c_norm * c_norm);
}

std::size_t assignment_chunk_rows(std::size_t n, std::size_t k, std::size_t tile_bytes) {
  constexpr std::size_t kRowMultiple = 128;
  std::size_t rows = tile_bytes / (sizeof(float) * std::max<std::size_t>(k, 1));
  rows = std::max(kRowMultiple, rows / kRowMultiple * kRowMultiple);
  return std::max<std::size_t>(1, std::min(rows, n));
}

}  // namespace kmim::gpu
