#include "kmim/kmeans/patches.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

#include <fmt/format.h>

#include "kmim/core/error.hpp"
#include "kmim/core/rng.hpp"

namespace kmim::kmeans {

PixelNormalization PixelNormalization::imagenet() {
  PixelNormalization n;
  n.name = "imagenet";
  n.mean = {0.485f, 0.456f, 0.406f};
  n.std = {0.229f, 0.224f, 0.225f};
  return n;
}

PixelNormalization PixelNormalization::none() { return PixelNormalization{}; }

PixelNormalization PixelNormalization::from_name(std::string_view name) {
  if (name == "imagenet") return imagenet();
  if (name == "none") return none();
  throw OptionError("normalize", name, "must be 'imagenet' or 'none'");
}

float PixelNormalization::apply(std::uint8_t value, int channel) const {
  // torchvision: ToTensor divides by 255 in float32, Normalize subtracts and divides in float32.
  const float x = static_cast<float>(value) / 255.0f;
  return (x - mean[static_cast<std::size_t>(channel)]) / std[static_cast<std::size_t>(channel)];
}

void PatchGeometry::validate(int image_size) const {
  require_option(patch >= 1, "patch", std::to_string(patch), "must be at least 1");
  require_option(crop >= 1, "crop", std::to_string(crop), "must be at least 1");
  require_option(crop % patch == 0, "patch", std::to_string(patch),
                 fmt::format("must divide the crop size {}", crop));
  require_option(crop <= image_size, "crop", std::to_string(crop),
                 fmt::format("is larger than the stored images ({}×{})", image_size, image_size));
  if (channels != 1 && channels != 3)
    throw UsageError(fmt::format("patch extraction: {} channels (expected 1 or 3)", channels));
}

void extract_patches(const std::uint8_t* image, int height, int width, const PatchGeometry& g,
                     const PixelNormalization& normalization, std::span<const std::uint32_t> tiles,
                     float* out) {
  if (g.crop > height || g.crop > width || g.patch < 1 || g.crop % g.patch != 0)
    throw Error(fmt::format("extract_patches: crop {} / patch {} do not fit a {}×{} image", g.crop,
                            g.patch, width, height));
  // Same offsets as kmim::io::center_crop (torchvision CenterCrop).
  const int top = static_cast<int>(std::lround((height - g.crop) / 2.0));
  const int left = static_cast<int>(std::lround((width - g.crop) / 2.0));
  const int channels = g.channels;
  // One table per channel: 256 normalised values, computed exactly as apply() does.
  std::vector<float> table(static_cast<std::size_t>(256 * channels));
  for (int ch = 0; ch < channels; ++ch)
    for (int v = 0; v < 256; ++v)
      table[static_cast<std::size_t>(ch * 256 + v)] =
          normalization.apply(static_cast<std::uint8_t>(v), ch);

  const int grid = g.grid();
  const std::size_t count =
      tiles.empty() ? static_cast<std::size_t>(grid) * static_cast<std::size_t>(grid) : tiles.size();
  const std::size_t dim = g.dim();
  const std::size_t row_bytes = static_cast<std::size_t>(width) * static_cast<std::size_t>(channels);
  for (std::size_t t = 0; t < count; ++t) {
    const std::uint32_t tile = tiles.empty() ? static_cast<std::uint32_t>(t) : tiles[t];
    const int ty = static_cast<int>(tile) / grid;
    const int tx = static_cast<int>(tile) % grid;
    if (ty >= grid) throw Error(fmt::format("extract_patches: tile {} outside the {}×{} grid", tile, grid, grid));
    float* v = out + t * dim;
    for (int py = 0; py < g.patch; ++py) {
      const std::uint8_t* src = image + static_cast<std::size_t>(top + ty * g.patch + py) * row_bytes +
                                static_cast<std::size_t>(left + tx * g.patch) * static_cast<std::size_t>(channels);
      for (int px = 0; px < g.patch; ++px)
        for (int ch = 0; ch < channels; ++ch)
          *v++ = table[static_cast<std::size_t>(ch * 256 + src[px * channels + ch])];
    }
  }
}

void extract_patch_bytes(const std::uint8_t* image, int height, int width, const PatchGeometry& g,
                         std::span<const std::uint32_t> tiles, std::uint8_t* out) {
  if (g.crop > height || g.crop > width || g.patch < 1 || g.crop % g.patch != 0)
    throw Error(fmt::format("extract_patch_bytes: crop {} / patch {} do not fit a {}×{} image", g.crop,
                            g.patch, width, height));
  const int top = static_cast<int>(std::lround((height - g.crop) / 2.0));
  const int left = static_cast<int>(std::lround((width - g.crop) / 2.0));
  const int grid = g.grid();
  const std::size_t count =
      tiles.empty() ? static_cast<std::size_t>(grid) * static_cast<std::size_t>(grid) : tiles.size();
  const std::size_t row_bytes = static_cast<std::size_t>(width) * static_cast<std::size_t>(g.channels);
  const std::size_t patch_row = static_cast<std::size_t>(g.patch) * static_cast<std::size_t>(g.channels);
  for (std::size_t t = 0; t < count; ++t) {
    const std::uint32_t tile = tiles.empty() ? static_cast<std::uint32_t>(t) : tiles[t];
    const int ty = static_cast<int>(tile) / grid;
    const int tx = static_cast<int>(tile) % grid;
    if (ty >= grid) throw Error(fmt::format("extract_patch_bytes: tile {} outside the {}×{} grid", tile, grid, grid));
    std::uint8_t* v = out + t * g.dim();
    for (int py = 0; py < g.patch; ++py) {
      const std::uint8_t* src = image + static_cast<std::size_t>(top + ty * g.patch + py) * row_bytes +
                                static_cast<std::size_t>(left + tx * g.patch) * static_cast<std::size_t>(g.channels);
      std::copy_n(src, patch_row, v + static_cast<std::size_t>(py) * patch_row);
    }
  }
}

std::vector<std::uint32_t> sample_tiles(std::uint64_t seed, std::uint64_t image_index, int total,
                                        int count) {
  std::vector<std::uint32_t> all(static_cast<std::size_t>(std::max(total, 0)));
  std::iota(all.begin(), all.end(), 0u);
  if (count >= total) return all;
  RandomStream rng(seed, stream_id({kPatchSampleKey, image_index}));
  for (int i = 0; i < count; ++i) {
    const auto j = static_cast<std::size_t>(i) + rng.below(static_cast<std::uint64_t>(total - i));
    std::swap(all[static_cast<std::size_t>(i)], all[j]);
  }
  all.resize(static_cast<std::size_t>(std::max(count, 0)));
  std::sort(all.begin(), all.end());
  return all;
}

}  // namespace kmim::kmeans
