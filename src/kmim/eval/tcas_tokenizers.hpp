// Patch tokenizers as TCAS sees them (SPEC §3): each image of the evaluation set becomes
// patches_per_image() tokens in [0, num_tokens()), one per patch, and every patch inherits the
// image's class. Three kinds:
//
//   PixelCodebookTokenizer  K-MIM PIXEL (SPEC §2): the centred crop's patch vectors
//                           (kmim::kmeans::extract_patches, the codebook's crop/patch/
//                           normalisation) → nearest centroid (nearest_centroid_exact).
//   LabelTokenizer          token = the image's class: the ideal, class-wise tokenizer
//                           (TCAS exactly 0).
//   RandomTokenizer         token drawn uniformly from K per patch, from
//                           RandomStream(seed, stream_id({kRandomTokenKey, image index})), one
//                           draw per patch in tile order: no class information (TCAS ≈ 1).
//
// These live in kmim/eval because they exist to be measured; the online targets of pretraining
// call the same kmeans functions directly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "kmim/kmeans/patches.hpp"

namespace kmim::eval {

/// A batch of evaluation images handed to a tokenizer.
struct ImageBatchView {
  std::span<const std::uint8_t> pixels;   ///< count × image_size² × 3, HWC RGB; empty when no
                                          ///< tokenizer of the run needs pixels
  int image_size = 0;                     ///< stored side (H == W)
  std::span<const std::uint64_t> indices; ///< dataset index of each image
  std::span<const std::int32_t> labels;   ///< class of each image
  std::size_t size() const { return indices.size(); }
};

class PatchTokenizer {
 public:
  virtual ~PatchTokenizer() = default;
  /// The report's group name for this tokenizer ("codebook_k50", "label", "random_k100").
  virtual std::string name() const = 0;
  /// "codebook", "label" or "random".
  virtual std::string kind() const = 0;
  virtual std::size_t num_tokens() const = 0;
  virtual int patches_per_image() const = 0;
  virtual bool needs_pixels() const = 0;
  /// Writes batch.size() × patches_per_image() tokens (image-major, tiles row-major).
  virtual void tokenize(const ImageBatchView& batch, std::span<std::int32_t> tokens) const = 0;
};

/// Stream-id purpose tag of RandomTokenizer.
inline constexpr std::uint64_t kRandomTokenKey = 0x72616e64746f6bull;  // "randtok"

/// A pixel K-means codebook as the tokenizer needs it (filled from the codebook file).
struct PixelCodebook {
  std::filesystem::path file;                     ///< where it came from (errors, provenance)
  std::vector<float> centroids;                   ///< [k, d] row-major
  std::size_t k = 0;
  std::size_t d = 0;
  kmeans::PatchGeometry geometry;                 ///< crop, patch, channels
  kmeans::PixelNormalization normalization;
  std::string fingerprint;                        ///< provenance (may be empty)
};

/// The nearest of k centroids c [k, d] for each row of x [n, d], by exact squared L2 distance
/// (double precision; ties to the lowest index) — the result of
/// kmeans::assign_nearest_centroid_reference — computed fast: an sgemm screening pass
/// (||x||² − 2x·c + ||c||²) with a proven bound on its float error leaves the few rows whose
/// nearest centroid is within that bound of another to an exact recomputation. Unlike a plain
/// float argmin, the answer does not depend on how rows are blocked, batched or threaded, so TCAS
/// counts are identical for any rank count. c_norms2[j] = ||c_j||² in double.
void nearest_centroid_exact(const float* x, std::size_t n, std::size_t d, const float* c,
                            std::size_t k, const double* c_norms2, std::int32_t* labels);

/// Reads a pixel codebook written by kmim_kmeans (kmim::kmeans::Codebook::load). Throws
/// FileError naming the file when it is not a codebook or is a feature-mode codebook.
PixelCodebook load_pixel_codebook(const std::filesystem::path& file);

class PixelCodebookTokenizer final : public PatchTokenizer {
 public:
  /// Checks the codebook against the stored images of the evaluation set and throws FileError
  /// naming the codebook when they do not fit: d ≠ patch²·channels, channels ≠ 3 (shards are
  /// RGB), patch not dividing crop, or crop larger than image_size.
  PixelCodebookTokenizer(PixelCodebook codebook, int image_size, std::string name);

  std::string name() const override { return name_; }
  std::string kind() const override { return "codebook"; }
  std::size_t num_tokens() const override { return codebook_.k; }
  int patches_per_image() const override { return codebook_.geometry.patches_per_image(); }
  bool needs_pixels() const override { return true; }
  void tokenize(const ImageBatchView& batch, std::span<std::int32_t> tokens) const override;

  const PixelCodebook& codebook() const { return codebook_; }

 private:
  PixelCodebook codebook_;
  std::vector<double> centroid_norms2_;
  std::string name_;
};

class LabelTokenizer final : public PatchTokenizer {
 public:
  LabelTokenizer(std::size_t num_classes, int patches_per_image);
  std::string name() const override { return "label"; }
  std::string kind() const override { return "label"; }
  std::size_t num_tokens() const override { return classes_; }
  int patches_per_image() const override { return patches_; }
  bool needs_pixels() const override { return false; }
  void tokenize(const ImageBatchView& batch, std::span<std::int32_t> tokens) const override;

 private:
  std::size_t classes_;
  int patches_;
};

class RandomTokenizer final : public PatchTokenizer {
 public:
  RandomTokenizer(std::size_t k, int patches_per_image, std::uint64_t seed);
  std::string name() const override;
  std::string kind() const override { return "random"; }
  std::size_t num_tokens() const override { return k_; }
  int patches_per_image() const override { return patches_; }
  bool needs_pixels() const override { return false; }
  void tokenize(const ImageBatchView& batch, std::span<std::int32_t> tokens) const override;

 private:
  std::size_t k_;
  int patches_;
  std::uint64_t seed_;
};

}  // namespace kmim::eval
