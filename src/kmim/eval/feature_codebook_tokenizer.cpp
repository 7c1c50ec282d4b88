#include "kmim/eval/feature_codebook_tokenizer.hpp"

#include <algorithm>
#include <utility>

#include <fmt/format.h>

#include "kmim/core/error.hpp"
#include "kmim/eval/feature_file.hpp"
#include "kmim/kmeans/codebook.hpp"
#include "kmim/tokenize/target_tokenizer.hpp"

namespace kmim::eval {

FeatureCodebook load_feature_codebook(const std::filesystem::path& file) {
  kmeans::Codebook cb = kmeans::Codebook::load(file);
  if (cb.mode != "feature")
    throw FileError(file, fmt::format("is a {}-mode codebook; the feature tokenizer needs a "
                                      "feature-mode codebook (kmim_kmeans --features); measure "
                                      "pixel codebooks with --codebook",
                                      cb.mode));
  FeatureCodebook out;
  out.file = file;
  out.k = cb.k;
  out.d = cb.d;
  out.centroids = std::move(cb.centroids);
  out.fingerprint = content_fingerprint(std::as_bytes(std::span<const float>(out.centroids)));
  out.centroids_crc32 = tokenize::float_digest(out.centroids);
  return out;
}

EncoderTokenCache::EncoderTokenCache(FrozenEncoder encoder)
    : encoder_(std::move(encoder)), runner_(encoder_, 1) {}

const std::vector<float>& EncoderTokenCache::tokens(const ImageBatchView& batch) {
  if (indices_.size() == batch.size() &&
      std::equal(indices_.begin(), indices_.end(), batch.indices.begin()) && !tokens_.empty())
    return tokens_;
  const model::ModelConfig& c = encoder_.config();
  const std::size_t n = batch.size();
  const std::size_t image_bytes =
      static_cast<std::size_t>(batch.image_size) * static_cast<std::size_t>(batch.image_size) * 3;
  if (batch.pixels.size() != n * image_bytes)
    throw Error(fmt::format("feature tokenizer: pixel buffer of {} bytes for {} images of {}x{}",
                            batch.pixels.size(), n, batch.image_size, batch.image_size));
  tokens_.resize(n * static_cast<std::size_t>(c.num_patches() + 1) * c.embed_dim);
  runner_.center_crop_tokens(batch.pixels.data(), n, batch.image_size, tokens_.data());
  indices_.assign(batch.indices.begin(), batch.indices.end());
  return tokens_;
}

FeatureCodebookTokenizer::FeatureCodebookTokenizer(FeatureCodebook codebook,
                                                   std::shared_ptr<EncoderTokenCache> encoder,
                                                   int image_size, std::string name)
    : codebook_(std::move(codebook)), encoder_(std::move(encoder)), name_(std::move(name)) {
  const FrozenEncoder& enc = encoder_->encoder();
  const auto& file = codebook_.file;
  require_file(codebook_.k >= 1 && codebook_.centroids.size() == codebook_.k * codebook_.d, file,
               "holds no centroids");
  require_file(codebook_.d == static_cast<std::size_t>(enc.config().embed_dim), file,
               fmt::format("centroids have d = {} values, but the encoder of '{}' ({}) has "
                           "embed_dim {}: the codebook was made over another model's features",
                           codebook_.d, enc.file.string(), enc.config().name,
                           enc.config().embed_dim));
  check_encoder_fits_images(enc, image_size, "the evaluation set");
  centroid_norms2_.resize(codebook_.k);
  for (std::size_t j = 0; j < codebook_.k; ++j) {
    double s = 0.0;
    for (std::size_t t = 0; t < codebook_.d; ++t) {
      const double v = codebook_.centroids[j * codebook_.d + t];
      s += v * v;
    }
    centroid_norms2_[j] = s;
  }
}

int FeatureCodebookTokenizer::patches_per_image() const {
  return encoder_->encoder().config().num_patches();
}

void FeatureCodebookTokenizer::tokenize(const ImageBatchView& batch,
                                        std::span<std::int32_t> tokens) const {
  const std::size_t n = batch.size();
  const auto l = static_cast<std::size_t>(patches_per_image());
  if (tokens.size() != n * l || batch.labels.size() != n)
    throw Error(fmt::format("tokenizer {}: batch of {} images cannot fill {} tokens", name_, n,
                            tokens.size()));
  const std::vector<float>& all = encoder_->tokens(batch);
  const std::size_t d = codebook_.d;
  // The patch tokens, CLS rows dropped (SPEC §2), as one [n·L, d] block.
  std::vector<float> patch_tokens(n * l * d);
  for (std::size_t i = 0; i < n; ++i)
    std::copy_n(all.data() + (i * (l + 1) + 1) * d, l * d, patch_tokens.data() + i * l * d);
  nearest_centroid_exact(patch_tokens.data(), n * l, d, codebook_.centroids.data(), codebook_.k,
                         centroid_norms2_.data(), tokens.data());
}

}  // namespace kmim::eval
