#include "test_tree.hpp"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <stdexcept>

#include <stb/stb_image_write.h>
#include <turbojpeg.h>

#include <fmt/format.h>

#include "kmim/io/jpeg.hpp"

namespace kmim::testing {
namespace fs = std::filesystem;

io::Image pattern_image(int width, int height, std::uint32_t seed) {
  io::Image img(width, height, 3);
  const double fx = 0.02 + 0.01 * (seed % 7), fy = 0.03 + 0.01 * (seed % 5);
  for (int y = 0; y < height; ++y)
    for (int x = 0; x < width; ++x) {
      img.at(y, x, 0) = static_cast<std::uint8_t>(127 + 100 * std::sin(fx * x + seed));
      img.at(y, x, 1) = static_cast<std::uint8_t>(127 + 100 * std::cos(fy * y + 0.5 * seed));
      img.at(y, x, 2) = static_cast<std::uint8_t>((x * 255 / std::max(1, width - 1) + seed * 37) % 256);
    }
  return img;
}

io::Image photo_like_image(int width, int height, std::uint32_t seed) {
  io::Image img = pattern_image(width, height, seed);
  std::uint32_t state = seed * 2654435761u + 1;
  for (auto& v : img.pixels) {
    state = state * 1664525u + 1013904223u;
    v = static_cast<std::uint8_t>(std::clamp(int(v) + int((state >> 24) % 41) - 20, 0, 255));
  }
  return img;
}

void write_bytes(const fs::path& file, const std::vector<std::uint8_t>& bytes) {
  fs::create_directories(file.parent_path());
  std::ofstream out(file, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + file.string());
}

void write_text(const fs::path& file, const std::string& text) {
  write_bytes(file, std::vector<std::uint8_t>(text.begin(), text.end()));
}

void write_jpeg(const fs::path& file, const io::Image& image, bool progressive, int quality) {
  io::JpegCodec codec;
  write_bytes(file, codec.encode(image, {quality, progressive}));
}

void write_png(const fs::path& file, const io::Image& image) {
  fs::create_directories(file.parent_path());
  if (!stbi_write_png(file.c_str(), image.width, image.height, image.channels,
                      image.pixels.data(), image.width * image.channels))
    throw std::runtime_error("cannot write " + file.string());
}

void write_cmyk_jpeg(const fs::path& file, const io::Image& rgb, int quality) {
  // Ink k = 255 - max(r,g,b), c = (255 - r - k)/(255 - k)·255, ...; stored = 255 - ink, so
  // stored K = max(r,g,b) and stored C = r·255/max; kmim decodes R = C·K/255 = r.
  std::vector<std::uint8_t> cmyk(std::size_t(rgb.width) * rgb.height * 4);
  for (std::size_t i = 0; i < std::size_t(rgb.width) * rgb.height; ++i) {
    const int r = rgb.pixels[3 * i], g = rgb.pixels[3 * i + 1], b = rgb.pixels[3 * i + 2];
    const int m = std::max({r, g, b, 1});
    cmyk[4 * i + 0] = static_cast<std::uint8_t>((r * 255 + m / 2) / m);
    cmyk[4 * i + 1] = static_cast<std::uint8_t>((g * 255 + m / 2) / m);
    cmyk[4 * i + 2] = static_cast<std::uint8_t>((b * 255 + m / 2) / m);
    cmyk[4 * i + 3] = static_cast<std::uint8_t>(m);
  }
  tjhandle h = tjInitCompress();
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  const int rc = tjCompress2(h, cmyk.data(), rgb.width, 0, rgb.height, TJPF_CMYK, &buf, &size,
                             TJSAMP_444, quality, TJFLAG_ACCURATEDCT);
  tjDestroy(h);
  if (rc != 0) {
    tjFree(buf);
    throw std::runtime_error("CMYK encode failed");
  }
  std::vector<std::uint8_t> bytes(buf, buf + size);
  tjFree(buf);
  write_bytes(file, bytes);
}

TreeFacts make_test_tree(const fs::path& root, const TreeOptions& o) {
  TreeFacts facts;
  std::string mapping;
  for (int c = 0; c < o.classes; ++c) {
    const std::string id = fmt::format("n{:08d}", c + 1);
    facts.class_ids.push_back(id);
    mapping += fmt::format("{} class number {}, test\n", id, c + 1);
    for (int i = 0; i < o.train_per_class; ++i) {
      const std::string rel = fmt::format("train/{}/{}_{}.JPEG", id, id, i);
      const auto seed = static_cast<std::uint32_t>(100 * c + i);
      if (o.photo_width > 0)
        write_jpeg(root / rel, photo_like_image(o.photo_width, o.photo_height, seed), false, 90);
      else
        write_jpeg(root / rel, pattern_image(40 + 7 * i, 30 + 5 * c, seed));
      facts.train_good.push_back(rel);
    }
  }
  if (o.special_files) {
    const std::string a = "train/" + facts.class_ids[0] + "/";
    const auto good = [&](const std::string& name) { facts.train_good.push_back(a + name); return root / (a + name); };
    io::Image grey(45, 33, 1);
    for (std::size_t i = 0; i < grey.pixels.size(); ++i) grey.pixels[i] = static_cast<std::uint8_t>(i * 7 % 251);
    write_jpeg(good("grey.JPEG"), grey);
    write_cmyk_jpeg(good("cmyk.JPEG"), pattern_image(48, 40, 7));
    write_jpeg(good("progressive.JPEG"), pattern_image(52, 44, 8), true);
    write_png(good("png_inside.JPEG"), pattern_image(41, 39, 9));
    write_png(good("real.png"), pattern_image(30, 30, 10));
    write_jpeg(good("upper_ext.JPG"), pattern_image(33, 35, 11));
    write_jpeg(good("tiny.jpg"), pattern_image(3, 500, 12));
    if (o.large_image) write_jpeg(good("large.JPEG"), pattern_image(3000, 2000, 13), false, 90);
    write_text(root / (a + "notes.txt"), "not an image name: ignored\n");
    const std::string b = "train/" + facts.class_ids[std::min(1, o.classes - 1)] + "/";
    write_bytes(root / (b + "zero.JPEG"), {});
    io::JpegCodec codec;
    auto jpeg = codec.encode(pattern_image(64, 64, 14));
    jpeg.resize(jpeg.size() / 2);
    write_bytes(root / (b + "truncated.JPEG"), jpeg);
    write_text(root / (b + "text.JPEG"), "this is not a JPEG\n");
    for (const char* name : {"zero.JPEG", "truncated.JPEG", "text.JPEG"}) facts.train_broken.push_back(b + name);
  }
  std::string labels = o.val_layout == "csv" ? "ImageId,PredictionString\n" : "";
  for (int c = 0; c < o.classes; ++c) {
    const std::string& id = facts.class_ids[static_cast<std::size_t>(c)];
    for (int i = 0; i < o.val_per_class; ++i) {
      const std::string stem = fmt::format("val_{}_{}", c, i);
      const io::Image img = pattern_image(50 + 3 * i, 45, static_cast<std::uint32_t>(1000 + 10 * c + i));
      if (o.val_layout == "folders") {
        write_jpeg(root / "val" / id / (stem + ".JPEG"), img);
      } else {
        write_jpeg(root / "val" / (stem + ".JPEG"), img);
        labels += o.val_layout == "csv" ? fmt::format("{},{} 1 2 30 40 {} 3 4 20 20\n", stem, id, id)
                                        : fmt::format("{}.JPEG {}\n", stem, id);
      }
      ++facts.val_images;
    }
  }
  if (o.val_layout == "csv") write_text(root / "LOC_val_solution.csv", labels);
  if (o.val_layout == "list") write_text(root / "val_labels.txt", labels);
  write_text(root / "LOC_synset_mapping.txt", mapping);
  std::sort(facts.train_good.begin(), facts.train_good.end());
  return facts;
}

}  // namespace kmim::testing
