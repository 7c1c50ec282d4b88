// Online K-MIM targets (SPEC §2, "Targets"): for every training batch, one token per patch of
// the SAME augmented crop the student sees, computed on the fly. Four tokenizers:
//
//   PixelCodebookTargets    K-MIM PIXEL: the crop's patch vectors made exactly as kmim_kmeans
//                           made the codebook's (kmeans::extract_patches with the CODEBOOK's
//                           normalisation, (row, col, channel) order, no per-patch
//                           normalisation) → nearest centroid (kmeans::assign_nearest_centroid,
//                           squared L2, ties to the lowest index).
//   FeatureCodebookTargets  K-MIM DINO/DeiT/MAE: a frozen ViT (a kmim checkpoint) runs its
//                           encoder over all patches of the crop (the model input: ImageNet
//                           normalisation); its patch tokens after the final LayerNorm (CLS
//                           dropped) → nearest centroid of a feature codebook.
//   LabelTargets            token = the image's class (K = number of classes): the ideal,
//                           class-wise tokenizer of the paper's theory (TCAS 0), for ablations.
//   RandomTargets           token of (image, patch position) drawn uniformly from K, from
//                           RandomStream(seed, stream_id({kRandomTokenKey, image index})), one
//                           draw per patch in row-major tile order: no class information. The
//                           same definition and key as kmim_tcas's random tokenizer
//                           (kmim/eval/tcas_tokenizers.hpp), so one seed gives the same tokens
//                           in both; the tokens do not depend on the augmentation or the epoch.
//
// Every tokenizer writes B × L tokens in [0, num_tokens()), image-major, patches row-major over
// the crop (the model's patch order). Nearest-centroid searches run per image, so a patch's
// token does not depend on which other images share its batch (or rank).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "kmim/kmeans/codebook.hpp"
#include "kmim/model/encoder_features.hpp"
#include "kmim/model/vit_mae.hpp"

namespace kmim::tokenize {

/// One (micro-)batch as the tokenizers see it. Pointers are borrowed for one tokenize() call.
struct TargetInput {
  int batch = 0;                           ///< B images
  int crop_size = 0;                       ///< S: the crops are S × S × 3 (S = model img_size)
  const std::uint8_t* crops = nullptr;     ///< [B, S, S, 3] the augmented uint8 HWC RGB crops
  const float* model_patches = nullptr;    ///< [B, L, P*P*3] the student's input (ImageNet
                                           ///< normalisation, (row, col, channel) order)
  const std::int32_t* labels = nullptr;    ///< [B] class of each image
  const std::uint64_t* indices = nullptr;  ///< [B] dataset index of each image
};

class TargetTokenizer {
 public:
  virtual ~TargetTokenizer() = default;
  /// "pixel", "feature", "label" or "random" (the --tokenizer value).
  virtual std::string kind() const = 0;
  /// K: tokens lie in [0, K); the decoder predicts K logits.
  virtual std::size_t num_tokens() const = 0;
  /// One line for logs: "pixel codebook 'cb.h5' (K=50, patch 4, crop 32, normalization imagenet)".
  virtual std::string description() const = 0;
  /// Everything that determines the tokens, as `key = value` lines (stored in checkpoints; a
  /// run refuses to resume a checkpoint whose tokenizer identity differs).
  virtual std::string identity() const = 0;
  /// Writes input.batch × L tokens (image-major, patches row-major).
  virtual void tokenize(const TargetInput& input, std::span<std::int32_t> tokens) = 0;
};

/// Stream-id purpose tag of RandomTargets: the value of kmim::eval::kRandomTokenKey ("randtok").
inline constexpr std::uint64_t kRandomTokenKey = 0x72616e64746f6bull;

/// CRC-32 (8 hex digits) of the bytes of a float array: identifies a codebook's centroids or a
/// frozen model's parameters in identities.
std::string float_digest(std::span<const float> values);

class PixelCodebookTargets final : public TargetTokenizer {
 public:
  /// Checks the codebook against the model and throws FileError naming `file` when they do not
  /// fit: a feature-mode codebook, patch_size ≠ model patch, crop ≠ model img_size, channels ≠
  /// model channels, or d ≠ patch²·channels.
  PixelCodebookTargets(kmeans::Codebook codebook, std::filesystem::path file,
                       const model::ModelConfig& model);

  std::string kind() const override { return "pixel"; }
  std::size_t num_tokens() const override { return codebook_.k; }
  std::string description() const override;
  std::string identity() const override;
  void tokenize(const TargetInput& input, std::span<std::int32_t> tokens) override;

 private:
  kmeans::Codebook codebook_;
  std::filesystem::path file_;
  int num_patches_ = 0;
  bool same_as_model_input_ = false;  // codebook normalisation == the model's (ImageNet)
  std::vector<float> centroid_norms2_;
  std::vector<float> vectors_, dist2_;  // per-image scratch
};

class FeatureCodebookTargets final : public TargetTokenizer {
 public:
  /// `frozen` holds the frozen ViT (its decoder is ignored). Throws FileError naming the codebook
  /// or the checkpoint when they do not fit: codebook d ≠ frozen embed_dim, frozen img_size /
  /// patch_size / channels ≠ the student's (its patch tokens must be the student's patches).
  /// `position_embedding` [(1 + L) · D]: the frozen model's learned position table when it was
  /// converted from a public PyTorch ViT (train::read_position_embedding); empty: kmim's fixed
  /// sin-cos table.
  FeatureCodebookTargets(kmeans::Codebook codebook, std::filesystem::path codebook_file,
                         model::Parameters frozen, std::filesystem::path checkpoint_file,
                         const model::ModelConfig& model, int max_batch,
                         std::vector<float> position_embedding = {});

  std::string kind() const override { return "feature"; }
  std::size_t num_tokens() const override { return codebook_.k; }
  std::string description() const override;
  std::string identity() const override;
  void tokenize(const TargetInput& input, std::span<std::int32_t> tokens) override;

 private:
  kmeans::Codebook codebook_;
  std::filesystem::path codebook_file_;
  model::Parameters frozen_;
  std::filesystem::path checkpoint_file_;
  std::string frozen_digest_;  // CRC-32 of the frozen parameters (+ of a learned position table)
  model::EncoderWorkspace<float> workspace_;
  std::vector<float> centroid_norms2_;
  std::vector<float> tokens_, dist2_;  // [B, 1 + L, D] encoder output, per-image scratch
};

class LabelTargets final : public TargetTokenizer {
 public:
  LabelTargets(std::size_t num_classes, int num_patches);
  std::string kind() const override { return "label"; }
  std::size_t num_tokens() const override { return classes_; }
  std::string description() const override;
  std::string identity() const override;
  void tokenize(const TargetInput& input, std::span<std::int32_t> tokens) override;

 private:
  std::size_t classes_;
  int num_patches_;
};

class RandomTargets final : public TargetTokenizer {
 public:
  RandomTargets(std::size_t k, int num_patches, std::uint64_t seed);
  std::string kind() const override { return "random"; }
  std::size_t num_tokens() const override { return k_; }
  std::string description() const override;
  std::string identity() const override;
  void tokenize(const TargetInput& input, std::span<std::int32_t> tokens) override;

 private:
  std::size_t k_;
  int num_patches_;
  std::uint64_t seed_;
};

}  // namespace kmim::tokenize
