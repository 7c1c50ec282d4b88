// Helper for tests/kmeans/test_kmeans_program.sh (not a product program):
//   kmeans_test_tool features FILE N D [nan|empty|onedim|float64|blobs]  writes a feature file
//   kmeans_test_tool compare A.h5 B.h5 RTOL   exit 0 when the codebooks' centroids agree
//                                             (RTOL 0: bit-identical), 1 otherwise
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>
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
    if (command == "features" && argc >= 5) {
      const std::string file = argv[2];
      const auto n = static_cast<std::size_t>(std::atoll(argv[3]));
      const auto d = static_cast<std::size_t>(std::atoll(argv[4]));
      const std::string variant = argc > 5 ? argv[5] : "blobs";
      kmim::RandomStream rng(1, 2);
      std::vector<float> x(n * d);
      for (std::size_t i = 0; i < n; ++i)
        for (std::size_t t = 0; t < d; ++t)
          x[i * d + t] = static_cast<float>(rng.normal() + 20.0 * static_cast<double>((i % 5) == t % 5));
      const kmim::io::H5Object f = kmim::io::create_file(file);
      if (variant == "nan") x[(n / 2) * d + 1] = NAN;
      if (variant == "empty") {
        f.create_dataset<float>("features", {0, d});
      } else if (variant == "onedim") {
        f.write_dataset<float>("features", x, {n * d});
      } else if (variant == "float64") {
        std::vector<double> xd(x.begin(), x.end());
        f.write_dataset<double>("features", xd, {n, d});
      } else {
        f.write_dataset<float>("features", x, {n, d});
      }
      return 0;
    }
    if (command == "compare" && argc == 5) {
      const auto a = kmim::kmeans::Codebook::load(argv[2]);
      const auto b = kmim::kmeans::Codebook::load(argv[3]);
      const double rtol = std::atof(argv[4]);
      if (a.centroids.size() != b.centroids.size()) {
        std::cerr << "different shapes\n";
        return 1;
      }
      double worst = 0;
      for (std::size_t j = 0; j < a.k; ++j) {
        double diff = 0, norm = 0;
        for (std::size_t t = 0; t < a.d; ++t) {
          diff += std::pow(double(a.centroids[j * a.d + t]) - b.centroids[j * a.d + t], 2);
          norm += std::pow(double(b.centroids[j * a.d + t]), 2);
        }
        worst = std::max(worst, std::sqrt(diff) / std::max(std::sqrt(norm), 1e-3));
      }
      std::cout << "largest relative centroid difference: " << worst << "\n";
      return (rtol == 0 ? worst == 0 : worst <= rtol) ? 0 : 1;
    }
    std::cerr << "usage: kmeans_test_tool features FILE N D [variant] | compare A B RTOL\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "kmeans_test_tool: " << e.what() << "\n";
    return 2;
  }
}
