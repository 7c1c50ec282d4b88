// Pixel patch vectors on the GPU: the CUDA twin of kmim::kmeans::extract_patches (SPEC §2, pixel
// tokenizer) over a batch of uint8 HWC images of one size, bit-for-bit equal to the CPU function:
// centre crop (torchvision's rounding), x/255 normalised per channel in float, non-overlapping
// P×P tiles flattened in (row, column, channel) order.
//
// Bit-exactness: the 256 possible normalised values of each channel are computed once on the
// host with the CPU path's float expression ((v / 255) − mean) / std and looked up on the
// device, so no device arithmetic can round differently. One thread per output element,
// consecutive threads write consecutive floats (coalesced) and read consecutive bytes of one
// image row.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "kmim/gpu/resources.hpp"
#include "kmim/kmeans/patches.hpp"  // PatchGeometry, PixelNormalization (types only)

namespace kmim::gpu {

/// Holds the lookup table and a tile-list buffer; one per host thread/stream.
class PatchExtractor {
 public:
  PatchExtractor(const kmeans::PatchGeometry& geometry, const kmeans::PixelNormalization& normalization);

  const kmeans::PatchGeometry& geometry() const { return geometry_; }

  /// images: device pointer to `batch` images of height × width × geometry.channels bytes each.
  /// tiles: host list of batch × tiles_per_image tile indices (image b's list starts at
  /// b × tiles_per_image, each < grid²), or empty for all tiles of every image in row-major
  /// order (then tiles_per_image is ignored). out: device, one row of geometry.dim() floats per
  /// extracted tile, image after image. Asynchronous on `stream` (the tile list is copied before
  /// it returns). Throws kmim::Error for a geometry that does not fit the images or a tile
  /// index outside the grid, as the CPU function does.
  void extract(const std::uint8_t* images, std::size_t batch, int height, int width,
               std::span<const std::uint32_t> tiles, std::size_t tiles_per_image, float* out,
               const Stream& stream);

  /// Rows extract() writes for this batch.
  std::size_t output_rows(std::size_t batch, std::span<const std::uint32_t> tiles,
                          std::size_t tiles_per_image) const;

 private:
  kmeans::PatchGeometry geometry_;
  DeviceBuffer<float> table_;  // channels × 256 normalised values
  DeviceBuffer<std::uint32_t> tiles_;
};

}  // namespace kmim::gpu
