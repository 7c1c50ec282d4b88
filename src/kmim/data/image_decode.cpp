#include "kmim/data/image_decode.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

#include <stb/stb_image.h>

#include <fmt/format.h>

#include "kmim/core/error.hpp"
#include "kmim/data/resize_crop.hpp"

namespace kmim::data {

ImageFormat detect_image_format(std::span<const std::uint8_t> b) {
  if (b.size() >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) return ImageFormat::jpeg;
  static constexpr std::uint8_t kPng[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
  if (b.size() >= 8 && std::memcmp(b.data(), kPng, 8) == 0) return ImageFormat::png;
  return ImageFormat::unknown;
}

std::pair<int, int> jpeg_dimensions(std::span<const std::uint8_t> b) {
  // Walk the marker segments after SOI until a start-of-frame (SOF0..SOF15 except DHT C4,
  // JPG C8 and DAC CC); its payload is precision, height, width.
  std::size_t pos = 2;
  while (pos + 4 <= b.size()) {
    if (b[pos] != 0xFF) return {0, 0};
    const std::uint8_t marker = b[pos + 1];
    if (marker == 0xFF) {  // fill byte
      ++pos;
      continue;
    }
    if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD8)) {  // no length field
      pos += 2;
      continue;
    }
    if (marker == 0xDA || marker == 0xD9) return {0, 0};  // scan data or end: no SOF seen
    const std::size_t length = (std::size_t{b[pos + 2]} << 8) | b[pos + 3];
    const bool sof = marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 &&
                     marker != 0xCC;
    if (sof) {
      if (pos + 9 > b.size()) return {0, 0};
      const int height = (b[pos + 5] << 8) | b[pos + 6];
      const int width = (b[pos + 7] << 8) | b[pos + 8];
      return {width, height};
    }
    pos += 2 + length;
  }
  return {0, 0};
}

namespace {
void check_pixel_count(int width, int height) {
  const auto pixels = static_cast<std::uint64_t>(width) * static_cast<std::uint64_t>(height);
  if (pixels > kMaxImagePixels)
    throw Error(fmt::format("image too large ({}x{} pixels, the limit is {} pixels)", width,
                            height, kMaxImagePixels));
}

struct StbFree {
  void operator()(stbi_uc* p) const { stbi_image_free(p); }
};
}  // namespace

io::Image ImageDecoder::decode(std::span<const std::uint8_t> bytes) {
  if (bytes.empty()) throw Error("empty file");
  switch (detect_image_format(bytes)) {
    case ImageFormat::jpeg: {
      const auto [w, h] = jpeg_dimensions(bytes);
      check_pixel_count(w, h);
      return jpeg_.decode(bytes, false);
    }
    case ImageFormat::png: {
      if (bytes.size() > static_cast<std::size_t>(INT32_MAX)) throw Error("PNG file too large");
      const int len = static_cast<int>(bytes.size());
      int w = 0, h = 0, comp = 0;
      if (!stbi_info_from_memory(bytes.data(), len, &w, &h, &comp))
        throw Error(fmt::format("corrupt PNG: {}", stbi_failure_reason()));
      check_pixel_count(w, h);
      std::unique_ptr<stbi_uc, StbFree> pixels(stbi_load_from_memory(bytes.data(), len, &w, &h, &comp, 3));
      if (!pixels) throw Error(fmt::format("corrupt PNG: {}", stbi_failure_reason()));
      io::Image out(w, h, 3);
      std::memcpy(out.pixels.data(), pixels.get(), out.pixels.size());
      return out;
    }
    case ImageFormat::unknown:
      break;
  }
  throw Error("not a JPEG or PNG image");
}

std::vector<std::uint8_t> read_file_bytes(const std::filesystem::path& file) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> f(std::fopen(file.c_str(), "rb"), &std::fclose);
  if (!f) throw Error(system_message("cannot open", errno));
  std::vector<std::uint8_t> bytes;
  std::error_code ec;
  const auto expected = std::filesystem::file_size(file, ec);
  if (!ec) bytes.reserve(static_cast<std::size_t>(expected));
  std::uint8_t buf[1 << 16];
  for (;;) {
    const std::size_t n = std::fread(buf, 1, sizeof buf, f.get());
    bytes.insert(bytes.end(), buf, buf + n);
    if (n < sizeof buf) {
      if (std::ferror(f.get())) throw Error(system_message("cannot read", errno));
      break;
    }
  }
  return bytes;
}

io::Image square_center_crop(const io::Image& rgb, int size) {
  if (size <= 0) throw Error("square_center_crop: the size must be positive");
  if (rgb.width <= 0 || rgb.height <= 0) throw Error("image has no pixels");
  return resize_short_side_center_crop(rgb, size);
}

}  // namespace kmim::data
