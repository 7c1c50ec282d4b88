// NCCL bootstrapped over MPI and the reduction of Lloyd statistics over ranks, NCCL and MPI
// fallback: every rank contributes rank-dependent integer-valued statistics (exact in fp64 in
// any summation order); a Lloyd iteration over data split across ranks must equal the
// single-rank iteration over all of it. Runs with any number of ranks up to the number of GPUs
// (NCCL allows one rank per GPU); with more ranks than GPUs it reports SKIPPED (exit 77). The
// comparison with the CPU's lloyd_iteration is in test_gpu_lloyd_cpu_parity (it needs the whole
// CPU library, HDF5 included, at run time).
#define BOOST_TEST_MODULE kmim_gpu_nccl_mpi
#include "gpu_test_main.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "gpu_mpi_fixture.hpp"
#include "gpu_test_data.hpp"
#include "kmim/dist/mpi.hpp"
#include "kmim/gpu/device.hpp"
#include "kmim/gpu/kmeans_reduce.hpp"
#include "kmim/gpu/nccl_communicator.hpp"

namespace gpu = kmim::gpu;

namespace {

double contribution(int rank, std::size_t i) {
  return static_cast<double>((static_cast<std::size_t>(rank) + 1) * (i % 97));
}

}  // namespace

BOOST_TEST_GLOBAL_FIXTURE(GpuMpiFixture);

BOOST_AUTO_TEST_CASE(nccl_and_mpi_reductions_sum_over_ranks) {
  const kmim::dist::Communicator world;
  const int device = gpu::select_device_for_rank(world);
  BOOST_TEST(device >= 0);
  gpu::NcclCommunicator nccl(world);
  BOOST_TEST(nccl.rank() == world.rank());
  BOOST_TEST(nccl.size() == world.size());

  const std::size_t k = 300, d = 64;
  gpu::Stream s;
  std::vector<double> mine(k * d + k + 1);
  for (std::size_t i = 0; i < mine.size(); ++i) mine[i] = contribution(world.rank(), i);
  std::vector<double> want(mine.size(), 0.0);
  for (int r = 0; r < world.size(); ++r)
    for (std::size_t i = 0; i < want.size(); ++i) want[i] += contribution(r, i);

  for (const bool use_nccl : {true, false}) {
    BOOST_TEST_CONTEXT((use_nccl ? "NCCL" : "MPI host fallback")) {
      gpu::ClusterStatistics stats(k, d);
      gpu::copy_to_device(stats.data(), mine.data(), mine.size() * sizeof(double), s);
      if (use_nccl)
        gpu::allreduce_cluster_statistics(stats, nccl, s);
      else
        gpu::allreduce_cluster_statistics(stats, world, s);
      std::vector<double> got(stats.size());
      gpu::copy_to_host(got.data(), stats.data(), got.size() * sizeof(double), s);
      BOOST_TEST(got == want);
    }
  }
  // The raw NCCL call, also with one rank (where the statistics reduction skips it).
  gpu::DeviceBuffer<double> buf(mine.size());
  buf.upload(mine, s);
  nccl.allreduce_sum(buf.data(), buf.size(), s);
  BOOST_TEST(buf.download(s) == want);
}

BOOST_AUTO_TEST_CASE(split_lloyd_iteration_equals_the_whole) {
  const kmim::dist::Communicator world;
  gpu::select_device_for_rank(world);
  gpu::NcclCommunicator nccl(world);
  const std::size_t n = 40000, d = 16, k = 50;
  const auto x = kmim_gpu_test::normal_matrix(n, d, 8);
  const auto c0 = kmim_gpu_test::normal_matrix(k, d, 9);
  gpu::Stream s;
  // Whole data on this rank.
  gpu::DeviceBuffer<float> x_all(n * d), c_whole(k * d), c_split(k * d);
  x_all.upload(x, s);
  c_whole.upload(c0, s);
  c_split.upload(c0, s);
  gpu::LloydIteration whole(k, d);
  whole.assign_and_accumulate(x_all.data(), n, c_whole.data(), s);
  const gpu::CentroidUpdate u_whole = whole.update(c_whole.data(), s);
  // This rank's block of rows, reduced over ranks with NCCL.
  const auto [first, last] = world.block_range(n);
  gpu::LloydIteration part(k, d);
  part.assign_and_accumulate(x_all.data() + first * d, last - first, c_split.data(), s);
  gpu::allreduce_cluster_statistics(part.statistics(), nccl, s);
  const gpu::CentroidUpdate u_split = part.update(c_split.data(), s, gpu::rank_context(world, first));
  BOOST_TEST(u_split.counts == u_whole.counts);
  BOOST_TEST(std::abs(u_split.inertia - u_whole.inertia) <= 1e-9 * u_whole.inertia);
  const auto a = c_whole.download(s);
  const auto b = c_split.download(s);
  std::size_t bad = 0;
  for (std::size_t e = 0; e < a.size(); ++e) bad += std::abs(a[e] - b[e]) > 1e-6f * std::max(1.0f, std::abs(a[e]));
  BOOST_TEST(bad == 0u);
}
