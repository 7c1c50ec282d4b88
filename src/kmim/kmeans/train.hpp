// Distributed K-means: Lloyd iterations and scikit-learn-style mini-batch K-means over the
// vectors of a LocalVectors share, with every rank holding identical centroids.
//
// Per Lloyd iteration (docs/kmeans.md):
//   1. assign: nearest centroid of every local vector (assign_nearest_centroid, sgemm);
//   2. accumulate: per-cluster fp64 sums and int64 counts (accumulate_cluster_sums);
//   3. reduce: MPI_Allreduce of sums, counts and inertia;
//   4. empty clusters: each takes over the point farthest from its centroid (see relocate below);
//   5. update: c_j = sum_j / count_j (fp64), computed identically everywhere and broadcast from
//      rank 0 so that no rank can drift even by a bit.
// inertia[t] is the objective of the centroids entering iteration t (before its update).
//
// Mini-batch (scikit-learn MiniBatchKMeans semantics): per step, the global batch's vectors are
// assigned with the current centroids; per centre j with b_j batch members of mean m_j and
// accumulated count n_j: c_j <- c_j + (m_j - c_j) * b_j / (n_j + b_j), n_j <- n_j + b_j; then
// low-count centres (n_j < ratio * max n) are moved onto random batch vectors (seeded).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kmim/dist/mpi.hpp"
#include "kmim/kmeans/local_vectors.hpp"

namespace kmim::kmeans {

enum class Algorithm { lloyd, minibatch };
enum class InitMethod { kmeans_plus_plus, random };

Algorithm parse_algorithm(std::string_view text);     // "lloyd" | "minibatch" (OptionError)
InitMethod parse_init_method(std::string_view text);  // "kmeans++" | "random" (OptionError)
std::string_view to_string(Algorithm a);
std::string_view to_string(InitMethod m);

/// Algorithm parameters (the numeric part of KmeansParams; defaults documented there).
struct TrainConfig {
  std::size_t k = 50;
  Algorithm algorithm = Algorithm::lloyd;
  InitMethod init = InitMethod::kmeans_plus_plus;
  int iters = 50;                     ///< Lloyd iterations
  int passes = 100;                   ///< mini-batch passes over the data
  double tol = 1e-4;                  ///< stop when |ΔI| / I_prev < tol (0: never)
  std::uint64_t seed = 0;
  std::uint64_t init_sample = 0;      ///< vectors for the initialisation (0: automatic)
  std::uint64_t batch_items = 256;    ///< mini-batch size in items (images)
  double reassignment_ratio = 0.01;   ///< mini-batch low-count reassignment threshold
  /// Given initial centroids [k, d] (e.g. --init-centroids); when set, `init` is not used.
  std::vector<float> initial_centroids;
};

/// Everything needed to continue a run (the checkpoint holds exactly this).
struct TrainState {
  int completed = 0;                    ///< iterations (Lloyd) or passes (mini-batch) done
  std::vector<double> centroids;        ///< [k, d], fp64 master copy
  std::vector<std::int64_t> counts;     ///< mini-batch: accumulated per-centre counts
  std::int64_t since_reassign = 0;      ///< mini-batch: vectors seen since the last reassignment
  std::vector<double> inertia;          ///< per completed iteration / pass
  std::vector<std::int64_t> empty_events;  ///< per iteration: clusters refilled / reassigned
  bool converged = false;
};

struct IterationReport {
  int iteration = 0;          ///< 1-based
  double inertia = 0;
  double relative_change = 0; ///< |I_prev - I| / I_prev (0 for the first)
  std::int64_t events = 0;    ///< empty clusters refilled (Lloyd) / centres reassigned (mini-batch)
  double seconds = 0;
  std::uint64_t vectors = 0;  ///< vectors assigned (global)
  double gflops = 0;          ///< 2·n·k·d assignment flops per second / 1e9
};

struct FinalAssignment {
  std::vector<std::int64_t> cluster_sizes;  ///< [k] members per centroid of the final codebook
  double inertia = 0;                       ///< objective of the final centroids
};

/// The initial state: config.initial_centroids when given, else centroids from k-means++ (or
/// random vectors) on a sample gathered to every rank. Sample: Lloyd (or --init-sample N): N vectors at seeded random global indices
/// (automatic N = min(total, max(65536, 64 k))); mini-batch with automatic size: the vectors of
/// the first batch of pass 0, as the reference K-MIM code seeds on its first batch.
TrainState initial_state(LocalVectors& data, const TrainConfig& config, const dist::Communicator& comm);

/// One Lloyd iteration (steps 1-5 above); appends to state.inertia / empty_events.
IterationReport lloyd_iteration(LocalVectors& data, const TrainConfig& config,
                                const dist::Communicator& comm, TrainState& state);

/// One mini-batch pass over all items in a seeded order (pass p: IndexPermutation keyed by
/// (seed, p)); state.inertia gets the sum of the per-step batch inertias.
IterationReport minibatch_pass(LocalVectors& data, const TrainConfig& config,
                               const dist::Communicator& comm, TrainState& state);

/// Result of one mini-batch step.
struct MinibatchStepResult {
  double inertia = 0;          ///< global batch inertia under the centroids before the step
  std::int64_t reassigned = 0; ///< centres moved to random batch vectors
};

/// One mini-batch step. x holds this rank's vectors of the global batch (n_local rows),
/// positions[i] their position in the global batch (0..batch_vectors-1). `step` keys the
/// reassignment stream (seed, step). Updates state.centroids, counts and since_reassign.
MinibatchStepResult minibatch_step(const float* x, std::size_t n_local, std::size_t d,
                                   std::span<const std::uint64_t> positions,
                                   std::uint64_t batch_vectors, std::uint64_t step,
                                   const TrainConfig& config, const dist::Communicator& comm,
                                   TrainState& state);

/// Assigns every vector to the final centroids: cluster sizes and inertia.
FinalAssignment final_assignment(LocalVectors& data, std::span<const double> centroids, std::size_t k,
                                 const dist::Communicator& comm);

/// Called after every iteration/pass (logging, checkpointing); returning false stops training
/// there (e.g. a stop request). Must return the same on every rank.
using AfterIteration = std::function<bool(const TrainState&, const IterationReport&)>;

/// Runs iterations/passes until the limit, convergence, or after_each returning false. A state
/// with completed > 0 continues where it stopped.
void train_kmeans(LocalVectors& data, const TrainConfig& config, const dist::Communicator& comm,
                  TrainState& state, const AfterIteration& after_each = {});

/// Where Lloyd's assignment and update run (kmim_kmeans --device, --precision).
enum class Device { cpu, gpu };
Device parse_device(std::string_view text);  // "cpu" | "gpu" (OptionError)
std::string_view to_string(Device d);

/// Throws OptionError("device", "gpu", why) unless this build has the CUDA backend and at least
/// one usable CUDA device (checked before any input is read).
void require_usable_gpu();

/// Lloyd iterations on this rank's GPU (src/kmim/gpu, docs/gpu.md): the vectors (which must be
/// cached: data.cached() on every rank) are uploaded once; per iteration the GPU assigns,
/// accumulates fp64 sums, the statistics are summed over ranks (NCCL, else MPI through host
/// memory), and the GPU updates the centroids with the CPU path's empty-cluster policy. The
/// centroids are float on the device: state.centroids holds them widened to double (the CPU
/// path keeps fp64 masters, docs/kmeans.md). `precision` is "fp32" or "tf32". Stops as
/// train_kmeans does; returns the final assignment (cluster sizes, inertia) of state.centroids,
/// computed on the GPU (empty when stopped by after_each).
FinalAssignment train_kmeans_gpu(LocalVectors& data, const TrainConfig& config, const dist::Communicator& comm,
                                 TrainState& state, const std::string& precision,
                                 const AfterIteration& after_each = {});

/// The number of iterations (Lloyd) or passes (mini-batch) the config asks for.
int planned_iterations(const TrainConfig& config);

/// Greedy k-means++ (scikit-learn's variant: 2 + floor(ln k) candidate centres per step, the one
/// that lowers the potential most is kept) on n vectors x [n, d]; deterministic in
/// (seed, x). Returns k centroids [k, d].
std::vector<float> kmeans_plus_plus(const float* x, std::size_t n, std::size_t d, std::size_t k,
                                    std::uint64_t seed);

}  // namespace kmim::kmeans
