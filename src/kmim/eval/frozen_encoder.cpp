#include "kmim/eval/frozen_encoder.hpp"

#include <algorithm>
#include <cmath>
#include <mutex>
#include <sstream>
#include <utility>

#include <fmt/format.h>

#include "kmim/core/error.hpp"
#include "kmim/io/hdf5.hpp"
#include "kmim/kmeans/patches.hpp"
#include "kmim/tokenize/target_tokenizer.hpp"
#include "kmim/train/checkpoint.hpp"

namespace kmim::eval {

namespace fs = std::filesystem;

std::string_view feature_pool_name(FeaturePool pool) {
  switch (pool) {
    case FeaturePool::cls: return "cls";
    case FeaturePool::mean: return "mean";
    case FeaturePool::patches: return "patches";
  }
  return "?";
}

FeaturePool feature_pool_from_name(std::string_view name, const std::string& option) {
  if (name == "cls") return FeaturePool::cls;
  if (name == "mean") return FeaturePool::mean;
  if (name == "patches") return FeaturePool::patches;
  throw OptionError(option, std::string(name), "must be cls, mean or patches");
}

std::string FrozenEncoder::description() const {
  const model::ModelConfig& c = config();
  return fmt::format("'{}' ({}: img {}, patch {}, D {}, depth {}, heads {}, {} position embedding)",
                     file.string(), c.name, c.img_size, c.patch_size, c.embed_dim, c.depth,
                     c.num_heads, position_embedding.empty() ? "sin-cos" : "learned");
}

namespace {

/// The value of `key = value` (or `<section>.key = value`, as pretraining's run identity writes
/// "tokenizer.centroids_crc32") in identity text; "" when absent.
std::string identity_value(const std::string& text, const std::string& key) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    const auto eq = line.find(" = ");
    if (eq == std::string::npos) continue;
    const std::string name = line.substr(0, eq);
    if (name == key || (name.size() > key.size() &&
                        name.compare(name.size() - key.size() - 1, std::string::npos, "." + key) == 0))
      return line.substr(eq + 3);
  }
  return {};
}

}  // namespace

FrozenEncoder load_frozen_encoder(const fs::path& checkpoint) {
  model::Parameters params = train::load_model_parameters(checkpoint);  // validates, CRC, finite
  FrozenEncoder enc(params.config());
  enc.params = std::move(params);
  enc.file = checkpoint;
  enc.fingerprint = tokenize::float_digest(enc.params.values());
  const model::ModelConfig& c = enc.config();
  {
    std::lock_guard<std::mutex> lock(io::hdf5_mutex());
    const io::H5Object root = io::open_file(checkpoint, io::FileMode::read);
    if (root.has_attribute("tokenizer_kind")) enc.tokenizer_kind = root.string_attribute("tokenizer_kind");
    if (root.has_attribute("tokenizer")) enc.tokenizer_description = root.string_attribute("tokenizer");
    if (root.has_attribute("converted_from")) enc.converted_from = root.string_attribute("converted_from");
    if (root.has("training")) {
      const io::H5Object training = root.group("training");
      if (training.has_attribute("run_identity"))
        enc.centroids_crc32 =
            identity_value(training.string_attribute("run_identity"), "centroids_crc32");
    }
  }
  enc.position_embedding = train::read_position_embedding(checkpoint, c);
  if (!enc.position_embedding.empty())
    enc.fingerprint.append("+").append(tokenize::float_digest(enc.position_embedding));
  return enc;
}

void check_encoder_fits_images(const FrozenEncoder& encoder, int stored_size,
                               const fs::path& manifest) {
  const model::ModelConfig& c = encoder.config();
  require_file(c.channels == 3, encoder.file,
               fmt::format("the model has {} input channels; the image shards are RGB (3)",
                           c.channels));
  require_file(c.img_size <= stored_size, encoder.file,
               fmt::format("model img_size {} is larger than the stored images ({}x{}) of '{}'; "
                           "the centre crop needs img_size <= the stored size (build the shards "
                           "at a larger --size, or use a model made for this size)",
                           c.img_size, stored_size, stored_size, manifest.string()));
}

void pool_tokens(const float* tokens, std::size_t n, std::size_t num_patches, std::size_t dim,
                 FeaturePool pool, float* out) {
  const std::size_t per_image = (num_patches + 1) * dim;
  for (std::size_t i = 0; i < n; ++i) {
    const float* t = tokens + i * per_image;
    switch (pool) {
      case FeaturePool::cls:
        std::copy_n(t, dim, out + i * dim);
        break;
      case FeaturePool::patches:
        std::copy_n(t + dim, num_patches * dim, out + i * num_patches * dim);
        break;
      case FeaturePool::mean: {
        std::vector<double> sum(dim, 0.0);
        for (std::size_t p = 1; p <= num_patches; ++p)
          for (std::size_t j = 0; j < dim; ++j) sum[j] += t[p * dim + j];
        for (std::size_t j = 0; j < dim; ++j)
          out[i * dim + j] = static_cast<float>(sum[j] / static_cast<double>(num_patches));
        break;
      }
    }
  }
}

EncoderRunner::EncoderRunner(const FrozenEncoder& encoder, int max_batch)
    : encoder_(encoder), workspace_(encoder.config(), std::max(max_batch, 1)) {
  const model::ModelConfig& c = encoder_.config();
  if (!encoder_.position_embedding.empty()) {
    if (encoder_.position_embedding.size() != workspace_.pos_embed.size())
      throw FileError(encoder_.file, "learned position embedding does not match the model");
    workspace_.pos_embed.assign(encoder_.position_embedding.begin(),
                                encoder_.position_embedding.end());
  }
  const auto b = static_cast<std::size_t>(workspace_.max_batch);
  const auto l = static_cast<std::size_t>(c.num_patches());
  patches_.resize(b * l * static_cast<std::size_t>(c.patch_dim()));
  tokens_.resize(b * (l + 1) * static_cast<std::size_t>(c.embed_dim));
}

std::size_t EncoderRunner::rows_per_image(FeaturePool pool) const {
  return pool == FeaturePool::patches ? static_cast<std::size_t>(encoder_.config().num_patches())
                                      : 1;
}

void EncoderRunner::tokens(const float* patches, std::size_t n, float* out) {
  const model::ModelConfig& c = encoder_.config();
  const std::size_t in_row = static_cast<std::size_t>(c.num_patches()) * c.patch_dim();
  const std::size_t out_row = static_cast<std::size_t>(c.num_patches() + 1) * c.embed_dim;
  const auto b = static_cast<std::size_t>(workspace_.max_batch);
  for (std::size_t first = 0; first < n; first += b) {
    const std::size_t count = std::min(b, n - first);
    model::encoder_forward(encoder_.params, patches + first * in_row, static_cast<int>(count),
                           workspace_, out + first * out_row);
  }
}

void EncoderRunner::features_from_images(const std::uint8_t* images, std::size_t n, int image_size,
                                         FeaturePool pool, float* out, bool raw_tokens) {
  const model::ModelConfig& c = encoder_.config();
  if (c.img_size > image_size)
    throw Error(fmt::format("encoder: images of {}x{} are smaller than the model's img_size {}",
                            image_size, image_size, c.img_size));
  const kmeans::PatchGeometry geometry{c.img_size, c.patch_size, 3};
  const kmeans::PixelNormalization imagenet = kmeans::PixelNormalization::imagenet();
  const std::size_t image_bytes = static_cast<std::size_t>(image_size) * image_size * 3;
  const auto l = static_cast<std::size_t>(c.num_patches());
  const auto pd = static_cast<std::size_t>(c.patch_dim());
  const std::size_t d = dim();
  const std::size_t rows = raw_tokens ? l + 1 : rows_per_image(pool);
  const auto b = static_cast<std::size_t>(workspace_.max_batch);
  for (std::size_t first = 0; first < n; first += b) {
    const auto count = static_cast<std::ptrdiff_t>(std::min(b, n - first));
#pragma omp parallel for schedule(static)
    for (std::ptrdiff_t i = 0; i < count; ++i)
      kmeans::extract_patches(images + (first + static_cast<std::size_t>(i)) * image_bytes,
                              image_size, image_size, geometry, imagenet, {},
                              patches_.data() + static_cast<std::size_t>(i) * l * pd);
    float* dest = out + first * rows * d;
    model::encoder_forward(encoder_.params, patches_.data(), static_cast<int>(count), workspace_,
                           raw_tokens ? dest : tokens_.data());
    if (!raw_tokens) pool_tokens(tokens_.data(), static_cast<std::size_t>(count), l, d, pool, dest);
  }
}

void EncoderRunner::center_crop_features(const std::uint8_t* images, std::size_t n,
                                         int stored_size, FeaturePool pool, float* out) {
  features_from_images(images, n, stored_size, pool, out, false);
}

void EncoderRunner::crop_features(const std::uint8_t* crops, std::size_t n, FeaturePool pool,
                                  float* out) {
  features_from_images(crops, n, encoder_.config().img_size, pool, out, false);
}

void EncoderRunner::center_crop_tokens(const std::uint8_t* images, std::size_t n, int stored_size,
                                       float* out) {
  features_from_images(images, n, stored_size, FeaturePool::patches, out, true);
}

}  // namespace kmim::eval
