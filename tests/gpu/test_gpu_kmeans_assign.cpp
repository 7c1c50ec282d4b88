// GPU nearest-centroid assignment against the CPU path (kmim::kmeans::assign_nearest_centroid)
// and the fp64 definition, in both precision modes. Tolerances (docs/gpu.md):
//   fp32: |dist2_gpu − dist2_cpu| ≤ 1e-5 · dist2_cpu + 1e-6 · (||x||² + ||c||²) (the second term
//         covers the cancellation of the expanded formula when x is close to c; it is ~17 fp32
//         ulps of the operands), and likewise against the fp64 distance of the chosen centroid;
//         labels equal the CPU's and the fp64 ones except on near-ties,
//         rows whose fp64 best and second-best distances differ by at most
//         kTieEps · (||x||² + ||c_best||²) — there a label may differ, but its fp64 distance
//         must then be within that margin of the best.
//   tf32: per row, with B = tf32_distance_error_bound(||x||, max ||c||, d):
//         |dist2_gpu − exact(label_gpu)| ≤ B and exact(label_gpu) − exact_best ≤ 2B.
// Always: outputs are poisoned (labels −1, dist2 NaN) before the call, every element must be
// written, every label lies in [0, k) and no dist2 is NaN.
#define BOOST_TEST_MODULE kmim_gpu_kmeans_assign
#include "gpu_test_main.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "gpu_test_data.hpp"
#include "kmim/core/error.hpp"
#include "kmim/gpu/kmeans_assign.hpp"
#include "kmim/kmeans/assign.hpp"

namespace gpu = kmim::gpu;
using kmim_gpu_test::exact_nearest;
using kmim_gpu_test::integer_matrix;
using kmim_gpu_test::norm;
using kmim_gpu_test::normal_matrix;
using kmim_gpu_test::squared_distance;

namespace {

constexpr double kTieEps = 1e-5;
constexpr double kFp32Relative = 1e-5;
constexpr double kFp32Cancellation = 1e-6;

struct DeviceResult {
  std::vector<std::int32_t> labels;
  std::vector<float> dist2;
};

/// Runs the device API on poisoned outputs and returns what it wrote.
DeviceResult run_gpu(const std::vector<float>& x, std::size_t n, std::size_t d, const std::vector<float>& c,
                     std::size_t k, const gpu::AssignOptions& options, const std::vector<float>* c_norms2 = nullptr) {
  gpu::Stream stream;
  gpu::DeviceBuffer<float> x_dev(n * d), c_dev(k * d);
  x_dev.upload(x, stream);
  c_dev.upload(c, stream);
  gpu::DeviceBuffer<std::int32_t> labels(n);
  gpu::DeviceBuffer<float> dist2(n);
  gpu::fill_device_bytes(labels.data(), 0xFF, labels.bytes(), stream);  // −1
  gpu::fill_device_bytes(dist2.data(), 0xFF, dist2.bytes(), stream);    // NaN
  // Precomputed norms are passed one float past an aligned address, to exercise the copy that
  // re-aligns them for 16-byte loads.
  gpu::DeviceBuffer<float> norms_dev;
  const float* norms_ptr = nullptr;
  if (c_norms2 != nullptr) {
    norms_dev = gpu::DeviceBuffer<float>(k + 1);
    gpu::copy_to_device(norms_dev.data() + 1, c_norms2->data(), k * sizeof(float), stream);
    norms_ptr = norms_dev.data() + 1;
  }
  gpu::CentroidAssigner assigner(options);
  assigner.assign(x_dev.data(), n, d, c_dev.data(), k, labels.data(), dist2.data(), stream, norms_ptr);
  stream.synchronize();
  return {labels.download(stream), dist2.download(stream)};
}

void check_written(const DeviceResult& r, std::size_t k) {
  std::size_t bad = 0;
  for (std::size_t i = 0; i < r.labels.size(); ++i)
    if (r.labels[i] < 0 || static_cast<std::size_t>(r.labels[i]) >= k || std::isnan(r.dist2[i]) ||
        !std::isfinite(r.dist2[i]) || r.dist2[i] < 0.0f)
      ++bad;
  BOOST_TEST(bad == 0u, bad << " rows unwritten, out of range, negative or NaN");
}

void check_fp32(std::size_t n, std::size_t d, std::size_t k, std::uint64_t stream, std::size_t tile_bytes) {
  BOOST_TEST_CONTEXT("fp32 n=" << n << " d=" << d << " k=" << k << " tile_bytes=" << tile_bytes) {
    const auto x = normal_matrix(n, d, stream);
    const auto c = normal_matrix(k, d, stream + 500);
    std::vector<std::int32_t> cpu_labels(n);
    std::vector<float> cpu_dist(n);
    kmim::kmeans::assign_nearest_centroid(x.data(), n, d, c.data(), k, cpu_labels.data(), cpu_dist.data());
    const auto exact = exact_nearest(x, n, d, c, k);
    gpu::AssignOptions options;
    options.tile_bytes = tile_bytes;
    const DeviceResult g = run_gpu(x, n, d, c, k, options);
    check_written(g, k);
    std::size_t ties = 0, label_diffs = 0, dist_fail = 0, exact_fail = 0, label_fail = 0;
    double worst = 0.0;
    for (std::size_t i = 0; i < n; ++i) {
      const std::size_t gl = static_cast<std::size_t>(std::clamp<std::int32_t>(g.labels[i], 0, static_cast<std::int32_t>(k) - 1));
      const double xn = norm(&x[i * d], d);
      const double cn = norm(&c[static_cast<std::size_t>(exact.label[i]) * d], d);
      const double scale = xn * xn + cn * cn;
      const double tie_margin = kTieEps * scale;
      const bool near_tie = exact.second[i] - exact.best[i] <= tie_margin;
      ties += near_tie;
      const double diff = std::abs(double(g.dist2[i]) - double(cpu_dist[i]));
      const double tolerance = kFp32Relative * double(cpu_dist[i]) + kFp32Cancellation * scale;
      worst = std::max(worst, diff / std::max(double(cpu_dist[i]), 1e-30));
      if (g.labels[i] == cpu_labels[i]) {
        dist_fail += diff > tolerance;
      } else {
        ++label_diffs;
        dist_fail += diff > 2 * tie_margin + tolerance;
      }
      const double mine = squared_distance(&x[i * d], &c[gl * d], d);
      const double cg = norm(&c[gl * d], d);
      exact_fail += std::abs(double(g.dist2[i]) - mine) > kFp32Relative * mine + kFp32Cancellation * (xn * xn + cg * cg);
      if (g.labels[i] != exact.label[i] || g.labels[i] != cpu_labels[i])
        label_fail += !(near_tie && mine - exact.best[i] <= tie_margin);
    }
    BOOST_TEST_MESSAGE("fp32 n=" << n << " d=" << d << " k=" << k << ": worst |Δdist2|/dist2 vs CPU " << worst
                                 << ", near-ties " << ties << ", labels differing from CPU " << label_diffs);
    BOOST_TEST(dist_fail == 0u);
    BOOST_TEST(exact_fail == 0u);
    BOOST_TEST(label_fail == 0u);
    BOOST_TEST(ties < n / 20 + 1);  // the near-tie allowance must not hide the comparison
  }
}

}  // namespace

BOOST_AUTO_TEST_CASE(fp32_matches_cpu_and_fp64_over_shapes) {
  // k and d below/at/above the warp width, k % 4 != 0 (scalar argmin path), single centroid.
  const std::size_t shapes[][3] = {{4000, 64, 256}, {3001, 100, 7}, {1500, 768, 1024},
                                   {2500, 3, 1},    {777, 33, 4099}, {5000, 16, 64}};
  std::uint64_t stream = 10;
  for (const auto& s : shapes) check_fp32(s[0], s[1], s[2], stream++, gpu::AssignOptions{}.tile_bytes);
}

BOOST_AUTO_TEST_CASE(fp32_chunking_does_not_change_results) {
  // A 64 KiB tile budget forces 128-row chunks: 79 chunks, the last one partial.
  check_fp32(10000, 32, 100, 40, 64 << 10);
  // Chunk rows from the rule: 32 MiB / (4·8192) = 1024 rows.
  BOOST_TEST(gpu::assignment_chunk_rows(1u << 22, 8192, 32u << 20) == 1024u);
  BOOST_TEST(gpu::assignment_chunk_rows(1u << 22, 256, 32u << 20) == 32768u);
  BOOST_TEST(gpu::assignment_chunk_rows(100, 256, 32u << 20) == 100u);
  BOOST_TEST(gpu::assignment_chunk_rows(1u << 22, 1u << 20, 32u << 20) == 128u);
}

BOOST_AUTO_TEST_CASE(tf32_stays_within_the_documented_bound) {
  const std::size_t shapes[][3] = {{3000, 768, 1024}, {4000, 64, 256}, {2001, 100, 7}};
  std::uint64_t stream = 60;
  for (const auto& s : shapes) {
    const std::size_t n = s[0], d = s[1], k = s[2];
    BOOST_TEST_CONTEXT("tf32 n=" << n << " d=" << d << " k=" << k) {
      const auto x = normal_matrix(n, d, stream);
      const auto c = normal_matrix(k, d, stream + 500);
      ++stream;
      const auto exact = exact_nearest(x, n, d, c, k);
      gpu::AssignOptions options;
      options.precision = gpu::MatmulPrecision::tf32;
      const DeviceResult g = run_gpu(x, n, d, c, k, options);
      check_written(g, k);
      std::size_t dist_fail = 0, label_fail = 0, label_diffs = 0, inexact = 0;
      double worst_ratio = 0.0;
      for (std::size_t i = 0; i < n; ++i) {
        const std::size_t gl = static_cast<std::size_t>(std::clamp<std::int32_t>(g.labels[i], 0, static_cast<std::int32_t>(k) - 1));
        const double xn = norm(&x[i * d], d);
        const double cn = std::max(norm(&c[gl * d], d), norm(&c[static_cast<std::size_t>(exact.label[i]) * d], d));
        const double bound = gpu::tf32_distance_error_bound(xn, cn, d);
        const double mine = squared_distance(&x[i * d], &c[gl * d], d);
        const double err = std::abs(double(g.dist2[i]) - mine);
        worst_ratio = std::max(worst_ratio, err / bound);
        inexact += err > kFp32Relative * mine;
        dist_fail += err > bound;
        label_fail += mine - exact.best[i] > 2 * bound;
        label_diffs += g.labels[i] != exact.label[i];
      }
      BOOST_TEST_MESSAGE("tf32 n=" << n << " d=" << d << " k=" << k << ": worst error / bound " << worst_ratio
                                   << ", labels differing from fp64 " << label_diffs << ", rows beyond fp32 accuracy "
                                   << inexact << " (0 would mean TF32 was not used)");
      BOOST_TEST(dist_fail == 0u);
      BOOST_TEST(label_fail == 0u);
    }
  }
}

BOOST_AUTO_TEST_CASE(exact_inputs_give_identical_results_and_lowest_index_ties) {
  // Small-integer data: every distance is exact in fp32 and TF32, and the centroid list holds
  // each centroid twice (j and j + 40), so every row has an exact tie that must go to the lower
  // index — and labels and dist2 must equal the CPU's exactly in both modes.
  const std::size_t n = 6000, d = 48, half = 40, k = 2 * half;
  const auto x = integer_matrix(n, d, 1, 3);
  auto c = integer_matrix(half, d, 2, 2);
  c.insert(c.end(), c.begin(), c.end());
  std::vector<std::int32_t> cpu_labels(n), ref_labels(n);
  std::vector<float> cpu_dist(n), ref_dist(n);
  kmim::kmeans::assign_nearest_centroid(x.data(), n, d, c.data(), k, cpu_labels.data(), cpu_dist.data());
  kmim::kmeans::assign_nearest_centroid_reference(x.data(), n, d, c.data(), k, ref_labels.data(), ref_dist.data());
  BOOST_TEST_REQUIRE(cpu_labels == ref_labels);
  for (const auto precision : {gpu::MatmulPrecision::fp32, gpu::MatmulPrecision::tf32}) {
    BOOST_TEST_CONTEXT("precision " << gpu::precision_name(precision)) {
      gpu::AssignOptions options;
      options.precision = precision;
      const DeviceResult g = run_gpu(x, n, d, c, k, options);
      check_written(g, k);
      BOOST_TEST(g.labels == cpu_labels);
      BOOST_TEST(g.dist2 == cpu_dist);
      BOOST_TEST(*std::max_element(g.labels.begin(), g.labels.end()) < static_cast<std::int32_t>(half));
    }
  }
}

BOOST_AUTO_TEST_CASE(distances_are_clamped_and_never_nan) {
  // Rows equal to large-norm centroids: the expanded formula cancels and may round below zero.
  const std::size_t d = 64, k = 20, n = 400;
  auto c = normal_matrix(k, d, 77);
  for (auto& v : c) v += 1000.0f;
  std::vector<float> x(n * d);
  for (std::size_t i = 0; i < n; ++i)
    std::copy_n(&c[(i % k) * d], d, &x[i * d]);
  for (const auto precision : {gpu::MatmulPrecision::fp32, gpu::MatmulPrecision::tf32}) {
    gpu::AssignOptions options;
    options.precision = precision;
    const DeviceResult g = run_gpu(x, n, d, c, k, options);
    check_written(g, k);  // includes dist2 >= 0 and no NaN
  }
}

BOOST_AUTO_TEST_CASE(precomputed_norms_host_api_and_edge_cases) {
  const std::size_t n = 3000, d = 40, k = 300;
  const auto x = normal_matrix(n, d, 90);
  const auto c = normal_matrix(k, d, 91);
  std::vector<float> norms(k);
  for (std::size_t j = 0; j < k; ++j) {  // fp64 sum rounded once, as the CPU path computes them
    double sum = 0.0;
    for (std::size_t t = 0; t < d; ++t) sum += static_cast<double>(c[j * d + t]) * c[j * d + t];
    norms[j] = static_cast<float>(sum);
  }
  const DeviceResult plain = run_gpu(x, n, d, c, k, {});
  const DeviceResult with_norms = run_gpu(x, n, d, c, k, {}, &norms);
  check_written(with_norms, k);
  BOOST_TEST(plain.labels == with_norms.labels);
  // Norms computed on the device (fp64, rounded once) and on the host agree except in rare
  // half-way roundings: distances equal to 1e-6 relative.
  std::size_t far = 0;
  for (std::size_t i = 0; i < n; ++i)
    far += std::abs(plain.dist2[i] - with_norms.dist2[i]) > 1e-6f * plain.dist2[i];
  BOOST_TEST(far == 0u);

  // Host-pointer API: same signature as the CPU function, same results as the device API.
  std::vector<std::int32_t> labels(n, -7);
  std::vector<float> dist2(n, NAN);
  gpu::assign_nearest_centroid(x.data(), n, d, c.data(), k, labels.data(), dist2.data());
  BOOST_TEST(labels == plain.labels);
  BOOST_TEST(dist2 == plain.dist2);

  // Device norms helper: fp64 accumulation rounded once.
  gpu::Stream stream;
  gpu::DeviceBuffer<float> c_dev(k * d), norms_dev(k);
  c_dev.upload(c, stream);
  gpu::fill_device_bytes(norms_dev.data(), 0xFF, norms_dev.bytes(), stream);
  gpu::compute_row_norms2(c_dev.data(), k, d, norms_dev.data(), stream);
  const auto device_norms = norms_dev.download(stream);
  for (std::size_t j = 0; j < k; ++j) BOOST_TEST(std::abs(device_norms[j] - norms[j]) <= 1e-6f * norms[j]);

  // Precomputed ||x||² (as K-means passes them every iteration): the same rounding as the fused
  // computation, so bit-identical results.
  gpu::DeviceBuffer<float> x_dev(n * d), x_norms(n);
  gpu::DeviceBuffer<std::int32_t> l_dev(n);
  gpu::DeviceBuffer<float> d_dev(n);
  x_dev.upload(x, stream);
  gpu::compute_row_norms2(x_dev.data(), n, d, x_norms.data(), stream);
  gpu::fill_device_bytes(l_dev.data(), 0xFF, l_dev.bytes(), stream);
  gpu::fill_device_bytes(d_dev.data(), 0xFF, d_dev.bytes(), stream);
  gpu::CentroidAssigner assigner;
  assigner.assign(x_dev.data(), n, d, c_dev.data(), k, l_dev.data(), d_dev.data(), stream, nullptr, x_norms.data());
  BOOST_TEST(l_dev.download(stream) == plain.labels);
  BOOST_TEST(d_dev.download(stream) == plain.dist2);

  // k = 0: labels −1 and dist2 +inf, as on the CPU.
  std::vector<std::int32_t> l0(5, 3);
  std::vector<float> d0(5, 1.0f);
  gpu::assign_nearest_centroid(x.data(), 5, d, c.data(), 0, l0.data(), d0.data());
  for (std::size_t i = 0; i < 5; ++i) {
    BOOST_TEST(l0[i] == -1);
    BOOST_TEST(std::isinf(d0[i]));
  }
  // n = 0 writes nothing and does not fail.
  BOOST_CHECK_NO_THROW(gpu::assign_nearest_centroid(x.data(), 0, d, c.data(), k, l0.data(), d0.data()));
}

BOOST_AUTO_TEST_CASE(precision_names) {
  BOOST_TEST(gpu::precision_name(gpu::precision_from_name("tf32")) == "tf32");
  BOOST_TEST(gpu::precision_name(gpu::precision_from_name("fp32")) == "fp32");
  BOOST_CHECK_THROW(gpu::precision_from_name("fp16"), kmim::OptionError);
}
