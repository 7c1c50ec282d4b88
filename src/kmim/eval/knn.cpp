#include "kmim/eval/knn.hpp"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <tuple>

#include <fmt/format.h>

#include "kmim/core/error.hpp"
#include "kmim/eval/blas_threads.hpp"

namespace kmim::eval {

namespace {

void check_labels(const std::int32_t* labels, std::size_t n, std::size_t num_classes,
                  const char* what) {
  for (std::size_t i = 0; i < n; ++i)
    if (labels[i] < 0 || static_cast<std::size_t>(labels[i]) >= num_classes)
      throw Error(fmt::format("kNN: {} sample {} has label {} outside [0, {})", what, i, labels[i],
                              num_classes));
}

/// The k best (similarity, index) pairs seen so far for one test row, best first. A candidate
/// equal to an entry never passes it: indices arrive in ascending order, so equal similarities
/// keep the lower index ahead.
struct TopK {
  std::vector<float> sim;
  std::vector<std::int64_t> index;
  std::size_t filled = 0;

  void reset(std::size_t k) {
    sim.assign(k, 0.0f);
    index.assign(k, -1);
    filled = 0;
  }
  void offer(float s, std::int64_t j) {
    const std::size_t k = sim.size();
    if (filled == k && !(s > sim[k - 1])) return;
    std::size_t p = filled < k ? filled : k - 1;
    while (p > 0 && sim[p - 1] < s) {
      sim[p] = sim[p - 1];
      index[p] = index[p - 1];
      --p;
    }
    sim[p] = s;
    index[p] = j;
    if (filled < k) ++filled;
  }
};

}  // namespace

void l2_normalize_rows(float* x, std::size_t n, std::size_t d) {
#pragma omp parallel for schedule(static)
  for (std::size_t i = 0; i < n; ++i) {
    float* row = x + i * d;
    double s = 0.0;
    for (std::size_t t = 0; t < d; ++t) s += static_cast<double>(row[t]) * row[t];
    const double scale = 1.0 / std::max(std::sqrt(s), 1e-12);
    for (std::size_t t = 0; t < d; ++t) row[t] = static_cast<float>(row[t] * scale);
  }
}

KnnResult knn_classify(const float* train, const std::int32_t* train_labels, std::size_t n_train,
                       const float* test, const std::int32_t* test_labels, std::size_t n_test,
                       std::size_t d, std::size_t num_classes, const KnnParams& params,
                       const dist::Communicator* comm) {
  if (n_train == 0 || n_test == 0 || d == 0 || num_classes == 0)
    throw Error(fmt::format("kNN: empty input ({} training and {} test samples of dimension {}, "
                            "{} classes)", n_train, n_test, d, num_classes));
  if (params.k == 0) throw Error("kNN: k must be at least 1");
  if (!(params.temperature > 0.0)) throw Error("kNN: the temperature must be positive");
  check_labels(train_labels, n_train, num_classes, "training");
  check_labels(test_labels, n_test, num_classes, "test");

  const std::size_t k = std::min(params.k, n_train);
  const std::size_t test_block = std::max<std::size_t>(params.test_block, 1);
  const std::size_t train_block = std::max<std::size_t>(params.train_block, 1);
  const std::size_t ranked = std::min<std::size_t>(5, num_classes);

  std::uint64_t first = 0, last = n_test;
  if (comm != nullptr) std::tie(first, last) = comm->block_range(n_test);
  const std::size_t rows = static_cast<std::size_t>(last - first);

  std::vector<float> train_n(train, train + n_train * d);
  l2_normalize_rows(train_n.data(), n_train, d);
  std::vector<float> test_n(test + first * d, test + last * d);
  l2_normalize_rows(test_n.data(), rows, d);

  KnnResult result;
  result.ranked = ranked;
  result.first_test = first;
  result.predictions.assign(rows * ranked, -1);
  std::int64_t correct1 = 0, correct5 = 0;
  const std::size_t blocks = (rows + test_block - 1) / test_block;
  const double inv_t = 1.0 / params.temperature;
  BlasSingleThreaded blas_guard;
#pragma omp parallel reduction(+ : correct1, correct5)
  {
    std::vector<float> tile(test_block * std::min(train_block, n_train));
    std::vector<TopK> best(test_block);
    std::vector<double> votes(num_classes);
    std::vector<std::int32_t> order(num_classes);
#pragma omp for schedule(dynamic, 1)
    for (std::size_t b = 0; b < blocks; ++b) {
      const std::size_t r0 = b * test_block;
      const std::size_t nr = std::min(test_block, rows - r0);
      for (std::size_t r = 0; r < nr; ++r) best[r].reset(k);
      for (std::size_t c0 = 0; c0 < n_train; c0 += train_block) {
        const std::size_t nc = std::min(train_block, n_train - c0);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(nr),
                    static_cast<int>(nc), static_cast<int>(d), 1.0f, test_n.data() + r0 * d,
                    static_cast<int>(d), train_n.data() + c0 * d, static_cast<int>(d), 0.0f,
                    tile.data(), static_cast<int>(nc));
        for (std::size_t r = 0; r < nr; ++r) {
          const float* sims = tile.data() + r * nc;
          TopK& top = best[r];
          for (std::size_t j = 0; j < nc; ++j)
            top.offer(sims[j], static_cast<std::int64_t>(c0 + j));
        }
      }
      for (std::size_t r = 0; r < nr; ++r) {
        std::fill(votes.begin(), votes.end(), 0.0);
        const TopK& top = best[r];
        for (std::size_t j = 0; j < top.filled; ++j)
          votes[static_cast<std::size_t>(train_labels[top.index[j]])] +=
              std::exp(static_cast<double>(top.sim[j]) * inv_t);
        std::iota(order.begin(), order.end(), 0);
        std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(ranked),
                          order.end(), [&](std::int32_t a, std::int32_t c) {
                            const double va = votes[static_cast<std::size_t>(a)];
                            const double vc = votes[static_cast<std::size_t>(c)];
                            return va > vc || (va == vc && a < c);
                          });
        const std::size_t row = r0 + r;
        const std::int32_t truth = test_labels[first + row];
        std::copy_n(order.begin(), ranked, result.predictions.begin() +
                                               static_cast<std::ptrdiff_t>(row * ranked));
        if (order[0] == truth) ++correct1;
        if (std::find(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(ranked), truth) !=
            order.begin() + static_cast<std::ptrdiff_t>(ranked))
          ++correct5;
      }
    }
  }
  std::int64_t counts[3] = {correct1, correct5, static_cast<std::int64_t>(rows)};
  if (comm != nullptr) comm->allreduce(std::span<std::int64_t>(counts, 3));
  result.correct1 = counts[0];
  result.correct5 = counts[1];
  result.total = counts[2];
  result.top1 = 100.0 * static_cast<double>(result.correct1) / static_cast<double>(result.total);
  result.top5 = 100.0 * static_cast<double>(result.correct5) / static_cast<double>(result.total);
  return result;
}

}  // namespace kmim::eval
