// Test input trees for kmim_shard: real JPEG encodes of every kind ImageNet holds (colour,
// grey, CMYK, progressive, PNG under a .JPEG name, very small and very large) and broken files
// (zero-byte, truncated, text named .JPEG), in the ImageNet folder layout.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "kmim/io/image.hpp"

namespace kmim::testing {

/// A smooth colour pattern that differs per (seed, position): JPEG-friendly and distinctive.
io::Image pattern_image(int width, int height, std::uint32_t seed);
/// pattern_image plus per-pixel noise: compresses like a photo (~0.5 bytes/pixel at q90).
io::Image photo_like_image(int width, int height, std::uint32_t seed);

/// Writes an "Adobe" CMYK JPEG whose correct RGB decoding is `rgb` (stored values are inverted
/// inks, as Photoshop writes them).
void write_cmyk_jpeg(const std::filesystem::path& file, const io::Image& rgb, int quality = 95);
void write_png(const std::filesystem::path& file, const io::Image& image);
void write_jpeg(const std::filesystem::path& file, const io::Image& image, bool progressive = false,
                int quality = 95);
void write_bytes(const std::filesystem::path& file, const std::vector<std::uint8_t>& bytes);
void write_text(const std::filesystem::path& file, const std::string& text);

struct TreeOptions {
  int classes = 3;             ///< class folders n0000000{1..classes}
  int train_per_class = 6;     ///< ordinary colour JPEGs per class
  int val_per_class = 3;
  bool special_files = true;   ///< the odd kinds and broken files listed above (in train)
  bool large_image = true;     ///< one 3000×2000 JPEG in train
  std::string val_layout = "folders";  ///< "folders", "csv" (LOC_val_solution.csv), "list"
  int photo_width = 0;   ///< > 0: ordinary train images are photo_width × photo_height with
  int photo_height = 0;  ///< fine noise (JPEG sizes like ImageNet's, for benchmarks)
};

/// Expected facts about a generated tree.
struct TreeFacts {
  std::vector<std::string> class_ids;
  std::vector<std::string> train_good;   ///< relative paths that must decode
  std::vector<std::string> train_broken; ///< relative paths that must be skipped
  std::uint64_t val_images = 0;
};

/// Creates the tree under `root` (which must not exist or be empty); returns what it holds.
/// Also writes <root>/LOC_synset_mapping.txt and, for flat val layouts, the label file
/// (<root>/LOC_val_solution.csv or <root>/val_labels.txt).
TreeFacts make_test_tree(const std::filesystem::path& root, const TreeOptions& options);

}  // namespace kmim::testing
