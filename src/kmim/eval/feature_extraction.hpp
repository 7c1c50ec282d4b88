// Feature extraction with a frozen encoder (kmim_extract; docs/eval.md, "kmim_extract"): the
// un-augmented images of a shard split (centre crop to the model's img_size, ImageNet
// normalisation, patchify: frozen_encoder.hpp) → final-LayerNorm tokens → pooled features in a
// feature file (feature_file.hpp's format, which kmim_linprobe --mode features and kNN read; with
// --pool patches, the input of kmim_kmeans --features for feature-tokenizer codebooks).
//
// Work is cut into chunks of `chunk_images` images (in the order of the image list). In each
// round every rank encodes one pending chunk; rank 0 receives the others' features (MPI
// point-to-point, one chunk in flight per rank) and writes them into a work file
// "<out>.progress.h5" (serial HDF5) with a done flag per chunk, flushed after every round. A
// rerun with the same inputs and settings continues with the pending chunks; when every chunk is
// done the work file is flushed to disk and renamed to <out> (atomic: the final name only ever
// holds a complete file). The encoder sees the images of a chunk in groups of `batch_images`
// counted from the chunk's start, so the features do not depend on the rank count.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

#include "kmim/dist/mpi.hpp"
#include "kmim/eval/frozen_encoder.hpp"

namespace kmim::eval {

/// kmim_extract's parameters; the member initialisers are the documented defaults.
struct FeatureExtractionParams {
  std::string manifest;              ///< shard split manifest (kmim_shard <out>/<split>.h5)
  std::string checkpoint;            ///< kmim checkpoint of the frozen encoder
  std::string out;                   ///< the feature file
  std::string pool = "cls";          ///< cls | mean | patches
  std::uint64_t chunk_images = 256;  ///< images per unit of work and of recorded progress
  int batch_images = 32;             ///< images per encoder forward pass
  std::uint64_t max_per_class = 0;   ///< 0: every image; else a seeded sample per class
  std::uint64_t seed = 0;            ///< the per-class sample (as kmim_tcas --max-per-class)
  bool restart = false;              ///< discard a work file of an earlier run
  std::uint64_t stop_after_chunks = 0;  ///< stop (progress kept) after this many chunks (0: all)

  /// Throws OptionError naming the option when a value is out of range.
  void validate() const;
};

enum class ExtractionStatus {
  complete,          ///< the feature file is in place
  stopped,           ///< stop_requested() said so; progress kept (rerun to continue)
  stopped_after_chunks,  ///< stop_after_chunks reached; progress kept
};

/// "<out>.progress.h5": the work file of an unfinished extraction.
std::filesystem::path extraction_work_file(const std::filesystem::path& out);

/// Runs (or continues) an extraction. Collective over comm. `stop_requested` is polled after
/// every round (its value is agreed across ranks). Throws FileError/OptionError naming the file
/// or option on bad inputs, among them a work file of other inputs or settings (without
/// params.restart).
ExtractionStatus extract_features(const FeatureExtractionParams& params, const std::string& program,
                                  const std::string& config_ini, const dist::Communicator& comm,
                                  const std::function<bool()>& stop_requested = {});

}  // namespace kmim::eval
