// Unit tests of kmim/model/masking.hpp (random masking, gather, unshuffle with mask tokens and
// their backward passes) and kmim/model/pos_embed.hpp (2-D sin-cos values).
#include <algorithm>
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "finite_difference.hpp"
#include "kmim/core/rng.hpp"
#include "kmim/model/masking.hpp"
#include "kmim/model/pos_embed.hpp"

namespace km = kmim::model;

namespace {

std::vector<float> uniform_noise(std::size_t n, std::uint64_t stream) {
  kmim::RandomStream rng(77, stream);
  std::vector<float> v(n);
  for (float& x : v) x = rng.uniform();
  return v;
}

std::vector<double> random_values(std::size_t n, std::uint64_t stream) {
  kmim::RandomStream rng(78, stream);
  std::vector<double> v(n);
  for (double& x : v) x = rng.uniform(-1.0, 1.0);
  return v;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(masking)

BOOST_AUTO_TEST_CASE(keep_count_truncates_like_python_int) {
  BOOST_CHECK_EQUAL(km::masking_keep_count(196, 0.75), 49);
  BOOST_CHECK_EQUAL(km::masking_keep_count(64, 0.75), 16);
  BOOST_CHECK_EQUAL(km::masking_keep_count(10, 0.75), 2);  // int(2.5)
  BOOST_CHECK_EQUAL(km::masking_keep_count(49, 0.6), 19);  // int(19.6)
  BOOST_CHECK_EQUAL(km::masking_keep_count(16, 0.0), 16);
}

BOOST_AUTO_TEST_CASE(random_masking_keeps_the_lowest_noise_and_restores_order) {
  const int batch = 3, l = 16, keep = 4;
  const std::vector<float> noise = uniform_noise(batch * l, 1);
  std::vector<std::int32_t> shuffle(batch * l), restore(batch * l);
  std::vector<double> mask(batch * l);
  km::random_masking(shuffle.data(), restore.data(), mask.data(), noise.data(), batch, l, keep);
  for (int b = 0; b < batch; ++b) {
    // exactly L - keep removed patches per sample
    int ones = 0;
    for (int i = 0; i < l; ++i) ones += mask[b * l + i] == 1.0 ? 1 : 0;
    BOOST_CHECK_EQUAL(ones, l - keep);
    // ids_shuffle sorts the noise ascending; ids_restore is its inverse
    for (int i = 1; i < l; ++i) {
      BOOST_CHECK_LE(noise[b * l + shuffle[b * l + i - 1]], noise[b * l + shuffle[b * l + i]]);
    }
    for (int i = 0; i < l; ++i) BOOST_CHECK_EQUAL(restore[b * l + shuffle[b * l + i]], i);
    // the kept patches are the keep smallest noise values
    std::vector<float> sorted(noise.begin() + b * l, noise.begin() + (b + 1) * l);
    std::sort(sorted.begin(), sorted.end());
    for (int i = 0; i < l; ++i) {
      const bool kept = noise[b * l + i] < sorted[keep];
      BOOST_CHECK_EQUAL(mask[b * l + i], kept ? 0.0 : 1.0);
    }
  }
}

BOOST_AUTO_TEST_CASE(random_masking_is_stable_for_equal_noise) {
  const std::vector<float> noise = {0.5f, 0.1f, 0.5f, 0.1f};
  std::vector<std::int32_t> shuffle(4), restore(4);
  std::vector<float> mask(4);
  km::random_masking(shuffle.data(), restore.data(), mask.data(), noise.data(), 1, 4, 2);
  BOOST_CHECK((shuffle == std::vector<std::int32_t>{1, 3, 0, 2}));
  BOOST_CHECK((mask == std::vector<float>{1, 0, 1, 0}));
}

BOOST_AUTO_TEST_CASE(unshuffle_of_gather_restores_visible_tokens_and_places_mask_tokens) {
  const int batch = 2, l = 9, keep = 3, c = 5;
  const std::vector<float> noise = uniform_noise(batch * l, 2);
  std::vector<std::int32_t> shuffle(batch * l), restore(batch * l);
  std::vector<double> mask(batch * l);
  km::random_masking(shuffle.data(), restore.data(), mask.data(), noise.data(), batch, l, keep);

  const std::vector<double> x = random_values(batch * l * c, 3);
  const std::vector<double> cls = random_values(batch * c, 4);
  const std::vector<double> mask_token = random_values(c, 5);
  std::vector<double> kept(batch * keep * c);
  km::gather_kept_forward(kept.data(), x.data(), shuffle.data(), batch, l, keep, c);
  std::vector<double> with_cls(batch * (1 + keep) * c);
  for (int b = 0; b < batch; ++b) {
    std::copy_n(cls.begin() + b * c, c, with_cls.begin() + b * (1 + keep) * c);
    std::copy_n(kept.begin() + b * keep * c, keep * c, with_cls.begin() + (b * (1 + keep) + 1) * c);
  }
  std::vector<double> full(batch * (1 + l) * c);
  km::unshuffle_with_mask_tokens_forward(full.data(), with_cls.data(), mask_token.data(),
                                         restore.data(), batch, l, keep, c);
  for (int b = 0; b < batch; ++b) {
    for (int k = 0; k < c; ++k) BOOST_CHECK_EQUAL(full[b * (1 + l) * c + k], cls[b * c + k]);
    for (int i = 0; i < l; ++i) {
      const double* row = full.data() + (b * (1 + l) + 1 + i) * c;
      const double* expected =
          mask[b * l + i] == 0.0 ? x.data() + (b * l + i) * c : mask_token.data();
      for (int k = 0; k < c; ++k) BOOST_CHECK_EQUAL(row[k], expected[k]);
    }
  }
}

BOOST_AUTO_TEST_CASE(gather_and_unshuffle_backward_are_the_adjoints) {
  // For a linear map A, backward(dy) must be A^T dy: <A x, y> = <x, A^T y> for random x, y.
  const int batch = 2, l = 8, keep = 2, c = 3;
  const std::vector<float> noise = uniform_noise(batch * l, 6);
  std::vector<std::int32_t> shuffle(batch * l), restore(batch * l);
  std::vector<double> mask(batch * l);
  km::random_masking(shuffle.data(), restore.data(), mask.data(), noise.data(), batch, l, keep);

  const std::vector<double> x = random_values(batch * l * c, 7);
  const std::vector<double> y = random_values(batch * keep * c, 8);
  std::vector<double> ax(y.size()), aty(x.size(), 5.0);
  km::gather_kept_forward(ax.data(), x.data(), shuffle.data(), batch, l, keep, c);
  km::gather_kept_backward(aty.data(), y.data(), shuffle.data(), batch, l, keep, c);
  BOOST_CHECK_CLOSE(km::testing::dot(ax, y), km::testing::dot(x, aty), 1e-10);

  // Unshuffle is affine in (tokens, mask_token): check both parts, and against differences.
  std::vector<double> tokens = random_values(batch * (1 + keep) * c, 9);
  std::vector<double> mask_token = random_values(c, 10);
  const std::vector<double> r = random_values(batch * (1 + l) * c, 11);
  std::vector<double> out(r.size());
  auto objective = [&] {
    km::unshuffle_with_mask_tokens_forward(out.data(), tokens.data(), mask_token.data(),
                                           restore.data(), batch, l, keep, c);
    return km::testing::dot(out, r);
  };
  std::vector<double> d_tokens(tokens.size(), 3.0), d_mask_token(c, 0.0);
  km::unshuffle_with_mask_tokens_backward(d_tokens.data(), d_mask_token.data(), r.data(),
                                          restore.data(), batch, l, keep, c);
  BOOST_CHECK_EQUAL(
      km::testing::check_gradient("unshuffle d_tokens", d_tokens.data(), tokens.data(),
                                  km::testing::all_coordinates(tokens.size()), objective),
      0);
  BOOST_CHECK_EQUAL(
      km::testing::check_gradient("unshuffle d_mask_token", d_mask_token.data(), mask_token.data(),
                                  km::testing::all_coordinates(c), objective),
      0);
}

BOOST_AUTO_TEST_CASE(random_masking_rejects_bad_keep) {
  std::vector<float> noise(4, 0.5f);
  std::vector<std::int32_t> s(4), r(4);
  std::vector<float> m(4);
  BOOST_CHECK_THROW(km::random_masking(s.data(), r.data(), m.data(), noise.data(), 1, 4, 5),
                    std::invalid_argument);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(position_embedding)

BOOST_AUTO_TEST_CASE(sincos_2d_matches_the_mae_formula) {
  // D = 8 on a 4x4 grid: each half has 4 dims = 2 sin + 2 cos with omega = 1, 1/100
  // (10000^(-k/2)). Patch 6 sits at row 1, col 2; the FIRST half encodes the column (MAE's
  // meshgrid(grid_w, grid_h) puts w in grid[0]). Its row in the table (CLS first) is 7.
  const std::vector<double> table = km::sincos_2d_position_embedding(8, 4, true);
  BOOST_REQUIRE_EQUAL(table.size(), 17u * 8u);
  const double* row = table.data() + 7 * 8;
  const double expected[8] = {std::sin(2.0), std::sin(0.02), std::cos(2.0), std::cos(0.02),
                              std::sin(1.0), std::sin(0.01), std::cos(1.0), std::cos(0.01)};
  for (int k = 0; k < 8; ++k) BOOST_CHECK_CLOSE(row[k], expected[k], 1e-10);
  for (int k = 0; k < 8; ++k) BOOST_CHECK_EQUAL(table[k], 0.0);  // CLS row is all zeros
}

BOOST_AUTO_TEST_CASE(sincos_2d_matches_an_independent_evaluation_at_larger_sizes) {
  const int d = 64, g = 14;
  const std::vector<double> table = km::sincos_2d_position_embedding(d, g, true);
  const int quarter = d / 4;
  for (int patch : {0, 15, 100, 195}) {
    for (int dim : {0, 5, 16, 31, 32, 47, 63}) {
      const int half = dim / (d / 2);  // 0: column, 1: row
      const int within = dim % (d / 2);
      const int k = within % quarter;
      const bool is_cos = within >= quarter;
      const double coord = half == 0 ? patch % g : patch / g;
      const double angle = coord * std::exp(-std::log(10000.0) * k / quarter);
      const double expected = is_cos ? std::cos(angle) : std::sin(angle);
      BOOST_CHECK_CLOSE(table[(1 + patch) * d + dim] + 2.0, expected + 2.0, 1e-10);
    }
  }
  BOOST_CHECK_EQUAL(km::sincos_2d_position_embedding(d, g, false).size(),
                    static_cast<std::size_t>(g * g * d));
  BOOST_CHECK_THROW(km::sincos_2d_position_embedding(30, 4, true), std::invalid_argument);
}

BOOST_AUTO_TEST_SUITE_END()
