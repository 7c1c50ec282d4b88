// The pretraining input pipeline's random parts (SPEC §2, "Input"), as MAE's transform_train:
//   RandomResizedCrop(img_size, scale=(0.2, 1.0), ratio=(3/4, 4/3), bicubic)
//   → RandomHorizontalFlip(p=0.5) → ToTensor + Normalize(ImageNet) → patchify
// plus the per-image masking noise (MAE's random_masking draws uniform noise [B, L]).
//
// Every draw comes from a RandomStream keyed by (seed, purpose, epoch, dataset index of the
// image), so crops, flips and masks are the same for any rank count, thread count or batch
// split, and a resumed run redraws exactly what an uninterrupted one draws.
#pragma once

#include <cstdint>

#include "kmim/core/rng.hpp"

namespace kmim::train {

/// Stream-id purpose tags (stream_id({tag, epoch, index})).
inline constexpr std::uint64_t kAugmentStreamTag = 0x6175676d656e74ull;  // "augment"
inline constexpr std::uint64_t kMaskStreamTag = 0x6d61736b6e6f6973ull;   // "masknois"

/// The crop window: rows [top, top + height), columns [left, left + width) of the image.
struct CropBox {
  int top = 0;
  int left = 0;
  int height = 0;
  int width = 0;
  bool operator==(const CropBox&) const = default;
};

/// RandomResizedCrop's ranges (torchvision defaults as MAE uses them, SPEC §2).
struct RandomResizedCropRange {
  double scale_min = 0.2;
  double scale_max = 1.0;
  double ratio_min = 3.0 / 4.0;
  double ratio_max = 4.0 / 3.0;
};

/// torchvision.transforms.RandomResizedCrop.get_params, step for step, with the draws taken
/// from `rng` in this order:
///   up to 10 attempts:
///     target_area = H·W · uniform(scale_min, scale_max)
///     aspect = exp(uniform(log ratio_min, log ratio_max))
///     w = round(sqrt(target_area · aspect)), h = round(sqrt(target_area / aspect))
///       (round half to even, as Python's round)
///     if 0 < w <= W and 0 < h <= H:
///       top = below(H - h + 1), left = below(W - w + 1)   → return
///   fallback (no attempt fitted): the centred crop of the whole image with its aspect ratio
///   clamped to [ratio_min, ratio_max]: W/H < ratio_min → w = W, h = round(w / ratio_min);
///   W/H > ratio_max → h = H, w = round(h · ratio_max); else the whole image;
///   top = (H - h) / 2, left = (W - w) / 2 (integer division).
CropBox random_resized_crop_box(RandomStream& rng, int height, int width,
                                const RandomResizedCropRange& range = {});

/// The fallback of random_resized_crop_box alone (the centred, ratio-clamped crop).
CropBox fallback_crop_box(int height, int width, const RandomResizedCropRange& range = {});

/// Crops `box` out of an HWC uint8 image of height × width × channels and resizes it to
/// out_size × out_size with the bicubic (Catmull-Rom, PIL's BICUBIC) filter, antialiased when
/// shrinking, edges clamped at the crop's border — what PIL's img.crop(box).resize(size, BICUBIC)
/// computes, and io::resize_bicubic of the cropped image within one grey level (float
/// rounding). out holds out_size² × channels bytes.
void resized_crop_bicubic(const std::uint8_t* image, int height, int width, int channels,
                          const CropBox& box, int out_size, std::uint8_t* out);

/// Mirrors an HWC image left-right in place.
void horizontal_flip(std::uint8_t* image, int height, int width, int channels);

/// The random choices for one image in one epoch.
struct SampleAugmentation {
  CropBox box;
  bool flip = false;
};

/// Crop box, then flip (uniform() < 0.5), from RandomStream(seed, stream_id({kAugmentStreamTag,
/// epoch, index})) of an image of height × width pixels.
SampleAugmentation draw_augmentation(std::uint64_t seed, std::uint64_t epoch, std::uint64_t index,
                                     int height, int width,
                                     const RandomResizedCropRange& range = {});

/// MAE's masking noise for one image: num_patches uniform floats in [0, 1) from
/// RandomStream(seed, stream_id({kMaskStreamTag, epoch, index})).
void draw_mask_noise(std::uint64_t seed, std::uint64_t epoch, std::uint64_t index, int num_patches,
                     float* out);

}  // namespace kmim::train
