// Inputs and fp64 references shared by the GPU K-means tests (header-only; no CUDA headers).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "kmim/core/rng.hpp"

namespace kmim_gpu_test {

/// rows × cols standard normal floats, fresh for every (seed, stream).
inline std::vector<float> normal_matrix(std::size_t rows, std::size_t cols, std::uint64_t stream,
                                        double scale = 1.0, std::uint64_t seed = 2024) {
  kmim::RandomStream rng(seed, stream);
  std::vector<float> m(rows * cols);
  for (auto& v : m) v = static_cast<float>(scale * rng.normal());
  return m;
}

/// rows × cols small integers in [-range, range]: every product and sum the GEMM forms is exact
/// in fp32 and TF32, so distances tie exactly where they tie mathematically.
inline std::vector<float> integer_matrix(std::size_t rows, std::size_t cols, std::uint64_t stream, int range) {
  kmim::RandomStream rng(99, stream);
  std::vector<float> m(rows * cols);
  for (auto& v : m) v = static_cast<float>(static_cast<int>(rng.below(2 * static_cast<std::uint64_t>(range) + 1)) - range);
  return m;
}

inline double squared_distance(const float* a, const float* b, std::size_t d) {
  double s = 0.0;
  for (std::size_t t = 0; t < d; ++t) {
    const double diff = static_cast<double>(a[t]) - static_cast<double>(b[t]);
    s += diff * diff;
  }
  return s;
}

inline double norm(const float* a, std::size_t d) {
  double s = 0.0;
  for (std::size_t t = 0; t < d; ++t) s += static_cast<double>(a[t]) * a[t];
  return std::sqrt(s);
}

/// Per row: the fp64 nearest centroid (lowest index on ties), its distance and the runner-up's.
struct ExactNearest {
  std::vector<std::int32_t> label;
  std::vector<double> best;
  std::vector<double> second;
};

inline ExactNearest exact_nearest(const std::vector<float>& x, std::size_t n, std::size_t d,
                                  const std::vector<float>& c, std::size_t k) {
  ExactNearest r;
  r.label.assign(n, 0);
  r.best.assign(n, 0.0);
  r.second.assign(n, 0.0);
#pragma omp parallel for schedule(static)
  for (std::size_t i = 0; i < n; ++i) {
    double best = std::numeric_limits<double>::infinity();
    double second = best;
    std::int32_t label = 0;
    for (std::size_t j = 0; j < k; ++j) {
      const double s = squared_distance(&x[i * d], &c[j * d], d);
      if (s < best) {
        second = best;
        best = s;
        label = static_cast<std::int32_t>(j);
      } else if (s < second) {
        second = s;
      }
    }
    r.label[i] = label;
    r.best[i] = best;
    r.second[i] = second;
  }
  return r;
}

}  // namespace kmim_gpu_test
