// GPU Lloyd iterations (NCCL reduction of the statistics, empty-cluster relocation over ranks)
// against the CPU path's own kmim::kmeans::lloyd_iteration, on any number of ranks up to the
// number of GPUs (more ranks than GPUs: SKIPPED, exit 77). Same centroids within 1e-5 relative,
// same empty-cluster events, same inertia within 1e-5.
#define BOOST_TEST_MODULE kmim_gpu_lloyd_cpu_parity
#include "gpu_test_main.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "gpu_mpi_fixture.hpp"
#include "gpu_test_data.hpp"
#include "kmim/dist/mpi.hpp"
#include "kmim/gpu/kmeans_reduce.hpp"
#include "kmim/gpu/nccl_communicator.hpp"
#include "kmim/kmeans/local_vectors.hpp"
#include "kmim/kmeans/train.hpp"
#include "kmim/kmeans/vector_source.hpp"

namespace gpu = kmim::gpu;

BOOST_TEST_GLOBAL_FIXTURE(GpuMpiFixture);

BOOST_AUTO_TEST_CASE(gpu_lloyd_follows_the_cpu_lloyd_iteration) {
  // Blobs plus two far outliers, and three far-away initial centroids that get no point: the
  // CPU path relocates two of them onto the outliers (the farthest points) and leaves the third
  // where it is; the GPU iteration must do the same, on every rank count.
  const kmim::dist::Communicator world;
  gpu::select_device_for_rank(world);
  gpu::NcclCommunicator nccl(world);
  const std::size_t blobs = 8, d = 16, per_blob = 3000, k = blobs + 3;
  const auto centres = kmim_gpu_test::normal_matrix(blobs, d, 60, 10.0);
  const auto noise = kmim_gpu_test::normal_matrix(blobs * per_blob, d, 61, 0.5);
  std::vector<float> x(noise.size() + 2 * d);
  for (std::size_t i = 0; i < blobs * per_blob; ++i)
    for (std::size_t t = 0; t < d; ++t) x[i * d + t] = centres[(i % blobs) * d + t] + noise[i * d + t];
  const std::size_t n = blobs * per_blob + 2;
  std::fill_n(x.begin() + static_cast<std::ptrdiff_t>((n - 2) * d), d, 300.0f);
  std::fill_n(x.begin() + static_cast<std::ptrdiff_t>((n - 1) * d), d, -250.0f);
  std::vector<float> c0(k * d, 2000.0f);
  std::copy_n(x.begin(), blobs * d, c0.begin());

  kmim::kmeans::MemoryVectorSource source(x, d);
  kmim::kmeans::LocalVectors data(source, world, std::uint64_t{1} << 40);
  kmim::kmeans::TrainConfig config;
  config.k = k;
  config.initial_centroids = c0;
  kmim::kmeans::TrainState state = kmim::kmeans::initial_state(data, config, world);

  gpu::Stream s;
  const std::size_t n_local = data.count();
  gpu::DeviceBuffer<float> x_dev(n_local * d), c_dev(k * d);
  x_dev.upload({x.data() + data.first_vector() * d, n_local * d}, s);
  c_dev.upload(c0, s);
  gpu::LloydIteration it(k, d);
  const gpu::RankContext ranks = gpu::rank_context(world, data.first_vector());
  for (int iter = 0; iter < 4; ++iter) {
    BOOST_TEST_CONTEXT("iteration " << iter) {
      const kmim::kmeans::IterationReport cpu = kmim::kmeans::lloyd_iteration(data, config, world, state);
      it.assign_and_accumulate(x_dev.data(), n_local, c_dev.data(), s);
      gpu::allreduce_cluster_statistics(it.statistics(), nccl, s);
      const gpu::CentroidUpdate u = it.update(c_dev.data(), s, ranks);
      BOOST_TEST(static_cast<std::int64_t>(u.empty_clusters) == cpu.events);
      if (iter == 0) BOOST_TEST(u.empty_clusters == 3u);
      BOOST_TEST(std::abs(u.inertia - cpu.inertia) <= 1e-5 * cpu.inertia);
      const auto c_gpu = c_dev.download(s);
      std::size_t bad = 0;
      for (std::size_t e = 0; e < k * d; ++e) {
        const double want = static_cast<float>(state.centroids[e]);
        bad += std::abs(double(c_gpu[e]) - want) > 1e-5 * std::max(1.0, std::abs(want));
      }
      BOOST_TEST(bad == 0u);
    }
  }
}
