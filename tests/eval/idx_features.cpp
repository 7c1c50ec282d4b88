// Test helper: writes a kmim feature file (docs/eval.md) from IDX images and labels, the first
// --count images (after --skip) of the files, features = pixels / 255 (float32, one row of
// rows × cols values per image). Used by the Fashion-MNIST linear-probe e2e test.
//
//   kmim_test_idx_features --images train-images-idx3-ubyte.gz --labels train-labels-idx1-ubyte.gz
//                          --count 10000 --out train.h5 [--skip 0] [--drop-labels 1]
// --drop-labels N writes N labels fewer than features (a malformed file for error tests).
#include <algorithm>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "kmim/core/error.hpp"
#include "kmim/core/options.hpp"
#include "kmim/dist/program.hpp"
#include "kmim/eval/feature_file.hpp"
#include "kmim/io/atomic_output.hpp"
#include "kmim/io/hdf5.hpp"
#include "kmim/io/idx.hpp"

using namespace kmim;

namespace {

struct IdxFeaturesParams {
  std::string images;
  std::string labels;
  std::string out;
  std::size_t count = 0;  // 0: all images after --skip
  std::size_t skip = 0;
  std::size_t drop_labels = 0;
};

int run(dist::Communicator&, int argc, char** argv) {
  IdxFeaturesParams p;
  OptionSet opts("kmim_test_idx_features", "IDX images → kmim feature file (pixels / 255).");
  opts.add_required("images", p.images, "IDX image file")
      .add_required("labels", p.labels, "IDX label file")
      .add_required("out", p.out, "feature file to write")
      .add("count", p.count, "images to use (0: all)")
      .add("skip", p.skip, "images to skip first")
      .add("drop-labels", p.drop_labels, "write this many labels fewer (malformed output)");
  if (!opts.parse(argc, argv)) return 0;
  const io::IdxArray images = io::read_idx(p.images);
  const io::IdxArray labels = io::read_idx(p.labels);
  if (images.dims.size() != 3 || labels.dims.size() != 1 || images.dims[0] != labels.dims[0])
    throw FileError(p.images, "expected [n, rows, cols] images matching a [n] label file");
  const std::size_t total = images.dims[0];
  const std::size_t dim = std::size_t{images.dims[1]} * images.dims[2];
  if (p.skip >= total) throw OptionError("skip", std::to_string(p.skip), "skips every image");
  const std::size_t n = p.count == 0 ? total - p.skip : std::min(p.count, total - p.skip);
  std::vector<float> features(n * dim);
  std::vector<std::int32_t> y(n);
  int classes = 0;
  for (std::size_t i = 0; i < n; ++i) {
    for (std::size_t t = 0; t < dim; ++t)
      features[i * dim + t] = static_cast<float>(images.data[(p.skip + i) * dim + t]) / 255.0f;
    y[i] = labels.data[p.skip + i];
    classes = std::max(classes, y[i] + 1);
  }
  for (std::uint8_t l : labels.data) classes = std::max(classes, int(l) + 1);
  if (p.drop_labels == 0) {
    eval::write_feature_file(p.out, features, n, dim, y, classes, "kmim_test_idx_features",
                             opts.effective_ini());
  } else {
    io::AtomicOutput out(p.out);
    {
      const io::H5Object root = io::create_file(out.temp_path());
      root.write_dataset<float>("features", features, {n, dim});
      const std::size_t kept = n - std::min(n, p.drop_labels);
      root.write_dataset<std::int32_t>("labels", std::span<const std::int32_t>(y.data(), kept), {kept});
    }
    out.commit();
  }
  fmt::print("{}: {} features of dimension {}, {} classes\n", p.out, n, dim, classes);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return dist::run_program("kmim_test_idx_features", argc, argv, run);
}
