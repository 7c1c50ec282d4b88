// The Lloyd update on the GPU: per-cluster sums and counts of the assigned vectors, summed in
// fp64, reduced over ranks (kmeans_reduce.hpp), then centroid = sum / count.
//
// How the sums are accumulated (no contended global atomics, bit-reproducible): the labels are
// radix-sorted (CUB, only ceil(log2 k) key bits) with the row indices as values, so each
// cluster's rows form one contiguous segment of the sorted order. Each segment is cut into work
// items of at most 256 rows; one thread block sums one item (threads over the columns, rows
// strided over thread groups, fp64 accumulators, a fixed-order shared-memory combine) and
// writes one fp64 partial row; a second kernel adds each cluster's partials in item order into
// the statistics. Why not the alternatives: global atomicAdd per (row, column) serialises on
// large clusters and makes the fp64 sum order (and so the result) vary run to run; per-block
// shared-memory partials need k·d·8 bytes of shared memory (48 MiB at k = 8192, d = 768); a
// one-hot GEMM costs another 2·n·k·d flops (as much as the assignment) and sums in fp32. The
// sort moves 8 bytes per row and the reduction reads each vector once, so the update costs about
// one pass over x.
//
// Centroid update and empty clusters, as the CPU path (kmim::kmeans::lloyd_iteration,
// docs/kmeans.md) does them, so GPU and CPU runs give the same codebook:
//   c_j = (float)(sum_j · (1 / count_j)) in fp64;
//   EmptyClusterPolicy::relocate_farthest (the CPU's and scikit-learn's policy, the default of
//   LloydIteration::update): each empty cluster takes over the point farthest from its centroid
//   (dist2 descending, ties to the lower global index; only the 2m farthest points over all
//   ranks are considered, m = number of empty clusters; a point is skipped when its cluster would
//   become empty), the point's vector moving from its old cluster's sum to the empty one; a
//   cluster left without a point keeps its centroid;
//   EmptyClusterPolicy::keep_previous: empty clusters keep their centroid.
// The farthest points are found with a descending radix sort of dist2 on the device, only in
// iterations that have empty clusters; the rest of the policy works on the host on m rows.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "kmim/gpu/kmeans_assign.hpp"
#include "kmim/gpu/resources.hpp"

namespace kmim::gpu {

/// One pass's sufficient statistics on the device, in a single fp64 buffer so that a single
/// collective reduces everything: [sums k×d | counts k | inertia 1]. fp64 because a pass over
/// ImageNet adds 251 M vectors (SPEC §6), far beyond what fp32 sums hold; counts are exact in
/// fp64 up to 2^53.
class ClusterStatistics {
 public:
  ClusterStatistics(std::size_t k, std::size_t d);

  std::size_t k() const { return k_; }
  std::size_t dim() const { return d_; }
  /// k·d + k + 1.
  std::size_t size() const { return buffer_.size(); }
  double* data() { return buffer_.data(); }
  const double* data() const { return buffer_.data(); }
  double* sums() { return buffer_.data(); }
  const double* sums() const { return buffer_.data(); }
  double* counts() { return buffer_.data() + k_ * d_; }
  const double* counts() const { return buffer_.data() + k_ * d_; }
  double* inertia() { return buffer_.data() + k_ * d_ + k_; }

  /// Zeroes everything (start of a pass).
  void clear(const Stream& stream);

  struct Host {
    std::vector<double> sums;           ///< k×d
    std::vector<std::int64_t> counts;   ///< k
    double inertia = 0.0;               ///< Σ dist2
  };
  Host download(const Stream& stream) const;

 private:
  std::size_t k_;
  std::size_t d_;
  DeviceBuffer<double> buffer_;
};

/// Adds vectors with their labels into ClusterStatistics (sort + segmented fp64 reduction,
/// above). Holds reusable device workspace; one per host thread/stream.
class ClusterAccumulator {
 public:
  ClusterAccumulator();
  ~ClusterAccumulator();
  ClusterAccumulator(ClusterAccumulator&&) noexcept;
  ClusterAccumulator& operator=(ClusterAccumulator&&) noexcept;

  /// Device pointers: x [n, stats.dim()], labels [n] (each in [0, stats.k()) — as the assignment
  /// writes them), dist2 [n] or null (then the inertia is left alone). Asynchronous on `stream`.
  /// Deterministic: the same inputs give bit-identical statistics.
  void add(const float* x, std::size_t n, const std::int32_t* labels, const float* dist2,
           ClusterStatistics& stats, const Stream& stream);

 private:
  struct Workspace;
  std::unique_ptr<Workspace> workspace_;
};

enum class EmptyClusterPolicy {
  relocate_farthest,  ///< the CPU path's policy (above)
  keep_previous,      ///< an empty cluster's centroid stays where it was
};

struct CentroidUpdate {
  std::size_t empty_clusters = 0;    ///< clusters empty after the reduction (the CPU's "events")
  std::size_t relocated = 0;         ///< of those, refilled with a far point
  double inertia = 0.0;              ///< Σ dist2 under the centroids entering the iteration
  std::vector<std::int64_t> counts;  ///< per cluster, after the reduction and any relocation
};

/// c [k, d] (device) ← sum · (1 / count) in fp64, rounded once to float, for every cluster with
/// count > 0; clusters with count 0 keep their centroid (EmptyClusterPolicy::keep_previous; the
/// relocation policy needs the vectors, see LloydIteration::update). Waits for the stream.
CentroidUpdate update_centroids(const ClusterStatistics& stats, float* c, const Stream& stream);

/// Where this rank's rows sit among all ranks' rows, and how ranks add up host values; the
/// empty-cluster policy needs both. The default is a single rank. For MPI ranks use
/// rank_context() (kmeans_reduce.hpp).
struct RankContext {
  int rank = 0;
  int size = 1;
  std::uint64_t first_global_index = 0;  ///< global index of this rank's row 0
  /// In place: every rank's doubles become their sum over ranks (unused with one rank).
  std::function<void(std::span<double>)> allreduce_sum;
};

/// One Lloyd iteration over a rank's vectors resident on the device, in two halves so that the
/// caller can reduce the statistics over ranks in between:
///
///   LloydIteration it(k, d, options);
///   it.assign_and_accumulate(x, n, c, stream);           // this rank's rows
///   allreduce_cluster_statistics(it.statistics(), nccl, stream);   // several ranks only
///   CentroidUpdate u = it.update(c, stream, ranks);      // ranks: RankContext (one rank: {})
class LloydIteration {
 public:
  LloydIteration(std::size_t k, std::size_t d, AssignOptions options = {});

  /// Clears the statistics, assigns x [n, d] to c [k, d] (labels() and dist2() hold the result)
  /// and accumulates. x_norms2 [n] (device, optional): ||x_i||² from compute_row_norms2, computed
  /// once for all iterations. Rows are accumulated in pieces of at most `accumulate_rows`
  /// (default 2^22) to bound the sort workspace. Asynchronous on `stream`.
  void assign_and_accumulate(const float* x, std::size_t n, const float* c, const Stream& stream,
                             const float* x_norms2 = nullptr);
  ClusterStatistics& statistics() { return stats_; }
  /// Relocates empty clusters (policy; uses the x, labels and dist2 of the last
  /// assign_and_accumulate, which must still be valid) and updates c [k, d] in place.
  /// Collective over the ranks of `ranks` when clusters are empty. Waits for the stream.
  CentroidUpdate update(float* c, const Stream& stream, const RankContext& ranks = {},
                        EmptyClusterPolicy policy = EmptyClusterPolicy::relocate_farthest);

  const std::int32_t* labels() const { return labels_.data(); }
  const float* dist2() const { return dist2_.data(); }
  std::size_t accumulate_rows = std::size_t{1} << 22;

 private:
  std::size_t k_;
  std::size_t d_;
  const float* x_ = nullptr;  // of the last assign_and_accumulate
  std::size_t n_ = 0;
  CentroidAssigner assigner_;
  ClusterAccumulator accumulator_;
  ClusterStatistics stats_;
  DeviceBuffer<std::int32_t> labels_;
  DeviceBuffer<float> dist2_;
  // Workspace of the farthest-point search (allocated in iterations with empty clusters only).
  DeviceBuffer<float> sorted_dist2_;
  DeviceBuffer<int> rows_in_;
  DeviceBuffer<int> rows_sorted_;
  DeviceBuffer<std::int32_t> candidate_labels_;
  DeviceBuffer<unsigned char> sort_temp_;
};

}  // namespace kmim::gpu
