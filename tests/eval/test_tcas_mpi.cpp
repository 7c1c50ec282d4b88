// TCAS counting over MPI ranks: the count matrices summed over any number of ranks equal the
// single-process counts (pixel codebook, label and random tokenizers; uneven blocks).
#define BOOST_TEST_MODULE eval_tcas_mpi
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "kmim/core/rng.hpp"
#include "kmim/dist/mpi.hpp"
#include "kmim/eval/tcas.hpp"
#include "kmim/eval/tcas_tokenizers.hpp"
#include "kmim/eval/token_class_counts.hpp"

using namespace kmim;
using namespace kmim::eval;

namespace {
struct MpiFixture {
  dist::MpiSession session;
};
}  // namespace

BOOST_TEST_GLOBAL_FIXTURE(MpiFixture);

BOOST_AUTO_TEST_CASE(counts_do_not_depend_on_rank_count) {
  const int side = 16;
  const std::size_t n = 203, classes = 4;  // 203 images: blocks differ in size across ranks
  RandomStream rng(21, 1);
  std::vector<std::uint8_t> pixels(n * side * side * 3);
  for (auto& p : pixels) p = static_cast<std::uint8_t>(rng.below(256));
  std::vector<std::int32_t> labels(n);
  for (std::size_t i = 0; i < n; ++i) labels[i] = static_cast<std::int32_t>(rng.below(classes));
  const ImageReader reader = [&](std::span<const std::uint64_t> idx, std::span<std::uint8_t> out) {
    const std::size_t bytes = side * side * 3;
    for (std::size_t i = 0; i < idx.size(); ++i)
      std::copy_n(pixels.begin() + static_cast<std::ptrdiff_t>(idx[i] * bytes), bytes,
                  out.begin() + static_cast<std::ptrdiff_t>(i * bytes));
  };
  PixelCodebook cb;
  cb.file = "synthetic.h5";
  cb.k = 12;
  cb.geometry = kmeans::PatchGeometry{16, 4, 3};
  cb.d = cb.geometry.dim();
  cb.normalization = kmeans::PixelNormalization::none();
  for (std::size_t i = 0; i < cb.k * cb.d; ++i) cb.centroids.push_back(static_cast<float>(rng.uniform()));
  PixelCodebookTokenizer pixel(cb, side, "codebook_k12");
  LabelTokenizer label(classes, 16);
  RandomTokenizer random(9, 16, 5);
  const PatchTokenizer* views[] = {&pixel, &label, &random};
  // A per-class sample, so that the image list is not 0..n-1.
  const auto images = select_evaluation_images(labels, classes, 40, 3);

  dist::Communicator world;
  dist::Communicator self(MPI_COMM_SELF);
  CountOptions opts;
  opts.batch_images = 7;
  const auto distributed = count_token_classes(images, labels, classes, side, reader, views, world, opts);
  const auto local = count_token_classes(images, labels, classes, side, reader, views, self, opts);
  for (std::size_t t = 0; t < 3; ++t) {
    BOOST_TEST(distributed[t] == local[t], boost::test_tools::per_element());
    std::int64_t total = 0;
    for (auto v : distributed[t]) total += v;
    BOOST_TEST(total == static_cast<std::int64_t>(images.size() * 16));
  }
  BOOST_TEST(tcas_from_counts(distributed[1], classes, classes).tcas == 0.0);
}
