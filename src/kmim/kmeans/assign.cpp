#include "kmim/kmeans/assign.hpp"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cmath>
#include <limits>
#include <vector>

#include "kmim/kmeans/distance.hpp"

namespace kmim::kmeans {
namespace {

// Lanes of the vectorised argmin: every lane keeps its own running minimum and index, so the
// compiler turns the comparison into SIMD blends; lanes are merged with "lowest index wins ties".
constexpr std::size_t kLanes = 16;

/// Rows per block: the block's distance tile (rows × k floats) stays within about 512 KiB so
/// that the argmin reads it back from cache right after sgemm wrote it. The block size depends on
/// k only (never on the thread count), so every row is computed the same way for any threads.
std::size_t rows_per_block(std::size_t k) {
  static const std::size_t budget = std::getenv("KMIM_TILE_KB") ? std::atoi(std::getenv("KMIM_TILE_KB")) : 512;
  const std::size_t rows = (budget * 1024 / sizeof(float)) / std::max<std::size_t>(k, 1);
  return std::clamp<std::size_t>(rows, 32, 1024);
}

/// For each row r of the tile g [rows, k] holding -2 x·c: dist_j = max(0, (||x||² + g_j) + ||c_j||²)
/// and its argmin (lowest index among equal minima).
__attribute__((target_clones("avx512f", "avx2", "default")))
void argmin_rows(const float* g, std::size_t rows, std::size_t k, const float* x_norms2,
                 const float* c_norms2, std::int32_t* labels, float* dist2) {
  const float inf = std::numeric_limits<float>::infinity();
  const std::size_t full = k / kLanes * kLanes;
  for (std::size_t r = 0; r < rows; ++r) {
    const float* gr = g + r * k;
    const float xn = x_norms2[r];
    float best = inf;
    std::int32_t best_index = 0;
    if (full > 0) {
      float lane_best[kLanes];
      std::int32_t lane_index[kLanes];
      for (std::size_t l = 0; l < kLanes; ++l) {
        lane_best[l] = inf;
        lane_index[l] = static_cast<std::int32_t>(l);
      }
      for (std::size_t j = 0; j < full; j += kLanes) {
        for (std::size_t l = 0; l < kLanes; ++l) {
          float v = (xn + gr[j + l]) + c_norms2[j + l];
          v = v < 0.0f ? 0.0f : v;
          const bool lower = v < lane_best[l];
          lane_best[l] = lower ? v : lane_best[l];
          lane_index[l] = lower ? static_cast<std::int32_t>(j + l) : lane_index[l];
        }
      }
      best_index = lane_index[0];
      best = lane_best[0];
      for (std::size_t l = 1; l < kLanes; ++l) {
        if (lane_best[l] < best || (lane_best[l] == best && lane_index[l] < best_index)) {
          best = lane_best[l];
          best_index = lane_index[l];
        }
      }
    }
    // Tail indices are above every lane index, so a strict comparison keeps ties low.
    for (std::size_t j = full; j < k; ++j) {
      float v = (xn + gr[j]) + c_norms2[j];
      v = v < 0.0f ? 0.0f : v;
      if (v < best) {
        best = v;
        best_index = static_cast<std::int32_t>(j);
      }
    }
    labels[r] = best_index;
    dist2[r] = best;
  }
}

}  // namespace

void assign_nearest_centroid(const float* x, std::size_t n, std::size_t d, const float* c, std::size_t k,
                             std::int32_t* labels, float* dist2, const float* c_norms2) {
  if (n == 0) return;
  if (k == 0) {
    std::fill(labels, labels + n, -1);
    std::fill(dist2, dist2 + n, std::numeric_limits<float>::infinity());
    return;
  }
  std::vector<float> own_norms;
  if (c_norms2 == nullptr) {
    own_norms.resize(k);
    squared_norms(c, k, d, own_norms.data());
    c_norms2 = own_norms.data();
  }
  const int threads = omp_get_max_threads();
  const std::size_t rows = rows_per_block(k);
  const std::size_t blocks = (n + rows - 1) / rows;
  BlasSingleThreaded blas_guard;
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> tile(rows * k);
    std::vector<float> x_norms2(rows);
#pragma omp for schedule(dynamic, 1)
    for (std::size_t b = 0; b < blocks; ++b) {
      const std::size_t first = b * rows;
      const std::size_t count = std::min(rows, n - first);
      const float* xb = x + first * d;
      squared_norms(xb, count, d, x_norms2.data());
      if (d > 0) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(count),
                    static_cast<int>(k), static_cast<int>(d), -2.0f, xb, static_cast<int>(d), c,
                    static_cast<int>(d), 0.0f, tile.data(), static_cast<int>(k));
      } else {
        std::fill(tile.begin(), tile.begin() + static_cast<std::ptrdiff_t>(count * k), 0.0f);
      }
      argmin_rows(tile.data(), count, k, x_norms2.data(), c_norms2, labels + first, dist2 + first);
    }
  }
}

void assign_nearest_centroid_reference(const float* x, std::size_t n, std::size_t d, const float* c,
                                       std::size_t k, std::int32_t* labels, float* dist2,
                                       const float* /*c_norms2*/) {
  for (std::size_t i = 0; i < n; ++i) {
    double best = std::numeric_limits<double>::infinity();
    std::int32_t best_index = k > 0 ? 0 : -1;
    for (std::size_t j = 0; j < k; ++j) {
      double s = 0.0;
      for (std::size_t t = 0; t < d; ++t) {
        const double diff = static_cast<double>(x[i * d + t]) - static_cast<double>(c[j * d + t]);
        s += diff * diff;
      }
      if (s < best) {
        best = s;
        best_index = static_cast<std::int32_t>(j);
      }
    }
    labels[i] = best_index;
    dist2[i] = static_cast<float>(best);
  }
}

void squared_norms(const float* v, std::size_t n, std::size_t d, float* out) {
  for (std::size_t i = 0; i < n; ++i) {
    const float* row = v + i * d;
    double s = 0.0;
    for (std::size_t t = 0; t < d; ++t) s += static_cast<double>(row[t]) * row[t];
    out[i] = static_cast<float>(s);
  }
}

void squared_distances(const float* x, std::size_t n, std::size_t d, const float* c, std::size_t m,
                       float* out) {
  if (n == 0 || m == 0) return;
  std::vector<float> c_norms2(m);
  squared_norms(c, m, d, c_norms2.data());
  const std::size_t rows = rows_per_block(m);
  const std::size_t blocks = (n + rows - 1) / rows;
  BlasSingleThreaded blas_guard;
#pragma omp parallel
  {
    std::vector<float> x_norms2(rows);
#pragma omp for schedule(dynamic, 1)
    for (std::size_t b = 0; b < blocks; ++b) {
      const std::size_t first = b * rows;
      const std::size_t count = std::min(rows, n - first);
      float* tile = out + first * m;
      squared_norms(x + first * d, count, d, x_norms2.data());
      if (d > 0) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(count),
                    static_cast<int>(m), static_cast<int>(d), -2.0f, x + first * d,
                    static_cast<int>(d), c, static_cast<int>(d), 0.0f, tile, static_cast<int>(m));
      } else {
        std::fill(tile, tile + count * m, 0.0f);
      }
      for (std::size_t r = 0; r < count; ++r)
        for (std::size_t j = 0; j < m; ++j) {
          const float v = (x_norms2[r] + tile[r * m + j]) + c_norms2[j];
          tile[r * m + j] = v < 0.0f ? 0.0f : v;
        }
    }
  }
}

BlasSingleThreaded::BlasSingleThreaded() : saved_(openblas_get_num_threads()) {
  if (saved_ != 1) openblas_set_num_threads(1);
}

BlasSingleThreaded::~BlasSingleThreaded() {
  if (saved_ != 1) openblas_set_num_threads(saved_);
}

}  // namespace kmim::kmeans
