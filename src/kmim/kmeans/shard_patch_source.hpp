// Pixel mode: patch vectors of the images of a shard split (kmim::io::ShardDataset), as
// specified in patches.hpp (centre crop, normalisation, P×P tiles in (row, col, channel) order).
#pragma once

#include <memory>

#include "kmim/kmeans/patches.hpp"
#include "kmim/kmeans/vector_source.hpp"

namespace kmim::io {
class ShardDataset;
}

namespace kmim::kmeans {

struct ShardPatchOptions {
  PatchGeometry geometry;
  PixelNormalization normalization = PixelNormalization::imagenet();
  std::uint64_t max_images = 0;     ///< 0: every image; else a seeded random subset of this size
  int patches_per_image = 0;        ///< 0: every tile; else a seeded random subset per image
  std::uint64_t seed = 0;
};

class ShardPatchSource final : public VectorSource {
 public:
  /// Opens the split manifest (FileError when unreadable) and checks the geometry against the
  /// stored image size (OptionError for --crop/--patch).
  ShardPatchSource(const std::filesystem::path& manifest, const ShardPatchOptions& options);
  ~ShardPatchSource() override;

  std::uint64_t items() const override { return images_.empty() ? all_images_ : images_.size(); }
  std::size_t vectors_per_item() const override { return per_image_; }
  std::size_t dim() const override { return options_.geometry.dim(); }
  void read_items(std::uint64_t first, std::uint64_t count, std::span<float> out) override;
  void read_item_list(std::span<const std::uint64_t> items, std::span<float> out) override;
  bool byte_coded() const override { return true; }
  void read_item_codes(std::uint64_t first, std::uint64_t count, std::span<std::uint8_t> out) override;
  void decode(const std::uint8_t* codes, std::size_t n_vectors, float* out) const override;
  const std::filesystem::path& path() const override;
  std::string fingerprint() const override;
  std::string mode() const override { return "pixel"; }

  const io::ShardDataset& dataset() const { return *dataset_; }
  const ShardPatchOptions& options() const { return options_; }
  /// The dataset index of item `item`.
  std::uint64_t image_index(std::uint64_t item) const {
    return images_.empty() ? item : images_[item];
  }

 private:
  void extract(std::span<const std::uint64_t> image_indices, const std::vector<std::uint8_t>& pixels,
               std::span<float> out) const;
  void extract_bytes(std::span<const std::uint64_t> image_indices, const std::vector<std::uint8_t>& pixels,
                     std::span<std::uint8_t> out) const;
  /// Reads the images of items [first, first + count) into pixels_; returns their dataset indices.
  std::vector<std::uint64_t> read_images(std::uint64_t first, std::uint64_t count);

  std::unique_ptr<io::ShardDataset> dataset_;
  ShardPatchOptions options_;
  std::uint64_t all_images_ = 0;
  std::vector<std::uint64_t> images_;  // the chosen subset (ascending); empty: all images
  std::size_t per_image_ = 0;
  std::vector<std::uint8_t> pixels_;   // read buffer
  std::vector<float> table_;           // 256 normalised values per channel (decode)
};

}  // namespace kmim::kmeans
