// Benchmark inputs for bench/kmeans/run_bench.sh (not a test):
//   make_bench_data fmnist OUT.h5 IDX_DIR PATCH    Fashion-MNIST training images (read with
//       kmim::io::read_idx) cut into non-overlapping PATCH×PATCH grey patches with
//       kmim::kmeans::extract_patches (x/255, no normalisation): [60000·(28/PATCH)², PATCH²]
//   make_bench_data synthetic OUT.h5 N D           N vectors of a seeded mixture of 100 Gaussians in D
//   make_bench_data init DATA.h5 OUT.h5 K SEED     K rows of DATA's /features with distinct values
//       (seeded random order; duplicate patches such as blank background are skipped, so no
//       method starts with empty clusters) as /centroids
#include <algorithm>
#include <cstdio>
#include <set>
#include <stdexcept>
#include <cstdlib>
#include <string>
#include <vector>

#include "kmim/core/rng.hpp"
#include "kmim/dist/mpi.hpp"
#include "kmim/io/hdf5.hpp"
#include "kmim/io/idx.hpp"
#include "kmim/kmeans/patches.hpp"
#include "kmim/kmeans/permutation.hpp"

using namespace kmim;

int main(int argc, char** argv) {
  dist::MpiSession session(argc, argv);
  try {
    const std::string what = argc > 1 ? argv[1] : "";
    if (what == "fmnist" && argc == 5) {
      const io::IdxArray images = io::read_idx(std::string(argv[3]) + "/train-images-idx3-ubyte.gz");
      const int patch = std::atoi(argv[4]);
      const std::size_t n = images.dims[0];
      const int side = static_cast<int>(images.dims[1]);
      const kmeans::PatchGeometry g{side - side % patch, patch, 1};
      const std::size_t per = static_cast<std::size_t>(g.patches_per_image());
      std::vector<float> x(n * per * g.dim());
      for (std::size_t i = 0; i < n; ++i)
        kmeans::extract_patches(images.data.data() + i * static_cast<std::size_t>(side * side), side, side, g,
                                kmeans::PixelNormalization::none(), {}, x.data() + i * per * g.dim());
      io::create_file(argv[2]).write_dataset<float>("features", x, {n * per, g.dim()});
      std::printf("%zu patch vectors of %zu values\n", n * per, g.dim());
      return 0;
    }
    if (what == "synthetic" && argc == 5) {
      const auto n = static_cast<std::size_t>(std::atoll(argv[3]));
      const auto d = static_cast<std::size_t>(std::atoll(argv[4]));
      RandomStream rng(123, 1);
      std::vector<float> centres(100 * d);
      for (auto& c : centres) c = static_cast<float>(3.0 * rng.normal());
      std::vector<float> x(n * d);
      for (std::size_t i = 0; i < n; ++i) {
        const std::size_t c = rng.below(100);
        for (std::size_t t = 0; t < d; ++t) x[i * d + t] = centres[c * d + t] + static_cast<float>(rng.normal());
      }
      io::create_file(argv[2]).write_dataset<float>("features", x, {n, d});
      return 0;
    }
    if (what == "init" && argc == 6) {
      const io::H5Object f = io::open_file(argv[2]);
      const io::H5Dataset data = f.dataset("features");
      const auto dims = data.dims();
      const auto k = static_cast<std::size_t>(std::atoll(argv[4]));
      kmeans::IndexPermutation pick(dims[0], std::strtoull(argv[5], nullptr, 10), 77);
      std::vector<float> c(k * dims[1]);
      std::set<std::vector<float>> seen;
      std::vector<float> row(dims[1]);
      std::size_t j = 0;
      for (std::uint64_t p = 0; j < k && p < dims[0]; ++p) {
        data.read_rows<float>(pick(p), 1, row);
        if (!seen.insert(row).second) continue;
        std::copy(row.begin(), row.end(), c.begin() + static_cast<std::ptrdiff_t>(j * dims[1]));
        ++j;
      }
      if (j < k) throw std::runtime_error("fewer distinct rows than K");
      io::create_file(argv[3]).write_dataset<float>("centroids", c, {k, dims[1]});
      return 0;
    }
    std::fprintf(stderr, "usage: see the header of make_bench_data.cpp\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "make_bench_data: %s\n", e.what());
    return 1;
  }
}
