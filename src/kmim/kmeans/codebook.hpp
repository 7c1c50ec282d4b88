// The K-means codebook file (codebook.h5), written by kmim_kmeans and read by the pretraining
// and TCAS stages. Format (docs/kmeans.md, "codebook.h5"):
//   /centroids             float32 [K, D]
//   /cluster_sizes         int64   [K]      members per centroid on the training vectors
//   /inertia               float64 [iters]  objective per Lloyd iteration / mini-batch pass
//   /empty_cluster_events  int64   [iters]  empty clusters refilled / centres reassigned
//   attributes: kind = "kmim_codebook", format_version, mode, k, d, algorithm, init, seed,
//   iterations, converged, final_inertia, input, input_fingerprint; pixel mode: patch_size,
//   crop, channels, normalization, normalization_mean [3], normalization_std [3]; feature mode:
//   feature_dataset; and the provenance attributes (program, kmim_version, created, config).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "kmim/kmeans/patches.hpp"

namespace kmim::kmeans {

inline constexpr const char* kCodebookKind = "kmim_codebook";
inline constexpr int kCodebookFormatVersion = 1;

struct Codebook {
  std::vector<float> centroids;  ///< [k, d], row-major
  std::size_t k = 0;
  std::size_t d = 0;
  std::string mode = "pixel";    ///< "pixel" (patch vectors) or "feature" (any vectors)

  // Pixel mode: how the vectors were made (patches.hpp), so targets can be made the same way.
  int patch_size = 0;
  int crop = 0;
  int channels = 3;
  PixelNormalization normalization;

  // Feature mode: the dataset the vectors came from.
  std::string feature_dataset;

  // Training record.
  std::vector<std::int64_t> cluster_sizes;  ///< [k]
  std::vector<double> inertia;              ///< per iteration / pass
  std::vector<std::int64_t> empty_cluster_events;
  double final_inertia = 0;
  std::string algorithm;
  std::string init;
  std::uint64_t seed = 0;
  int iterations = 0;
  bool converged = false;
  std::string input;              ///< manifest or feature file path
  std::string input_fingerprint;  ///< ShardDataset::fingerprint() or the feature file's

  /// Reads and validates a codebook; throws FileError naming the file and what is wrong.
  static Codebook load(const std::filesystem::path& file);
  /// Writes the codebook atomically (temporary name, then rename) from one process, with the
  /// provenance attributes of `program` and its effective configuration.
  void save(const std::filesystem::path& file, const std::string& program,
            const std::string& config_ini) const;

  /// Pixel mode: the patch geometry (patch_size, crop, channels).
  PatchGeometry geometry() const { return PatchGeometry{crop, patch_size, channels}; }
  /// Throws Error unless the fields are consistent (sizes, k, d, pixel-mode geometry).
  void validate() const;
};

}  // namespace kmim::kmeans
