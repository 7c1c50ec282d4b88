// The NCCL communicator without MPI (bootstrap through a caller-supplied broadcast), on one GPU:
// creation and destruction, an in-place fp64 all-reduce ordered on a stream after other work,
// and the reduction of Lloyd statistics. With one rank a sum over ranks is the identity, so these
// check the plumbing (ids, types, counts, stream order, no corruption); the N-rank sums are
// checked by test_gpu_nccl_mpi on a machine with several GPUs.
#define BOOST_TEST_MODULE kmim_gpu_nccl
#include "gpu_test_main.hpp"

#include <cstdint>
#include <vector>

#include "gpu_test_data.hpp"
#include "kmim/core/error.hpp"
#include "kmim/gpu/kmeans_reduce.hpp"
#include "kmim/gpu/nccl_communicator.hpp"

namespace gpu = kmim::gpu;

namespace {

gpu::NcclCommunicator single_rank() {
  int calls = 0;
  gpu::NcclCommunicator comm(0, 1, [&calls](std::span<std::uint8_t> id) {
    ++calls;
    BOOST_TEST(id.size() == 128u);
  });
  BOOST_TEST(calls == 1);
  return comm;
}

}  // namespace

BOOST_AUTO_TEST_CASE(single_rank_allreduce_leaves_data_intact) {
  gpu::set_current_device(0);
  gpu::NcclCommunicator comm = single_rank();
  BOOST_TEST(comm.rank() == 0);
  BOOST_TEST(comm.size() == 1);
  BOOST_TEST(comm.get() != nullptr);

  const std::size_t n = 1000003;  // odd, larger than NCCL's internal chunks
  std::vector<double> host(n);
  kmim::RandomStream rng(3, 4);
  for (auto& v : host) v = rng.normal();
  gpu::Stream s;
  gpu::DeviceBuffer<double> buf(n);
  // Queue a poison and the real upload before the all-reduce: it must run after them.
  gpu::fill_device_bytes(buf.data(), 0xFF, buf.bytes(), s);
  buf.upload(host, s);
  comm.allreduce_sum(buf.data(), n, s);
  const auto back = buf.download(s);
  BOOST_TEST(back == host);

  // A second communicator while the first is alive, then both destroyed cleanly.
  gpu::NcclCommunicator other = single_rank();
  other.allreduce_sum(buf.data(), n, s);
  BOOST_TEST(buf.download(s) == host);
}

BOOST_AUTO_TEST_CASE(cluster_statistics_reduce_over_one_rank) {
  gpu::set_current_device(0);
  gpu::NcclCommunicator comm = single_rank();
  gpu::Stream s;
  const std::size_t k = 17, d = 5;
  gpu::ClusterStatistics stats(k, d);
  BOOST_TEST(stats.size() == k * d + k + 1);
  std::vector<double> values(stats.size());
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = static_cast<double>(i % 7);
  gpu::copy_to_device(stats.data(), values.data(), values.size() * sizeof(double), s);
  gpu::allreduce_cluster_statistics(stats, comm, s);
  comm.allreduce_sum(stats.data(), stats.size(), s);  // the NCCL call itself (skipped above for 1 rank)
  const auto host = stats.download(s);
  for (std::size_t j = 0; j < k; ++j) BOOST_TEST(host.counts[j] == static_cast<std::int64_t>((k * d + j) % 7));
  BOOST_TEST(host.inertia == static_cast<double>((k * d + k) % 7));
}

BOOST_AUTO_TEST_CASE(invalid_ranks_are_errors) {
  const auto nothing = [](std::span<std::uint8_t>) {};
  BOOST_CHECK_THROW(gpu::NcclCommunicator(1, 1, nothing), kmim::Error);
  BOOST_CHECK_THROW(gpu::NcclCommunicator(0, 0, nothing), kmim::Error);
}
