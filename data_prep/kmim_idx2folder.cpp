// kmim_idx2folder: IDX image/label files (MNIST, Fashion-MNIST) → an ImageNet-style JPEG tree
//   <out>/train/<class>/<class>_<index>.JPEG, <out>/val/<class>/<class>_<index>.JPEG
// so that the whole kmim pipeline, JPEG decoding included, runs on real images (SPEC §7).
//
// Names are deterministic: <index> is the image's position in its IDX file, and the first
// --per-class-* images of each class (in file order) are kept. Each split is written into
// "<out>/<split>.partial" and renamed to "<out>/<split>" when complete, so an interrupted run
// never leaves a half-written split under its final name; a split that already exists with the
// same configuration is kept (the program is idempotent).
#include <atomic>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <omp.h>

#include "kmim/core/error.hpp"
#include "kmim/core/log.hpp"
#include "kmim/core/options.hpp"
#include "kmim/core/progress.hpp"
#include "kmim/dist/program.hpp"
#include "kmim/io/atomic_output.hpp"
#include "kmim/io/idx.hpp"
#include "kmim/io/image.hpp"
#include "kmim/io/jpeg.hpp"

namespace fs = std::filesystem;
using namespace kmim;

namespace {

struct Idx2FolderParams {
  std::string idx_dir = "/usr/share/datasets/fashion-mnist";  // standard IDX names inside
  std::string train_images;  // overrides <idx-dir>/train-images-idx3-ubyte(.gz)
  std::string train_labels;
  std::string val_images;    // overrides <idx-dir>/t10k-images-idx3-ubyte(.gz)
  std::string val_labels;
  std::string out;
  int size = 28;             // output side in pixels (bicubic upscaling when > 28)
  bool rgb = false;          // write 3-channel JPEGs instead of greyscale
  int per_class_train = 0;   // keep at most this many images per class (0 = all)
  int per_class_val = 0;
  std::string class_names = "fashion-mnist";  // fashion-mnist | mnist | none
  int quality = 95;
  int threads = 0;           // 0 = all cores
};

const std::vector<std::string> kFashionMnistNames = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};

/// Folder-safe lower-case form of a class name: "T-shirt/top" → "tshirt_top".
std::string slug(const std::string& name) {
  std::string s;
  for (char ch : name) {
    if (std::isalnum(static_cast<unsigned char>(ch))) s += static_cast<char>(std::tolower(ch));
    else if ((ch == ' ' || ch == '/') && !s.empty() && s.back() != '_') s += '_';
  }
  return s;
}

std::vector<std::string> display_names(const std::string& preset, int classes) {
  std::vector<std::string> names;
  for (int c = 0; c < classes; ++c) {
    if (preset == "fashion-mnist" && c < static_cast<int>(kFashionMnistNames.size()))
      names.push_back(kFashionMnistNames[static_cast<std::size_t>(c)]);
    else if (preset == "mnist")
      names.push_back(fmt::format("digit {}", c));
    else
      names.push_back(fmt::format("class {}", c));
  }
  return names;
}

/// Folder names sort in label order ("c0_…" … "c9_…"; zero-padded beyond 10 classes), so the
/// torchvision ImageFolder convention (sorted folder names) gives back the IDX labels.
std::string folder_name(int label, int classes, const std::string& display) {
  const int width = classes > 10 ? (classes > 100 ? 3 : 2) : 1;
  const std::string tail = slug(display);
  return fmt::format("c{:0{}}{}{}", label, width, tail.empty() ? "" : "_", tail);
}

fs::path resolve_idx(const std::string& given, const std::string& dir, const std::string& stem) {
  if (!given.empty()) return given;
  for (const char* ext : {".gz", ""}) {
    fs::path p = fs::path(dir) / (stem + ext);
    if (fs::exists(p)) return p;
  }
  throw FileError(fs::path(dir) / (stem + ".gz"),
                  "does not exist (install the Debian package dataset-fashion-mnist, or pass "
                  "--idx-dir / --train-images ... explicitly)");
}

struct SplitInput {
  std::string name;
  fs::path images;
  fs::path labels;
  int per_class;
};

/// Writes one split. Returns the number of images written.
std::size_t write_split(const dist::Communicator& comm, const Idx2FolderParams& p,
                        const SplitInput& split, const std::string& config_ini) {
  const fs::path final_dir = fs::path(p.out) / split.name;
  // Hidden, so that the split folder holds class folders only (ImageFolder convention).
  const fs::path config_file = final_dir / ".kmim_idx2folder.ini";
  if (fs::exists(final_dir)) {
    std::ifstream in(config_file);
    std::stringstream existing;
    existing << in.rdbuf();
    if (in && existing.str() == config_ini) {
      log().info("{}: {} already complete with this configuration, kept", split.name,
                 final_dir.string());
      return 0;
    }
    throw FileError(final_dir, "already exists with a different configuration; remove it or "
                               "choose another --out");
  }

  const io::IdxArray images = io::read_idx(split.images);
  const io::IdxArray labels = io::read_idx(split.labels);
  if (images.dims.size() != 3)
    throw FileError(split.images, fmt::format("expected a 3-D image array [n, rows, cols], got "
                                              "{} dimensions", images.dims.size()));
  if (labels.dims.size() != 1)
    throw FileError(split.labels, "expected a 1-D label array");
  if (images.dims[0] != labels.dims[0])
    throw FileError(split.labels, fmt::format("holds {} labels but '{}' holds {} images",
                                              labels.dims[0], split.images.string(),
                                              images.dims[0]));
  const std::size_t n = images.dims[0];
  const int rows = static_cast<int>(images.dims[1]), cols = static_cast<int>(images.dims[2]);
  int classes = 0;
  for (std::uint8_t l : labels.data) classes = std::max(classes, int(l) + 1);
  if (n == 0 || classes == 0) throw FileError(split.images, "holds no images");
  const auto names = display_names(p.class_names, classes);

  // Deterministic selection: the first per_class images of each class in file order.
  std::vector<std::size_t> chosen;
  std::vector<int> taken(static_cast<std::size_t>(classes), 0);
  for (std::size_t i = 0; i < n; ++i) {
    const int l = labels.data[i];
    if (split.per_class > 0 && taken[std::size_t(l)] >= split.per_class) continue;
    ++taken[std::size_t(l)];
    chosen.push_back(i);
  }

  const fs::path partial = fs::path(p.out) / (split.name + ".partial");
  if (comm.is_root()) {
    io::ensure_writable_directory(p.out);
    std::error_code ec;
    fs::remove_all(partial, ec);
    for (int c = 0; c < classes; ++c)
      fs::create_directories(partial / folder_name(c, classes, names[std::size_t(c)]));
  }
  comm.barrier();

  const auto [begin, end] = comm.block_range(chosen.size());
  Progress progress(fmt::format("idx2folder {}", split.name), end - begin, "images");
  std::size_t failures = 0;
  std::string first_failure;
  std::atomic<std::uint64_t> written{0};
#pragma omp parallel
  {
    io::JpegCodec codec;
#pragma omp for schedule(dynamic, 64) reduction(+ : failures)
    for (std::uint64_t j = begin; j < end; ++j) {
      const std::size_t i = chosen[j];
      const int label = labels.data[i];
      io::Image img(cols, rows, 1);
      std::copy_n(images.data.begin() + static_cast<std::ptrdiff_t>(i * rows * cols),
                  rows * cols, img.pixels.begin());
      if (p.size != rows || p.size != cols) img = io::resize_bicubic(img, p.size, p.size);
      if (p.rgb) img = io::to_rgb(img);
      const std::string folder = folder_name(label, classes, names[std::size_t(label)]);
      const fs::path file = partial / folder / fmt::format("{}_{:06}.JPEG", folder, i);
      const auto bytes = codec.encode(img, {p.quality, false});
      std::ofstream out(file, std::ios::binary);
      out.write(reinterpret_cast<const char*>(bytes.data()),
                static_cast<std::streamsize>(bytes.size()));
      if (!out) {
        ++failures;
#pragma omp critical
        if (first_failure.empty()) first_failure = file.string();
      }
      const std::uint64_t done_now = written.fetch_add(1) + 1;
      if (omp_get_thread_num() == 0) progress.update(done_now);
    }
  }
  if (failures > 0)
    throw FileError(first_failure, fmt::format("cannot write ({} files failed; disk full?)", failures));
  progress.update(written.load());
  progress.finish();
  comm.barrier();
  if (comm.is_root()) {
    {
      std::ofstream cfg(partial / config_file.filename());
      cfg << config_ini;
      if (!cfg) throw FileError(partial / config_file.filename(), "cannot write");
    }
    std::error_code ec;
    fs::rename(partial, final_dir, ec);
    if (ec) throw FileError(final_dir, "cannot move the finished split into place: " + ec.message());
  }
  comm.barrier();
  log().info("{}: {} images in {} classes, {}x{} {} → {}", split.name, chosen.size(), classes,
             p.size, p.size, p.rgb ? "RGB" : "grey", final_dir.string());
  return chosen.size();
}

int run(dist::Communicator& comm, int argc, char** argv) {
  Idx2FolderParams p;
  OptionSet opts("kmim_idx2folder",
                 "Converts IDX image/label files (e.g. Fashion-MNIST from the Debian package\n"
                 "dataset-fashion-mnist) into an ImageNet-style JPEG folder tree:\n"
                 "  <out>/train/<class>/<class>_<index>.JPEG and <out>/val/...");
  opts.add("idx-dir", p.idx_dir, "folder with train-images-idx3-ubyte(.gz), train-labels-idx1-ubyte(.gz), t10k-*")
      .add("train-images", p.train_images, "training images IDX file (overrides --idx-dir)")
      .add("train-labels", p.train_labels, "training labels IDX file (overrides --idx-dir)")
      .add("val-images", p.val_images, "validation images IDX file (overrides --idx-dir; t10k-*)")
      .add("val-labels", p.val_labels, "validation labels IDX file (overrides --idx-dir)")
      .add_required("out", p.out, "output folder (created if missing)")
      .add("size", p.size, "output side in pixels (bicubic resize)")
      .add_flag("rgb", p.rgb, "write RGB JPEGs (grey replicated) instead of greyscale")
      .add("per-class-train", p.per_class_train, "at most this many training images per class (0 = all)")
      .add("per-class-val", p.per_class_val, "at most this many validation images per class (0 = all)")
      .add("class-names", p.class_names, "class naming: fashion-mnist, mnist or none")
      .add("quality", p.quality, "JPEG quality (1-100)")
      .add("threads", p.threads, "encoder threads per rank (0 = all cores)");
  if (!opts.parse(argc, argv)) return 0;
  opts.require("size", p.size >= 1 && p.size <= 4096, "must be between 1 and 4096");
  opts.require("quality", p.quality >= 1 && p.quality <= 100, "must be between 1 and 100");
  opts.require("per-class-train", p.per_class_train >= 0, "must be 0 (all) or positive");
  opts.require("per-class-val", p.per_class_val >= 0, "must be 0 (all) or positive");
  opts.require("threads", p.threads >= 0, "must be 0 (all cores) or positive");
  opts.require("class-names",
               p.class_names == "fashion-mnist" || p.class_names == "mnist" || p.class_names == "none",
               "expected fashion-mnist, mnist or none");
  if (p.threads > 0) omp_set_num_threads(p.threads);

  const std::vector<SplitInput> splits = {
      {"train", resolve_idx(p.train_images, p.idx_dir, "train-images-idx3-ubyte"),
       resolve_idx(p.train_labels, p.idx_dir, "train-labels-idx1-ubyte"), p.per_class_train},
      {"val", resolve_idx(p.val_images, p.idx_dir, "t10k-images-idx3-ubyte"),
       resolve_idx(p.val_labels, p.idx_dir, "t10k-labels-idx1-ubyte"), p.per_class_val}};
  // The stored configuration leaves out what does not change the output (threads).
  std::string config;
  for (const auto& [name, value] : opts.effective())
    if (name != "threads") config += fmt::format("{} = {}\n", name, value);

  std::size_t total = 0;
  for (const auto& split : splits) total += write_split(comm, p, split, config);
  if (comm.is_root()) {
    // The class table in the LOC_synset_mapping.txt form ("<folder> <display name>").
    const auto labels = io::read_idx(splits[0].labels);
    int classes = 0;
    for (std::uint8_t l : labels.data) classes = std::max(classes, int(l) + 1);
    const auto names = display_names(p.class_names, classes);
    std::string mapping;
    for (int c = 0; c < classes; ++c)
      mapping += fmt::format("{} {}\n", folder_name(c, classes, names[std::size_t(c)]),
                             names[std::size_t(c)]);
    io::write_text_file_atomic(fs::path(p.out) / "LOC_synset_mapping.txt", mapping);
    fmt::print("kmim_idx2folder: wrote {} images to {}\n", total, p.out);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return dist::run_program("kmim_idx2folder", argc, argv, run); }
