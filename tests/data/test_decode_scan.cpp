// Unit tests of kmim_data: format detection, decoding of every real-world file kind, the
// square crop, folder scanning, label mapping and the val label-file forms.
#define BOOST_TEST_MODULE kmim_data_decode_scan
#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <filesystem>

#include <fmt/format.h>

#include "kmim/core/error.hpp"
#include "kmim/data/folder_scan.hpp"
#include "kmim/data/image_decode.hpp"
#include "kmim/data/resize_crop.hpp"
#include "kmim/io/jpeg.hpp"
#include "test_tree.hpp"

namespace fs = std::filesystem;
using namespace kmim;
using kmim::testing::make_test_tree;
using kmim::testing::pattern_image;

namespace {

fs::path scratch(const std::string& name) {
  const char* base = std::getenv("KMIM_TEST_TMP");
  fs::path p = fs::path(base ? base : fs::temp_directory_path().string()) / ("kmim_data_unit_" + name);
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

double mean_abs_diff(const io::Image& a, const io::Image& b) {
  BOOST_REQUIRE_EQUAL(a.pixels.size(), b.pixels.size());
  double s = 0;
  for (std::size_t i = 0; i < a.pixels.size(); ++i) s += std::abs(int(a.pixels[i]) - int(b.pixels[i]));
  return s / static_cast<double>(a.pixels.size());
}

io::Image decode_file(const fs::path& f) {
  data::ImageDecoder d;
  return d.decode(data::read_file_bytes(f));
}

struct Tree {
  fs::path root = scratch("tree");
  kmim::testing::TreeFacts facts = make_test_tree(root, kmim::testing::TreeOptions{});
};

}  // namespace

BOOST_AUTO_TEST_CASE(format_is_detected_from_magic_bytes) {
  io::JpegCodec codec;
  const auto jpeg = codec.encode(pattern_image(8, 8, 1));
  BOOST_TEST(static_cast<int>(data::detect_image_format(jpeg)) == static_cast<int>(data::ImageFormat::jpeg));
  const std::vector<std::uint8_t> png = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A, 0};
  BOOST_TEST(static_cast<int>(data::detect_image_format(png)) == static_cast<int>(data::ImageFormat::png));
  const std::vector<std::uint8_t> text = {'h', 'e', 'l', 'l', 'o'};
  BOOST_TEST(static_cast<int>(data::detect_image_format(text)) == static_cast<int>(data::ImageFormat::unknown));
  const auto [w, h] = data::jpeg_dimensions(codec.encode(pattern_image(37, 21, 2), {90, true}));
  BOOST_TEST(w == 37);
  BOOST_TEST(h == 21);
}

BOOST_AUTO_TEST_CASE(every_real_world_kind_decodes_to_rgb) {
  const fs::path dir = scratch("kinds");
  const io::Image colour = pattern_image(48, 40, 7);
  testing::write_jpeg(dir / "baseline.JPEG", colour);
  testing::write_jpeg(dir / "progressive.JPEG", colour, true);
  testing::write_cmyk_jpeg(dir / "cmyk.JPEG", colour);
  testing::write_png(dir / "png_inside.JPEG", colour);
  io::Image grey(20, 10, 1);
  for (std::size_t i = 0; i < grey.pixels.size(); ++i) grey.pixels[i] = static_cast<std::uint8_t>(i);
  testing::write_jpeg(dir / "grey.JPEG", grey);

  for (const char* name : {"baseline.JPEG", "progressive.JPEG", "cmyk.JPEG"}) {
    const io::Image img = decode_file(dir / name);
    BOOST_TEST_CONTEXT(name) {
      BOOST_TEST(img.channels == 3);
      BOOST_TEST(img.width == 48);
      BOOST_TEST(img.height == 40);
      BOOST_TEST(mean_abs_diff(img, colour) < 4.0);  // JPEG quality 95 on a smooth pattern
    }
  }
  const io::Image png = decode_file(dir / "png_inside.JPEG");
  BOOST_TEST(mean_abs_diff(png, colour) == 0.0);  // lossless
  const io::Image g = decode_file(dir / "grey.JPEG");
  BOOST_TEST(g.channels == 3);
  for (std::size_t i = 0; i < g.pixels.size(); i += 3) {
    BOOST_TEST(g.pixels[i] == g.pixels[i + 1]);
    BOOST_TEST(g.pixels[i] == g.pixels[i + 2]);
  }
}

BOOST_AUTO_TEST_CASE(broken_files_throw_with_a_reason) {
  const fs::path dir = scratch("broken");
  testing::write_bytes(dir / "zero.JPEG", {});
  testing::write_text(dir / "text.JPEG", "hello, I am text\n");
  io::JpegCodec codec;
  auto jpeg = codec.encode(pattern_image(64, 64, 3));
  jpeg.resize(jpeg.size() / 2);
  testing::write_bytes(dir / "truncated.JPEG", jpeg);
  const auto message = [&](const char* name) {
    try {
      decode_file(dir / name);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  BOOST_TEST(message("zero.JPEG") == "empty file");
  BOOST_TEST(message("text.JPEG") == "not a JPEG or PNG image");
  BOOST_TEST(message("truncated.JPEG").find("JPEG") != std::string::npos);
  BOOST_TEST(message("missing.JPEG").find("cannot open") != std::string::npos);
}

namespace {
int max_abs_diff(const io::Image& a, const io::Image& b) {
  BOOST_REQUIRE_EQUAL(a.pixels.size(), b.pixels.size());
  int m = 0;
  for (std::size_t i = 0; i < a.pixels.size(); ++i) m = std::max(m, std::abs(int(a.pixels[i]) - int(b.pixels[i])));
  return m;
}
}  // namespace

BOOST_AUTO_TEST_CASE(one_step_crop_matches_resize_short_side_then_crop) {
  // Shrinking, enlarging, both orientations, odd sizes, identity, extreme aspect ratios, grey.
  const int cases[][3] = {{300, 200, 64}, {200, 300, 64}, {500, 375, 256}, {40, 30, 256},
                          {33, 35, 24},   {256, 300, 256}, {257, 256, 256}, {1000, 999, 224},
                          {3, 500, 32},   {500, 3, 32},    {1, 1, 5},      {64, 64, 64}};
  for (const auto& c : cases) {
    BOOST_TEST_CONTEXT(c[0] << "x" << c[1] << " -> " << c[2]) {
      const io::Image img = testing::photo_like_image(c[0], c[1], 5);
      const io::Image fast = data::square_center_crop(img, c[2]);
      const io::Image slow = io::center_crop(io::resize_short_side(img, c[2]), c[2], c[2]);
      BOOST_TEST(fast.width == c[2]);
      BOOST_TEST(fast.height == c[2]);
      BOOST_TEST(fast.channels == 3);
      BOOST_TEST(max_abs_diff(fast, slow) <= 1);  // float rounding only
      BOOST_TEST(mean_abs_diff(fast, slow) < 0.01);
    }
  }
  io::Image grey(90, 60, 1);
  for (std::size_t i = 0; i < grey.pixels.size(); ++i) grey.pixels[i] = static_cast<std::uint8_t>(i * 13 % 256);
  BOOST_TEST(max_abs_diff(data::resize_short_side_center_crop(grey, 20),
                          io::center_crop(io::resize_short_side(grey, 20), 20, 20)) <= 1);
}

BOOST_AUTO_TEST_CASE(filter_taps_are_normalised_and_clamped) {
  for (const auto& [in, out] : std::vector<std::pair<int, int>>{{100, 37}, {10, 64}, {7, 7}, {1, 9}}) {
    const auto taps = data::catmull_rom_taps(in, out, 0, out);
    BOOST_TEST(taps.size() == static_cast<std::size_t>(out));
    for (const auto& t : taps) {
      float sum = 0;
      for (const float w : t.weights) sum += w;
      BOOST_TEST(std::abs(sum - 1.0f) < 1e-5f);
      BOOST_TEST(t.first >= 0);
      BOOST_TEST(t.first + static_cast<int>(t.weights.size()) <= in);
    }
  }
  const auto same = data::catmull_rom_taps(7, 7, 0, 7);  // identity: one tap of weight 1
  for (int i = 0; i < 7; ++i) {
    BOOST_TEST(same[static_cast<std::size_t>(i)].first == i);
    BOOST_TEST(same[static_cast<std::size_t>(i)].weights.size() == 1u);
  }
}

BOOST_AUTO_TEST_CASE(tree_decodes_good_files_and_rejects_broken_ones) {
  Tree t;
  for (const auto& rel : t.facts.train_good) {
    BOOST_TEST_CONTEXT(rel) {
      const io::Image img = decode_file(t.root / rel);
      BOOST_TEST(img.channels == 3);
      const io::Image crop = data::square_center_crop(img, 16);
      BOOST_TEST(crop.pixels.size() == 16u * 16u * 3u);
    }
  }
  for (const auto& rel : t.facts.train_broken)
    BOOST_CHECK_THROW(decode_file(t.root / rel), Error);
}

BOOST_AUTO_TEST_CASE(labels_follow_sorted_wnids_and_scan_order) {
  Tree t;
  const data::ClassTable table = data::make_class_table(t.root, {}, t.root / "LOC_synset_mapping.txt");
  BOOST_TEST(table.ids == t.facts.class_ids, boost::test_tools::per_element());
  BOOST_TEST(table.names.at(1) == "class number 2, test");
  const data::SplitScan scan = data::scan_split(t.root, "train", table, {});
  // Every image file with an image extension is a candidate (broken ones included), notes.txt
  // is not; the order is (label, path).
  BOOST_TEST(scan.images.size() == t.facts.train_good.size() + t.facts.train_broken.size());
  for (std::size_t i = 1; i < scan.images.size(); ++i) {
    const auto& a = scan.images[i - 1];
    const auto& b = scan.images[i];
    BOOST_TEST((a.label < b.label || (a.label == b.label && a.path < b.path)));
  }
  for (const auto& e : scan.images) {
    BOOST_TEST(e.path.find(".txt") == std::string::npos);
    BOOST_TEST(e.path.find(table.ids[static_cast<std::size_t>(e.label)]) != std::string::npos);
  }
}

BOOST_AUTO_TEST_CASE(class_subset_relabels_from_zero) {
  Tree t;
  testing::write_text(t.root / "subset.txt", "# subset\nn00000003\n\nn00000002  extra words\n");
  const data::ClassTable table = data::make_class_table(t.root, t.root / "subset.txt", {});
  BOOST_TEST(table.ids == (std::vector<std::string>{"n00000002", "n00000003"}), boost::test_tools::per_element());
  const data::SplitScan scan = data::scan_split(t.root, "val", table, {});
  BOOST_TEST(scan.images.size() == 6u);
  BOOST_TEST(scan.images.front().label == 0);
  BOOST_TEST(scan.images.back().label == 1);
  BOOST_TEST(scan.images.front().path.find("n00000002") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(bad_class_lists_name_the_problem) {
  Tree t;
  testing::write_text(t.root / "unknown.txt", "n00000001\nn99999999\n");
  try {
    data::make_class_table(t.root, t.root / "unknown.txt", {});
    BOOST_FAIL("unknown class accepted");
  } catch (const FileError& e) {
    BOOST_TEST(std::string(e.what()).find("n99999999") != std::string::npos);
  }
  testing::write_text(t.root / "dup.txt", "n00000001\nn00000001\n");
  BOOST_CHECK_THROW(data::read_class_list(t.root / "dup.txt"), FileError);
  testing::write_text(t.root / "empty.txt", "# nothing\n");
  BOOST_CHECK_THROW(data::read_class_list(t.root / "empty.txt"), FileError);
  // An empty class folder is an error naming the class.
  fs::create_directories(t.root / "train" / "n00000009");
  const data::ClassTable table = data::make_class_table(t.root, {}, {});
  try {
    data::scan_split(t.root, "train", table, {});
    BOOST_FAIL("empty class accepted");
  } catch (const FileError& e) {
    BOOST_TEST(std::string(e.what()).find("n00000009") != std::string::npos);
  }
  BOOST_CHECK_THROW(data::make_class_table(t.root / "missing", {}, {}), FileError);
}

BOOST_AUTO_TEST_CASE(flat_val_label_files_in_both_forms) {
  for (const std::string layout : {"csv", "list"}) {
    BOOST_TEST_CONTEXT(layout) {
      const fs::path root = scratch("flat_" + layout);
      testing::TreeOptions o;
      o.val_layout = layout;
      o.special_files = false;
      const auto facts = make_test_tree(root, o);
      testing::write_jpeg(root / "val" / "stray.JPEG", pattern_image(20, 20, 1));
      const fs::path label_file = root / (layout == "csv" ? "LOC_val_solution.csv" : "val_labels.txt");
      const auto labels = data::read_val_labels(label_file);
      BOOST_TEST(labels.at("val_2_1") == "n00000003");
      const data::ClassTable table = data::make_class_table(root, {}, {});
      // csv is found automatically in <root>; the plain list is given explicitly.
      const data::SplitScan scan =
          data::scan_split(root, "val", table, layout == "csv" ? fs::path() : label_file);
      BOOST_TEST(scan.images.size() == facts.val_images);
      BOOST_TEST(scan.unlabelled == std::vector<std::string>{"val/stray.JPEG"}, boost::test_tools::per_element());
      for (const auto& e : scan.images)
        BOOST_TEST(e.path.find(fmt::format("val_{}_", e.label)) != std::string::npos);
    }
  }
  const fs::path root = scratch("flat_nolabels");
  testing::write_jpeg(root / "val" / "a.JPEG", pattern_image(20, 20, 1));
  testing::write_jpeg(root / "train" / "n1" / "a.JPEG", pattern_image(20, 20, 1));
  const data::ClassTable table = data::make_class_table(root, {}, {});
  BOOST_CHECK_THROW(data::scan_split(root, "val", table, {}), FileError);
}

BOOST_AUTO_TEST_CASE(extensions_are_case_insensitive) {
  BOOST_TEST(data::has_image_extension("a.JPEG"));
  BOOST_TEST(data::has_image_extension("a.jpeg"));
  BOOST_TEST(data::has_image_extension("a.Jpg"));
  BOOST_TEST(data::has_image_extension("a.PNG"));
  BOOST_TEST(!data::has_image_extension("a.txt"));
  BOOST_TEST(!data::has_image_extension("JPEG"));
}
