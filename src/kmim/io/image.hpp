// In-memory 8-bit images and the geometric operations the data pipeline needs.
// Resizing uses stb_image_resize (Debian libstb) with the Catmull-Rom cubic filter, which is
// PIL's BICUBIC kernel (a = -0.5), antialiased when shrinking (the kernel is widened by the
// scale factor) like torchvision's Resize(antialias=True) on PIL images.
#pragma once

#include <cstdint>
#include <vector>

namespace kmim::io {

/// Interleaved HWC pixels, `channels` = 1 (grey) or 3 (RGB).
struct Image {
  int width = 0;
  int height = 0;
  int channels = 0;
  std::vector<std::uint8_t> pixels;

  Image() = default;
  Image(int w, int h, int c) : width(w), height(h), channels(c), pixels(std::size_t(w) * h * c) {}
  std::uint8_t& at(int y, int x, int c) {
    return pixels[(std::size_t(y) * width + x) * channels + c];
  }
  std::uint8_t at(int y, int x, int c) const {
    return pixels[(std::size_t(y) * width + x) * channels + c];
  }
};

/// Bicubic (Catmull-Rom) resize to exactly width × height, antialiased when shrinking.
Image resize_bicubic(const Image& image, int width, int height);
/// Resizes so that the shorter side becomes `size`, keeping the aspect ratio (the longer side is
/// rounded down as torchvision's Resize(int) does: long * size / short, truncated).
Image resize_short_side(const Image& image, int size);
/// The centred width × height window (offsets rounded as torchvision's CenterCrop does).
Image center_crop(const Image& image, int width, int height);
/// Grey → RGB by replicating the channel; RGB is returned unchanged.
Image to_rgb(const Image& image);

}  // namespace kmim::io
