// OpenBLAS sgemm rate on this machine, in the benchmark's own run (not a test):
//   sgemm_peak THREADS [D K]   → "sgemm_peak_gflops <best of 3, 4096³>" and, with D and K,
//   "sgemm_shape_gflops <rate of a [65536, D] × [D, K] product>" (the distance GEMM's shape).
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

static double rate(int m, int n, int k, bool transpose_b, int repeats) {
  std::vector<float> a(static_cast<std::size_t>(m) * k, 0.5f), b(static_cast<std::size_t>(k) * n, 0.25f),
      c(static_cast<std::size_t>(m) * n);
  double best = 0;
  for (int r = 0; r < repeats + 1; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, transpose_b ? CblasTrans : CblasNoTrans, m, n, k, 1.0f,
                a.data(), k, b.data(), transpose_b ? k : n, 0.0f, c.data(), n);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (r > 0) best = std::max(best, 2.0 * m * n * static_cast<double>(k) / s / 1e9);  // r = 0 warms up
  }
  return best;
}

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::atoi(argv[1]) : 1;
  openblas_set_num_threads(threads);
  std::printf("sgemm_peak_gflops %.1f\n", rate(4096, 4096, 4096, false, 3));
  if (argc > 3)
    std::printf("sgemm_shape_gflops %.1f\n", rate(65536, std::atoi(argv[3]), std::atoi(argv[2]), true, 3));
  return 0;
}
