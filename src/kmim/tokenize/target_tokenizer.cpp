#include "kmim/tokenize/target_tokenizer.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "kmim/core/error.hpp"
#include "kmim/core/rng.hpp"
#include "kmim/io/shard_dataset.hpp"
#include "kmim/kmeans/assign.hpp"
#include "kmim/kmeans/patches.hpp"

namespace kmim::tokenize {
namespace {

void check_output(const TargetTokenizer& t, const TargetInput& in, int num_patches,
                  std::span<std::int32_t> tokens) {
  const std::size_t want =
      static_cast<std::size_t>(in.batch) * static_cast<std::size_t>(num_patches);
  if (in.batch < 0 || tokens.size() != want) {
    throw Error(fmt::format("{} tokenizer: {} images need {} tokens, got room for {}", t.kind(),
                            in.batch, want, tokens.size()));
  }
}

std::vector<float> squared_norms(const std::vector<float>& c, std::size_t k, std::size_t d) {
  std::vector<float> out(k);
  for (std::size_t j = 0; j < k; ++j) {
    double s = 0.0;
    for (std::size_t t = 0; t < d; ++t) s += static_cast<double>(c[j * d + t]) * c[j * d + t];
    out[j] = static_cast<float>(s);
  }
  return out;
}

bool is_imagenet(const kmeans::PixelNormalization& n) {
  const kmeans::PixelNormalization ref = kmeans::PixelNormalization::imagenet();
  return n.mean == ref.mean && n.std == ref.std;
}

std::string geometry_text(const model::ModelConfig& m) {
  return fmt::format(
      "model '{}': img_size {}, patch_size {}, channels {} (patch vectors of {} values)", m.name,
      m.img_size, m.patch_size, m.channels, m.patch_dim());
}

}  // namespace

std::string float_digest(std::span<const float> values) {
  io::shard_format::Checksum crc;
  crc.add(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(values.data()),
                                        values.size_bytes()));
  return fmt::format("{:08x}", crc.value());
}

// ================================================================================== pixel

PixelCodebookTargets::PixelCodebookTargets(kmeans::Codebook codebook, std::filesystem::path file,
                                           const model::ModelConfig& model)
    : codebook_(std::move(codebook)), file_(std::move(file)), num_patches_(model.num_patches()) {
  const auto& c = codebook_;
  require_file(
      c.mode == "pixel", file_,
      fmt::format("is a {}-mode codebook; the pixel tokenizer needs a pixel codebook "
                  "(use --tokenizer feature with --tokenizer-checkpoint for feature codebooks)",
                  c.mode));
  require_file(c.patch_size == model.patch_size, file_,
               fmt::format("codebook patch size {} does not match the model's patch size {} ({})",
                           c.patch_size, model.patch_size, geometry_text(model)));
  require_file(
      c.crop == model.img_size, file_,
      fmt::format("codebook crop {} does not match the model's img_size {}: the codebook's "
                  "patches must tile the training crop ({})",
                  c.crop, model.img_size, geometry_text(model)));
  require_file(c.channels == model.channels, file_,
               fmt::format("codebook has {} channels, the model {}", c.channels, model.channels));
  require_file(c.d == static_cast<std::size_t>(model.patch_dim()), file_,
               fmt::format("codebook vectors have d = {} values, but a {}x{}x{} patch has {}", c.d,
                           model.patch_size, model.patch_size, model.channels, model.patch_dim()));
  require_file(c.k >= 1 && c.centroids.size() == c.k * c.d, file_, "codebook has no centroids");
  same_as_model_input_ = is_imagenet(c.normalization);
  centroid_norms2_ = squared_norms(c.centroids, c.k, c.d);
  vectors_.resize(static_cast<std::size_t>(num_patches_) * c.d);
  dist2_.resize(static_cast<std::size_t>(num_patches_));
}

std::string PixelCodebookTargets::description() const {
  return fmt::format("pixel codebook '{}' (K={}, patch {}, crop {}, normalization {})",
                     file_.string(), codebook_.k, codebook_.patch_size, codebook_.crop,
                     codebook_.normalization.name);
}

std::string PixelCodebookTargets::identity() const {
  return fmt::format(
      "kind = pixel\nk = {}\nd = {}\npatch_size = {}\ncrop = {}\nnormalization = {}\n"
      "centroids_crc32 = {}\n",
      codebook_.k, codebook_.d, codebook_.patch_size, codebook_.crop, codebook_.normalization.name,
      float_digest(codebook_.centroids));
}

void PixelCodebookTargets::tokenize(const TargetInput& in, std::span<std::int32_t> tokens) {
  check_output(*this, in, num_patches_, tokens);
  if (in.crop_size != codebook_.crop)
    throw Error(fmt::format("pixel tokenizer: crops of {} pixels, codebook crop {}", in.crop_size,
                            codebook_.crop));
  const std::size_t l = static_cast<std::size_t>(num_patches_);
  const std::size_t image_bytes = static_cast<std::size_t>(in.crop_size) * in.crop_size * 3;
  for (int b = 0; b < in.batch; ++b) {
    const float* x = nullptr;
    if (same_as_model_input_ && in.model_patches != nullptr) {
      // extract_patches with the ImageNet normalisation is how the model input was made: the
      // same vectors, bit for bit, so they need not be made twice.
      x = in.model_patches + static_cast<std::size_t>(b) * l * codebook_.d;
    } else {
      kmeans::extract_patches(in.crops + static_cast<std::size_t>(b) * image_bytes, in.crop_size,
                              in.crop_size, codebook_.geometry(), codebook_.normalization, {},
                              vectors_.data());
      x = vectors_.data();
    }
    kmeans::assign_nearest_centroid(x, l, codebook_.d, codebook_.centroids.data(), codebook_.k,
                                    tokens.data() + static_cast<std::size_t>(b) * l, dist2_.data(),
                                    centroid_norms2_.data());
  }
}

// ================================================================================ feature

FeatureCodebookTargets::FeatureCodebookTargets(kmeans::Codebook codebook,
                                               std::filesystem::path codebook_file,
                                               model::Parameters frozen,
                                               std::filesystem::path checkpoint_file,
                                               const model::ModelConfig& model, int max_batch,
                                               std::vector<float> position_embedding)
    : codebook_(std::move(codebook)),
      codebook_file_(std::move(codebook_file)),
      frozen_(std::move(frozen)),
      checkpoint_file_(std::move(checkpoint_file)),
      workspace_(frozen_.config(), std::max(max_batch, 1)) {
  const model::ModelConfig& f = frozen_.config();
  require_file(codebook_.k >= 1 && codebook_.centroids.size() == codebook_.k * codebook_.d,
               codebook_file_, "codebook has no centroids");
  require_file(codebook_.d == static_cast<std::size_t>(f.embed_dim), codebook_file_,
               fmt::format("codebook vectors have d = {} values, but the frozen model '{}' "
                           "(checkpoint '{}') has embed_dim {}",
                           codebook_.d, f.name, checkpoint_file_.string(), f.embed_dim));
  require_file(
      f.img_size == model.img_size && f.patch_size == model.patch_size &&
          f.channels == model.channels,
      checkpoint_file_,
      fmt::format("the frozen tokenizer model (img_size {}, patch_size {}, channels {}) must "
                  "see the student's patches: {}",
                  f.img_size, f.patch_size, f.channels, geometry_text(model)));
  frozen_digest_ = float_digest(frozen_.values());
  if (!position_embedding.empty()) {
    require_file(position_embedding.size() == workspace_.pos_embed.size(), checkpoint_file_,
                 fmt::format("the learned position embedding has {} values, the model needs {}",
                             position_embedding.size(), workspace_.pos_embed.size()));
    workspace_.pos_embed = std::move(position_embedding);
    frozen_digest_.append("+").append(float_digest(workspace_.pos_embed));
  }
  centroid_norms2_ = squared_norms(codebook_.centroids, codebook_.k, codebook_.d);
  tokens_.resize(static_cast<std::size_t>(workspace_.max_batch) * (f.num_patches() + 1) *
                 f.embed_dim);
  dist2_.resize(static_cast<std::size_t>(f.num_patches()));
}

std::string FeatureCodebookTargets::description() const {
  return fmt::format("feature codebook '{}' (K={}, d={}) over the frozen encoder '{}' of '{}'",
                     codebook_file_.string(), codebook_.k, codebook_.d, frozen_.config().name,
                     checkpoint_file_.string());
}

std::string FeatureCodebookTargets::identity() const {
  return fmt::format(
      "kind = feature\nk = {}\nd = {}\ncentroids_crc32 = {}\n"
      "frozen_model = {}\nfrozen_parameters_crc32 = {}\n",
      codebook_.k, codebook_.d, float_digest(codebook_.centroids), frozen_.config().name,
      frozen_digest_);
}

void FeatureCodebookTargets::tokenize(const TargetInput& in, std::span<std::int32_t> tokens) {
  const model::ModelConfig& f = frozen_.config();
  const int l = f.num_patches();
  check_output(*this, in, l, tokens);
  if (in.model_patches == nullptr) throw Error("feature tokenizer: the batch has no model input");
  const std::size_t n = static_cast<std::size_t>(l) + 1;
  const std::size_t d = codebook_.d;
  for (int first = 0; first < in.batch; first += workspace_.max_batch) {
    const int count = std::min(workspace_.max_batch, in.batch - first);
    model::encoder_forward(frozen_,
                           in.model_patches + static_cast<std::size_t>(first) * l * f.patch_dim(),
                           count, workspace_, tokens_.data());
    for (int b = 0; b < count; ++b) {
      // Patch tokens after the final LayerNorm; row 0 (CLS) is dropped (SPEC §2).
      kmeans::assign_nearest_centroid(tokens_.data() + (static_cast<std::size_t>(b) * n + 1) * d,
                                      static_cast<std::size_t>(l), d, codebook_.centroids.data(),
                                      codebook_.k,
                                      tokens.data() + static_cast<std::size_t>(first + b) * l,
                                      dist2_.data(), centroid_norms2_.data());
    }
  }
}

// ================================================================================== label

LabelTargets::LabelTargets(std::size_t num_classes, int num_patches)
    : classes_(num_classes), num_patches_(num_patches) {
  if (classes_ < 2 || num_patches_ < 1)
    throw Error(fmt::format("label tokenizer: needs at least 2 classes (got {})", classes_));
}

std::string LabelTargets::description() const {
  return fmt::format("label tokenizer (token = class, K={})", classes_);
}

std::string LabelTargets::identity() const {
  return fmt::format("kind = label\nk = {}\n", classes_);
}

void LabelTargets::tokenize(const TargetInput& in, std::span<std::int32_t> tokens) {
  check_output(*this, in, num_patches_, tokens);
  for (int b = 0; b < in.batch; ++b) {
    const std::int32_t label = in.labels[b];
    if (label < 0 || static_cast<std::size_t>(label) >= classes_)
      throw Error(fmt::format("label tokenizer: image {} has label {} outside [0, {})",
                              in.indices[b], label, classes_));
    std::fill_n(tokens.begin() + static_cast<std::ptrdiff_t>(b) * num_patches_, num_patches_,
                label);
  }
}

// ================================================================================= random

RandomTargets::RandomTargets(std::size_t k, int num_patches, std::uint64_t seed)
    : k_(k), num_patches_(num_patches), seed_(seed) {
  if (k_ < 2 || num_patches_ < 1)
    throw Error(fmt::format("random tokenizer: needs K >= 2 tokens (got {})", k_));
}

std::string RandomTargets::description() const {
  return fmt::format("random tokenizer (K={}, seed {})", k_, seed_);
}

std::string RandomTargets::identity() const {
  return fmt::format("kind = random\nk = {}\nseed = {}\n", k_, seed_);
}

void RandomTargets::tokenize(const TargetInput& in, std::span<std::int32_t> tokens) {
  check_output(*this, in, num_patches_, tokens);
  for (int b = 0; b < in.batch; ++b) {
    RandomStream stream(seed_, stream_id({kRandomTokenKey, in.indices[b]}));
    for (int p = 0; p < num_patches_; ++p)
      tokens[static_cast<std::size_t>(b) * num_patches_ + p] =
          static_cast<std::int32_t>(stream.below(k_));
  }
}

}  // namespace kmim::tokenize
