#include "kmim/gpu/nccl_communicator.hpp"

#include <nccl.h>

#include <cstring>
#include <string>

#include "kmim/core/error.hpp"
#include "kmim/gpu/kmeans_reduce.hpp"

namespace kmim::gpu {
namespace {

void check_nccl(ncclResult_t rc, const char* what, ncclComm_t comm = nullptr) {
  if (rc == ncclSuccess || rc == ncclInProgress) return;
  std::string message = std::string("NCCL: ") + what + ": " + ncclGetErrorString(rc);
  if (comm != nullptr) {
    const char* last = ncclGetLastError(comm);
    if (last != nullptr && *last != '\0') message += std::string(" (") + last + ")";
  }
  throw Error(message);
}

}  // namespace

NcclCommunicator::NcclCommunicator(int rank, int size, const BroadcastFromRoot& broadcast_from_root)
    : rank_(rank), size_(size) {
  if (size < 1 || rank < 0 || rank >= size)
    throw Error("NCCL communicator: rank " + std::to_string(rank) + " of " + std::to_string(size) +
                " is not a valid rank");
  ncclUniqueId id;
  std::memset(&id, 0, sizeof id);
  if (rank == 0) check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
  static_assert(sizeof id.internal == NCCL_UNIQUE_ID_BYTES);
  broadcast_from_root(std::span<std::uint8_t>(reinterpret_cast<std::uint8_t*>(id.internal), sizeof id.internal));
  check_nccl(ncclCommInitRank(&comm_, size, id, rank), "ncclCommInitRank");
}

NcclCommunicator::~NcclCommunicator() {
  if (comm_ == nullptr) return;
  ncclCommFinalize(comm_);
  ncclCommDestroy(comm_);
}

void NcclCommunicator::allreduce_sum(double* device_data, std::size_t count, const Stream& stream) const {
  if (count == 0) return;
  check_nccl(ncclAllReduce(device_data, device_data, count, ncclDouble, ncclSum, comm_, stream.get()),
             "ncclAllReduce", comm_);
}

void allreduce_cluster_statistics(ClusterStatistics& stats, const NcclCommunicator& nccl, const Stream& stream) {
  if (nccl.size() == 1) return;  // the sum over one rank is the buffer itself
  nccl.allreduce_sum(stats.data(), stats.size(), stream);
}

}  // namespace kmim::gpu
