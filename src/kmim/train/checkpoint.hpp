// Pretraining checkpoints: one HDF5 file per saved step, <out-dir>/checkpoint-<step, 8 digits>.h5,
// written atomically (AtomicOutput: "<file>.partial", fsync, rename) by rank 0. The format is a
// documented contract (docs/pretrain.md, "Checkpoint format"): the parameters are one float32
// dataset per tensor under /model with MAE's state_dict names and shapes, so h5py users and a
// PyTorch converter can read them without kmim.
//
// A checkpoint holds everything an uninterrupted run would have in memory at that step boundary
// (parameters, AdamW moments and step count, the data position, the current epoch's running
// metric sums), so a resumed run continues bit-identically (same rank and thread counts). A
// CRC-32 over the parameter and moment bytes detects damaged files; run_identity (the model
// config, tokenizer, data and batch settings) detects a checkpoint of another run.
//
// HDF5 is not thread-safe in kmim's build: these functions take io::hdf5_mutex() themselves
// (a BatchPrefetcher may be reading shards on another thread), so do not hold it when calling.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "kmim/model/optimizer.hpp"
#include "kmim/model/vit_mae.hpp"

namespace kmim::train {

inline constexpr const char* kCheckpointKind = "kmim_pretrain_checkpoint";
inline constexpr int kCheckpointFormatVersion = 1;

/// Where a run stands at a step boundary.
struct TrainingProgress {
  std::int64_t step = 0;           ///< optimizer steps done so far
  std::int64_t epoch = 0;          ///< epoch of the next step (0-based)
  std::int64_t step_in_epoch = 0;  ///< steps of `epoch` done = index of its next global batch
  std::int64_t steps_per_epoch = 0;
  std::int64_t images_seen = 0;  ///< images trained on so far (all ranks)
  // Running sums of the current epoch (its metrics.jsonl record after a resume).
  double epoch_loss_sum = 0.0;      ///< sum of the epoch's step losses
  double epoch_accuracy_sum = 0.0;  ///< sum of the epoch's step masked-token accuracies
  std::int64_t epoch_steps = 0;     ///< steps summed
  double epoch_seconds = 0.0;       ///< training seconds spent in the epoch so far
  double elapsed_seconds = 0.0;     ///< training seconds over the whole run so far
  double last_lr = 0.0;             ///< learning rate of the last step
};

/// The full training state.
struct Checkpoint {
  explicit Checkpoint(const model::ModelConfig& config) : params(config) {}
  /// Takes over an existing buffer (no copy: a trainer moves its state in to write it and
  /// moves it back afterwards, so a checkpoint costs no extra memory).
  explicit Checkpoint(model::Parameters&& parameters) : params(std::move(parameters)) {}

  model::Parameters params;
  std::vector<float> exp_avg;     ///< AdamW first moment, parameter layout
  std::vector<float> exp_avg_sq;  ///< AdamW second moment
  std::int64_t adam_step = 0;     ///< AdamW steps taken (bias correction)
  model::AdamWConfig adam;
  TrainingProgress progress;
  /// `key = value` lines that a resumed run must match (model config, tokenizer identity, data
  /// fingerprint, seed, batch settings, augmentation); see pretrain.hpp.
  std::string run_identity;
  /// Descriptive attributes (not compared): tokenizer kind and description, manifest path and
  /// fingerprint.
  std::string tokenizer_kind, tokenizer_description, manifest, manifest_fingerprint;
};

/// <dir>/checkpoint-<step as 8 digits>.h5
std::filesystem::path checkpoint_path(const std::filesystem::path& dir, std::int64_t step);

struct CheckpointFile {
  std::filesystem::path path;
  std::int64_t step = 0;
};
/// The files of `dir` named checkpoint-<digits>.h5, ascending by step (".partial" files and
/// other names ignored).
std::vector<CheckpointFile> list_checkpoints(const std::filesystem::path& dir);

/// Writes `ck` atomically to `file` (rank 0 alone; no MPI). Throws FileError when a parameter
/// or moment is not finite (a checkpoint never holds non-finite parameters) or writing fails;
/// nothing appears under the final name then.
void write_checkpoint(const std::filesystem::path& file, const Checkpoint& ck,
                      const std::string& program, const std::string& config_ini);

/// Reads and fully validates a checkpoint (kind, version, model config, every tensor's shape,
/// the CRC-32, finiteness). Throws FileError naming the file and the problem.
Checkpoint read_checkpoint(const std::filesystem::path& file);

/// The model config stored in a checkpoint's /model attributes.
model::ModelConfig read_checkpoint_model_config(const std::filesystem::path& file);

/// Only the model (config and parameters) of a checkpoint, validated (CRC included): the frozen
/// model of the feature tokenizer, feature extraction, the linear probe.
model::Parameters load_model_parameters(const std::filesystem::path& file);

/// The learned position embedding of a checkpoint converted from a public PyTorch ViT
/// (tools/convert_timm_vit.py: /model/pos_embed float32 [1, 1 + L, D], finite, its crc32
/// attribute checked), flattened; empty for kmim's own checkpoints, whose encoder uses the fixed
/// 2-D sin-cos table. Whoever runs such an encoder must put this table into
/// EncoderWorkspace::pos_embed. Throws FileError naming the file on a wrong shape or damage.
std::vector<float> read_position_embedding(const std::filesystem::path& file,
                                           const model::ModelConfig& config);

/// The newest checkpoint of `dir` that reads back completely (read_checkpoint); damaged ones
/// (truncated, unreadable, wrong checksum) are skipped and described in `skipped`
/// ("<file>: <problem>"), newest first. nullopt when none is valid.
std::optional<CheckpointFile> newest_valid_checkpoint(const std::filesystem::path& dir,
                                                      std::vector<std::string>& skipped);

/// Deletes the oldest checkpoints of `dir` so that at most `keep` remain (keep 0: keep all).
/// Returns the files removed.
std::vector<std::filesystem::path> prune_checkpoints(const std::filesystem::path& dir, int keep);

/// The first `key = value` line that differs between two identities, as
/// "<key>: checkpoint has '<a>', this run '<b>'"; empty when they agree.
std::string identity_difference(const std::string& checkpoint_identity,
                                const std::string& run_identity);

}  // namespace kmim::train
