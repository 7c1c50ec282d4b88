// Rank-count invariance: K-means over 2 or 3 ranks gives the centroids a single rank computes
// (here: the same computation on MPI_COMM_SELF inside the test) to 1e-6 relative.
#define BOOST_TEST_MODULE kmeans_mpi
#include <boost/test/unit_test.hpp>

#include <omp.h>

#include <algorithm>
#include <cmath>

#include "kmeans_test_data.hpp"
#include "kmim/core/rng.hpp"
#include "kmim/dist/mpi.hpp"
#include "kmim/kmeans/local_vectors.hpp"
#include "kmim/kmeans/train.hpp"

using namespace kmim;
using namespace kmim::kmeans;
using kmim::kmeans::testing::blob_vectors;
using kmim::kmeans::testing::normal_vectors;

struct MpiFixture {
  dist::MpiSession session;
  // Several ranks share the CI machine's cores: one thread each (spinning OpenMP threads of
  // oversubscribed ranks would slow every collective down).
  MpiFixture() { omp_set_num_threads(1); }
};
BOOST_TEST_GLOBAL_FIXTURE(MpiFixture);

namespace {

struct Outcome {
  TrainState state;
  FinalAssignment final;
};

Outcome train_on(const dist::Communicator& comm, VectorSource& source, const TrainConfig& config,
                 std::uint64_t memory_limit) {
  LocalVectors data(source, comm, memory_limit);
  Outcome o;
  o.state = initial_state(data, config, comm);
  train_kmeans(data, config, comm, o.state);
  o.final = final_assignment(data, o.state.centroids, config.k, comm);
  return o;
}

/// Every centroid of `got` is within 1e-6 relative (in L2 norm) of the same centroid of `want`.
void check_close(const Outcome& got, const Outcome& want, std::size_t k, std::size_t d) {
  BOOST_REQUIRE(got.state.centroids.size() == want.state.centroids.size());
  for (std::size_t j = 0; j < k; ++j) {
    double diff = 0, norm = 0;
    for (std::size_t t = 0; t < d; ++t) {
      diff += std::pow(got.state.centroids[j * d + t] - want.state.centroids[j * d + t], 2);
      norm += std::pow(want.state.centroids[j * d + t], 2);
    }
    BOOST_TEST(std::sqrt(diff) <= 1e-6 * std::max(std::sqrt(norm), 1e-3), "centroid " << j);
  }
  BOOST_TEST(got.final.cluster_sizes == want.final.cluster_sizes);
  BOOST_TEST(got.state.empty_events == want.state.empty_events);
  BOOST_TEST(got.state.completed == want.state.completed);
  for (std::size_t t = 0; t < want.state.inertia.size(); ++t)
    BOOST_TEST(std::abs(got.state.inertia[t] - want.state.inertia[t]) <= 1e-6 * want.state.inertia[t]);
}

/// Returns the one-rank outcome.
Outcome compare_with_one_rank(VectorSource& source, const TrainConfig& config, std::uint64_t memory_limit) {
  const dist::Communicator world;
  const dist::Communicator self(MPI_COMM_SELF);
  BOOST_TEST_MESSAGE("ranks: " << world.size());
  const Outcome distributed = train_on(world, source, config, memory_limit);
  const Outcome single = train_on(self, source, config, memory_limit);
  check_close(distributed, single, config.k, source.dim());
  // Every rank holds identical centroids.
  std::vector<double> mine = distributed.state.centroids, root = mine;
  world.bcast(std::span<double>(root), 0);
  BOOST_TEST(mine == root);
  return single;
}

}  // namespace

BOOST_AUTO_TEST_CASE(lloyd_cached_matches_one_rank) {
  MemoryVectorSource source(normal_vectors(5003, 10, 31), 10);  // a count no rank split divides
  TrainConfig config;
  config.k = 37;
  config.iters = 10;
  config.tol = 0;
  compare_with_one_rank(source, config, 1ull << 40);
}

BOOST_AUTO_TEST_CASE(lloyd_streaming_with_empty_clusters_matches_one_rank) {
  // Random init on data made of 40 distinct points repeated 50 times each: a seeding sample of
  // 30 vectors almost surely holds duplicates, whose clusters are left empty in iteration 1, so
  // the relocation path runs on every rank count.
  const auto prototypes = normal_vectors(40, 6, 17);
  std::vector<float> x(2000 * 6);
  RandomStream pick(17, 3);
  for (std::size_t i = 0; i < 2000; ++i) {
    const std::size_t p = pick.below(40);
    std::copy_n(prototypes.begin() + static_cast<std::ptrdiff_t>(p * 6), 6, x.begin() + static_cast<std::ptrdiff_t>(i * 6));
  }
  MemoryVectorSource source(std::move(x), 6, 2);
  TrainConfig config;
  config.k = 24;
  config.iters = 8;
  config.tol = 0;
  config.init = InitMethod::random;
  config.init_sample = 30;  // a small sample: duplicate seeds are likely
  const Outcome o = compare_with_one_rank(source, config, /*memory_limit=*/0);
  std::int64_t events = 0;
  for (const auto e : o.state.empty_events) events += e;
  BOOST_TEST(events > 0);  // the relocation path was exercised
}

BOOST_AUTO_TEST_CASE(minibatch_matches_one_rank) {
  MemoryVectorSource source(normal_vectors(4 * 1501, 8, 41), 8, 4);  // 1501 items × 4 vectors
  TrainConfig config;
  config.k = 20;
  config.algorithm = Algorithm::minibatch;
  config.batch_items = 64;
  config.passes = 3;
  config.tol = 0;
  compare_with_one_rank(source, config, 1ull << 40);
}
