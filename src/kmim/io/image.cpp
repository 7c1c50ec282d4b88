#include "kmim/io/image.hpp"

#include <cmath>
#include <stdexcept>

#include <stb/stb_image_resize.h>

#include "kmim/core/error.hpp"

namespace kmim::io {

Image resize_bicubic(const Image& image, int width, int height) {
  if (width <= 0 || height <= 0 || image.width <= 0 || image.height <= 0)
    throw Error("resize: image sizes must be positive");
  if (width == image.width && height == image.height) return image;
  Image out(width, height, image.channels);
  const int ok = stbir_resize_uint8_generic(
      image.pixels.data(), image.width, image.height, image.width * image.channels,
      out.pixels.data(), width, height, width * image.channels, image.channels,
      STBIR_ALPHA_CHANNEL_NONE, 0, STBIR_EDGE_CLAMP, STBIR_FILTER_CATMULLROM,
      STBIR_COLORSPACE_LINEAR, nullptr);
  if (!ok) throw Error("resize: stb_image_resize failed (out of memory?)");
  return out;
}

Image resize_short_side(const Image& image, int size) {
  const int w = image.width, h = image.height;
  if (w <= h) {
    const int nh = static_cast<int>(static_cast<long long>(size) * h / w);
    return resize_bicubic(image, size, nh);
  }
  const int nw = static_cast<int>(static_cast<long long>(size) * w / h);
  return resize_bicubic(image, nw, size);
}

Image center_crop(const Image& image, int width, int height) {
  if (width > image.width || height > image.height)
    throw Error("center_crop: the crop is larger than the image");
  // torchvision: top = int(round((h - crop_h) / 2.0)), same for left.
  const int top = static_cast<int>(std::lround((image.height - height) / 2.0));
  const int left = static_cast<int>(std::lround((image.width - width) / 2.0));
  Image out(width, height, image.channels);
  const std::size_t row = std::size_t(width) * image.channels;
  for (int y = 0; y < height; ++y) {
    const std::uint8_t* src =
        &image.pixels[(std::size_t(top + y) * image.width + left) * image.channels];
    std::copy(src, src + row, &out.pixels[std::size_t(y) * row]);
  }
  return out;
}

Image to_rgb(const Image& image) {
  if (image.channels == 3) return image;
  if (image.channels != 1) throw Error("to_rgb: expected 1 or 3 channels");
  Image out(image.width, image.height, 3);
  for (std::size_t i = 0; i < image.pixels.size(); ++i)
    out.pixels[3 * i] = out.pixels[3 * i + 1] = out.pixels[3 * i + 2] = image.pixels[i];
  return out;
}

}  // namespace kmim::io
