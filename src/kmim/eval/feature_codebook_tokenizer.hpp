// The feature tokenizer as TCAS measures it (SPEC §2 "Feature tokenizer", §3): K-MIM DINO /
// DeiT / MAE tokens. Each evaluation image is centre-cropped to the frozen encoder's img_size,
// normalised and encoded (frozen_encoder.hpp); each of its L patch tokens after the final
// LayerNorm (CLS dropped) gets the nearest centroid of a feature-mode codebook (kmim_kmeans
// --features over kmim_extract --pool patches), by exact squared distance
// (nearest_centroid_exact: ties to the lowest index, independent of batching).
//
// The encoder runs one image at a time, so an image's tokens depend only on the image (not on
// which images share its batch or rank): TCAS counts are identical for any rank count (at a
// fixed number of threads per rank; OpenBLAS results can change in the last bits with the
// thread count). Several codebooks over one encoder share an EncoderTokenCache: the encoder runs
// once per batch for all of them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kmim/eval/frozen_encoder.hpp"
#include "kmim/eval/tcas_tokenizers.hpp"

namespace kmim::eval {

/// A feature-mode K-means codebook (kmim_kmeans --features).
struct FeatureCodebook {
  std::filesystem::path file;
  std::vector<float> centroids;  ///< [k, d]
  std::size_t k = 0;
  std::size_t d = 0;
  std::string fingerprint;       ///< content_fingerprint of the centroids
  std::string centroids_crc32;   ///< CRC-32 of the centroids (pretraining's identity digest)
};

/// Reads a codebook written by kmim_kmeans; throws FileError naming the file when it is not a
/// codebook or is a pixel-mode codebook.
FeatureCodebook load_feature_codebook(const std::filesystem::path& file);

/// The frozen encoder's tokens of the batch in hand, shared by the feature tokenizers of a run.
class EncoderTokenCache {
 public:
  explicit EncoderTokenCache(FrozenEncoder encoder);
  EncoderTokenCache(const EncoderTokenCache&) = delete;
  EncoderTokenCache& operator=(const EncoderTokenCache&) = delete;

  const FrozenEncoder& encoder() const { return encoder_; }
  /// Tokens [batch.size(), 1 + L, D] of the batch's images (centre crop); computed when the
  /// batch's image indices differ from the previous call's.
  const std::vector<float>& tokens(const ImageBatchView& batch);

 private:
  FrozenEncoder encoder_;
  EncoderRunner runner_;  // one image per forward pass (see above)
  std::vector<std::uint64_t> indices_;
  std::vector<float> tokens_;
};

class FeatureCodebookTokenizer final : public PatchTokenizer {
 public:
  /// Checks the codebook and the encoder against each other and the evaluation images; throws
  /// FileError naming the codebook (d ≠ the encoder's embed_dim, no centroids) or the
  /// checkpoint (img_size larger than the stored images, not RGB).
  FeatureCodebookTokenizer(FeatureCodebook codebook, std::shared_ptr<EncoderTokenCache> encoder,
                           int image_size, std::string name);

  std::string name() const override { return name_; }
  std::string kind() const override { return "feature"; }
  std::size_t num_tokens() const override { return codebook_.k; }
  int patches_per_image() const override;
  bool needs_pixels() const override { return true; }
  void tokenize(const ImageBatchView& batch, std::span<std::int32_t> tokens) const override;

  const FeatureCodebook& codebook() const { return codebook_; }
  const FrozenEncoder& encoder() const { return encoder_->encoder(); }

 private:
  FeatureCodebook codebook_;
  std::shared_ptr<EncoderTokenCache> encoder_;
  std::vector<double> centroid_norms2_;
  std::string name_;
};

}  // namespace kmim::eval
