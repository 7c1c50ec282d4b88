#include "kmim/kmeans/shard_patch_source.hpp"

#include <algorithm>
#include <numeric>

#include <fmt/format.h>

#include "kmim/core/error.hpp"
#include "kmim/core/rng.hpp"
#include "kmim/io/shard_dataset.hpp"
#include "kmim/kmeans/permutation.hpp"

namespace kmim::kmeans {
namespace {
constexpr std::uint64_t kImageSubsetKey = 0x696d616765ull;  // "image"
}

ShardPatchSource::ShardPatchSource(const std::filesystem::path& manifest,
                                   const ShardPatchOptions& options)
    : options_(options) {
  require_file(std::filesystem::exists(manifest), manifest, "does not exist");
  dataset_ = std::make_unique<io::ShardDataset>(manifest);
  options_.geometry.channels = 3;  // shards hold RGB
  options_.geometry.validate(dataset_->image_size());
  all_images_ = dataset_->size();
  require_file(all_images_ > 0, manifest, "holds no images");
  const int total = options_.geometry.patches_per_image();
  require_option(options_.patches_per_image >= 0, "patches-per-image",
                 std::to_string(options_.patches_per_image), "must not be negative");
  per_image_ = static_cast<std::size_t>(
      options_.patches_per_image == 0 ? total : std::min(options_.patches_per_image, total));
  if (options_.max_images > 0 && options_.max_images < all_images_) {
    // A seeded random subset, ascending, the same for every rank count.
    IndexPermutation order(all_images_, options_.seed, stream_id({kImageSubsetKey}));
    images_.resize(options_.max_images);
    for (std::uint64_t i = 0; i < options_.max_images; ++i) images_[i] = order(i);
    std::sort(images_.begin(), images_.end());
  }
  table_.resize(256 * 3);
  for (int ch = 0; ch < 3; ++ch)
    for (int v = 0; v < 256; ++v)
      table_[static_cast<std::size_t>(ch * 256 + v)] = options_.normalization.apply(static_cast<std::uint8_t>(v), ch);
}

ShardPatchSource::~ShardPatchSource() = default;

const std::filesystem::path& ShardPatchSource::path() const { return dataset_->path(); }

std::string ShardPatchSource::fingerprint() const { return dataset_->fingerprint(); }

void ShardPatchSource::extract(std::span<const std::uint64_t> image_indices,
                               const std::vector<std::uint8_t>& pixels, std::span<float> out) const {
  const std::size_t image_bytes = dataset_->image_bytes();
  const int size = dataset_->image_size();
  const std::size_t item_floats = per_image_ * dim();
  const int total = options_.geometry.patches_per_image();
  const bool all_tiles = static_cast<int>(per_image_) == total;
  const auto n = static_cast<std::ptrdiff_t>(image_indices.size());
#pragma omp parallel for schedule(static)
  for (std::ptrdiff_t i = 0; i < n; ++i) {
    const auto u = static_cast<std::size_t>(i);
    std::vector<std::uint32_t> tiles;
    if (!all_tiles)
      tiles = sample_tiles(options_.seed, image_indices[u], total, static_cast<int>(per_image_));
    extract_patches(pixels.data() + u * image_bytes, size, size, options_.geometry,
                    options_.normalization, tiles, out.data() + u * item_floats);
  }
}

std::vector<std::uint64_t> ShardPatchSource::read_images(std::uint64_t first, std::uint64_t count) {
  if (first + count > items()) throw FileError(path(), "internal: read outside the split");
  pixels_.resize(count * dataset_->image_bytes());
  std::vector<std::uint64_t> indices(count);
  if (images_.empty()) {
    std::iota(indices.begin(), indices.end(), first);
    dataset_->read_range(first, count, pixels_);
  } else {
    std::copy_n(images_.begin() + static_cast<std::ptrdiff_t>(first), count, indices.begin());
    dataset_->read_indices(indices, pixels_);
  }
  return indices;
}

void ShardPatchSource::read_items(std::uint64_t first, std::uint64_t count, std::span<float> out) {
  if (out.size() != count * per_image_ * dim()) throw FileError(path(), "internal: wrong buffer size");
  const auto indices = read_images(first, count);
  extract(indices, pixels_, out);
}

void ShardPatchSource::read_item_codes(std::uint64_t first, std::uint64_t count, std::span<std::uint8_t> out) {
  if (out.size() != count * per_image_ * dim()) throw FileError(path(), "internal: wrong buffer size");
  const auto indices = read_images(first, count);
  extract_bytes(indices, pixels_, out);
}

void ShardPatchSource::extract_bytes(std::span<const std::uint64_t> image_indices,
                                     const std::vector<std::uint8_t>& pixels, std::span<std::uint8_t> out) const {
  const std::size_t image_bytes = dataset_->image_bytes();
  const int size = dataset_->image_size();
  const std::size_t item_bytes = per_image_ * dim();
  const int total = options_.geometry.patches_per_image();
  const bool all_tiles = static_cast<int>(per_image_) == total;
  const auto n = static_cast<std::ptrdiff_t>(image_indices.size());
#pragma omp parallel for schedule(static)
  for (std::ptrdiff_t i = 0; i < n; ++i) {
    const auto u = static_cast<std::size_t>(i);
    std::vector<std::uint32_t> tiles;
    if (!all_tiles)
      tiles = sample_tiles(options_.seed, image_indices[u], total, static_cast<int>(per_image_));
    extract_patch_bytes(pixels.data() + u * image_bytes, size, size, options_.geometry, tiles,
                        out.data() + u * item_bytes);
  }
}

void ShardPatchSource::decode(const std::uint8_t* codes, std::size_t n_vectors, float* out) const {
  // Component t of a vector is channel t % 3 (vectors are (row, col, channel) ordered).
  const std::size_t d = dim();
  const auto n = static_cast<std::ptrdiff_t>(n_vectors);
#pragma omp parallel for schedule(static)
  for (std::ptrdiff_t i = 0; i < n; ++i) {
    const std::uint8_t* c = codes + static_cast<std::size_t>(i) * d;
    float* o = out + static_cast<std::size_t>(i) * d;
    for (std::size_t t = 0; t < d; ++t) o[t] = table_[(t % 3) * 256 + c[t]];
  }
}

void ShardPatchSource::read_item_list(std::span<const std::uint64_t> items, std::span<float> out) {
  if (out.size() != items.size() * per_image_ * dim())
    throw FileError(path(), "internal: wrong buffer size");
  std::vector<std::uint64_t> indices(items.size());
  for (std::size_t i = 0; i < items.size(); ++i) indices[i] = image_index(items[i]);
  pixels_.resize(items.size() * dataset_->image_bytes());
  dataset_->read_indices(indices, pixels_);
  extract(indices, pixels_, out);
}

}  // namespace kmim::kmeans
