// Weighted kNN (DINO style) against a brute-force double-precision reference.
#define BOOST_TEST_MODULE eval_knn
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include "kmim/core/error.hpp"
#include "kmim/core/rng.hpp"
#include "kmim/dist/mpi.hpp"
#include "kmim/eval/knn.hpp"

using namespace kmim;
using namespace kmim::eval;

namespace {

struct MpiFixture {
  dist::MpiSession session;
};

/// Clustered data: class c has a random centre; samples are centre + noise.
struct Clustered {
  std::vector<float> x;
  std::vector<std::int32_t> y;
};
Clustered make_data(std::size_t n, std::size_t d, std::size_t classes, double noise,
                    std::uint64_t stream) {
  RandomStream centres(5, 99);
  std::vector<double> c(classes * d);
  for (auto& v : c) v = centres.normal();
  RandomStream rng(5, stream);
  Clustered out;
  for (std::size_t i = 0; i < n; ++i) {
    const auto label = static_cast<std::size_t>(rng.below(classes));
    out.y.push_back(static_cast<std::int32_t>(label));
    for (std::size_t t = 0; t < d; ++t)
      out.x.push_back(static_cast<float>(c[label * d + t] + noise * rng.normal()));
  }
  return out;
}

/// The definition, brute force: cosine similarity in double, full sort of all training samples,
/// k best (ties: lower index), votes exp(sim / T), classes ranked by vote (ties: lower class).
/// Returns the ranked classes (min(5, C) per test row) and the k-th/(k+1)-th similarity gap.
std::vector<std::int32_t> knn_reference(const Clustered& train, const Clustered& test,
                                        std::size_t d, std::size_t classes, std::size_t k,
                                        double temperature, std::vector<double>& gap) {
  const std::size_t n_train = train.y.size(), n_test = test.y.size();
  auto norm = [d](const std::vector<float>& x, std::size_t i) {
    double s = 0;
    for (std::size_t t = 0; t < d; ++t) s += double(x[i * d + t]) * x[i * d + t];
    return std::max(std::sqrt(s), 1e-12);
  };
  const std::size_t ranked = std::min<std::size_t>(5, classes);
  std::vector<std::int32_t> out;
  gap.clear();
  for (std::size_t i = 0; i < n_test; ++i) {
    std::vector<double> sim(n_train);
    const double ni = norm(test.x, i);
    for (std::size_t j = 0; j < n_train; ++j) {
      double s = 0;
      for (std::size_t t = 0; t < d; ++t) s += double(test.x[i * d + t]) * train.x[j * d + t];
      sim[j] = s / (ni * norm(train.x, j));
    }
    std::vector<std::size_t> order(n_train);
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return sim[a] > sim[b]; });
    gap.push_back(k < n_train ? sim[order[k - 1]] - sim[order[k]] : 1.0);
    std::vector<double> votes(classes, 0.0);
    for (std::size_t j = 0; j < k; ++j)
      votes[static_cast<std::size_t>(train.y[order[j]])] += std::exp(sim[order[j]] / temperature);
    std::vector<std::int32_t> cls(classes);
    std::iota(cls.begin(), cls.end(), 0);
    std::stable_sort(cls.begin(), cls.end(), [&](std::int32_t a, std::int32_t b) {
      return votes[static_cast<std::size_t>(a)] > votes[static_cast<std::size_t>(b)];
    });
    out.insert(out.end(), cls.begin(), cls.begin() + static_cast<std::ptrdiff_t>(ranked));
  }
  return out;
}

void compare(std::size_t n_train, std::size_t n_test, std::size_t d, std::size_t classes,
             double noise, std::size_t k, const KnnParams& params) {
  const Clustered train = make_data(n_train, d, classes, noise, 1);
  const Clustered test = make_data(n_test, d, classes, noise, 2);
  const KnnResult r = knn_classify(train.x.data(), train.y.data(), n_train, test.x.data(),
                                   test.y.data(), n_test, d, classes, params);
  std::vector<double> gap;
  const auto ref = knn_reference(train, test, d, classes, std::min(k, n_train),
                                 params.temperature, gap);
  const std::size_t ranked = std::min<std::size_t>(5, classes);
  BOOST_TEST(r.ranked == ranked);
  std::int64_t c1 = 0, c5 = 0;
  std::size_t compared = 0;
  for (std::size_t i = 0; i < n_test; ++i) {
    const auto* want = ref.data() + i * ranked;
    if (want[0] == test.y[i]) ++c1;
    if (std::find(want, want + ranked, test.y[i]) != want + ranked) ++c5;
    if (gap[i] < 1e-5) continue;  // the k-th neighbour is a float near-tie
    ++compared;
    BOOST_TEST(r.predictions[i * ranked] == want[0], "test row " << i);
  }
  BOOST_TEST(compared > n_test * 9 / 10);
  // Accuracies agree with the reference up to the few near-tie rows.
  BOOST_TEST(std::abs(r.correct1 - c1) <= static_cast<std::int64_t>(n_test - compared));
  BOOST_TEST(std::abs(r.correct5 - c5) <= static_cast<std::int64_t>(n_test - compared));
  BOOST_TEST(r.total == static_cast<std::int64_t>(n_test));
  BOOST_TEST(r.top1 == 100.0 * double(r.correct1) / double(n_test), boost::test_tools::tolerance(1e-12));
}

}  // namespace

BOOST_TEST_GLOBAL_FIXTURE(MpiFixture);

BOOST_AUTO_TEST_CASE(matches_brute_force) {
  KnnParams p;  // k 20, T 0.07
  compare(1500, 300, 32, 10, 1.5, 20, p);
  // Small tiles: many train blocks and test blocks with remainders.
  p.train_block = 97;
  p.test_block = 13;
  compare(700, 101, 16, 7, 1.0, 20, p);
  // Fewer classes than 5 and k larger than a block; k > n_train clamps.
  p.k = 50;
  compare(40, 30, 8, 3, 0.8, 50, p);
}

BOOST_AUTO_TEST_CASE(separable_data_is_classified_perfectly) {
  const Clustered train = make_data(500, 16, 5, 0.05, 3);
  const Clustered test = make_data(200, 16, 5, 0.05, 4);
  const KnnResult r = knn_classify(train.x.data(), train.y.data(), 500, test.x.data(),
                                   test.y.data(), 200, 16, 5, {});
  BOOST_TEST(r.top1 == 100.0);
  BOOST_TEST(r.top5 == 100.0);
}

BOOST_AUTO_TEST_CASE(bad_inputs_are_errors) {
  const std::vector<float> x(8, 1.0f);
  const std::vector<std::int32_t> y = {0, 1, 5, 0};
  BOOST_CHECK_THROW(knn_classify(x.data(), y.data(), 4, x.data(), y.data(), 4, 2, 3, {}), Error);
  const std::vector<std::int32_t> ok = {0, 1, 2, 0};
  KnnParams p;
  p.k = 0;
  BOOST_CHECK_THROW(knn_classify(x.data(), ok.data(), 4, x.data(), ok.data(), 4, 2, 3, p), Error);
  p.k = 2;
  p.temperature = 0.0;
  BOOST_CHECK_THROW(knn_classify(x.data(), ok.data(), 4, x.data(), ok.data(), 4, 2, 3, p), Error);
}
