// From stored images to the model's inputs for one (micro-)batch (SPEC §2, "Input" and
// "Targets"): per image, RandomResizedCrop + flip (augment.hpp) → the uint8 crop; the crop
// ImageNet-normalised and patchified → the student's input; uniform masking noise; then the
// tokenizer's targets from the same crops.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kmim/model/vit_mae.hpp"
#include "kmim/tokenize/target_tokenizer.hpp"
#include "kmim/train/augment.hpp"

namespace kmim::train {

/// The inputs of one batch, image-major.
struct PretrainInputs {
  int batch = 0;                       ///< B
  std::vector<std::uint64_t> indices;  ///< [B] dataset index of each image
  std::vector<std::int32_t> labels;    ///< [B]
  std::vector<std::uint8_t> crops;     ///< [B, S, S, 3] augmented crops (S = img_size)
  std::vector<float> patches;          ///< [B, L, P*P*3] normalised patch vectors
  std::vector<float> noise;            ///< [B, L] masking noise
  std::vector<std::int32_t> targets;   ///< [B, L] tokens (empty without a tokenizer)

  /// The model's view of this batch.
  model::Batch<float> model_batch() const;
};

class PretrainInputBuilder {
 public:
  /// `stored_size`: side of the stored (square, RGB) images. `tokenizer` may be null (MAE pixel
  /// loss); it is borrowed and must outlive the builder.
  PretrainInputBuilder(const model::ModelConfig& config, std::uint64_t seed, int stored_size,
                       tokenize::TargetTokenizer* tokenizer, RandomResizedCropRange range = {});

  /// Builds the inputs of the images `indices` (pixels in `images`, stored_size² × 3 bytes
  /// each) for `epoch`. Crops and patches are made in parallel over images (OpenMP); every
  /// value depends only on (seed, epoch, index) and the image.
  void build(std::uint64_t epoch, std::span<const std::uint64_t> indices,
             std::span<const std::uint8_t> images, std::span<const std::int32_t> labels,
             PretrainInputs& out);

  const model::ModelConfig& config() const { return config_; }

 private:
  model::ModelConfig config_;
  std::uint64_t seed_;
  int stored_size_;
  tokenize::TargetTokenizer* tokenizer_;
  RandomResizedCropRange range_;
};

}  // namespace kmim::train
