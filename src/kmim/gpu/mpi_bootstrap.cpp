// The MPI-dependent parts of the GPU backend, kept in their own object file so that programs
// which never call them (the single-GPU tests and benchmarks) do not need MPI at run time.
#include <mpi.h>

#include <algorithm>
#include <string>
#include <vector>

#include "kmim/core/error.hpp"
#include "kmim/dist/mpi.hpp"
#include "kmim/gpu/device.hpp"
#include "kmim/gpu/kmeans_reduce.hpp"
#include "kmim/gpu/nccl_communicator.hpp"

namespace kmim::gpu {

NcclCommunicator::NcclCommunicator(const dist::Communicator& comm)
    : NcclCommunicator(comm.rank(), comm.size(),
                       [&comm](std::span<std::uint8_t> id) { comm.bcast(id, 0); }) {}

int select_device_for_rank(const dist::Communicator& comm) {
  MPI_Comm node = MPI_COMM_NULL;
  dist::check_mpi(MPI_Comm_split_type(comm.get(), MPI_COMM_TYPE_SHARED, comm.rank(), MPI_INFO_NULL, &node),
                  "MPI_Comm_split_type");
  int local_rank = 0;
  MPI_Comm_rank(node, &local_rank);
  MPI_Comm_free(&node);
  const DeviceStatus status = query_devices();
  if (status.devices.empty())
    throw Error("rank " + std::to_string(comm.rank()) + ": no CUDA device (" + status.reason + ")");
  const int device = status.devices[static_cast<std::size_t>(local_rank) % status.devices.size()].index;
  set_current_device(device);
  return device;
}

void allreduce_cluster_statistics(ClusterStatistics& stats, const dist::Communicator& comm, const Stream& stream) {
  if (comm.size() == 1) return;
  std::vector<double> host(stats.size());
  copy_to_host(host.data(), stats.data(), host.size() * sizeof(double), stream);
  // MPI counts are int: reduce in slices.
  constexpr std::size_t kSlice = std::size_t{1} << 30;
  for (std::size_t first = 0; first < host.size(); first += kSlice)
    comm.allreduce(std::span<double>(host.data() + first, std::min(kSlice, host.size() - first)),
                   dist::ReduceOp::sum);
  copy_to_device(stats.data(), host.data(), host.size() * sizeof(double), stream);
  stream.synchronize();  // `host` goes out of scope
}

RankContext rank_context(const dist::Communicator& comm, std::uint64_t first_global_index) {
  RankContext ranks;
  ranks.rank = comm.rank();
  ranks.size = comm.size();
  ranks.first_global_index = first_global_index;
  ranks.allreduce_sum = [&comm](std::span<double> values) {
    constexpr std::size_t kSlice = std::size_t{1} << 30;  // MPI counts are int
    for (std::size_t first = 0; first < values.size(); first += kSlice)
      comm.allreduce(values.subspan(first, std::min(kSlice, values.size() - first)), dist::ReduceOp::sum);
  };
  return ranks;
}

}  // namespace kmim::gpu
