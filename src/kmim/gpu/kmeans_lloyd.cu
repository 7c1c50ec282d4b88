#include "kmim/gpu/kmeans_lloyd.hpp"

#include <cub/device/device_radix_sort.cuh>
#include <cub/device/device_scan.cuh>

#include <algorithm>
#include <bit>
#include <climits>
#include <string>
#include <vector>

#include "kmim/gpu/cuda_status.hpp"

namespace kmim::gpu {
namespace {

using detail::check_cuda;
using detail::check_launch;
using detail::grid_for;

/// Rows per work item of the segmented reduction: small enough that a large cluster is spread
/// over many blocks, large enough that a block's fixed costs are amortised.
constexpr int kItemRows = 256;
constexpr int kBlock = 256;
/// Rows per ClusterAccumulator::add piece: keeps row indices in int32 and bounds the sort
/// workspace.
constexpr std::size_t kMaxPieceRows = std::size_t{1} << 26;
/// Blocks of the inertia reduction: fixed, so the fp64 summation order (and the result) does not
/// depend on the GPU model.
constexpr int kInertiaBlocks = 512;

__global__ void iota_kernel(int n, int* out) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) out[i] = i;
}

/// offsets[j] = first position of label j in the sorted labels (j = 0..k; offsets[k] = n).
__global__ void segment_offsets_kernel(const unsigned* __restrict__ sorted, int n, int k,
                                       int* __restrict__ offsets) {
  for (int j = blockIdx.x * blockDim.x + threadIdx.x; j <= k; j += gridDim.x * blockDim.x) {
    int lo = 0, hi = n;  // lower_bound(sorted, j)
    while (lo < hi) {
      const int mid = lo + (hi - lo) / 2;
      if (sorted[mid] < static_cast<unsigned>(j)) lo = mid + 1;
      else hi = mid;
    }
    offsets[j] = lo;
  }
}

/// item_counts[j] = ceil(segment length / kItemRows) (item_counts[k] = 0, for the exclusive
/// scan), and counts[j] += segment length.
__global__ void item_counts_kernel(const int* __restrict__ offsets, int k, int* __restrict__ item_counts,
                                   double* __restrict__ counts) {
  for (int j = blockIdx.x * blockDim.x + threadIdx.x; j <= k; j += gridDim.x * blockDim.x) {
    if (j == k) {
      item_counts[j] = 0;
    } else {
      const int length = offsets[j + 1] - offsets[j];
      item_counts[j] = (length + kItemRows - 1) / kItemRows;
      counts[j] += static_cast<double>(length);
    }
  }
}

/// One block per work item: the fp64 column sums of up to kItemRows rows of one cluster.
/// Threads form `groups` groups of `lanes` (lanes × groups = kBlock, lanes a power of two ≥ 32):
/// lane l handles columns l, l + lanes, ...; group g handles rows g, g + groups, ...; the groups'
/// sums are combined in group order through shared memory, so the result is deterministic.
__global__ void __launch_bounds__(kBlock)
    item_sums_kernel(const float* __restrict__ x, int d, const int* __restrict__ rows_sorted,
                     const int* __restrict__ offsets, const int* __restrict__ item_offsets, int k,
                     int total_items, int lanes, double* __restrict__ partials) {
  __shared__ double group_sums[kBlock];
  const int groups = kBlock / lanes;
  const int lane = threadIdx.x % lanes;
  const int group = threadIdx.x / lanes;
  for (int item = blockIdx.x; item < total_items; item += gridDim.x) {
    // The cluster owning this item: the last j with item_offsets[j] <= item (empty clusters have
    // item_offsets[j] == item_offsets[j + 1] and are skipped by taking the last).
    int lo = 0, hi = k - 1;  // search in item_offsets[0..k)
    while (lo < hi) {
      const int mid = lo + (hi - lo + 1) / 2;
      if (item_offsets[mid] <= item) lo = mid;
      else hi = mid - 1;
    }
    const int cluster = lo;
    const int first = offsets[cluster] + (item - item_offsets[cluster]) * kItemRows;
    const int last = min(first + kItemRows, offsets[cluster + 1]);
    double* out = partials + static_cast<std::size_t>(item) * d;
    for (int col0 = 0; col0 < d; col0 += lanes) {
      const int col = col0 + lane;
      double acc = 0.0;
      if (col < d) {
#pragma unroll 4
        for (int r = first + group; r < last; r += groups)
          acc += static_cast<double>(x[static_cast<std::size_t>(rows_sorted[r]) * d + col]);
      }
      if (groups == 1) {
        if (col < d) out[col] = acc;
      } else {
        group_sums[threadIdx.x] = acc;
        __syncthreads();
        if (group == 0 && col < d) {
          double s = group_sums[lane];
          for (int g = 1; g < groups; ++g) s += group_sums[g * lanes + lane];
          out[col] = s;
        }
        __syncthreads();
      }
    }
  }
}

/// sums[j][col] += Σ over cluster j's items (in item order) of partials[item][col].
__global__ void combine_items_kernel(const double* __restrict__ partials, const int* __restrict__ item_offsets,
                                     int k, int d, double* __restrict__ sums) {
  const std::size_t total = static_cast<std::size_t>(k) * d;
  for (std::size_t e = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x; e < total;
       e += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const int j = static_cast<int>(e / d);
    const int col = static_cast<int>(e % d);
    double s = 0.0;
    for (int item = item_offsets[j]; item < item_offsets[j + 1]; ++item)
      s += partials[static_cast<std::size_t>(item) * d + col];
    sums[e] += s;
  }
}

__device__ inline double block_sum(double v, double* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (static_cast<int>(threadIdx.x) < stride) shared[threadIdx.x] += shared[threadIdx.x + stride];
    __syncthreads();
  }
  return shared[0];
}

__global__ void __launch_bounds__(kBlock)
    inertia_partials_kernel(const float* __restrict__ dist2, std::size_t n, double* __restrict__ partials) {
  __shared__ double shared[kBlock];
  double s = 0.0;
  for (std::size_t i = blockIdx.x * std::size_t{kBlock} + threadIdx.x; i < n;
       i += static_cast<std::size_t>(gridDim.x) * kBlock)
    s += static_cast<double>(dist2[i]);
  const double total = block_sum(s, shared);
  if (threadIdx.x == 0) partials[blockIdx.x] = total;
}

__global__ void __launch_bounds__(kBlock)
    inertia_final_kernel(const double* __restrict__ partials, int count, double* __restrict__ inertia) {
  __shared__ double shared[kBlock];
  double s = 0.0;
  for (int i = threadIdx.x; i < count; i += kBlock) s += partials[i];
  const double total = block_sum(s, shared);
  if (threadIdx.x == 0) *inertia += total;
}

/// c = (float)(sum · (1 / count)): the CPU path's expression (multiplication by the fp64
/// reciprocal), so both round identically. count == 0 leaves c as it is.
__global__ void update_centroids_kernel(const double* __restrict__ sums, const double* __restrict__ counts,
                                        std::size_t k, int d, float* __restrict__ c) {
  const std::size_t total = k * static_cast<std::size_t>(d);
  for (std::size_t e = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x; e < total;
       e += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const double count = counts[e / static_cast<std::size_t>(d)];
    if (count > 0.0) {
      const double inv = 1.0 / count;
      c[e] = static_cast<float>(sums[e] * inv);
    }
  }
}

__global__ void gather_labels_kernel(const std::int32_t* __restrict__ labels, const int* __restrict__ rows,
                                     int count, std::int32_t* __restrict__ out) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < count) out[i] = labels[rows[i]];
}

/// A relocation candidate (the CPU path's Candidate): ordered by dist2 descending, then by
/// global index ascending.
struct Candidate {
  float dist2;
  std::uint64_t index;
  std::int32_t label;
};

bool farther(const Candidate& a, const Candidate& b) {
  return a.dist2 > b.dist2 || (a.dist2 == b.dist2 && a.index < b.index);
}

/// out[i][:] = src[rows[i]][:] (gather) and dst[rows[i]][:] = in[i][:] (scatter), rows of d.
template <class T>
__global__ void gather_rows_kernel(const T* __restrict__ src, const std::uint64_t* __restrict__ rows,
                                   std::size_t count, std::size_t d, T* __restrict__ out) {
  for (std::size_t e = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x; e < count * d;
       e += static_cast<std::size_t>(gridDim.x) * blockDim.x)
    out[e] = src[rows[e / d] * d + e % d];
}

template <class T>
__global__ void scatter_rows_kernel(const T* __restrict__ in, const std::uint64_t* __restrict__ rows,
                                    std::size_t count, std::size_t d, T* __restrict__ dst) {
  for (std::size_t e = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x; e < count * d;
       e += static_cast<std::size_t>(gridDim.x) * blockDim.x)
    dst[rows[e / d] * d + e % d] = in[e];
}

/// The listed rows of a device matrix with d columns, on the host (one kernel, one copy).
template <class T>
std::vector<T> gather_device_rows(const T* src, std::size_t d, const std::vector<std::uint64_t>& rows,
                                  const Stream& stream) {
  std::vector<T> host(rows.size() * d);
  if (host.empty()) return host;
  DeviceBuffer<std::uint64_t> rows_dev(rows.size());
  rows_dev.upload({rows.data(), rows.size()}, stream);
  DeviceBuffer<T> out(host.size());
  gather_rows_kernel<T><<<grid_for(host.size(), kBlock), kBlock, 0, stream.get()>>>(src, rows_dev.data(), rows.size(),
                                                                                    d, out.data());
  check_launch("gather_rows_kernel");
  copy_to_host(host.data(), out.data(), host.size() * sizeof(T), stream);
  return host;
}

/// Writes host rows back to the listed rows of a device matrix (waits for the copy).
template <class T>
void scatter_device_rows(const std::vector<T>& host, std::size_t d, const std::vector<std::uint64_t>& rows, T* dst,
                         const Stream& stream) {
  if (host.empty()) return;
  DeviceBuffer<std::uint64_t> rows_dev(rows.size());
  rows_dev.upload({rows.data(), rows.size()}, stream);
  DeviceBuffer<T> in(host.size());
  in.upload({host.data(), host.size()}, stream);
  scatter_rows_kernel<T><<<grid_for(host.size(), kBlock), kBlock, 0, stream.get()>>>(in.data(), rows_dev.data(),
                                                                                     rows.size(), d, dst);
  check_launch("scatter_rows_kernel");
  stream.synchronize();
}

int checked_int(std::size_t value, const char* what) {
  if (value > static_cast<std::size_t>(INT_MAX) - 1)
    throw Error(std::string("GPU cluster statistics: ") + what + " = " + std::to_string(value) +
                " exceeds the supported maximum");
  return static_cast<int>(value);
}

}  // namespace

ClusterStatistics::ClusterStatistics(std::size_t k, std::size_t d) : k_(k), d_(d), buffer_(k * d + k + 1) {}

void ClusterStatistics::clear(const Stream& stream) {
  fill_device_bytes(buffer_.data(), 0, buffer_.bytes(), stream);  // all-zero bytes are +0.0
}

ClusterStatistics::Host ClusterStatistics::download(const Stream& stream) const {
  const std::vector<double> all = buffer_.download(stream);
  Host host;
  host.sums.assign(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(k_ * d_));
  host.counts.resize(k_);
  for (std::size_t j = 0; j < k_; ++j) host.counts[j] = static_cast<std::int64_t>(all[k_ * d_ + j]);
  host.inertia = all.back();
  return host;
}

struct ClusterAccumulator::Workspace {
  DeviceBuffer<int> rows_in;
  DeviceBuffer<int> rows_sorted;
  DeviceBuffer<unsigned> labels_sorted;
  DeviceBuffer<int> offsets;
  DeviceBuffer<int> item_counts;
  DeviceBuffer<int> item_offsets;
  DeviceBuffer<double> partials;
  DeviceBuffer<double> inertia_partials;
  DeviceBuffer<unsigned char> cub_temp;
};

ClusterAccumulator::ClusterAccumulator() : workspace_(std::make_unique<Workspace>()) {}
ClusterAccumulator::~ClusterAccumulator() = default;
ClusterAccumulator::ClusterAccumulator(ClusterAccumulator&&) noexcept = default;
ClusterAccumulator& ClusterAccumulator::operator=(ClusterAccumulator&&) noexcept = default;

void ClusterAccumulator::add(const float* x, std::size_t n, const std::int32_t* labels, const float* dist2,
                             ClusterStatistics& stats, const Stream& stream) {
  const std::size_t k = stats.k();
  const std::size_t d = stats.dim();
  if (n == 0 || k == 0) return;
  Workspace& ws = *workspace_;
  const int ki = checked_int(k, "k");
  const int di = checked_int(d, "d");
  cudaStream_t s = stream.get();
  // Radix-sort only the bits a label can have.
  const int end_bit = std::max(1, static_cast<int>(std::bit_width(static_cast<unsigned>(ki - 1))));
  ws.offsets.ensure_capacity(k + 1);
  ws.item_counts.ensure_capacity(k + 1);
  ws.item_offsets.ensure_capacity(k + 1);

  for (std::size_t first = 0; first < n; first += kMaxPieceRows) {
    const int count = static_cast<int>(std::min(kMaxPieceRows, n - first));
    const auto* keys_in = reinterpret_cast<const unsigned*>(labels + first);
    ws.rows_in.ensure_capacity(static_cast<std::size_t>(count));
    ws.rows_sorted.ensure_capacity(static_cast<std::size_t>(count));
    ws.labels_sorted.ensure_capacity(static_cast<std::size_t>(count));

    std::size_t sort_bytes = 0, scan_bytes = 0;
    check_cuda(cub::DeviceRadixSort::SortPairs(nullptr, sort_bytes, keys_in, ws.labels_sorted.data(),
                                               ws.rows_in.data(), ws.rows_sorted.data(), count, 0,
                                               end_bit, s),
               "radix sort (size query)");
    check_cuda(cub::DeviceScan::ExclusiveSum(nullptr, scan_bytes, ws.item_counts.data(),
                                             ws.item_offsets.data(), ki + 1, s),
               "scan (size query)");
    ws.cub_temp.ensure_capacity(std::max(sort_bytes, scan_bytes));
    std::size_t temp_bytes = ws.cub_temp.size();

    iota_kernel<<<grid_for(static_cast<std::size_t>(count), kBlock, 4096), kBlock, 0, s>>>(count, ws.rows_in.data());
    check_launch("iota_kernel");
    check_cuda(cub::DeviceRadixSort::SortPairs(ws.cub_temp.data(), temp_bytes, keys_in,
                                               ws.labels_sorted.data(), ws.rows_in.data(),
                                               ws.rows_sorted.data(), count, 0, end_bit, s),
               "radix sort of labels");
    segment_offsets_kernel<<<grid_for(k + 1, kBlock), kBlock, 0, s>>>(ws.labels_sorted.data(), count, ki,
                                                                       ws.offsets.data());
    check_launch("segment_offsets_kernel");
    item_counts_kernel<<<grid_for(k + 1, kBlock), kBlock, 0, s>>>(ws.offsets.data(), ki, ws.item_counts.data(),
                                                                   stats.counts());
    check_launch("item_counts_kernel");
    temp_bytes = ws.cub_temp.size();
    check_cuda(cub::DeviceScan::ExclusiveSum(ws.cub_temp.data(), temp_bytes, ws.item_counts.data(),
                                             ws.item_offsets.data(), ki + 1, s),
               "scan of work items");
    // The number of work items sizes the partials buffer: one small device-to-host read per piece.
    int total_items = 0;
    copy_to_host(&total_items, ws.item_offsets.data() + k, sizeof(int), stream);
    if (total_items > 0) {
      ws.partials.ensure_capacity(static_cast<std::size_t>(total_items) * d);
      int lanes = 32;
      while (lanes < di && lanes < kBlock) lanes *= 2;
      const unsigned blocks = static_cast<unsigned>(std::min(total_items, 1 << 30));
      item_sums_kernel<<<blocks, kBlock, 0, s>>>(x + first * d, di, ws.rows_sorted.data(), ws.offsets.data(),
                                                 ws.item_offsets.data(), ki, total_items, lanes,
                                                 ws.partials.data());
      check_launch("item_sums_kernel");
      combine_items_kernel<<<grid_for(k * d, kBlock), kBlock, 0, s>>>(
          ws.partials.data(), ws.item_offsets.data(), ki, di, stats.sums());
      check_launch("combine_items_kernel");
    }
    if (dist2 != nullptr) {
      ws.inertia_partials.ensure_capacity(kInertiaBlocks);
      inertia_partials_kernel<<<kInertiaBlocks, kBlock, 0, s>>>(dist2 + first, static_cast<std::size_t>(count),
                                                                ws.inertia_partials.data());
      check_launch("inertia_partials_kernel");
      inertia_final_kernel<<<1, kBlock, 0, s>>>(ws.inertia_partials.data(), kInertiaBlocks, stats.inertia());
      check_launch("inertia_final_kernel");
    }
  }
}

CentroidUpdate update_centroids(const ClusterStatistics& stats, float* c, const Stream& stream) {
  const std::size_t k = stats.k();
  const std::size_t d = stats.dim();
  CentroidUpdate update;
  if (k == 0) return update;
  if (d > 0) {
    update_centroids_kernel<<<grid_for(k * d, kBlock), kBlock, 0, stream.get()>>>(
        stats.sums(), stats.counts(), k, checked_int(d, "d"), c);
    check_launch("update_centroids_kernel");
  }
  std::vector<double> tail(k + 1);
  copy_to_host(tail.data(), stats.counts(), tail.size() * sizeof(double), stream);
  update.counts.resize(k);
  for (std::size_t j = 0; j < k; ++j) {
    update.counts[j] = static_cast<std::int64_t>(tail[j]);
    if (update.counts[j] == 0) ++update.empty_clusters;
  }
  update.inertia = tail[k];
  return update;
}

LloydIteration::LloydIteration(std::size_t k, std::size_t d, AssignOptions options)
    : k_(k), d_(d), assigner_(options), stats_(k, d) {}

void LloydIteration::assign_and_accumulate(const float* x, std::size_t n, const float* c, const Stream& stream,
                                           const float* x_norms2) {
  stats_.clear(stream);
  x_ = x;
  n_ = n;
  if (n == 0) return;
  labels_.ensure_capacity(n);
  dist2_.ensure_capacity(n);
  assigner_.assign(x, n, d_, c, k_, labels_.data(), dist2_.data(), stream, nullptr, x_norms2);
  const std::size_t piece = std::max<std::size_t>(1, accumulate_rows);
  for (std::size_t first = 0; first < n; first += piece) {
    const std::size_t count = std::min(piece, n - first);
    accumulator_.add(x + first * d_, count, labels_.data() + first, dist2_.data() + first, stats_, stream);
  }
}

CentroidUpdate LloydIteration::update(float* c, const Stream& stream, const RankContext& ranks,
                                      EmptyClusterPolicy policy) {
  const std::size_t k = k_;
  const std::size_t d = d_;
  if (k == 0) return {};
  std::vector<double> tail(k + 1);  // counts and inertia, after any reduction over ranks
  copy_to_host(tail.data(), stats_.counts(), tail.size() * sizeof(double), stream);
  std::vector<std::int64_t> counts(k);
  std::vector<std::size_t> empty;
  for (std::size_t j = 0; j < k; ++j) {
    counts[j] = static_cast<std::int64_t>(tail[j]);
    if (counts[j] == 0) empty.push_back(j);
  }
  std::size_t relocated = 0;
  if (!empty.empty() && policy == EmptyClusterPolicy::relocate_farthest) {
    if (ranks.size > 1 && !ranks.allreduce_sum)
      throw Error("LloydIteration::update: several ranks but no allreduce in the RankContext");
    // 1. This rank's `want` farthest rows: stable descending sort of dist2 (ties keep the lower
    //    row first, as the CPU's ordering does).
    const std::size_t want = 2 * empty.size();
    const int n = checked_int(n_, "rows for the empty-cluster search");
    const int local = static_cast<int>(std::min<std::size_t>(want, n_));
    std::vector<Candidate> all;
    if (local > 0) {
      cudaStream_t s = stream.get();
      sorted_dist2_.ensure_capacity(n_);
      rows_in_.ensure_capacity(n_);
      rows_sorted_.ensure_capacity(n_);
      candidate_labels_.ensure_capacity(want);
      std::size_t bytes = 0;
      check_cuda(cub::DeviceRadixSort::SortPairsDescending(nullptr, bytes, dist2_.data(), sorted_dist2_.data(),
                                                           rows_in_.data(), rows_sorted_.data(), n, 0, 32, s),
                 "farthest-point sort (size query)");
      sort_temp_.ensure_capacity(bytes);
      bytes = sort_temp_.size();
      iota_kernel<<<grid_for(n_, kBlock, 4096), kBlock, 0, s>>>(n, rows_in_.data());
      check_launch("iota_kernel");
      check_cuda(cub::DeviceRadixSort::SortPairsDescending(sort_temp_.data(), bytes, dist2_.data(),
                                                           sorted_dist2_.data(), rows_in_.data(),
                                                           rows_sorted_.data(), n, 0, 32, s),
                 "farthest-point sort");
      gather_labels_kernel<<<grid_for(static_cast<std::size_t>(local), kBlock), kBlock, 0, s>>>(
          labels_.data(), rows_sorted_.data(), local, candidate_labels_.data());
      check_launch("gather_labels_kernel");
      std::vector<float> top_dist(static_cast<std::size_t>(local));
      std::vector<int> top_rows(static_cast<std::size_t>(local));
      std::vector<std::int32_t> top_labels(static_cast<std::size_t>(local));
      copy_to_host(top_dist.data(), sorted_dist2_.data(), top_dist.size() * sizeof(float), stream);
      copy_to_host(top_rows.data(), rows_sorted_.data(), top_rows.size() * sizeof(int), stream);
      copy_to_host(top_labels.data(), candidate_labels_.data(), top_labels.size() * sizeof(std::int32_t), stream);
      for (int i = 0; i < local; ++i)
        all.push_back({top_dist[static_cast<std::size_t>(i)],
                       ranks.first_global_index + static_cast<std::uint64_t>(top_rows[static_cast<std::size_t>(i)]),
                       top_labels[static_cast<std::size_t>(i)]});
    }
    // 2. Every rank's candidates on every rank: each rank fills its own slots of a zeroed
    //    buffer (valid, dist2, index, label — all exact in fp64) and the buffer is summed.
    if (ranks.size > 1) {
      constexpr std::size_t kFields = 4;
      std::vector<double> slots(static_cast<std::size_t>(ranks.size) * want * kFields, 0.0);
      for (std::size_t i = 0; i < all.size(); ++i) {
        double* slot = slots.data() + (static_cast<std::size_t>(ranks.rank) * want + i) * kFields;
        slot[0] = 1.0;
        slot[1] = all[i].dist2;
        slot[2] = static_cast<double>(all[i].index);
        slot[3] = all[i].label;
      }
      ranks.allreduce_sum(slots);
      all.clear();
      for (std::size_t i = 0; i < slots.size(); i += kFields)
        if (slots[i] == 1.0)
          all.push_back({static_cast<float>(slots[i + 1]), static_cast<std::uint64_t>(slots[i + 2]),
                         static_cast<std::int32_t>(slots[i + 3])});
    }
    std::sort(all.begin(), all.end(), farther);
    if (all.size() > want) all.resize(want);
    // 3. The CPU's greedy choice.
    std::vector<std::uint64_t> chosen;
    std::vector<std::size_t> sources, targets;
    for (const Candidate& cand : all) {
      if (targets.size() == empty.size()) break;
      const auto old = static_cast<std::size_t>(cand.label);
      if (counts[old] <= 1) continue;
      --counts[old];
      counts[empty[targets.size()]] = 1;
      chosen.push_back(cand.index);
      sources.push_back(old);
      targets.push_back(empty[targets.size()]);
    }
    relocated = chosen.size();
    if (!chosen.empty()) {
      // 4. The chosen vectors on every rank (the owner fills its rows; the sum adds zeros).
      //    Rows move between device and host in one gathered copy each way.
      std::vector<double> vectors(chosen.size() * d, 0.0);
      std::vector<std::uint64_t> mine_rows, mine_slots;
      for (std::size_t i = 0; i < chosen.size(); ++i)
        if (chosen[i] >= ranks.first_global_index && chosen[i] - ranks.first_global_index < n_) {
          mine_rows.push_back(chosen[i] - ranks.first_global_index);
          mine_slots.push_back(i);
        }
      if (!mine_rows.empty()) {
        const std::vector<float> got = gather_device_rows(x_, d, mine_rows, stream);
        for (std::size_t r = 0; r < mine_rows.size(); ++r)
          for (std::size_t t = 0; t < d; ++t) vectors[mine_slots[r] * d + t] = got[r * d + t];
      }
      if (ranks.size > 1) ranks.allreduce_sum(vectors);
      // 5. Move each vector from its cluster's sum to the empty one's, in the CPU's order, on
      //    host copies of the rows involved; then the counts.
      std::vector<std::uint64_t> involved(sources.begin(), sources.end());
      involved.insert(involved.end(), targets.begin(), targets.end());
      std::sort(involved.begin(), involved.end());
      involved.erase(std::unique(involved.begin(), involved.end()), involved.end());
      std::vector<double> rows = gather_device_rows(stats_.sums(), d, involved, stream);
      const auto slot = [&involved](std::size_t j) {
        return static_cast<std::size_t>(std::lower_bound(involved.begin(), involved.end(), j) - involved.begin());
      };
      for (std::size_t i = 0; i < chosen.size(); ++i) {
        double* from = rows.data() + slot(sources[i]) * d;
        double* to = rows.data() + slot(targets[i]) * d;
        for (std::size_t t = 0; t < d; ++t) {
          const double v = vectors[i * d + t];
          from[t] -= v;
          to[t] = v;
        }
      }
      scatter_device_rows(rows, d, involved, stats_.sums(), stream);
      std::vector<double> new_counts(counts.begin(), counts.end());
      copy_to_device(stats_.counts(), new_counts.data(), k * sizeof(double), stream);
      stream.synchronize();  // host buffers go out of scope
    }
  }
  CentroidUpdate update = update_centroids(stats_, c, stream);
  update.empty_clusters = empty.size();
  update.relocated = relocated;
  update.inertia = tail[k];
  return update;
}

}  // namespace kmim::gpu
