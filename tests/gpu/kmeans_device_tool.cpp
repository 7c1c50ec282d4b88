// Helper for tests/gpu/test_kmeans_program_device.sh (not a product program):
//   kmeans_device_tool features FILE N D          writes float32 /features [N, D]: seeded blobs
//   kmeans_device_tool duplicate OUT.h5 CODEBOOK.h5  writes /centroids of CODEBOOK with the last two
//       replaced by copies of centroid 0 (as --init-centroids: two clusters empty in iteration 1)
//   kmeans_device_tool compare A.h5 B.h5 RTOL MOVES
//       exit 0 when the codebooks' centroids agree within RTOL (per centroid: ||a - b|| / ||b||,
//       RTOL 0: bit-identical) and their cluster sizes differ by at most MOVES vectors in total
//       (Σ|size_a − size_b| / 2: vectors that changed cluster, i.e. near-ties); prints both.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "kmim/core/rng.hpp"
#include "kmim/dist/mpi.hpp"
#include "kmim/io/hdf5.hpp"
#include "kmim/kmeans/codebook.hpp"

int main(int argc, char** argv) {
  kmim::dist::MpiSession session(argc, argv);
  try {
    const std::string command = argc > 1 ? argv[1] : "";
    if (command == "features" && argc == 5) {
      const auto n = static_cast<std::size_t>(std::atoll(argv[3]));
      const auto d = static_cast<std::size_t>(std::atoll(argv[4]));
      // 12 blobs (offset 8 in one of the first 12 components, plus unit noise): well separated,
      // so that k = 12 Lloyd runs reach the same fixed point on both devices within ~40 iterations.
      kmim::RandomStream rng(7, 11);
      std::vector<float> x(n * d);
      for (std::size_t i = 0; i < n; ++i)
        for (std::size_t t = 0; t < d; ++t)
          x[i * d + t] = static_cast<float>(rng.normal() + 8.0 * static_cast<double>((i % 12) == t % 12) + 0.5);
      const kmim::io::H5Object f = kmim::io::create_file(argv[2]);
      f.write_dataset<float>("features", x, {n, d});
      return 0;
    }
    if (command == "duplicate" && argc == 4) {
      const auto book = kmim::kmeans::Codebook::load(argv[3]);
      std::vector<float> c = book.centroids;
      for (std::size_t j = book.k - 2; j < book.k; ++j)
        std::copy(c.begin(), c.begin() + static_cast<std::ptrdiff_t>(book.d),
                  c.begin() + static_cast<std::ptrdiff_t>(j * book.d));
      const kmim::io::H5Object f = kmim::io::create_file(argv[2]);
      f.write_dataset<float>("centroids", c, {book.k, book.d});
      return 0;
    }
    if (command == "compare" && argc == 6) {
      const auto a = kmim::kmeans::Codebook::load(argv[2]);
      const auto b = kmim::kmeans::Codebook::load(argv[3]);
      const double rtol = std::atof(argv[4]);
      const long long max_moves = std::atoll(argv[5]);
      if (a.k != b.k || a.d != b.d || a.cluster_sizes.size() != b.cluster_sizes.size()) {
        std::printf("different shapes\n");
        return 1;
      }
      double worst = 0;
      bool identical = true;
      for (std::size_t j = 0; j < a.k; ++j) {
        double diff = 0, norm = 0;
        for (std::size_t t = 0; t < a.d; ++t) {
          const double u = a.centroids[j * a.d + t], v = b.centroids[j * a.d + t];
          identical = identical && u == v;
          diff += (u - v) * (u - v);
          norm += v * v;
        }
        worst = std::max(worst, std::sqrt(diff) / std::max(std::sqrt(norm), 1e-6));
      }
      long long moved = 0;
      for (std::size_t j = 0; j < a.k; ++j) moved += std::llabs(a.cluster_sizes[j] - b.cluster_sizes[j]);
      moved /= 2;
      std::printf("worst relative centroid difference %.3e (tolerance %.1e), %lld vectors changed cluster "
                  "(at most %lld), iterations %d / %d\n",
                  worst, rtol, moved, max_moves, a.iterations, b.iterations);
      const bool centroids_ok = rtol == 0 ? identical : worst <= rtol;
      return centroids_ok && moved <= max_moves ? 0 : 1;
    }
    std::fprintf(stderr, "usage: kmeans_device_tool features FILE N D | compare A B RTOL MOVES\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "kmeans_device_tool: %s\n", e.what());
    return 1;
  }
}
