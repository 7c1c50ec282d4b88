// TCAS (SPEC §3) on hand-computed count matrices, and the TCAS tokenizers: label (exactly 0),
// random (≈ 1), pixel codebook (against a hand-written patch + nearest-centroid reference).
#define BOOST_TEST_MODULE eval_tcas
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <cstdint>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "kmim/core/error.hpp"
#include "kmim/core/rng.hpp"
#include "kmim/dist/mpi.hpp"
#include "kmim/eval/tcas.hpp"
#include "kmim/eval/tcas_report.hpp"
#include "kmim/eval/tcas_tokenizers.hpp"
#include "kmim/eval/token_class_counts.hpp"
#include "kmim/kmeans/assign.hpp"

using namespace kmim;
using namespace kmim::eval;

namespace {

struct MpiFixture {
  dist::MpiSession session;
};

bool throws_with(const std::function<void()>& f, const std::string& text) {
  try {
    f();
  } catch (const Error& e) {
    if (std::string(e.what()).find(text) != std::string::npos) return true;
    BOOST_TEST_MESSAGE("unexpected message: " << e.what());
    return false;
  }
  return false;
}

/// A synthetic evaluation set: n images of side `size`, label i % classes, random pixels.
struct SyntheticImages {
  int size;
  std::vector<std::uint8_t> pixels;
  std::vector<std::int32_t> labels;
  SyntheticImages(std::size_t n, int side, std::size_t classes, std::uint64_t seed) : size(side) {
    RandomStream rng(seed, 1);
    pixels.resize(n * static_cast<std::size_t>(side * side * 3));
    for (auto& p : pixels) p = static_cast<std::uint8_t>(rng.below(256));
    for (std::size_t i = 0; i < n; ++i) labels.push_back(static_cast<std::int32_t>(i % classes));
  }
  ImageReader reader() const {
    return [this](std::span<const std::uint64_t> idx, std::span<std::uint8_t> out) {
      const std::size_t bytes = static_cast<std::size_t>(size * size * 3);
      for (std::size_t i = 0; i < idx.size(); ++i)
        std::copy_n(pixels.begin() + static_cast<std::ptrdiff_t>(idx[i] * bytes), bytes,
                    out.begin() + static_cast<std::ptrdiff_t>(i * bytes));
    };
  }
};

std::vector<std::uint64_t> all_indices(std::size_t n) {
  std::vector<std::uint64_t> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = i;
  return v;
}

}  // namespace

BOOST_TEST_GLOBAL_FIXTURE(MpiFixture);

// 2 tokens × 2 classes, rows = tokens:      class0 class1
//   n = [[3, 1],                   token0:    3      1     N_0 = 4
//        [0, 4]]                   token1:    0      4     N_1 = 4      N = 8; N_c = (3, 5)
// α  = ½·(1 − (¾)² − (¼)²) + ½·(1 − 1²) = ½·(1 − 10/16) = 3/16 = 0.1875
// α₀ = 1 − (3/8)² − (5/8)² = 1 − 34/64 = 30/64 = 0.46875
// TCAS = 0.1875 / 0.46875 = 0.4
// purity = (3/4, 1), mean purity = (3 + 4)/8 = 0.875; perplexity = exp(ln 2) = 2; no dead tokens.
// NMI by hand: H(T) = ln 2 = 0.693147; H(C) = −(3/8 ln 3/8 + 5/8 ln 5/8) = 0.661563;
// H(C|T) = ½·H(¾, ¼) = ½·0.562335 = 0.281167; I = H(C) − H(C|T) = 0.380396;
// NMI = I / ((H(T) + H(C)) / 2) = 0.380396 / 0.677355 = 0.561590 (scikit-learn's
// normalized_mutual_info_score on the expanded label lists gives 0.5615896).
BOOST_AUTO_TEST_CASE(hand_computed_2x2) {
  const std::vector<std::int64_t> n = {3, 1, 0, 4};
  const TcasResult r = tcas_from_counts(n, 2, 2);
  BOOST_TEST(r.total == 8);
  BOOST_TEST(r.alpha == 0.1875, boost::test_tools::tolerance(1e-14));
  BOOST_TEST(r.alpha0 == 0.46875, boost::test_tools::tolerance(1e-14));
  BOOST_TEST(r.tcas == 0.4, boost::test_tools::tolerance(1e-14));
  BOOST_TEST(r.purity[0] == 0.75);
  BOOST_TEST(r.purity[1] == 1.0);
  BOOST_TEST(r.mean_purity == 0.875, boost::test_tools::tolerance(1e-14));
  BOOST_TEST(r.perplexity == 2.0, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(r.dead_tokens == 0u);
  BOOST_TEST(r.mutual_information == 0.380396, boost::test_tools::tolerance(1e-5));
  BOOST_TEST(r.nmi == 0.5615896, boost::test_tools::tolerance(1e-6));
}

// 3 tokens × 3 classes:
//   n = [[2, 2, 0],    N_t = (4, 4, 4), N = 12, N_c = (3, 5, 4)
//        [0, 3, 1],
//        [1, 0, 3]]
// token0: p(c|t) = (½, ½, 0)   → 1 − ½       = ½
// token1: p(c|t) = (0, ¾, ¼)   → 1 − 10/16   = 3/8
// token2: p(c|t) = (¼, 0, ¾)   → 3/8
// α  = ⅓·(½ + 3/8 + 3/8) = ⅓·(5/4) = 5/12 = 0.416667
// α₀ = 1 − (9 + 25 + 16)/144 = 94/144 = 47/72 = 0.652778
// TCAS = (5/12)/(47/72) = 30/47 = 0.638298
// purity = (½, ¾, ¾), mean purity = (2 + 3 + 3)/12 = ⅔; perplexity = 3 (uniform token use).
BOOST_AUTO_TEST_CASE(hand_computed_3x3) {
  const std::vector<std::int64_t> n = {2, 2, 0, 0, 3, 1, 1, 0, 3};
  const TcasResult r = tcas_from_counts(n, 3, 3);
  BOOST_TEST(r.alpha == 5.0 / 12.0, boost::test_tools::tolerance(1e-14));
  BOOST_TEST(r.alpha0 == 47.0 / 72.0, boost::test_tools::tolerance(1e-14));
  BOOST_TEST(r.tcas == 30.0 / 47.0, boost::test_tools::tolerance(1e-14));
  BOOST_TEST(r.purity[0] == 0.5);
  BOOST_TEST(r.purity[1] == 0.75);
  BOOST_TEST(r.purity[2] == 0.75);
  BOOST_TEST(r.mean_purity == 2.0 / 3.0, boost::test_tools::tolerance(1e-14));
  BOOST_TEST(r.perplexity == 3.0, boost::test_tools::tolerance(1e-12));
  // scikit-learn: normalized_mutual_info_score → 0.43343807741510365.
  BOOST_TEST(r.nmi == 0.4334380774, boost::test_tools::tolerance(1e-9));
}

BOOST_AUTO_TEST_CASE(dead_tokens_and_class_wise_tokens) {
  // Token 1 is dead; tokens 0 and 2 are pure: α = 0 exactly, TCAS = 0, NMI = 1 (token and
  // class determine each other on the used tokens).
  const std::vector<std::int64_t> n = {5, 0, 0, 0, 0, 7};
  const TcasResult r = tcas_from_counts(n, 3, 2);
  BOOST_TEST(r.dead_tokens == 1u);
  BOOST_TEST(std::isnan(r.purity[1]));
  BOOST_TEST(r.alpha == 0.0);
  BOOST_TEST(r.tcas == 0.0);
  BOOST_TEST(r.nmi == 1.0, boost::test_tools::tolerance(1e-12));
  // A tokenizer independent of class: every token has the class mix of the whole set → TCAS 1.
  const std::vector<std::int64_t> m = {10, 30, 20, 60, 5, 15};
  const TcasResult q = tcas_from_counts(m, 3, 2);
  BOOST_TEST(q.tcas == 1.0, boost::test_tools::tolerance(1e-12));
  BOOST_TEST(q.nmi == 0.0, boost::test_tools::tolerance(1e-12));
}

BOOST_AUTO_TEST_CASE(edge_cases_are_clear_errors) {
  const std::vector<std::int64_t> one_class = {4, 0, 0, 3, 0, 0};  // only class 0 occurs
  BOOST_TEST(throws_with([&] { tcas_from_counts(one_class, 2, 3); }, "only one class"));
  const std::vector<std::int64_t> zeros(6, 0);
  BOOST_TEST(throws_with([&] { tcas_from_counts(zeros, 2, 3); }, "all zeros"));
  BOOST_TEST(throws_with([&] { tcas_from_counts(zeros, 4, 2); }, "does not have the shape"));
  const std::vector<std::int64_t> negative = {1, -1, 2, 2};
  BOOST_TEST(throws_with([&] { tcas_from_counts(negative, 2, 2); }, "negative count"));
}

BOOST_AUTO_TEST_CASE(label_tokenizer_scores_exactly_zero) {
  const std::size_t classes = 10, n = 5000;
  SyntheticImages set(n, 16, classes, 3);
  // Unbalanced classes: drop most of class 3's images.
  std::vector<std::uint64_t> images;
  for (std::uint64_t i = 0; i < n; ++i)
    if (set.labels[i] != 3 || i % 7 == 0) images.push_back(i);
  LabelTokenizer label(classes, 196);
  const PatchTokenizer* views[] = {&label};
  dist::Communicator self(MPI_COMM_SELF);
  const auto counts = count_token_classes(images, set.labels, classes, set.size, set.reader(),
                                          views, self);
  const TcasResult r = tcas_from_counts(counts[0], classes, classes);
  BOOST_TEST(r.alpha == 0.0);  // exactly, not approximately
  BOOST_TEST(r.tcas == 0.0);
  BOOST_TEST(r.mean_purity == 1.0);
  BOOST_TEST(r.total == static_cast<std::int64_t>(images.size() * 196));
}

BOOST_AUTO_TEST_CASE(random_tokenizer_scores_about_one) {
  // Realistic size: 2000 images × 196 patches (ViT/16 on 224) = 392k patches, K = 100.
  const std::size_t classes = 10, n = 2000;
  SyntheticImages set(n, 8, classes, 4);
  RandomTokenizer random(100, 196, 11);
  RandomTokenizer random_k10(10, 196, 11);
  const PatchTokenizer* views[] = {&random, &random_k10};
  dist::Communicator self(MPI_COMM_SELF);
  const auto images = all_indices(n);
  const auto counts = count_token_classes(images, set.labels, classes, set.size, set.reader(),
                                          views, self);
  const TcasResult r = tcas_from_counts(counts[0], 100, classes);
  BOOST_TEST(std::abs(r.tcas - 1.0) <= 0.02, "random TCAS " << r.tcas);
  BOOST_TEST(r.dead_tokens == 0u);
  BOOST_TEST(r.perplexity > 99.0);  // uniform use of 100 tokens
  BOOST_TEST(r.nmi < 0.01);
  const TcasResult r10 = tcas_from_counts(counts[1], 10, classes);
  BOOST_TEST(std::abs(r10.tcas - 1.0) <= 0.02, "random K=10 TCAS " << r10.tcas);

  // Tokens depend on (seed, image index, patch) only, not on the batch the image comes in.
  std::vector<std::int32_t> whole(3 * 196), single(196);
  const std::uint64_t idx3[] = {5, 17, 1999};
  const std::int32_t lab3[] = {5, 7, 9};
  random.tokenize({{}, 8, idx3, lab3}, whole);
  const std::uint64_t idx1[] = {17};
  const std::int32_t lab1[] = {7};
  random.tokenize({{}, 8, idx1, lab1}, single);
  BOOST_TEST(std::equal(single.begin(), single.end(), whole.begin() + 196));
}

BOOST_AUTO_TEST_CASE(pixel_codebook_tokenizer_matches_reference) {
  // 20×20 RGB images, crop 12 (centre offset round(8/2) = 4), patch 4 → 9 patches of 48 values.
  const int side = 20, crop = 12, patch = 4;
  const std::size_t classes = 3, n = 40, k = 7, d = 48;
  SyntheticImages set(n, side, classes, 5);
  PixelCodebook cb;
  cb.file = "synthetic.h5";
  cb.k = k;
  cb.d = d;
  cb.geometry = kmeans::PatchGeometry{crop, patch, 3};
  cb.normalization = kmeans::PixelNormalization::imagenet();
  RandomStream rng(9, 2);
  for (std::size_t i = 0; i < k * d; ++i) cb.centroids.push_back(static_cast<float>(rng.normal()));
  const auto centroids = cb.centroids;
  const auto norm = cb.normalization;
  PixelCodebookTokenizer tokenizer(cb, side, "codebook_k7");
  BOOST_TEST(tokenizer.patches_per_image() == 9);

  const auto images = all_indices(n);
  std::vector<std::int32_t> tokens(n * 9);
  tokenizer.tokenize({set.pixels, side, images, set.labels}, tokens);

  // Reference: patches by hand from the definition in patches.hpp, nearest centroid by exact
  // double distance (ties: lowest index). The tokenizer promises exactly this answer.
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint8_t* img = set.pixels.data() + i * side * side * 3;
    for (int ty = 0; ty < 3; ++ty)
      for (int tx = 0; tx < 3; ++tx) {
        std::vector<double> v;
        for (int py = 0; py < patch; ++py)
          for (int px = 0; px < patch; ++px)
            for (int ch = 0; ch < 3; ++ch) {
              const int y = 4 + ty * patch + py, x = 4 + tx * patch + px;
              v.push_back(norm.apply(img[(y * side + x) * 3 + ch], ch));
            }
        double best = 1e300;
        int best_j = -1;
        for (std::size_t j = 0; j < k; ++j) {
          double s = 0;
          for (std::size_t t = 0; t < d; ++t) {
            const double diff = v[t] - double(centroids[j * d + t]);
            s += diff * diff;
          }
          if (s < best) {
            best = s;
            best_j = static_cast<int>(j);
          }
        }
        BOOST_TEST(tokens[i * 9 + static_cast<std::size_t>(ty * 3 + tx)] == best_j);
      }
  }
}

BOOST_AUTO_TEST_CASE(nearest_centroid_is_exact_on_ties_and_near_ties) {
  // Centroids with exact duplicates (tie → lowest index) and 1-ulp perturbations (a float
  // argmin of the expanded formula cannot separate them; the exact distance can).
  const std::size_t n = 3000, d = 96, k = 40;
  RandomStream rng(31, 3);
  std::vector<float> c(k * d), x(n * d);
  for (std::size_t j = 0; j < 10; ++j)
    for (std::size_t t = 0; t < d; ++t) c[j * d + t] = static_cast<float>(rng.normal());
  for (std::size_t j = 10; j < k; ++j) {
    const std::size_t src = j % 10;
    for (std::size_t t = 0; t < d; ++t) c[j * d + t] = c[src * d + t];
    if (j >= 20) {  // nudge one coordinate by one ulp (or a few)
      const std::size_t t = (j * 7) % d;
      c[j * d + t] = std::nextafter(c[j * d + t], j % 2 ? 100.0f : -100.0f);
    }
  }
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t src = rng.below(10);
    for (std::size_t t = 0; t < d; ++t)
      x[i * d + t] = c[src * d + t] + static_cast<float>(0.05 * rng.normal());
  }
  std::vector<double> cn(k);
  for (std::size_t j = 0; j < k; ++j)
    for (std::size_t t = 0; t < d; ++t) cn[j] += double(c[j * d + t]) * c[j * d + t];
  std::vector<std::int32_t> fast(n), ref(n);
  std::vector<float> dist(n);
  nearest_centroid_exact(x.data(), n, d, c.data(), k, cn.data(), fast.data());
  kmeans::assign_nearest_centroid_reference(x.data(), n, d, c.data(), k, ref.data(), dist.data());
  BOOST_TEST(fast == ref, boost::test_tools::per_element());
  // Blocking does not matter: one row at a time gives the same answer.
  for (std::size_t i = 0; i < n; i += 97) {
    std::int32_t one = -1;
    nearest_centroid_exact(x.data() + i * d, 1, d, c.data(), k, cn.data(), &one);
    BOOST_TEST(one == ref[i]);
  }
}

BOOST_AUTO_TEST_CASE(codebook_that_does_not_fit_the_images_is_refused) {
  PixelCodebook cb;
  cb.file = "cb.h5";
  cb.k = 2;
  cb.geometry = kmeans::PatchGeometry{72, 8, 3};
  cb.d = cb.geometry.dim();
  cb.centroids.assign(cb.k * cb.d, 0.0f);
  BOOST_TEST(throws_with([&] { PixelCodebookTokenizer(cb, 64, "x"); },
                         "file 'cb.h5': crop 72 is larger than the stored images (64×64)"));
  cb.geometry = kmeans::PatchGeometry{56, 8, 1};
  cb.d = cb.geometry.dim();
  cb.centroids.assign(cb.k * cb.d, 0.0f);
  BOOST_TEST(throws_with([&] { PixelCodebookTokenizer(cb, 64, "x"); }, "1-channel"));
  cb.geometry = kmeans::PatchGeometry{56, 8, 3};
  cb.d = cb.geometry.dim();  // 192, but only 128 values stored
  BOOST_TEST(throws_with([&] { PixelCodebookTokenizer(cb, 64, "x"); }, "holds 128 centroid values"));
  cb.d = 100;
  cb.centroids.assign(cb.k * cb.d, 0.0f);
  BOOST_TEST(throws_with([&] { PixelCodebookTokenizer(cb, 64, "x"); }, "gives 192"));
}

BOOST_AUTO_TEST_CASE(per_class_sample_is_deterministic) {
  std::vector<std::int32_t> labels;
  for (int i = 0; i < 1000; ++i) labels.push_back(i % 3 == 0 ? 0 : (i % 3 == 1 ? 1 : 2));
  for (int i = 0; i < 10; ++i) labels.push_back(3);  // a small class: all kept
  const auto a = select_evaluation_images(labels, 4, 50, 7);
  const auto b = select_evaluation_images(labels, 4, 50, 7);
  const auto c = select_evaluation_images(labels, 4, 50, 8);
  BOOST_TEST(a == b);
  BOOST_TEST(a != c);
  BOOST_TEST(a.size() == 160u);
  BOOST_TEST(std::is_sorted(a.begin(), a.end()));
  std::vector<int> per_class(4, 0);
  for (auto i : a) ++per_class[static_cast<std::size_t>(labels[i])];
  BOOST_TEST(per_class == std::vector<int>({50, 50, 50, 10}), boost::test_tools::per_element());
  BOOST_TEST(select_evaluation_images(labels, 4, 0, 7).size() == labels.size());
  BOOST_TEST(throws_with([&] { select_evaluation_images(labels, 3, 0, 7); }, "outside [0, 3)"));
}

BOOST_AUTO_TEST_CASE(table_names_the_lowest_codebook) {
  std::vector<TokenizerTcas> reports(4);
  const double values[] = {0.6, 0.0, 0.45, 0.999};
  const char* kinds[] = {"codebook", "label", "codebook", "random"};
  const char* names[] = {"codebook_k10", "label", "codebook_k50", "random_k50"};
  for (std::size_t i = 0; i < 4; ++i) {
    reports[i].name = names[i];
    reports[i].kind = kinds[i];
    reports[i].source = std::string(names[i]) + ".h5";
    reports[i].result.tcas = values[i];
  }
  BOOST_TEST(recommended_codebook(reports) == 2);
  const std::string table = format_tcas_table(reports);
  BOOST_TEST(table.find("recommended codebook: codebook_k50.h5") != std::string::npos);
  // Sorted by TCAS: label, codebook_k50, codebook_k10, random.
  BOOST_TEST(table.find("label") < table.find("codebook_k50"));
  BOOST_TEST(table.find("codebook_k50") < table.find("codebook_k10"));
  BOOST_TEST(table.find("codebook_k10") < table.find("random_k50"));
}
