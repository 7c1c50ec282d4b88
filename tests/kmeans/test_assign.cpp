// assign_nearest_centroid (sgemm + blocked argmin) against the brute-force double reference.
#define BOOST_TEST_MODULE kmeans_assign
#include <boost/test/unit_test.hpp>

#include <omp.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "kmim/core/rng.hpp"
#include "kmim/kmeans/assign.hpp"

using kmim::kmeans::assign_nearest_centroid;
using kmim::kmeans::assign_nearest_centroid_reference;

namespace {

std::vector<float> random_matrix(std::size_t rows, std::size_t cols, std::uint64_t stream) {
  kmim::RandomStream rng(7, stream);
  std::vector<float> m(rows * cols);
  for (auto& v : m) v = static_cast<float>(rng.normal());
  return m;
}

/// True when the best and second-best reference distances of row i are far enough apart that
/// float rounding in the GEMM formulation cannot swap them (no near-ties).
bool clear_winner(const float* x, std::size_t d, const std::vector<float>& c, std::size_t k) {
  double best = 1e300, second = 1e300;
  for (std::size_t j = 0; j < k; ++j) {
    double s = 0;
    for (std::size_t t = 0; t < d; ++t) {
      const double diff = double(x[t]) - double(c[j * d + t]);
      s += diff * diff;
    }
    if (s < best) {
      second = best;
      best = s;
    } else if (s < second) {
      second = s;
    }
  }
  return second - best > 1e-3 * (1.0 + best);
}

void check_against_reference(std::size_t n, std::size_t d, std::size_t k, std::uint64_t stream) {
  const auto x = random_matrix(n, d, stream);
  const auto c = random_matrix(k, d, stream + 1000);
  std::vector<std::int32_t> labels(n), ref_labels(n);
  std::vector<float> dist(n), ref_dist(n);
  assign_nearest_centroid(x.data(), n, d, c.data(), k, labels.data(), dist.data());
  assign_nearest_centroid_reference(x.data(), n, d, c.data(), k, ref_labels.data(), ref_dist.data());
  std::size_t checked = 0;
  for (std::size_t i = 0; i < n; ++i) {
    // Distances agree to the rounding of the expanded formula: relative to ||x||² + ||c||².
    double xn = 0, cn = 0;
    for (std::size_t t = 0; t < d; ++t) xn += double(x[i * d + t]) * x[i * d + t];
    for (std::size_t t = 0; t < d; ++t) {
      const double v = c[std::size_t(ref_labels[i]) * d + t];
      cn += v * v;
    }
    BOOST_TEST(std::abs(double(dist[i]) - double(ref_dist[i])) <= 1e-5 * (xn + cn) + 1e-6,
               "row " << i << " n=" << n << " d=" << d << " k=" << k);
    if (!clear_winner(&x[i * d], d, c, k)) continue;
    ++checked;
    BOOST_TEST(labels[i] == ref_labels[i], "row " << i << " n=" << n << " d=" << d << " k=" << k);
  }
  BOOST_TEST(checked > n * 9 / 10);  // the near-tie filter must not hide the comparison
}

}  // namespace

BOOST_AUTO_TEST_CASE(matches_reference_over_shapes) {
  // Shapes cover: k below/above/at the 16-lane width, tails, one row, blocks with remainders.
  const std::size_t shapes[][3] = {{1, 3, 1},   {5, 2, 3},    {100, 16, 16}, {333, 7, 17},
                                   {1000, 49, 256}, {2049, 64, 33}, {64, 768, 50}, {3001, 12, 1024}};
  std::uint64_t stream = 1;
  for (const auto& s : shapes) check_against_reference(s[0], s[1], s[2], stream++);
}

BOOST_AUTO_TEST_CASE(exact_ties_go_to_the_lowest_index) {
  // Centroids 1 and 3 are identical and nearest; centroid 0 is far. Row 1 is exactly
  // equidistant (distance 1) from centroids 0 and 2 at ±1 on an axis.
  const std::size_t d = 2, k = 4;
  const std::vector<float> c = {10, 10, 1, 1, 0, -1, 1, 1};
  const std::vector<float> x = {1, 1, 0, 0, 0.5f, 0.5f};
  std::vector<std::int32_t> labels(3);
  std::vector<float> dist(3);
  for (auto* f : {&assign_nearest_centroid, &assign_nearest_centroid_reference}) {
    f(x.data(), 3, d, c.data(), k, labels.data(), dist.data(), nullptr);
    BOOST_TEST(labels[0] == 1);
    BOOST_TEST(dist[0] == 0.0f);
    BOOST_TEST(labels[2] == 1);
  }
  // Row 1 (origin): distance 2 to centroids 1 and 3, 1 to centroid 2.
  BOOST_TEST(labels[1] == 2);
  // Many identical centroids across lanes and the tail: the lowest index must win.
  const std::size_t k2 = 37;
  std::vector<float> c2(k2 * d, 5.0f);
  for (std::size_t j = 0; j < 3; ++j) c2[j * d] = 100.0f;  // 0..2 far; 3..36 all identical
  const std::vector<float> x2 = {5, 5, 4, 4};
  std::vector<std::int32_t> l2(2);
  std::vector<float> d2(2);
  assign_nearest_centroid(x2.data(), 2, d, c2.data(), k2, l2.data(), d2.data());
  BOOST_TEST(l2[0] == 3);
  BOOST_TEST(l2[1] == 3);
  BOOST_TEST(d2[1] == 2.0f);
}

BOOST_AUTO_TEST_CASE(distances_are_clamped_at_zero) {
  // Large-norm rows that equal a centroid: the expanded formula may round below zero.
  const std::size_t d = 64, k = 20, n = 200;
  auto c = random_matrix(k, d, 77);
  for (auto& v : c) v = 1000.0f + v;
  std::vector<float> x(n * d);
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t t = 0; t < d; ++t) x[i * d + t] = c[(i % k) * d + t];
  std::vector<std::int32_t> labels(n);
  std::vector<float> dist(n);
  assign_nearest_centroid(x.data(), n, d, c.data(), k, labels.data(), dist.data());
  for (std::size_t i = 0; i < n; ++i) BOOST_TEST(dist[i] >= 0.0f);
}

BOOST_AUTO_TEST_CASE(precomputed_norms_and_thread_count_give_identical_results) {
  const std::size_t n = 5000, d = 24, k = 300;
  const auto x = random_matrix(n, d, 11);
  const auto c = random_matrix(k, d, 12);
  std::vector<float> norms(k);
  for (std::size_t j = 0; j < k; ++j) {
    double s = 0;
    for (std::size_t t = 0; t < d; ++t) s += double(c[j * d + t]) * c[j * d + t];
    norms[j] = float(s);
  }
  std::vector<std::int32_t> l1(n), l2(n), l3(n);
  std::vector<float> d1(n), d2(n), d3(n);
  assign_nearest_centroid(x.data(), n, d, c.data(), k, l1.data(), d1.data());
  assign_nearest_centroid(x.data(), n, d, c.data(), k, l2.data(), d2.data(), norms.data());
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  assign_nearest_centroid(x.data(), n, d, c.data(), k, l3.data(), d3.data());
  omp_set_num_threads(saved);
  BOOST_TEST(l1 == l2);
  BOOST_TEST(d1 == d2);
  BOOST_TEST(l1 == l3);
}
