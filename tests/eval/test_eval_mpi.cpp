// Evaluation over MPI ranks against one process (MPI_COMM_SELF):
// - the linear probe is data parallel with BN statistics and gradients summed over ranks, so
//   MPI_COMM_WORLD gives the same probe up to floating-point summation order, with identical
//   shuffles (rank-count independent seeds);
// - kNN splits the test rows over ranks and sums the counts: identical results.
#define BOOST_TEST_MODULE eval_mpi
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

#include "kmim/core/rng.hpp"
#include "kmim/dist/mpi.hpp"
#include "kmim/eval/knn.hpp"
#include "kmim/eval/linear_probe.hpp"

using namespace kmim;
using namespace kmim::eval;

namespace {

struct MpiFixture {
  dist::MpiSession session;
};

FeatureSet noisy(std::size_t n, std::size_t d, std::size_t classes, std::uint64_t stream) {
  RandomStream centres(23, 500);
  std::vector<double> c(classes * d);
  for (auto& v : c) v = centres.normal();
  RandomStream rng(23, stream);
  FeatureSet s;
  s.file = "memory";
  s.n = n;
  s.dim = d;
  for (std::size_t i = 0; i < n; ++i) {
    const auto label = static_cast<std::size_t>(rng.below(classes));
    s.labels.push_back(static_cast<std::int32_t>(label));
    for (std::size_t t = 0; t < d; ++t)
      s.features.push_back(static_cast<float>(5.0 + c[label * d + t] + 1.5 * rng.normal()));
  }
  return s;
}

}  // namespace

BOOST_TEST_GLOBAL_FIXTURE(MpiFixture);

BOOST_AUTO_TEST_CASE(world_matches_single_process) {
  const FeatureSet train = noisy(1000, 16, 6, 1);
  const FeatureSet val = noisy(301, 16, 6, 2);  // uneven val blocks
  LinearProbeConfig c;
  c.epochs = 5;
  c.warmup_epochs = 1;
  c.batch_size = 101;  // uneven per-rank shares of every batch
  c.base_lr = 2.0;
  dist::Communicator world, self(MPI_COMM_SELF);
  LinearProbeState a = init_linear_probe(16, 6, c), b = init_linear_probe(16, 6, c);
  train_linear_probe(a, train, val, c, world);
  train_linear_probe(b, train, val, c, self);
  double diff = 0.0, scale = 0.0;
  for (std::size_t i = 0; i < a.weight.size(); ++i) {
    diff = std::max(diff, std::abs(double(a.weight[i]) - b.weight[i]));
    scale = std::max(scale, std::abs(double(b.weight[i])));
  }
  BOOST_TEST(diff <= 1e-4 * scale, "max |ΔW| " << diff << " of max |W| " << scale);
  for (std::size_t j = 0; j < 16; ++j) {
    BOOST_TEST(a.running_mean[j] == b.running_mean[j], boost::test_tools::tolerance(1e-5f));
    BOOST_TEST(a.running_var[j] == b.running_var[j], boost::test_tools::tolerance(1e-5f));
  }
  for (std::size_t e = 0; e < a.history.size(); ++e) {
    BOOST_TEST(std::abs(a.history[e].top1 - b.history[e].top1) <= 0.5);
    BOOST_TEST(a.history[e].train_loss == b.history[e].train_loss, boost::test_tools::tolerance(1e-5));
  }
  // Every rank holds the same parameters afterwards.
  double sum = 0.0;
  for (float w : a.weight) sum += w;
  const double root_sum = world.bcast(sum);
  BOOST_TEST(sum == root_sum);
}

BOOST_AUTO_TEST_CASE(knn_world_matches_single_process) {
  const FeatureSet train = noisy(800, 12, 5, 3);
  const FeatureSet test = noisy(203, 12, 5, 4);
  dist::Communicator world, self(MPI_COMM_SELF);
  KnnParams p;
  p.test_block = 16;
  const KnnResult a = knn_classify(train.features.data(), train.labels.data(), train.n,
                                   test.features.data(), test.labels.data(), test.n, 12, 5, p, &world);
  const KnnResult b = knn_classify(train.features.data(), train.labels.data(), train.n,
                                   test.features.data(), test.labels.data(), test.n, 12, 5, p, &self);
  BOOST_TEST(a.total == 203);
  BOOST_TEST(a.correct1 == b.correct1);
  BOOST_TEST(a.correct5 == b.correct5);
  // This rank's predictions are the matching rows of the single-process ones.
  const auto [first, last] = world.block_range(test.n);
  BOOST_TEST(a.first_test == first);
  BOOST_TEST(a.predictions.size() == (last - first) * a.ranked);
  for (std::size_t i = 0; i < a.predictions.size(); ++i)
    BOOST_TEST(a.predictions[i] == b.predictions[first * b.ranked + i]);
}
