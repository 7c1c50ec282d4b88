// Summing the Lloyd statistics (kmeans_lloyd.hpp) over ranks, in place, before the centroid
// update (SPEC §6: per-cluster sums in fp64 and counts, reduced across ranks).
//
//   NCCL  one ncclAllReduce of the whole fp64 buffer [sums | counts | inertia] on the device,
//         ordered on the stream: no host copy.
//   MPI   fallback for ranks without an NCCL communicator: device → host copy, MPI_Allreduce
//         (host memory only; OpenMPI here is not CUDA-aware), host → device copy.
// With one rank both leave the statistics unchanged.
#pragma once

#include "kmim/gpu/kmeans_lloyd.hpp"
#include "kmim/gpu/nccl_communicator.hpp"

namespace kmim::gpu {

/// NCCL path (defined with the NCCL communicator; needs no MPI).
void allreduce_cluster_statistics(ClusterStatistics& stats, const NcclCommunicator& nccl,
                                  const Stream& stream);
/// MPI host-buffer path (defined in mpi_bootstrap.cpp). Waits for the stream.
void allreduce_cluster_statistics(ClusterStatistics& stats, const dist::Communicator& comm,
                                  const Stream& stream);

/// The RankContext of this MPI rank for LloydIteration::update (empty-cluster relocation): rank,
/// size, the global index of its first row and an MPI_Allreduce sum. `comm` must outlive it.
/// Defined in mpi_bootstrap.cpp.
RankContext rank_context(const dist::Communicator& comm, std::uint64_t first_global_index);

}  // namespace kmim::gpu
