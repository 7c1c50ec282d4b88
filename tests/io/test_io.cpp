// Unit tests of kmim/io: HDF5 wrappers, atomic outputs, IDX files, JPEG and image operations.
#define BOOST_TEST_MODULE kmim_io
#include <boost/test/unit_test.hpp>

#include <zlib.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "kmim/core/error.hpp"
#include "kmim/dist/mpi.hpp"
#include "kmim/io/atomic_output.hpp"
#include "kmim/io/hdf5.hpp"
#include "kmim/io/idx.hpp"
#include "kmim/io/image.hpp"
#include "kmim/io/jpeg.hpp"

namespace fs = std::filesystem;
using namespace kmim;
using namespace kmim::io;

struct MpiFixture {
  dist::MpiSession session;
};
BOOST_TEST_GLOBAL_FIXTURE(MpiFixture);

namespace {
fs::path scratch(const std::string& name) {
  fs::path dir = fs::temp_directory_path() / ("kmim_test_io_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return dir / name;
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

// ------------------------------------------------------------------------------------ hdf5
BOOST_AUTO_TEST_CASE(hdf5_round_trip_of_datasets_and_attributes) {
  const fs::path file = scratch("roundtrip.h5");
  {
    H5Object f = create_file(file);
    std::vector<float> x(6);
    for (int i = 0; i < 6; ++i) x[std::size_t(i)] = 0.5f * float(i);
    f.write_dataset<float>("x", x, {2, 3});
    H5Object g = f.create_group("meta");
    g.write_strings("paths", {"a/b.JPEG", "ü/ñ.JPEG", ""});
    g.set_attribute("name", "codebook");
    g.set_attribute<std::int64_t>("k", 50);
    std::vector<double> mean = {0.485, 0.456, 0.406};
    g.set_attribute<double>("mean", std::span<const double>(mean));
    f.set_provenance("kmim_test", "k = 50\n");
    H5Dataset rows = f.create_dataset<std::uint8_t>("images", {5, 2, 2, 3}, {1, 2, 2, 3});
    std::vector<std::uint8_t> block(2 * 12);
    for (std::size_t i = 0; i < block.size(); ++i) block[i] = std::uint8_t(i);
    rows.write_rows<std::uint8_t>(3, 2, block);
  }
  H5Object f = open_file(file);
  BOOST_TEST(f.has("x"));
  BOOST_TEST(f.has("meta/paths"));
  BOOST_TEST(!f.has("meta/nothing/deeper"));
  H5Dataset x = f.dataset("x");
  BOOST_TEST((x.dims() == std::vector<hsize_t>{2, 3}));
  BOOST_TEST(x.holds<float>());
  BOOST_TEST(!x.holds<double>());
  BOOST_TEST(!x.holds<std::int32_t>());
  const auto xv = x.read<float>();
  BOOST_TEST(xv[5] == 2.5f);
  std::vector<float> row(3);
  x.read_rows<float>(1, 1, row);
  BOOST_TEST(row[0] == 1.5f);
  H5Object g = f.group("meta");
  BOOST_TEST((g.read_strings("paths") == std::vector<std::string>{"a/b.JPEG", "ü/ñ.JPEG", ""}));
  BOOST_TEST(g.string_attribute("name") == "codebook");
  BOOST_TEST(g.attribute<std::int64_t>("k") == 50);
  BOOST_TEST(g.attribute<double>("k") == 50.0);  // converted by HDF5
  BOOST_TEST((g.array_attribute<double>("mean") == std::vector<double>{0.485, 0.456, 0.406}));
  BOOST_TEST(f.string_attribute("program") == "kmim_test");
  BOOST_TEST(f.string_attribute("config") == "k = 50\n");
  BOOST_TEST(f.string_attribute("created").size() == 20u);
  std::vector<std::uint8_t> got(12);
  f.dataset("images").read_rows<std::uint8_t>(4, 1, got);
  BOOST_TEST(got[0] == 12);
  BOOST_TEST(got[11] == 23);
}

BOOST_AUTO_TEST_CASE(hdf5_errors_name_file_and_object) {
  const fs::path file = scratch("errors.h5");
  { create_file(file).write_dataset<float>("x", std::vector<float>{1, 2}, {2}); }
  H5Object f = open_file(file);
  std::string msg = error_of([&] { f.dataset("missing"); });
  BOOST_TEST(msg.find(file.string()) != std::string::npos);
  BOOST_TEST(msg.find("/missing: dataset is missing") != std::string::npos);
  msg = error_of([&] { f.string_attribute("nope"); });
  BOOST_TEST(msg.find("/nope: attribute is missing") != std::string::npos);
  msg = error_of([&] {
    std::vector<float> out(2);
    f.dataset("x").read_rows<float>(1, 2, out);
  });
  BOOST_TEST(msg.find("out of range") != std::string::npos);
  msg = error_of([&] { open_file(scratch("absent.h5")); });
  BOOST_TEST(msg.find("does not exist") != std::string::npos);
  const fs::path text = scratch("text.h5");
  std::ofstream(text) << "not hdf5";
  msg = error_of([&] { open_file(text); });
  BOOST_TEST(msg.find("is not an HDF5 file") != std::string::npos);
  BOOST_TEST(!is_hdf5_file(text));
  BOOST_TEST(is_hdf5_file(file));
  // A truncated HDF5 file is rejected with the file's name.
  const fs::path cut = scratch("cut.h5");
  fs::copy_file(file, cut, fs::copy_options::overwrite_existing);
  fs::resize_file(cut, 200);
  msg = error_of([&] { open_file(cut).dataset("x").read<float>(); });
  BOOST_TEST(msg.find(cut.string()) != std::string::npos);
  msg = error_of([&] { create_file("/proc/no/such/dir/x.h5"); });
  BOOST_TEST(msg.find("cannot create") != std::string::npos);
}

// --------------------------------------------------------------------------- atomic output
BOOST_AUTO_TEST_CASE(atomic_output_appears_only_on_commit) {
  const fs::path final_path = scratch("atomic/out.h5");
  fs::remove(final_path);
  {
    AtomicOutput out(final_path);
    BOOST_TEST(out.temp_path() == partial_path(final_path));
    { create_file(out.temp_path()).set_attribute("x", "y"); }
    BOOST_TEST(fs::exists(out.temp_path()));
    BOOST_TEST(!fs::exists(final_path));
    out.commit();
    BOOST_TEST(fs::exists(final_path));
    BOOST_TEST(!fs::exists(out.temp_path()));
  }
  BOOST_TEST(open_file(final_path).string_attribute("x") == "y");
  // Without commit (an exception on the way), the temporary file is removed and the previous
  // final file stays untouched.
  try {
    AtomicOutput out(final_path);
    { create_file(out.temp_path()).set_attribute("x", "broken"); }
    throw std::runtime_error("crash while writing");
  } catch (const std::runtime_error&) {
  }
  BOOST_TEST(!fs::exists(partial_path(final_path)));
  BOOST_TEST(open_file(final_path).string_attribute("x") == "y");
  // A stale partial file from a killed run is cleared.
  std::ofstream(partial_path(final_path)) << "stale";
  { AtomicOutput out(final_path); BOOST_TEST(!fs::exists(out.temp_path())); }
  // Unwritable output folders are reported with the folder's name.
  std::ofstream(scratch("plainfile")) << "x";
  const std::string msg = error_of([&] { AtomicOutput bad(scratch("plainfile") / "out.h5"); });
  BOOST_TEST(msg.find("plainfile") != std::string::npos);
  write_text_file_atomic(scratch("text.txt"), "hello\n");
  std::ifstream in(scratch("text.txt"));
  std::string line;
  std::getline(in, line);
  BOOST_TEST(line == "hello");
}

// ------------------------------------------------------------------------------------- idx
namespace {
void write_gz(const fs::path& p, const std::vector<std::uint8_t>& bytes) {
  gzFile f = gzopen(p.c_str(), "wb");
  gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(f);
}
std::vector<std::uint8_t> idx_bytes(std::vector<std::uint32_t> dims, std::size_t body) {
  std::vector<std::uint8_t> b = {0, 0, 8, std::uint8_t(dims.size())};
  for (auto d : dims)
    for (int s = 24; s >= 0; s -= 8) b.push_back(std::uint8_t(d >> s));
  for (std::size_t i = 0; i < body; ++i) b.push_back(std::uint8_t(i * 7));
  return b;
}
}  // namespace

BOOST_AUTO_TEST_CASE(idx_reads_gzip_and_raw_and_rejects_bad_files) {
  const auto good = idx_bytes({3, 2, 2}, 12);
  write_gz(scratch("good.idx.gz"), good);
  std::ofstream(scratch("good.idx"), std::ios::binary).write(reinterpret_cast<const char*>(good.data()), std::streamsize(good.size()));
  for (const char* name : {"good.idx.gz", "good.idx"}) {
    const IdxArray a = read_idx(scratch(name));
    BOOST_TEST((a.dims == std::vector<std::uint32_t>{3, 2, 2}));
    BOOST_TEST(a.data.size() == 12u);
    BOOST_TEST(a.data[11] == std::uint8_t(77));
  }
  auto bad_magic = good;
  bad_magic[0] = 0x1f;
  write_gz(scratch("magic.gz"), bad_magic);
  BOOST_TEST(error_of([&] { read_idx(scratch("magic.gz")); }).find("not an IDX file") != std::string::npos);
  write_gz(scratch("short.gz"), idx_bytes({3, 2, 2}, 10));
  const std::string msg = error_of([&] { read_idx(scratch("short.gz")); });
  BOOST_TEST(msg.find("truncated") != std::string::npos);
  BOOST_TEST(msg.find("short.gz") != std::string::npos);
  write_gz(scratch("long.gz"), idx_bytes({3, 2, 2}, 13));
  BOOST_TEST(error_of([&] { read_idx(scratch("long.gz")); }).find("trailing") != std::string::npos);
  auto float_type = good;
  float_type[2] = 0x0d;
  write_gz(scratch("float.gz"), float_type);
  BOOST_TEST(error_of([&] { read_idx(scratch("float.gz")); }).find("not supported") != std::string::npos);
  BOOST_TEST(error_of([&] { read_idx(scratch("none.gz")); }).find("does not exist") != std::string::npos);
}

// ------------------------------------------------------------------------- jpeg and images
BOOST_AUTO_TEST_CASE(jpeg_round_trip_grey_rgb_progressive) {
  JpegCodec codec;
  Image rgb(40, 30, 3);
  for (int y = 0; y < 30; ++y)
    for (int x = 0; x < 40; ++x) {
      rgb.at(y, x, 0) = std::uint8_t(6 * x);
      rgb.at(y, x, 1) = std::uint8_t(8 * y);
      rgb.at(y, x, 2) = 128;
    }
  for (bool progressive : {false, true}) {
    const auto bytes = codec.encode(rgb, {95, progressive});
    BOOST_TEST(bytes[0] == 0xFF);
    BOOST_TEST(bytes[1] == 0xD8);
    const Image back = codec.decode(bytes);
    BOOST_TEST(back.width == 40);
    BOOST_TEST(back.height == 30);
    BOOST_TEST(back.channels == 3);
    double err = 0;
    for (std::size_t i = 0; i < back.pixels.size(); ++i)
      err += std::abs(int(back.pixels[i]) - int(rgb.pixels[i]));
    BOOST_TEST(err / double(back.pixels.size()) < 3.0);  // smooth gradients survive q95
  }
  Image grey(16, 16, 1);
  std::fill(grey.pixels.begin(), grey.pixels.end(), 200);
  const auto gbytes = codec.encode(grey);
  BOOST_TEST(codec.decode(gbytes, /*keep_grey=*/true).channels == 1);
  const Image as_rgb = codec.decode(gbytes);
  BOOST_TEST(as_rgb.channels == 3);
  BOOST_TEST(std::abs(int(as_rgb.at(5, 5, 1)) - 200) <= 1);
  std::vector<std::uint8_t> junk = {1, 2, 3, 4, 5};
  BOOST_CHECK_THROW(codec.decode(junk), Error);
  auto truncated = codec.encode(rgb);
  truncated.resize(truncated.size() / 2);
  BOOST_CHECK_THROW(codec.decode(truncated), Error);
  BOOST_TEST(codec.decode(codec.encode(rgb)).width == 40);  // a failure leaves the codec usable
  // Extraneous bytes before a marker (a few ImageNet files have them) are a harmless warning:
  // the image decodes exactly as without them.
  auto clean = codec.encode(rgb);
  auto padded = clean;
  padded.insert(padded.end() - 2, {0x00, 0x11, 0x22});  // before the EOI marker FF D9
  const Image a = codec.decode(clean), b = codec.decode(padded);
  BOOST_TEST((a.pixels == b.pixels));
}

BOOST_AUTO_TEST_CASE(resize_and_crop_follow_torchvision_geometry) {
  Image img(300, 200, 3);
  for (std::size_t i = 0; i < img.pixels.size(); ++i) img.pixels[i] = 77;
  const Image r = resize_short_side(img, 100);
  BOOST_TEST(r.width == 150);
  BOOST_TEST(r.height == 100);
  BOOST_TEST(int(r.at(50, 75, 2)) == 77);  // a constant image stays constant
  const Image tall = resize_short_side(Image(200, 333, 1), 128);
  BOOST_TEST(tall.width == 128);
  BOOST_TEST(tall.height == 213);  // int(333 * 128 / 200) = 213
  Image ramp(5, 4, 1);
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 5; ++x) ramp.at(y, x, 0) = std::uint8_t(10 * y + x);
  const Image c = center_crop(ramp, 3, 2);
  // top = round((4-2)/2) = 1, left = round((5-3)/2) = 1
  BOOST_TEST(int(c.at(0, 0, 0)) == 11);
  BOOST_TEST(int(c.at(1, 2, 0)) == 23);
  BOOST_CHECK_THROW(center_crop(ramp, 6, 2), Error);
  const Image rgb = to_rgb(ramp);
  BOOST_TEST(rgb.channels == 3);
  BOOST_TEST(int(rgb.at(3, 4, 2)) == 34);
  // Downscaling antialiases: a 1-pixel checkerboard averages to mid-grey, not aliasing.
  Image checker(64, 64, 1);
  for (int y = 0; y < 64; ++y)
    for (int x = 0; x < 64; ++x) checker.at(y, x, 0) = ((x + y) % 2) ? 255 : 0;
  const Image small = resize_bicubic(checker, 8, 8);
  for (int y = 1; y < 7; ++y)
    for (int x = 1; x < 7; ++x) BOOST_TEST(std::abs(int(small.at(y, x, 0)) - 128) <= 3);
}
