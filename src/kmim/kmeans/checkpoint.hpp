// kmim_kmeans checkpoints: the TrainState after a finished iteration/pass, in "<out>.ckpt.h5".
// A resumed run continues from it to the same result (bit-identical centroids for the same rank
// count) as a run that was never interrupted: every random draw is keyed by (seed, iteration or
// step), and the state holds everything else (fp64 centroids, mini-batch counts, histories).
//   /centroids_fp64        float64 [K, D]
//   /counts                int64   [K]     (mini-batch)
//   /inertia               float64 [completed]
//   /empty_cluster_events  int64   [completed]
//   attributes: kind = "kmim_kmeans_checkpoint", run_identity, completed, converged,
//               since_reassign, and the provenance attributes.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

#include "kmim/kmeans/train.hpp"

namespace kmim::kmeans {

inline constexpr const char* kCheckpointKind = "kmim_kmeans_checkpoint";

/// "<out>.ckpt.h5".
std::filesystem::path checkpoint_path(const std::filesystem::path& out);

/// Writes the state atomically (call on one rank). `run_identity` is the text that must match
/// for a later run to continue from it.
void save_checkpoint(const std::filesystem::path& file, const TrainState& state,
                     const std::string& run_identity, const std::string& program,
                     const std::string& config_ini);

/// Reads a checkpoint; throws FileError when it is unreadable, not a checkpoint, or was made by
/// a run with a different identity (the message names the first differing setting).
TrainState load_checkpoint(const std::filesystem::path& file, const std::string& run_identity,
                           std::size_t k, std::size_t d);

}  // namespace kmim::kmeans
