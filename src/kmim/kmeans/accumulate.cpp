#include "kmim/kmeans/accumulate.hpp"

#include <vector>

namespace kmim::kmeans {

void accumulate_cluster_sums(const float* x, std::size_t n, std::size_t d, const std::int32_t* labels,
                             std::size_t k, double* sums, std::int64_t* counts) {
  std::vector<std::size_t> offsets(k + 1, 0);
  for (std::size_t i = 0; i < n; ++i) ++offsets[static_cast<std::size_t>(labels[i]) + 1];
  for (std::size_t j = 0; j < k; ++j) offsets[j + 1] += offsets[j];
  std::vector<std::size_t> members(n);
  {
    std::vector<std::size_t> next(offsets.begin(), offsets.end() - 1);
    for (std::size_t i = 0; i < n; ++i) members[next[static_cast<std::size_t>(labels[i])]++] = i;
  }
  const auto clusters = static_cast<std::ptrdiff_t>(k);
#pragma omp parallel for schedule(dynamic, 1)
  for (std::ptrdiff_t cj = 0; cj < clusters; ++cj) {
    const auto j = static_cast<std::size_t>(cj);
    if (offsets[j] == offsets[j + 1]) continue;
    double* s = sums + j * d;
    for (std::size_t m = offsets[j]; m < offsets[j + 1]; ++m) {
      const float* row = x + members[m] * d;
      for (std::size_t t = 0; t < d; ++t) s[t] += static_cast<double>(row[t]);
    }
    counts[j] += static_cast<std::int64_t>(offsets[j + 1] - offsets[j]);
  }
}

}  // namespace kmim::kmeans
