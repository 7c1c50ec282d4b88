#include "kmim/train/augment.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <vector>

#include "kmim/core/error.hpp"
#include "kmim/data/resize_crop.hpp"

namespace kmim::train {
namespace {

/// Python's round() on a non-negative double: to nearest, halves to even. nearbyint rounds in the
/// current rounding mode, which is round-to-nearest-even unless a program changes it.
int python_round(double x) { return static_cast<int>(std::nearbyint(x)); }

}  // namespace

CropBox fallback_crop_box(int height, int width, const RandomResizedCropRange& range) {
  const double in_ratio = static_cast<double>(width) / static_cast<double>(height);
  int w = width;
  int h = height;
  if (in_ratio < range.ratio_min) {
    w = width;
    h = python_round(w / range.ratio_min);
  } else if (in_ratio > range.ratio_max) {
    h = height;
    w = python_round(h * range.ratio_max);
  }
  return CropBox{(height - h) / 2, (width - w) / 2, h, w};
}

CropBox random_resized_crop_box(RandomStream& rng, int height, int width,
                                const RandomResizedCropRange& range) {
  if (height <= 0 || width <= 0) throw Error("RandomResizedCrop: image sides must be positive");
  const double area = static_cast<double>(height) * static_cast<double>(width);
  const double log_lo = std::log(range.ratio_min);
  const double log_hi = std::log(range.ratio_max);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target_area = area * rng.uniform(range.scale_min, range.scale_max);
    const double aspect = std::exp(rng.uniform(log_lo, log_hi));
    const int w = python_round(std::sqrt(target_area * aspect));
    const int h = python_round(std::sqrt(target_area / aspect));
    if (0 < w && w <= width && 0 < h && h <= height) {
      const int top = static_cast<int>(rng.below(static_cast<std::uint64_t>(height - h + 1)));
      const int left = static_cast<int>(rng.below(static_cast<std::uint64_t>(width - w + 1)));
      return CropBox{top, left, h, w};
    }
  }
  return fallback_crop_box(height, width, range);
}

void resized_crop_bicubic(const std::uint8_t* image, int height, int width, int channels,
                          const CropBox& box, int out_size, std::uint8_t* out) {
  if (box.top < 0 || box.left < 0 || box.height <= 0 || box.width <= 0 ||
      box.top + box.height > height || box.left + box.width > width || out_size <= 0) {
    throw Error("resized_crop_bicubic: crop box outside the image");
  }
  const std::size_t ch = static_cast<std::size_t>(channels);
  const std::size_t n = static_cast<std::size_t>(out_size);
  // Separable Catmull-Rom filter (kmim::data::catmull_rom_taps: stb_image_resize's and PIL's
  // geometry and kernel, clamp-to-edge folded into the taps) over the crop's own coordinates,
  // so the crop's border is its edge as for PIL's crop-then-resize.
  const auto vtaps = data::catmull_rom_taps(box.height, out_size, 0, out_size);
  const auto htaps = data::catmull_rom_taps(box.width, out_size, 0, out_size);
  // Pass 1, vertical: out_size rows over the crop's columns.
  const std::size_t span = static_cast<std::size_t>(box.width) * ch;
  std::vector<float> mid(n * span, 0.0f);
  for (std::size_t y = 0; y < n; ++y) {
    const data::FilterTaps& t = vtaps[y];
    float* acc = &mid[y * span];
    for (std::size_t k = 0; k < t.weights.size(); ++k) {
      const float wk = t.weights[k];
      const std::uint8_t* src = image + ((static_cast<std::size_t>(box.top + t.first) + k) *
                                             static_cast<std::size_t>(width) +
                                         static_cast<std::size_t>(box.left)) *
                                            ch;
      for (std::size_t i = 0; i < span; ++i) acc[i] += wk * static_cast<float>(src[i]);
    }
  }
  // Pass 2, horizontal, then round to 8 bits as stb_image_resize does.
  for (std::size_t y = 0; y < n; ++y) {
    const float* row = &mid[y * span];
    for (std::size_t x = 0; x < n; ++x) {
      const data::FilterTaps& t = htaps[x];
      for (std::size_t c = 0; c < ch; ++c) {
        float acc = 0.0f;
        for (std::size_t k = 0; k < t.weights.size(); ++k)
          acc += t.weights[k] * row[(static_cast<std::size_t>(t.first) + k) * ch + c];
        out[(y * n + x) * ch + c] =
            static_cast<std::uint8_t>(static_cast<int>(std::clamp(acc, 0.0f, 255.0f) + 0.5f));
      }
    }
  }
}

void horizontal_flip(std::uint8_t* image, int height, int width, int channels) {
  const std::size_t ch = static_cast<std::size_t>(channels);
  for (int y = 0; y < height; ++y) {
    std::uint8_t* row = image + static_cast<std::size_t>(y) * static_cast<std::size_t>(width) * ch;
    for (int a = 0, b = width - 1; a < b; ++a, --b)
      std::swap_ranges(row + static_cast<std::size_t>(a) * ch,
                       row + static_cast<std::size_t>(a + 1) * ch,
                       row + static_cast<std::size_t>(b) * ch);
  }
}

SampleAugmentation draw_augmentation(std::uint64_t seed, std::uint64_t epoch, std::uint64_t index,
                                     int height, int width, const RandomResizedCropRange& range) {
  RandomStream rng(seed, stream_id({kAugmentStreamTag, epoch, index}));
  SampleAugmentation a;
  a.box = random_resized_crop_box(rng, height, width, range);
  a.flip = rng.uniform() < 0.5f;  // RandomHorizontalFlip: torch.rand(1) < p
  return a;
}

void draw_mask_noise(std::uint64_t seed, std::uint64_t epoch, std::uint64_t index, int num_patches,
                     float* out) {
  RandomStream rng(seed, stream_id({kMaskStreamTag, epoch, index}));
  for (int i = 0; i < num_patches; ++i) out[i] = rng.uniform();
}

}  // namespace kmim::train
