// Lloyd K-means with the assignment and update on the GPU (kmim_kmeans --device gpu). The GPU
// pieces (src/kmim/gpu, docs/gpu.md) were written as twins of the CPU path's steps; this file
// only strings them into the same iteration loop as train.cpp's lloyd_iteration, so that the
// checkpoint, the logging and the final codebook stay the same for both devices.
#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <optional>
#include <string>

#include <fmt/format.h>

#include "kmim/core/error.hpp"
#include "kmim/core/log.hpp"
#include "kmim/gpu/device.hpp"
#include "kmim/gpu/kmeans_assign.hpp"
#include "kmim/gpu/kmeans_lloyd.hpp"
#include "kmim/gpu/kmeans_reduce.hpp"
#include "kmim/gpu/nccl_communicator.hpp"
#include "kmim/gpu/resources.hpp"
#include "kmim/kmeans/train.hpp"

namespace kmim::kmeans {

Device parse_device(std::string_view text) {
  if (text == "cpu") return Device::cpu;
  if (text == "gpu") return Device::gpu;
  throw OptionError("device", text, "must be 'cpu' or 'gpu'");
}

std::string_view to_string(Device d) { return d == Device::gpu ? "gpu" : "cpu"; }

void require_usable_gpu() {
  const gpu::DeviceStatus status = gpu::query_devices();
  if (!status.compiled)
    throw OptionError("device", "gpu", "this kmim build has no CUDA backend (configure with -DKMIM_CUDA=ON)");
  if (status.devices.empty())
    throw OptionError("device", "gpu",
                      fmt::format("no usable CUDA device ({}); use --device cpu", status.reason));
}

namespace {

using Clock = std::chrono::steady_clock;

double relative_change(const std::vector<double>& inertia) {
  if (inertia.size() < 2) return 0.0;
  const double prev = inertia[inertia.size() - 2];
  const double cur = inertia.back();
  if (prev == 0.0) return cur == 0.0 ? 0.0 : INFINITY;
  return std::abs(prev - cur) / prev;
}

/// This rank's vectors, norms, centroids and Lloyd workspace on its GPU, and the way the
/// statistics are summed over ranks.
class GpuLloyd {
 public:
  GpuLloyd(LocalVectors& data, const TrainConfig& config, const dist::Communicator& comm,
           gpu::MatmulPrecision precision)
      : comm_(comm), k_(config.k), d_(data.dim()), n_(data.count()) {
    const int device = gpu::select_device_for_rank(comm);
    log().info("kmeans: GPU Lloyd on device {} of rank 0, {} precision, {} ranks", device,
               gpu::precision_name(precision), comm.size());
    x_ = gpu::DeviceBuffer<float>(n_ * d_);
    data.for_each_chunk([&](const float* x, std::size_t n, std::uint64_t first) {
      gpu::copy_to_device(x_.data() + first * d_, x, n * d_ * sizeof(float), stream_);
    });
    x_norms2_ = gpu::DeviceBuffer<float>(n_);
    if (n_ > 0) gpu::compute_row_norms2(x_.data(), n_, d_, x_norms2_.data(), stream_);
    c_ = gpu::DeviceBuffer<float>(k_ * d_);
    iteration_.emplace(k_, d_, gpu::AssignOptions{.precision = precision});
    ranks_ = gpu::rank_context(comm, data.first_vector());
    if (comm.size() > 1) {
      // NCCL when every rank can set it up; otherwise all ranks take the MPI host-buffer path.
      std::string why;
      try {
        nccl_.emplace(comm);
      } catch (const Error& e) {
        why = e.what();
      }
      if (comm.any(!why.empty())) {
        nccl_.reset();
        log().warn("kmeans: NCCL unavailable{}{}; summing the statistics with MPI through host memory",
                   why.empty() ? "" : ": ", why);
      }
    }
    stream_.synchronize();
  }

  void set_centroids(std::span<const double> centroids) {
    std::vector<float> c(centroids.begin(), centroids.end());
    c_.upload(std::span<const float>(c), stream_);
    stream_.synchronize();
  }

  /// Assigns, sums over ranks; `update` then moves the centroids.
  void assign_and_reduce() {
    iteration_->assign_and_accumulate(x_.data(), n_, c_.data(), stream_, x_norms2_.data());
    if (nccl_) gpu::allreduce_cluster_statistics(iteration_->statistics(), *nccl_, stream_);
    else gpu::allreduce_cluster_statistics(iteration_->statistics(), comm_, stream_);
  }

  /// The update; afterwards rank 0's centroids are copied to every rank (as the CPU path
  /// broadcasts its masters) and returned widened to double.
  gpu::CentroidUpdate update(std::vector<double>& centroids) {
    const gpu::CentroidUpdate u = iteration_->update(c_.data(), stream_, ranks_);
    std::vector<float> c = c_.download(stream_);
    if (comm_.size() > 1) {
      comm_.bcast(std::span<float>(c), 0);
      c_.upload(std::span<const float>(c), stream_);
      stream_.synchronize();
    }
    centroids.assign(c.begin(), c.end());
    return u;
  }

  FinalAssignment final_assignment() {
    assign_and_reduce();
    const gpu::ClusterStatistics::Host stats = iteration_->statistics().download(stream_);
    return FinalAssignment{stats.counts, stats.inertia};
  }

 private:
  const dist::Communicator& comm_;
  std::size_t k_;
  std::size_t d_;
  std::size_t n_;
  gpu::Stream stream_;
  gpu::DeviceBuffer<float> x_;
  gpu::DeviceBuffer<float> x_norms2_;
  gpu::DeviceBuffer<float> c_;
  std::optional<gpu::LloydIteration> iteration_;
  std::optional<gpu::NcclCommunicator> nccl_;
  gpu::RankContext ranks_;
};

}  // namespace

FinalAssignment train_kmeans_gpu(LocalVectors& data, const TrainConfig& config, const dist::Communicator& comm,
                                 TrainState& state, const std::string& precision,
                                 const AfterIteration& after_each) {
  require_option(config.algorithm == Algorithm::lloyd, "device", "gpu",
                 "supports --algorithm lloyd only (mini-batch runs on the CPU)");
  require_option(comm.allreduce(data.cached() ? 0 : 1) == 0, "device", "gpu",
                 "needs every rank's vectors cached in memory (raise --memory-limit or add ranks); "
                 "streaming runs on the CPU only");
  require_option(config.k <= static_cast<std::size_t>(INT32_MAX) && config.k <= data.source().vectors(), "k",
                 std::to_string(config.k), "is larger than the number of input vectors or too large");
  GpuLloyd gpu_lloyd(data, config, comm, gpu::precision_from_name(precision, "precision"));
  gpu_lloyd.set_centroids(state.centroids);
  const int planned = planned_iterations(config);
  const std::size_t k = config.k, d = data.dim();
  while (!state.converged && state.completed < planned) {
    const auto t0 = Clock::now();
    gpu_lloyd.assign_and_reduce();
    const gpu::CentroidUpdate u = gpu_lloyd.update(state.centroids);
    state.inertia.push_back(u.inertia);
    state.empty_events.push_back(static_cast<std::int64_t>(u.empty_clusters));
    ++state.completed;
    IterationReport report;
    report.iteration = state.completed;
    report.inertia = u.inertia;
    report.relative_change = relative_change(state.inertia);
    report.events = static_cast<std::int64_t>(u.empty_clusters);
    report.vectors = data.source().vectors();
    report.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    report.gflops = 2.0 * static_cast<double>(report.vectors) * static_cast<double>(k) * static_cast<double>(d) /
                    std::max(report.seconds, 1e-12) / 1e9;
    if (config.tol > 0 && state.inertia.size() >= 2 && report.relative_change < config.tol) state.converged = true;
    if (after_each && !after_each(state, report)) return FinalAssignment{};
  }
  return gpu_lloyd.final_assignment();
}

}  // namespace kmim::kmeans
