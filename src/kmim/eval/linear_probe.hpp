// The linear probe on pre-extracted features (SPEC §4, the MAE protocol adapted to features):
//
//   head(x) = W · BN(x) + b       BN: BatchNorm1d(affine=False, eps=1e-6) — batch statistics in
//                                 training (running stats updated with momentum 0.1, unbiased
//                                 variance), running statistics at evaluation, as PyTorch
//   W ~ trunc_normal(std 0.01), b = 0  (MAE main_linprobe)
//   loss: cross-entropy, mean over the global batch
//   LARS (MAE util/lars.py): for parameters with more than one dimension (W)
//       g ← g + wd·p;  g ← g · (trust·‖p‖/‖g‖ when both norms > 0, else 1)
//     then for every parameter: μ ← momentum·μ + g;  p ← p − lr·μ
//   lr = base_lr × global_batch / 256, per iteration: linear warmup for warmup_epochs, then
//     half-cycle cosine to min_lr (MAE util/lr_sched.py, epoch = e + i / iterations_per_epoch)
//   data: every epoch a permutation of the training rows, random_permutation(N, seed,
//     stream_id({kProbeShuffleKey, epoch})), cut into N / global_batch full batches (the last
//     partial batch is dropped, as MAE's DataLoader(drop_last=True)); rank r takes its block of
//     each global batch.
//
// Data parallel: every rank holds the same features and parameters; the BN batch statistics
// (two-pass sum and squared deviations, in double) and the gradients are summed over ranks, so
// 1 and N ranks compute the same updates up to floating-point summation order.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "kmim/dist/mpi.hpp"
#include "kmim/eval/feature_file.hpp"

namespace kmim::eval {

/// Stream-id purpose tags.
inline constexpr std::uint64_t kProbeShuffleKey = 0x70726f62657368ull;  // "probesh"
inline constexpr std::uint64_t kProbeInitKey = 0x70726f6265696eull;     // "probein"

/// Training hyper-parameters (defaults: MAE linear probing recipe, SPEC §4).
struct LinearProbeConfig {
  int epochs = 90;
  int warmup_epochs = 10;
  std::size_t batch_size = 1024;     ///< global batch (all ranks together)
  double base_lr = 0.1;              ///< lr = base_lr × batch_size / 256
  double min_lr = 0.0;
  double weight_decay = 0.0;
  double momentum = 0.9;             ///< LARS momentum
  double trust_coefficient = 0.001;  ///< LARS trust coefficient
  double bn_eps = 1e-6;
  double bn_momentum = 0.1;
  double init_std = 0.01;            ///< trunc_normal std of W (truncated at ±2, as timm)
  std::uint64_t seed = 0;

  double peak_lr() const { return base_lr * static_cast<double>(batch_size) / 256.0; }
  /// Throws UsageError naming the option when a value is out of range.
  void validate() const;
  /// The settings that change the trained result, as INI lines (checkpoint compatibility).
  std::string training_key() const;
};

/// MAE's lr_sched.adjust_learning_rate at fractional epoch `epoch`.
double probe_learning_rate(const LinearProbeConfig& config, double epoch);

/// One epoch's record.
struct ProbeEpoch {
  int epoch = 0;                  ///< 1-based: the number of epochs completed
  double train_loss = 0.0;        ///< mean cross-entropy over the epoch's training samples
  double last_lr = 0.0;           ///< lr of the epoch's last iteration
  double top1 = 0.0;              ///< validation, percent
  double top5 = 0.0;
  std::vector<double> class_accuracy;  ///< [classes] top-1 per class, percent (NaN: no samples)
  double seconds = 0.0;
};

/// Everything a checkpoint holds.
struct LinearProbeState {
  std::size_t dim = 0;
  std::size_t classes = 0;
  std::vector<float> weight;           ///< [classes, dim]
  std::vector<float> bias;             ///< [classes]
  std::vector<float> weight_momentum;  ///< LARS μ of W
  std::vector<float> bias_momentum;
  std::vector<float> running_mean;     ///< [dim]
  std::vector<float> running_var;      ///< [dim]
  double bn_eps = 1e-6;                ///< BatchNorm eps (from the config)
  int epochs_done = 0;
  std::vector<ProbeEpoch> history;
  // Position inside the epoch being trained (epochs_done): only a probe stopped between two
  // steps of an epoch (encoder mode, on SIGUSR1/SIGTERM) has steps_in_epoch > 0.
  std::int64_t steps_in_epoch = 0;   ///< steps of the current epoch done
  double epoch_loss_sum = 0.0;       ///< summed cross-entropy of those steps (all ranks)
  double epoch_seconds = 0.0;        ///< seconds spent on them
  double epoch_last_lr = 0.0;        ///< lr of the last of them
};

/// A fresh probe: W ~ trunc_normal(0, init_std²) truncated to [-2, 2] from
/// RandomStream(seed, stream_id({kProbeInitKey})), b = 0, μ = 0, running mean 0 / var 1.
LinearProbeState init_linear_probe(std::size_t dim, std::size_t classes,
                                   const LinearProbeConfig& config);

/// MAE's LARS update of one parameter (`adapt`: the parameter has more than one dimension).
void lars_update(std::span<float> param, std::span<const float> grad, std::span<float> momentum,
                 double lr, const LinearProbeConfig& config, bool adapt);

/// One LARS step of the probe on a global batch of `global_batch` samples, of which this rank
/// holds `rows`: features x [rows, D] (overwritten: it becomes the BatchNorm output) and their
/// labels (in [0, classes)). BatchNorm statistics and gradients are summed over ranks.
/// Collective; returns this rank's summed cross-entropy.
double probe_train_step(LinearProbeState& state, float* x, const std::int32_t* labels,
                        std::size_t rows, std::size_t global_batch, double lr,
                        const LinearProbeConfig& config, const dist::Communicator& comm);

/// Trains one epoch (state.epochs_done is the epoch trained). Collective over comm; every rank
/// passes the same training set. Returns the mean training loss and the last lr.
struct EpochTraining {
  double mean_loss = 0.0;
  double last_lr = 0.0;
};
EpochTraining train_probe_epoch(LinearProbeState& state, const FeatureSet& train,
                                const LinearProbeConfig& config, const dist::Communicator& comm);

struct ProbeEvaluation {
  std::int64_t total = 0;
  std::int64_t correct1 = 0;
  std::int64_t correct5 = 0;
  double top1 = 0.0;  ///< percent
  double top5 = 0.0;
  std::vector<std::int64_t> class_total;
  std::vector<std::int64_t> class_correct;
  std::vector<double> class_accuracy;  ///< percent, NaN for a class without samples
};

/// Evaluates with the running BN statistics; ranks take blocks of the rows and sum the counts.
/// Top-5 counts the true class among the min(5, classes) largest logits (ties: lower class).
ProbeEvaluation evaluate_probe(const LinearProbeState& state, const FeatureSet& val,
                               const dist::Communicator& comm);

/// Trains from state.epochs_done to config.epochs, evaluating on `val` after every epoch and
/// calling after_epoch (checkpointing, logging) with the state. Stops early (returns false)
/// after `max_epochs_this_run` epochs when that is > 0, or after an epoch at which
/// `stop_requested` (evaluated on every rank; collective results only) returns true; true when
/// training is complete.
bool train_linear_probe(LinearProbeState& state, const FeatureSet& train, const FeatureSet& val,
                        const LinearProbeConfig& config, const dist::Communicator& comm,
                        const std::function<void(const LinearProbeState&)>& after_epoch = {},
                        int max_epochs_this_run = 0,
                        const std::function<bool()>& stop_requested = {});

/// The epoch record after training epoch state.epochs_done (already incremented) and
/// evaluating it; appended to state.history, logged with rate and ETA (`samples` processed in
/// the epoch, training and validation).
void record_probe_epoch(LinearProbeState& state, const EpochTraining& training,
                        const ProbeEvaluation& evaluation, double seconds, std::size_t samples,
                        const LinearProbeConfig& config);

/// Checks that train and val fit together and the probe (same dimension, enough rows for one
/// global batch); throws FileError / OptionError naming the file or option otherwise.
void check_probe_inputs(const FeatureSet& train, const FeatureSet& val,
                        const LinearProbeConfig& config, const dist::Communicator& comm);

/// Checkpoint (written by rank 0 only, atomically). `key` identifies the run's inputs and
/// training settings; load_probe_checkpoint refuses a checkpoint with another key, naming the
/// first differing line.
void save_probe_checkpoint(const std::filesystem::path& file, const LinearProbeState& state,
                           const std::string& key, const dist::Communicator& comm);
LinearProbeState load_probe_checkpoint(const std::filesystem::path& file, const std::string& key);

/// Best and last accuracies of a history.
struct ProbeSummary {
  int best_epoch = 0;   ///< 1-based epoch of the best top-1 (the first one on ties)
  double best_top1 = 0.0;
  double best_top5 = 0.0;  ///< the best top-5 over all epochs
  double last_top1 = 0.0;
  double last_top5 = 0.0;
  std::string line() const;  ///< the one-line summary
};
ProbeSummary summarize_probe(const std::vector<ProbeEpoch>& history);

/// What the report records beside the state.
struct ProbeReportInfo {
  std::string program;
  std::string config_ini;
  std::string mode = "features";  ///< "features" or "encoder" (attribute mode, protocol text)
  const FeatureSet* train = nullptr;  ///< features mode: the feature files
  const FeatureSet* val = nullptr;
  /// More root attributes (encoder mode: checkpoint, manifests, pool, augmentation, ...).
  std::vector<std::pair<std::string, std::string>> text_attributes;
  std::vector<std::pair<std::string, std::int64_t>> integer_attributes;
  std::vector<std::pair<std::string, double>> real_attributes;
  LinearProbeConfig config;
  bool has_knn = false;       ///< kNN accuracy was computed (knn_* attributes written)
  std::size_t knn_k = 0;
  double knn_temperature = 0.0;
  double knn_top1 = 0.0;
  double knn_top5 = 0.0;
};

/// Writes the report (docs/eval.md, "kmim_linprobe report") atomically from rank 0:
/// per-epoch history datasets, the final head, and best/last accuracies with the one-line
/// summary as attributes. Collective (barrier at the end).
void write_probe_report(const std::filesystem::path& file, const LinearProbeState& state,
                        const ProbeReportInfo& info, const dist::Communicator& comm);

}  // namespace kmim::eval
