// The frozen ViT encoder of the evaluation stage (SPEC §2 "Feature tokenizer", §4): feature
// extraction (kmim_extract), the feature tokenizer TCAS measures, and the linear probe through
// the encoder (kmim_linprobe --mode encoder) all run a kmim checkpoint's encoder, unmasked, over
// every patch of a crop and read its final-LayerNorm tokens [1 + L, D] (CLS first).
//
//   stored uint8 image (S × S × 3)
//     │ centre crop to img_size (torchvision CenterCrop offsets; = Resize+CenterCrop of the
//     │ original when the shards hold Resize(S)+CenterCrop(S) images) — or an augmented crop
//     │ x/255, ImageNet mean/std, P×P tiles in (row, col, channel) order
//     │ (kmeans::extract_patches: the pretraining input and the pixel codebook's vectors)
//     │ model::encoder_forward
//     ▼
//   tokens [1 + L, D] → pooled: CLS token | mean of the L patch tokens | all L patch tokens
//
// Position embeddings: kmim's own checkpoints use MAE's fixed 2-D sin-cos table (computed, not
// stored). Checkpoints converted from public PyTorch ViTs (tools/convert_timm_vit.py: DINO,
// DeiT, timm) carry their LEARNED table as /model/pos_embed float32 [1, 1 + L, D]; when present
// it replaces the sin-cos table in the encoder's workspace (EncoderWorkspace::pos_embed is the
// table encoder_forward adds), so the converted encoder computes what the original computes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "kmim/model/encoder_features.hpp"
#include "kmim/model/vit_mae.hpp"

namespace kmim::eval {

/// What a feature vector is made of.
enum class FeaturePool {
  cls,      ///< the CLS token after the final LayerNorm (MAE's linear probe)
  mean,     ///< the mean of the L patch tokens after the final LayerNorm
  patches,  ///< every patch token (CLS dropped): L rows per image (feature-tokenizer K-means)
};

std::string_view feature_pool_name(FeaturePool pool);
/// "cls", "mean" or "patches"; throws OptionError naming `option` otherwise.
FeaturePool feature_pool_from_name(std::string_view name, const std::string& option = "pool");

/// A frozen encoder loaded from a kmim checkpoint (its decoder is ignored).
struct FrozenEncoder {
  explicit FrozenEncoder(const model::ModelConfig& config) : params(config) {}

  std::filesystem::path file;
  model::Parameters params;
  /// [(1 + L) · D] the stored learned position embedding (/model/pos_embed); empty for kmim's
  /// own checkpoints (fixed sin-cos table).
  std::vector<float> position_embedding;
  /// CRC-32 (8 hex digits) of the parameters, then "+" and the CRC-32 of the learned position
  /// table when there is one: identifies the encoder in keys and reports.
  std::string fingerprint;
  // Descriptive, from the checkpoint's attributes (empty when absent, e.g. converted models).
  std::string tokenizer_kind;         ///< pretraining targets: pixel, feature, label, random
  std::string tokenizer_description;  ///< e.g. "pixel codebook 'cb.h5' (K=50, ...)"
  std::string centroids_crc32;        ///< the pretraining codebook's centroids_crc32, if any
  std::string converted_from;         ///< converted checkpoints: the source layout and file

  const model::ModelConfig& config() const { return params.config(); }
  /// One line for logs: "'ckpt.h5' (vit_small: img 224, patch 16, D 384, depth 12, learned
  /// position embedding)".
  std::string description() const;
};

/// Reads the encoder of a kmim checkpoint (train::load_model_parameters: config, every tensor's
/// shape, the parameter CRC, finiteness) and its learned position embedding when stored
/// (/model/pos_embed [1, 1 + L, D], float32, finite, CRC attribute checked). Throws FileError
/// naming the file.
FrozenEncoder load_frozen_encoder(const std::filesystem::path& checkpoint);

/// Throws FileError naming the checkpoint unless its encoder can read the stored images of
/// `manifest` through a centre crop: 3 channels and img_size ≤ stored_size.
void check_encoder_fits_images(const FrozenEncoder& encoder, int stored_size,
                               const std::filesystem::path& manifest);

/// Runs a frozen encoder on batches of images. Images are processed in groups of at most
/// max_batch in the order given, so the features of a list of images depend only on that list
/// and max_batch (not on rank or thread counts).
class EncoderRunner {
 public:
  /// `encoder` is borrowed and must outlive the runner.
  EncoderRunner(const FrozenEncoder& encoder, int max_batch);

  const FrozenEncoder& encoder() const { return encoder_; }
  int max_batch() const { return workspace_.max_batch; }
  /// Rows a pooled image yields: 1 (cls, mean) or L (patches).
  std::size_t rows_per_image(FeaturePool pool) const;
  std::size_t dim() const { return static_cast<std::size_t>(encoder_.config().embed_dim); }

  /// tokens [n, 1 + L, D] of patches [n, L, P·P·3] (model input: ImageNet-normalised).
  void tokens(const float* patches, std::size_t n, float* out);

  /// Features of n stored images (stored_size² × 3 bytes each, HWC RGB): centre crop to
  /// img_size, normalise, patchify, encode, pool. out: n · rows_per_image(pool) rows of D.
  void center_crop_features(const std::uint8_t* images, std::size_t n, int stored_size,
                            FeaturePool pool, float* out);
  /// The same for n crops that already are img_size² × 3 bytes (augmented crops).
  void crop_features(const std::uint8_t* crops, std::size_t n, FeaturePool pool, float* out);

  /// The encoder's final-LayerNorm tokens of n stored images (centre crop): [n, 1 + L, D].
  void center_crop_tokens(const std::uint8_t* images, std::size_t n, int stored_size, float* out);

 private:
  void features_from_images(const std::uint8_t* images, std::size_t n, int image_size,
                            FeaturePool pool, float* out, bool raw_tokens);

  const FrozenEncoder& encoder_;
  model::EncoderWorkspace<float> workspace_;
  std::vector<float> patches_;  ///< [max_batch, L, P·P·3]
  std::vector<float> tokens_;   ///< [max_batch, 1 + L, D]
};

/// Pools encoder tokens [n, 1 + L, D] into out (n · rows rows of D, rows as rows_per_image).
void pool_tokens(const float* tokens, std::size_t n, std::size_t num_patches, std::size_t dim,
                 FeaturePool pool, float* out);

}  // namespace kmim::eval
