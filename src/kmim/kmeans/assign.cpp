#include "kmim/kmeans/assign.hpp"

#include <cblas.h>
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kmim/kmeans/distance.hpp"

namespace kmim::kmeans {
namespace {

// Lanes of the portable argmin: every lane keeps its own running minimum and the first index
// reaching it; lanes are then merged with "lowest index wins ties". The AVX-512 (16 lanes) and
// AVX2 (8 lanes) versions do the same in registers, so all three return identical results.
constexpr std::size_t kLanes = 16;

/// Rows per block: the block's distance tile (rows × k floats) stays within about 512 KiB so
/// that the argmin reads it back from cache right after sgemm wrote it. The block size depends on
/// k only (never on the thread count), so every row is computed the same way for any threads.
std::size_t rows_per_block(std::size_t k) {
  const std::size_t rows = (std::size_t{512} * 1024 / sizeof(float)) / std::max<std::size_t>(k, 1);
  return std::clamp<std::size_t>(rows, 32, 1024);
}

/// Merges per-lane (minimum, first index) pairs: the smallest value, the lowest index on ties.
inline void merge_lanes(const float* lane_best, const std::int32_t* lane_index, std::size_t lanes,
                        float& best, std::int32_t& best_index) {
  best = lane_best[0];
  best_index = lane_index[0];
  for (std::size_t l = 1; l < lanes; ++l) {
    if (lane_best[l] < best || (lane_best[l] == best && lane_index[l] < best_index)) {
      best = lane_best[l];
      best_index = lane_index[l];
    }
  }
}

/// The columns from `from` on, after the lanes: their indices are above every lane's, so a
/// strict comparison keeps ties at the lower index.
inline void argmin_tail(const float* gr, std::size_t from, std::size_t k, float xn, const float* c_norms2,
                        float& best, std::int32_t& best_index) {
  for (std::size_t j = from; j < k; ++j) {
    float v = (xn + gr[j]) + c_norms2[j];
    v = v < 0.0f ? 0.0f : v;
    if (v < best) {
      best = v;
      best_index = static_cast<std::int32_t>(j);
    }
  }
}

/// Portable version: for each row r of the tile g [rows, k] holding -2 x·c,
/// dist_j = max(0, (||x||² + g_j) + ||c_j||²) and its argmin (lowest index among equal minima).
/// Every lane keeps its own running minimum and index (the first index reaching it).
void argmin_rows_portable(const float* g, std::size_t rows, std::size_t k, const float* x_norms2,
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
      merge_lanes(lane_best, lane_index, kLanes, best, best_index);
    }
    argmin_tail(gr, full, k, xn, c_norms2, best, best_index);
    labels[r] = best_index;
    dist2[r] = best;
  }
}

/// AVX-512 version of argmin_rows_portable (same arithmetic, same result): the 16 lane minima
/// and indices stay in registers, which the compiler does not manage for the portable loop.
__attribute__((target("avx512f")))
void argmin_rows_avx512(const float* g, std::size_t rows, std::size_t k, const float* x_norms2,
                        const float* c_norms2, std::int32_t* labels, float* dist2) {
  const float inf = std::numeric_limits<float>::infinity();
  const std::size_t full = k / 16 * 16;
  const __m512 zero = _mm512_setzero_ps();
  const __m512i first_index = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i step = _mm512_set1_epi32(16);
  alignas(64) float lane_best[16];
  alignas(64) std::int32_t lane_index[16];
  for (std::size_t r = 0; r < rows; ++r) {
    const float* gr = g + r * k;
    const float xn = x_norms2[r];
    float best = inf;
    std::int32_t best_index = 0;
    if (full > 0) {
      const __m512 x = _mm512_set1_ps(xn);
      __m512 vbest = _mm512_set1_ps(inf);
      __m512i vindex = first_index;
      __m512i index = first_index;
      for (std::size_t j = 0; j < full; j += 16) {
        __m512 v = _mm512_add_ps(_mm512_add_ps(x, _mm512_loadu_ps(gr + j)), _mm512_loadu_ps(c_norms2 + j));
        v = _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ), zero);  // v < 0 ? 0 : v
        const __mmask16 lower = _mm512_cmp_ps_mask(v, vbest, _CMP_LT_OQ);
        vbest = _mm512_mask_mov_ps(vbest, lower, v);
        vindex = _mm512_mask_mov_epi32(vindex, lower, index);
        index = _mm512_add_epi32(index, step);
      }
      _mm512_store_ps(lane_best, vbest);
      _mm512_store_si512(lane_index, vindex);
      merge_lanes(lane_best, lane_index, 16, best, best_index);
    }
    argmin_tail(gr, full, k, xn, c_norms2, best, best_index);
    labels[r] = best_index;
    dist2[r] = best;
  }
}

/// AVX2 version (8 lanes).
__attribute__((target("avx2")))
void argmin_rows_avx2(const float* g, std::size_t rows, std::size_t k, const float* x_norms2,
                      const float* c_norms2, std::int32_t* labels, float* dist2) {
  const float inf = std::numeric_limits<float>::infinity();
  const std::size_t full = k / 8 * 8;
  const __m256 zero = _mm256_setzero_ps();
  const __m256i first_index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i step = _mm256_set1_epi32(8);
  alignas(32) float lane_best[8];
  alignas(32) std::int32_t lane_index[8];
  for (std::size_t r = 0; r < rows; ++r) {
    const float* gr = g + r * k;
    const float xn = x_norms2[r];
    float best = inf;
    std::int32_t best_index = 0;
    if (full > 0) {
      const __m256 x = _mm256_set1_ps(xn);
      __m256 vbest = _mm256_set1_ps(inf);
      __m256i vindex = first_index;
      __m256i index = first_index;
      for (std::size_t j = 0; j < full; j += 8) {
        __m256 v = _mm256_add_ps(_mm256_add_ps(x, _mm256_loadu_ps(gr + j)), _mm256_loadu_ps(c_norms2 + j));
        v = _mm256_blendv_ps(v, zero, _mm256_cmp_ps(v, zero, _CMP_LT_OQ));  // v < 0 ? 0 : v
        const __m256 lower = _mm256_cmp_ps(v, vbest, _CMP_LT_OQ);
        vbest = _mm256_blendv_ps(vbest, v, lower);
        vindex = _mm256_castps_si256(
            _mm256_blendv_ps(_mm256_castsi256_ps(vindex), _mm256_castsi256_ps(index), lower));
        index = _mm256_add_epi32(index, step);
      }
      _mm256_store_ps(lane_best, vbest);
      _mm256_store_si256(reinterpret_cast<__m256i*>(lane_index), vindex);
      merge_lanes(lane_best, lane_index, 8, best, best_index);
    }
    argmin_tail(gr, full, k, xn, c_norms2, best, best_index);
    labels[r] = best_index;
    dist2[r] = best;
  }
}

using ArgminRows = void (*)(const float*, std::size_t, std::size_t, const float*, const float*,
                            std::int32_t*, float*);

/// The widest version this CPU runs (all give identical results).
ArgminRows argmin_rows() {
  static const ArgminRows chosen = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return &argmin_rows_avx512;
    if (__builtin_cpu_supports("avx2")) return &argmin_rows_avx2;
    return &argmin_rows_portable;
  }();
  return chosen;
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
  const ArgminRows argmin = argmin_rows();
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
      argmin(tile.data(), count, k, x_norms2.data(), c_norms2, labels + first, dist2 + first);
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

__attribute__((target_clones("avx512f", "avx2", "default")))
void squared_norms(const float* v, std::size_t n, std::size_t d, float* out) {
  // Eight independent fp64 partial sums (vectorisable, no long dependency chain), combined in a
  // fixed order: the same result for every instruction set the function is compiled for.
  constexpr std::size_t kParts = 8;
  for (std::size_t i = 0; i < n; ++i) {
    const float* row = v + i * d;
    double part[kParts] = {};
    std::size_t t = 0;
    for (; t + kParts <= d; t += kParts)
      for (std::size_t l = 0; l < kParts; ++l) part[l] += static_cast<double>(row[t + l]) * row[t + l];
    for (std::size_t l = 0; t < d; ++t, ++l) part[l] += static_cast<double>(row[t]) * row[t];
    out[i] = static_cast<float>(((part[0] + part[1]) + (part[2] + part[3])) +
                                ((part[4] + part[5]) + (part[6] + part[7])));
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
