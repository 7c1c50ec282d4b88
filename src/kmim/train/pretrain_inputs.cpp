#include "kmim/train/pretrain_inputs.hpp"

#include <fmt/format.h>

#include <cstddef>
#include <string>

#include "kmim/core/error.hpp"
#include "kmim/kmeans/patches.hpp"

namespace kmim::train {

model::Batch<float> PretrainInputs::model_batch() const {
  return model::Batch<float>{batch, patches.data(), noise.data(),
                             targets.empty() ? nullptr : targets.data()};
}

PretrainInputBuilder::PretrainInputBuilder(const model::ModelConfig& config, std::uint64_t seed,
                                           int stored_size, tokenize::TargetTokenizer* tokenizer,
                                           RandomResizedCropRange range)
    : config_(config),
      seed_(seed),
      stored_size_(stored_size),
      tokenizer_(tokenizer),
      range_(range) {
  config_.validate();
  if (config_.channels != 3)
    throw Error(fmt::format("pretraining reads RGB shards: the model must have 3 channels, not {}",
                            config_.channels));
  if (stored_size_ <= 0) throw Error("pretraining: stored images must have a positive size");
}

void PretrainInputBuilder::build(std::uint64_t epoch, std::span<const std::uint64_t> indices,
                                 std::span<const std::uint8_t> images,
                                 std::span<const std::int32_t> labels, PretrainInputs& out) {
  const int b = static_cast<int>(indices.size());
  const int s = config_.img_size;
  const int l = config_.num_patches();
  const std::size_t pdim = static_cast<std::size_t>(config_.patch_dim());
  const std::size_t stored_bytes = static_cast<std::size_t>(stored_size_) * stored_size_ * 3;
  const std::size_t crop_bytes = static_cast<std::size_t>(s) * s * 3;
  if (images.size() != indices.size() * stored_bytes || labels.size() != indices.size())
    throw Error(fmt::format("pretraining batch: {} indices with {} image bytes and {} labels", b,
                            images.size(), labels.size()));
  out.batch = b;
  out.indices.assign(indices.begin(), indices.end());
  out.labels.assign(labels.begin(), labels.end());
  out.crops.resize(static_cast<std::size_t>(b) * crop_bytes);
  out.patches.resize(static_cast<std::size_t>(b) * l * pdim);
  out.noise.resize(static_cast<std::size_t>(b) * l);
  const kmeans::PatchGeometry geometry{s, config_.patch_size, 3};
  const kmeans::PixelNormalization imagenet = kmeans::PixelNormalization::imagenet();

#pragma omp parallel for schedule(dynamic, 1)
  for (int i = 0; i < b; ++i) {
    const std::uint64_t index = indices[static_cast<std::size_t>(i)];
    const SampleAugmentation a =
        draw_augmentation(seed_, epoch, index, stored_size_, stored_size_, range_);
    std::uint8_t* crop = out.crops.data() + static_cast<std::size_t>(i) * crop_bytes;
    resized_crop_bicubic(images.data() + static_cast<std::size_t>(i) * stored_bytes, stored_size_,
                         stored_size_, 3, a.box, s, crop);
    if (a.flip) horizontal_flip(crop, s, s, 3);
    // The model input is always ImageNet-normalised (SPEC §2); patch vectors in (row, col,
    // channel) order, patches row-major: MAE's patchify of the normalised image.
    kmeans::extract_patches(crop, s, s, geometry, imagenet, {},
                            out.patches.data() + static_cast<std::size_t>(i) * l * pdim);
    draw_mask_noise(seed_, epoch, index, l, out.noise.data() + static_cast<std::size_t>(i) * l);
  }

  if (tokenizer_ != nullptr) {
    out.targets.resize(static_cast<std::size_t>(b) * l);
    tokenize::TargetInput in;
    in.batch = b;
    in.crop_size = s;
    in.crops = out.crops.data();
    in.model_patches = out.patches.data();
    in.labels = out.labels.data();
    in.indices = out.indices.data();
    tokenizer_->tokenize(in, out.targets);
  } else {
    out.targets.clear();
  }
}

}  // namespace kmim::train
