// GPU patch extraction against kmim::kmeans::extract_patches: bit-for-bit equal vectors for RGB
// and grey images, ImageNet and no normalisation, all tiles and sampled tiles, odd crop offsets;
// the output is poisoned with NaN first, so an unwritten element cannot pass.
#define BOOST_TEST_MODULE kmim_gpu_patches
#include "gpu_test_main.hpp"

#include <cstdint>
#include <cstring>
#include <vector>

#include "kmim/core/error.hpp"
#include "kmim/core/rng.hpp"
#include "kmim/gpu/kmeans_patches.hpp"
#include "kmim/kmeans/patches.hpp"

namespace gpu = kmim::gpu;
namespace km = kmim::kmeans;

namespace {

std::vector<std::uint8_t> random_images(std::size_t batch, int height, int width, int channels, std::uint64_t stream) {
  kmim::RandomStream rng(17, stream);
  std::vector<std::uint8_t> pixels(batch * static_cast<std::size_t>(height * width * channels));
  for (auto& p : pixels) p = static_cast<std::uint8_t>(rng.next_u32() & 0xFF);
  return pixels;
}

/// CPU vectors of every image, one after the other; per_image_tiles may be empty (all tiles).
std::vector<float> cpu_patches(const std::vector<std::uint8_t>& images, std::size_t batch, int height, int width,
                               const km::PatchGeometry& g, const km::PixelNormalization& norm,
                               const std::vector<std::vector<std::uint32_t>>& per_image_tiles) {
  const std::size_t image_bytes = static_cast<std::size_t>(height * width * g.channels);
  std::vector<float> out;
  for (std::size_t b = 0; b < batch; ++b) {
    const std::vector<std::uint32_t> none;
    const auto& tiles = per_image_tiles.empty() ? none : per_image_tiles[b];
    const std::size_t count = tiles.empty() ? static_cast<std::size_t>(g.patches_per_image()) : tiles.size();
    const std::size_t at = out.size();
    out.resize(at + count * g.dim());
    km::extract_patches(images.data() + b * image_bytes, height, width, g, norm, tiles, out.data() + at);
  }
  return out;
}

std::vector<float> gpu_patches(const std::vector<std::uint8_t>& images, std::size_t batch, int height, int width,
                               const km::PatchGeometry& g, const km::PixelNormalization& norm,
                               const std::vector<std::uint32_t>& flat_tiles, std::size_t tiles_per_image) {
  gpu::Stream s;
  gpu::DeviceBuffer<std::uint8_t> images_dev(images.size());
  images_dev.upload(images, s);
  gpu::PatchExtractor extractor(g, norm);
  const std::size_t rows = extractor.output_rows(batch, flat_tiles, tiles_per_image);
  gpu::DeviceBuffer<float> out(rows * g.dim());
  gpu::fill_device_bytes(out.data(), 0xFF, out.bytes(), s);  // NaN
  extractor.extract(images_dev.data(), batch, height, width, flat_tiles, tiles_per_image, out.data(), s);
  s.synchronize();
  return out.download(s);
}

bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

BOOST_AUTO_TEST_CASE(all_tiles_match_the_cpu_bit_for_bit) {
  struct Case {
    int height, width, channels, crop, patch;
    const char* normalization;
  };
  // 240×251: offsets round((240−224)/2) = 8 and round(27/2) = 14 (half away from zero);
  // 31×30 grey: offsets 2 and 1; crop = image; patch 1.
  const Case cases[] = {{240, 251, 3, 224, 16, "imagenet"}, {224, 224, 3, 224, 16, "none"},
                        {31, 30, 1, 28, 7, "none"},          {31, 30, 1, 28, 14, "imagenet"},
                        {9, 12, 3, 8, 1, "imagenet"}};
  std::uint64_t stream = 1;
  for (const auto& c : cases) {
    BOOST_TEST_CONTEXT(c.height << "x" << c.width << "x" << c.channels << " crop " << c.crop << " patch "
                                << c.patch << " " << c.normalization) {
      km::PatchGeometry g;
      g.crop = c.crop;
      g.patch = c.patch;
      g.channels = c.channels;
      // Grey images normalised with "imagenet" use channel 0's mean/std, as the CPU does.
      const auto norm = km::PixelNormalization::from_name(c.normalization);
      const std::size_t batch = 6;
      const auto images = random_images(batch, c.height, c.width, c.channels, stream++);
      const auto want = cpu_patches(images, batch, c.height, c.width, g, norm, {});
      const auto got = gpu_patches(images, batch, c.height, c.width, g, norm, {}, 0);
      BOOST_TEST(bitwise_equal(got, want));
    }
  }
}

BOOST_AUTO_TEST_CASE(sampled_tiles_match_the_cpu_bit_for_bit) {
  km::PatchGeometry g;  // 224 / 16 / RGB
  const auto norm = km::PixelNormalization::imagenet();
  const std::size_t batch = 5, per_image = 37;
  const int height = 256, width = 230;
  const auto images = random_images(batch, height, width, 3, 50);
  std::vector<std::vector<std::uint32_t>> tiles;
  std::vector<std::uint32_t> flat;
  for (std::size_t b = 0; b < batch; ++b) {
    tiles.push_back(km::sample_tiles(123, b, g.patches_per_image(), static_cast<int>(per_image)));
    flat.insert(flat.end(), tiles.back().begin(), tiles.back().end());
  }
  const auto want = cpu_patches(images, batch, height, width, g, norm, tiles);
  const auto got = gpu_patches(images, batch, height, width, g, norm, flat, per_image);
  BOOST_TEST(bitwise_equal(got, want));
}

BOOST_AUTO_TEST_CASE(bad_geometry_and_tiles_are_errors) {
  km::PatchGeometry g;
  const auto norm = km::PixelNormalization::none();
  gpu::Stream s;
  gpu::PatchExtractor extractor(g, norm);
  gpu::DeviceBuffer<std::uint8_t> images(200 * 200 * 3);
  gpu::DeviceBuffer<float> out(196 * g.dim());
  // The crop does not fit a 200×200 image.
  BOOST_CHECK_THROW(extractor.extract(images.data(), 1, 200, 200, {}, 0, out.data(), s), kmim::Error);
  gpu::DeviceBuffer<std::uint8_t> big(224 * 224 * 3);
  const std::vector<std::uint32_t> outside = {3, 196};
  BOOST_CHECK_THROW(extractor.extract(big.data(), 1, 224, 224, outside, 2, out.data(), s), kmim::Error);
  const std::vector<std::uint32_t> wrong_count = {3, 4, 5};
  BOOST_CHECK_THROW(extractor.extract(big.data(), 1, 224, 224, wrong_count, 2, out.data(), s), kmim::Error);
  km::PatchGeometry bad;
  bad.patch = 15;  // does not divide 224
  BOOST_CHECK_THROW(gpu::PatchExtractor(bad, norm), kmim::Error);
}
