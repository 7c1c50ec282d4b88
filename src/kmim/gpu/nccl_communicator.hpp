// An NCCL communicator over one GPU per rank, for reductions of device buffers (OpenMPI on
// these machines is not CUDA-aware: device pointers never go to MPI).
//
// Bootstrap (SPEC §6: NCCL bootstrapped over MPI): rank 0 calls ncclGetUniqueId, the 128-byte id
// is broadcast to every rank, and every rank calls ncclCommInitRank on the device it has made
// current. The MPI constructor does the broadcast with MPI_Bcast; the other takes any broadcast
// (launchers without MPI, single-process tests). Free of CUDA/NCCL/MPI headers.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <utility>

#include "kmim/gpu/resources.hpp"

struct ncclComm;

namespace kmim::dist {
class Communicator;
}

namespace kmim::gpu {

class NcclCommunicator {
 public:
  /// Hands the id (filled on rank 0) to every rank; must be collective over the `size` ranks.
  using BroadcastFromRoot = std::function<void(std::span<std::uint8_t>)>;

  /// Collective over the `size` processes: each calls it with its own rank, on the device it
  /// has made current (select_device_for_rank or set_current_device).
  NcclCommunicator(int rank, int size, const BroadcastFromRoot& broadcast_from_root);
  /// Collective over `comm` (MPI_Bcast of the id). Defined in mpi_bootstrap.cpp.
  explicit NcclCommunicator(const dist::Communicator& comm);
  /// ncclCommFinalize + ncclCommDestroy.
  ~NcclCommunicator();
  NcclCommunicator(NcclCommunicator&& other) noexcept
      : comm_(std::exchange(other.comm_, nullptr)), rank_(other.rank_), size_(other.size_) {}
  NcclCommunicator& operator=(NcclCommunicator&& other) noexcept {
    std::swap(comm_, other.comm_);
    std::swap(rank_, other.rank_);
    std::swap(size_, other.size_);
    return *this;
  }
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  ncclComm* get() const { return comm_; }

  /// In place: every rank's `count` doubles at `device_data` become their sum over ranks.
  /// Ordered on `stream` (asynchronous).
  void allreduce_sum(double* device_data, std::size_t count, const Stream& stream) const;

 private:
  ncclComm* comm_ = nullptr;
  int rank_ = 0;
  int size_ = 1;
};

/// Makes device (node-local rank mod visible devices) current and returns it; collective over
/// `comm` (MPI_Comm_split_type SHARED). Throws kmim::Error when no device is visible. Defined in
/// mpi_bootstrap.cpp.
int select_device_for_rank(const dist::Communicator& comm);

}  // namespace kmim::gpu
