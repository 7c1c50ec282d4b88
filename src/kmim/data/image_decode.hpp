// Decoding real-world image files into the square RGB crops that shards store.
//
// ImageNet's files are not all what their names say: most are baseline JPEGs, some are
// progressive, greyscale or CMYK JPEGs, one is a PNG named .JPEG. The format is therefore
// detected from the first bytes, never from the file name. JPEGs decode through libjpeg-turbo
// (kmim::io::JpegCodec), PNGs through stb_image.
#pragma once

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "kmim/io/image.hpp"
#include "kmim/io/jpeg.hpp"

namespace kmim::data {

enum class ImageFormat { jpeg, png, unknown };

/// The format named by the first bytes (JPEG: FF D8 FF; PNG: 89 'PNG' 0D 0A 1A 0A).
ImageFormat detect_image_format(std::span<const std::uint8_t> bytes);

/// Largest image (in pixels) that is decoded; larger ones are rejected before decoding so that
/// a damaged or hostile header cannot exhaust memory. 2^28 ≈ 268 M pixels (16384 × 16384).
inline constexpr std::uint64_t kMaxImagePixels = std::uint64_t{1} << 28;

/// Width and height from a JPEG's SOF header, or {0, 0} when none is found.
std::pair<int, int> jpeg_dimensions(std::span<const std::uint8_t> bytes);

/// Decodes file bytes to an RGB image, one decoder per thread (not thread-safe).
class ImageDecoder {
 public:
  /// Decodes JPEG or PNG bytes to 3-channel RGB (grey replicated, CMYK converted, alpha
  /// dropped). Throws kmim::Error with a short reason ("empty file", "not a JPEG or PNG
  /// image", "corrupt JPEG: ...") on anything it cannot decode completely.
  io::Image decode(std::span<const std::uint8_t> bytes);

 private:
  io::JpegCodec jpeg_;
};

/// Reads a whole file; throws kmim::Error with the system's reason on failure.
std::vector<std::uint8_t> read_file_bytes(const std::filesystem::path& file);

/// The shard transform: resize so the short side is `size` (antialiased bicubic), then take the
/// central size × size crop, as torchvision's Resize(size) + CenterCrop(size) and as
/// io::center_crop(io::resize_short_side(rgb, size), size, size) — computed in one step over
/// the cropped window only (resize_short_side_center_crop; within one grey level of the two-step
/// path, several times faster, and no huge intermediate for extreme aspect ratios).
io::Image square_center_crop(const io::Image& rgb, int size);

}  // namespace kmim::data
