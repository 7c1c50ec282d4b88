// Pixel patch vectors of an image, as the K-MIM pixel tokenizer sees them (SPEC §2): the centred
// crop, pixel values x/255 normalised per channel with the ImageNet mean/std (or not at all),
// cut into non-overlapping P×P tiles, each tile flattened in (row, column, channel) order:
//
//   vector[(py * P + px) * C + ch] = (pixel(top + ty*P + py, left + tx*P + px, ch) / 255 - mean[ch]) / std[ch]
//
// Tiles are numbered row-major over the crop (tile = ty * grid + tx). kmim_kmeans uses this to
// build codebooks; the pretraining stage calls the same function on each augmented crop to
// compute online targets, so both see identical vectors.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kmim::kmeans {

/// Per-channel normalisation of x/255: (x/255 - mean[ch]) / std[ch], in float as torchvision's
/// ToTensor + Normalize compute it.
struct PixelNormalization {
  std::string name = "none";             ///< "imagenet" or "none"
  std::array<float, 3> mean{0.0f, 0.0f, 0.0f};
  std::array<float, 3> std{1.0f, 1.0f, 1.0f};

  /// mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225) (SPEC §2).
  static PixelNormalization imagenet();
  /// x/255 only.
  static PixelNormalization none();
  /// "imagenet" or "none"; throws OptionError for --normalize otherwise.
  static PixelNormalization from_name(std::string_view name);

  /// The normalised value of byte `value` in channel `channel`.
  float apply(std::uint8_t value, int channel) const;
};

/// Where the patches of an image come from: the centred crop×crop window, cut into
/// patch×patch tiles.
struct PatchGeometry {
  int crop = 224;     ///< side of the centred crop (pixels)
  int patch = 16;     ///< side of a tile (pixels); must divide crop
  int channels = 3;   ///< 3 (RGB) or 1 (grey)

  int grid() const { return crop / patch; }
  int patches_per_image() const { return grid() * grid(); }
  std::size_t dim() const {
    return static_cast<std::size_t>(patch) * static_cast<std::size_t>(patch) *
           static_cast<std::size_t>(channels);
  }
  /// Throws UsageError unless crop, patch and channels make sense for an image_size² image.
  void validate(int image_size) const;
};

/// Extracts the patch vectors of one uint8 HWC image of height × width pixels with
/// geometry.channels channels. The crop window is centred with offsets rounded as torchvision's
/// CenterCrop (round((size - crop) / 2)). `tiles` lists the tiles to extract, in the order
/// wanted (empty: all tiles in row-major order). `out` receives one row of geometry.dim() floats
/// per extracted tile.
void extract_patches(const std::uint8_t* image, int height, int width, const PatchGeometry& geometry,
                     const PixelNormalization& normalization, std::span<const std::uint32_t> tiles,
                     float* out);

/// The same tiles as extract_patches, as raw bytes (vector[(py * P + px) * C + ch] = pixel byte):
/// pixel-mode vectors are cached in this form, 4× smaller, and decoded with
/// PixelNormalization::apply (a 256-entry table per channel) when used.
void extract_patch_bytes(const std::uint8_t* image, int height, int width, const PatchGeometry& geometry,
                         std::span<const std::uint32_t> tiles, std::uint8_t* out);

/// The tiles of image `image_index` kept when only `count` of `total` tiles per image are used:
/// `count` distinct tiles, ascending, drawn from RandomStream(seed, stream_id({kPatchSampleKey,
/// image_index})) (a partial Fisher–Yates shuffle). Depends on nothing else, so the same patches
/// are used for any rank count. count >= total gives all tiles.
std::vector<std::uint32_t> sample_tiles(std::uint64_t seed, std::uint64_t image_index, int total,
                                        int count);

/// Stream-id purpose tag of sample_tiles.
inline constexpr std::uint64_t kPatchSampleKey = 0x7061746368ull;  // "patch"

}  // namespace kmim::kmeans
