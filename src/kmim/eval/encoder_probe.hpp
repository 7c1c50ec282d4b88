// The linear probe through the frozen encoder (kmim_linprobe --mode encoder; SPEC §4, MAE's
// main_linprobe):
//
//   train: stored image → RandomResizedCrop(img_size, scale 0.08–1, ratio 3/4–4/3, bicubic) →
//          horizontal flip (p 0.5) → ImageNet normalisation → frozen encoder → CLS token (or the
//          mean of the patch tokens) → the probe step of linear_probe.hpp (BatchNorm without
//          affine + linear head, LARS, warmup + cosine)
//   val:   centre crop of the stored images to img_size (Resize+CenterCrop when the shards
//          hold Resize(S)+CenterCrop(S) images) → encoder → the same pooling → top-1 / top-5
//
// Every random choice is keyed by (seed, epoch, dataset index): the epoch's order is
// random_permutation(N, seed, stream_id({kProbeShuffleKey, epoch})) as in the feature mode, the
// crop and flip come from RandomStream(seed, stream_id({kProbeAugmentKey, epoch, index})). Rank r
// takes its block of every global batch; BatchNorm statistics and gradients are summed over
// ranks (-np 1 and -np N agree up to floating-point summation order). The encoder is frozen, so
// the validation features are computed once per run and kept in memory.
//
// Preemption: stop_requested() is polled (agreed across ranks) after every step; the probe then
// returns with the position inside the epoch in the state (steps_in_epoch, epoch_loss_sum), which
// the checkpoint records, and a resumed run continues bit-identically (same ranks, threads and
// encoder batch).
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "kmim/dist/mpi.hpp"
#include "kmim/eval/feature_file.hpp"
#include "kmim/eval/frozen_encoder.hpp"
#include "kmim/eval/linear_probe.hpp"
#include "kmim/train/augment.hpp"

namespace kmim::io {
class ShardDataset;
}

namespace kmim::eval {

/// Stream-id purpose tag of the probe's training crops and flips.
inline constexpr std::uint64_t kProbeAugmentKey = 0x70726f62656175ull;  // "probeau"

/// What the encoder mode adds to LinearProbeConfig (defaults: MAE's linear probing).
struct EncoderProbeSettings {
  FeaturePool pool = FeaturePool::cls;
  /// RandomResizedCrop for training: MAE's linear probe uses scale (0.08, 1) (torchvision's
  /// default), not pretraining's (0.2, 1).
  train::RandomResizedCropRange crop{0.08, 1.0, 3.0 / 4.0, 4.0 / 3.0};
  int encoder_batch = 64;  ///< images per encoder forward pass
  int prefetch = 2;        ///< training batches read ahead

  /// Throws OptionError naming the option when a value is out of range.
  void validate() const;
  /// The settings that change the trained result, as INI lines (checkpoint compatibility).
  std::string training_key() const;
};

/// One training crop: the stored image (stored_size² × 3 bytes) cropped and resized to
/// out_size² × 3 bytes and flipped as drawn from RandomStream(seed, stream_id({kProbeAugmentKey,
/// epoch, index})): train::random_resized_crop_box, then uniform() < 0.5 → flip.
void probe_training_crop(const std::uint8_t* image, int stored_size, int out_size,
                         std::uint64_t seed, std::uint64_t epoch, std::uint64_t index,
                         const train::RandomResizedCropRange& range, std::uint8_t* out);

/// The pooled centre-crop features of every image of a split, held by every rank (ranks encode
/// blocks; allgatherv). `file` names the manifest (for messages); fingerprint = the manifest's.
FeatureSet encode_split(EncoderRunner& runner, const io::ShardDataset& data, FeaturePool pool,
                        const dist::Communicator& comm, const std::string& label);

/// How a run of the encoder probe ended.
enum class ProbeRunEnd {
  complete,          ///< all epochs trained
  stopped_by_epochs, ///< max_epochs_this_run reached (checkpoint saved)
  stopped_on_request ///< stop_requested() (checkpoint saved, mid-epoch possible)
};

/// Trains from the state's position (epochs_done, steps_in_epoch) to config.epochs, evaluating
/// on `val` after every epoch; calls `save` after every epoch and when stopping on request.
/// Collective over comm.
ProbeRunEnd train_linear_probe_encoder(LinearProbeState& state, EncoderRunner& runner,
                                       const io::ShardDataset& train, const FeatureSet& val,
                                       const LinearProbeConfig& config,
                                       const EncoderProbeSettings& settings,
                                       const dist::Communicator& comm,
                                       const std::function<void(const LinearProbeState&)>& save,
                                       int max_epochs_this_run = 0,
                                       const std::function<bool()>& stop_requested = {});

}  // namespace kmim::eval
