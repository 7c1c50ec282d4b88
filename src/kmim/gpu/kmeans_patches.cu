#include "kmim/gpu/kmeans_patches.hpp"

#include <cmath>
#include <string>
#include <vector>

#include "kmim/gpu/cuda_status.hpp"

namespace kmim::gpu {
namespace {

using detail::check_launch;

struct PatchLayout {
  std::size_t image_bytes;  // height × width × channels
  std::size_t row_bytes;    // width × channels
  int top, left, patch, channels, grid, dim, tiles_per_image;
};

/// One thread per output float (grid-stride): out[row][e] with row = image·tiles_per_image + t.
__global__ void extract_patches_kernel(const std::uint8_t* __restrict__ images, PatchLayout L,
                                       const std::uint32_t* __restrict__ tiles, std::size_t rows,
                                       const float* __restrict__ table, float* __restrict__ out) {
  const std::size_t total = rows * static_cast<std::size_t>(L.dim);
  const int tile_row_elems = L.patch * L.channels;
  for (std::size_t e = blockIdx.x * std::size_t{blockDim.x} + threadIdx.x; e < total;
       e += static_cast<std::size_t>(gridDim.x) * blockDim.x) {
    const std::size_t row = e / static_cast<std::size_t>(L.dim);
    const int within = static_cast<int>(e % static_cast<std::size_t>(L.dim));
    const std::size_t image = row / static_cast<std::size_t>(L.tiles_per_image);
    const int tile = tiles != nullptr ? static_cast<int>(tiles[row])
                                      : static_cast<int>(row % static_cast<std::size_t>(L.tiles_per_image));
    const int ty = tile / L.grid;
    const int tx = tile % L.grid;
    const int py = within / tile_row_elems;
    const int rest = within % tile_row_elems;  // px · channels + ch
    const int ch = rest % L.channels;
    const std::uint8_t* src = images + image * L.image_bytes +
                              static_cast<std::size_t>(L.top + ty * L.patch + py) * L.row_bytes +
                              static_cast<std::size_t>(L.left + tx * L.patch) * L.channels + rest;
    out[e] = table[ch * 256 + *src];
  }
}

}  // namespace

PatchExtractor::PatchExtractor(const kmeans::PatchGeometry& geometry,
                               const kmeans::PixelNormalization& normalization)
    : geometry_(geometry) {
  if (geometry.patch < 1 || geometry.crop < 1 || geometry.crop % geometry.patch != 0 ||
      (geometry.channels != 1 && geometry.channels != 3))
    throw Error("GPU patch extraction: crop " + std::to_string(geometry.crop) + " / patch " +
                std::to_string(geometry.patch) + " / " + std::to_string(geometry.channels) +
                " channels is not a valid geometry");
  // The CPU path's expression (kmeans::PixelNormalization::apply, torchvision's ToTensor +
  // Normalize in float32), evaluated on the host: the device only looks values up.
  std::vector<float> table(static_cast<std::size_t>(256 * geometry.channels));
  for (int ch = 0; ch < geometry.channels; ++ch)
    for (int v = 0; v < 256; ++v) {
      const float x = static_cast<float>(v) / 255.0f;
      table[static_cast<std::size_t>(ch * 256 + v)] =
          (x - normalization.mean[static_cast<std::size_t>(ch)]) / normalization.std[static_cast<std::size_t>(ch)];
    }
  Stream stream;
  table_ = DeviceBuffer<float>(table.size());
  table_.upload({table.data(), table.size()}, stream);
  stream.synchronize();
}

std::size_t PatchExtractor::output_rows(std::size_t batch, std::span<const std::uint32_t> tiles,
                                        std::size_t tiles_per_image) const {
  return tiles.empty() ? batch * static_cast<std::size_t>(geometry_.patches_per_image()) : batch * tiles_per_image;
}

void PatchExtractor::extract(const std::uint8_t* images, std::size_t batch, int height, int width,
                             std::span<const std::uint32_t> tiles, std::size_t tiles_per_image, float* out,
                             const Stream& stream) {
  const kmeans::PatchGeometry& g = geometry_;
  if (g.crop > height || g.crop > width)
    throw Error("GPU patch extraction: crop " + std::to_string(g.crop) + " / patch " + std::to_string(g.patch) +
                " do not fit a " + std::to_string(width) + "×" + std::to_string(height) + " image");
  const int grid = g.grid();
  const auto cells = static_cast<std::uint32_t>(grid * grid);
  if (!tiles.empty()) {
    if (tiles_per_image == 0 || tiles.size() != batch * tiles_per_image)
      throw Error("GPU patch extraction: " + std::to_string(tiles.size()) + " tile indices for " +
                  std::to_string(batch) + " images × " + std::to_string(tiles_per_image) + " tiles");
    for (const std::uint32_t t : tiles)
      if (t >= cells)
        throw Error("GPU patch extraction: tile " + std::to_string(t) + " outside the " + std::to_string(grid) +
                    "×" + std::to_string(grid) + " grid");
  }
  const std::size_t rows = output_rows(batch, tiles, tiles_per_image);
  if (rows == 0) return;
  PatchLayout layout{};
  layout.row_bytes = static_cast<std::size_t>(width) * static_cast<std::size_t>(g.channels);
  layout.image_bytes = layout.row_bytes * static_cast<std::size_t>(height);
  // Same offsets as the CPU function (torchvision CenterCrop: round((size − crop) / 2)).
  layout.top = static_cast<int>(std::lround((height - g.crop) / 2.0));
  layout.left = static_cast<int>(std::lround((width - g.crop) / 2.0));
  layout.patch = g.patch;
  layout.channels = g.channels;
  layout.grid = grid;
  layout.dim = static_cast<int>(g.dim());
  layout.tiles_per_image = tiles.empty() ? grid * grid : static_cast<int>(tiles_per_image);
  const std::uint32_t* tiles_dev = nullptr;
  if (!tiles.empty()) {
    tiles_.ensure_capacity(tiles.size());
    tiles_.upload(tiles, stream);
    tiles_dev = tiles_.data();
  }
  extract_patches_kernel<<<detail::grid_for(rows * g.dim(), 256), 256, 0, stream.get()>>>(
      images, layout, tiles_dev, rows, table_.data(), out);
  check_launch("extract_patches_kernel");
}

}  // namespace kmim::gpu
