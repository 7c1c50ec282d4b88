// Unit tests of kmim/model/layers.hpp: every layer's forward against an independent formula or
// hand-computed values, and every backward against central finite differences of the double
// instantiation (objective <out, R> with a fixed random R, so d_out = R).
#define BOOST_TEST_MODULE kmim_model
#include <algorithm>
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <cstdint>
#include <numbers>
#include <stdexcept>
#include <string>
#include <vector>

#include "finite_difference.hpp"
#include "kmim/core/rng.hpp"
#include "kmim/model/layers.hpp"

namespace km = kmim::model;
using km::testing::all_coordinates;
using km::testing::check_gradient;
using km::testing::dot;

namespace {

std::vector<double> random_vector(std::size_t n, std::uint64_t stream, double lo = -1.0,
                                  double hi = 1.0) {
  kmim::RandomStream rng(1234, kmim::stream_id({0x6c61796572ull, stream}));
  std::vector<double> v(n);
  for (double& x : v) x = rng.uniform(lo, hi);
  return v;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(layers)

BOOST_AUTO_TEST_CASE(blas_description_names_the_library_and_its_kernels) {
  const std::string description = km::blas_description();
  BOOST_TEST_MESSAGE(description);
  BOOST_CHECK(description.find("OpenBLAS") != std::string::npos);
  BOOST_CHECK(description.find("kernels: ") != std::string::npos);
}

BOOST_AUTO_TEST_CASE(linear_forward_matches_loops_and_gradients_match_finite_differences) {
  const int rows = 5, in = 4, out = 3;
  std::vector<double> x = random_vector(rows * in, 1), w = random_vector(out * in, 2),
                      b = random_vector(out, 3), r = random_vector(rows * out, 4);
  std::vector<double> y(rows * out);
  km::linear_forward(y.data(), x.data(), w.data(), b.data(), rows, in, out);
  for (int i = 0; i < rows; ++i) {
    for (int o = 0; o < out; ++o) {
      double expected = b[o];
      for (int k = 0; k < in; ++k) expected += x[i * in + k] * w[o * in + k];
      BOOST_CHECK_CLOSE(y[i * out + o], expected, 1e-10);
    }
  }
  auto objective = [&] {
    km::linear_forward(y.data(), x.data(), w.data(), b.data(), rows, in, out);
    return dot(y, r);
  };
  std::vector<double> dx(x.size(), 99.0), dw(w.size(), 0.0), db(b.size(), 0.0);
  km::linear_backward(dx.data(), dw.data(), db.data(), r.data(), x.data(), w.data(), rows, in, out);
  BOOST_CHECK_EQUAL(
      check_gradient("linear d_in", dx.data(), x.data(), all_coordinates(x.size()), objective), 0);
  BOOST_CHECK_EQUAL(
      check_gradient("linear d_weight", dw.data(), w.data(), all_coordinates(w.size()), objective),
      0);
  BOOST_CHECK_EQUAL(
      check_gradient("linear d_bias", db.data(), b.data(), all_coordinates(b.size()), objective),
      0);
}

BOOST_AUTO_TEST_CASE(linear_parameter_gradients_accumulate_and_input_gradient_is_overwritten) {
  const int rows = 3, in = 2, out = 2;
  std::vector<double> x = random_vector(rows * in, 5), w = random_vector(out * in, 6),
                      r = random_vector(rows * out, 7);
  std::vector<double> dx1(x.size(), 0.0), dw1(w.size(), 0.0), db1(out, 0.0);
  km::linear_backward(dx1.data(), dw1.data(), db1.data(), r.data(), x.data(), w.data(), rows, in,
                      out);
  std::vector<double> dx2(x.size(), 0.0), dw2(w.size(), 0.0), db2(out, 0.0);
  km::linear_backward(dx2.data(), dw2.data(), db2.data(), r.data(), x.data(), w.data(), rows, in,
                      out);
  km::linear_backward(dx2.data(), dw2.data(), db2.data(), r.data(), x.data(), w.data(), rows, in,
                      out);
  for (std::size_t i = 0; i < dw1.size(); ++i) BOOST_CHECK_CLOSE(dw2[i], 2.0 * dw1[i], 1e-10);
  for (std::size_t i = 0; i < db1.size(); ++i) BOOST_CHECK_CLOSE(db2[i], 2.0 * db1[i], 1e-10);
  for (std::size_t i = 0; i < dx1.size(); ++i) BOOST_CHECK_CLOSE(dx2[i], dx1[i], 1e-10);
}

BOOST_AUTO_TEST_CASE(layernorm_normalizes_rows_and_gradients_match_finite_differences) {
  const int rows = 4, c = 6;
  std::vector<double> x = random_vector(rows * c, 10, -2.0, 3.0), w = random_vector(c, 11),
                      b = random_vector(c, 12), r = random_vector(rows * c, 13);
  std::vector<double> y(rows * c), mean(rows), rstd(rows);
  // With weight 1 and bias 0 every row has mean 0 and biased variance var / (var + eps).
  std::vector<double> ones(c, 1.0), zeros(c, 0.0);
  km::layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), ones.data(), zeros.data(),
                        rows, c);
  for (int i = 0; i < rows; ++i) {
    double m = 0, v = 0, my = 0, vy = 0;
    for (int k = 0; k < c; ++k) m += x[i * c + k] / c;
    for (int k = 0; k < c; ++k) v += (x[i * c + k] - m) * (x[i * c + k] - m) / c;
    for (int k = 0; k < c; ++k) my += y[i * c + k] / c;
    for (int k = 0; k < c; ++k) vy += y[i * c + k] * y[i * c + k] / c;
    BOOST_CHECK_SMALL(my, 1e-12);
    BOOST_CHECK_CLOSE(vy, v / (v + 1e-6), 1e-9);
    BOOST_CHECK_CLOSE(mean[i], m, 1e-10);
    BOOST_CHECK_CLOSE(rstd[i], 1.0 / std::sqrt(v + 1e-6), 1e-10);
  }
  auto objective = [&] {
    km::layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), rows,
                          c);
    return dot(y, r);
  };
  objective();
  // d_in is accumulated: start from a known offset and subtract it.
  std::vector<double> dx(x.size(), 0.25), dw(c, 0.0), db(c, 0.0);
  km::layernorm_backward(dx.data(), dw.data(), db.data(), r.data(), x.data(), w.data(), mean.data(),
                         rstd.data(), rows, c);
  for (double& v : dx) v -= 0.25;
  BOOST_CHECK_EQUAL(
      check_gradient("layernorm d_in", dx.data(), x.data(), all_coordinates(x.size()), objective),
      0);
  BOOST_CHECK_EQUAL(
      check_gradient("layernorm d_weight", dw.data(), w.data(), all_coordinates(c), objective), 0);
  BOOST_CHECK_EQUAL(
      check_gradient("layernorm d_bias", db.data(), b.data(), all_coordinates(c), objective), 0);
}

BOOST_AUTO_TEST_CASE(gelu_is_exact_erf_form_and_gradient_matches_finite_differences) {
  std::vector<double> x = {1.0, -1.0, 0.0, 2.5};
  std::vector<double> y(x.size());
  km::gelu_forward(y.data(), x.data(), x.size());
  BOOST_CHECK_CLOSE(y[0], 0.8413447460685429, 1e-10);    // 1 * Phi(1)
  BOOST_CHECK_CLOSE(y[1], -0.15865525393145707, 1e-10);  // -1 * Phi(-1)
  BOOST_CHECK_EQUAL(y[2], 0.0);
  BOOST_CHECK_CLOSE(y[3], 2.5 * 0.9937903346742238, 1e-10);  // tanh approximation differs here

  std::vector<double> in = random_vector(20, 20, -3.0, 3.0), r = random_vector(20, 21);
  std::vector<double> out(20), d_in(20);
  auto objective = [&] {
    km::gelu_forward(out.data(), in.data(), in.size());
    return dot(out, r);
  };
  km::gelu_backward(d_in.data(), in.data(), r.data(), in.size());
  BOOST_CHECK_EQUAL(
      check_gradient("gelu d_in", d_in.data(), in.data(), all_coordinates(20), objective), 0);
}

BOOST_AUTO_TEST_CASE(attention_forward_matches_naive_loops) {
  const int batch = 2, tokens = 3, c = 4, heads = 2, hd = c / heads;
  std::vector<double> qkv = random_vector(batch * tokens * 3 * c, 30, -2.0, 2.0);
  std::vector<double> out(batch * tokens * c), probs(batch * heads * tokens * tokens);
  km::attention_forward(out.data(), probs.data(), qkv.data(), batch, tokens, c, heads);
  auto at = [&](int b, int n, int part, int h, int d) {
    return qkv[((b * tokens + n) * 3 + part) * c + h * hd + d];
  };
  for (int b = 0; b < batch; ++b) {
    for (int h = 0; h < heads; ++h) {
      for (int i = 0; i < tokens; ++i) {
        std::vector<double> s(tokens);
        double z = 0;
        for (int j = 0; j < tokens; ++j) {
          double qk = 0;
          for (int d = 0; d < hd; ++d) qk += at(b, i, 0, h, d) * at(b, j, 1, h, d);
          s[j] = std::exp(qk / std::sqrt(static_cast<double>(hd)));
          z += s[j];
        }
        for (int j = 0; j < tokens; ++j) {
          BOOST_CHECK_CLOSE(probs[((b * heads + h) * tokens + i) * tokens + j], s[j] / z, 1e-10);
        }
        for (int d = 0; d < hd; ++d) {
          double o = 0;
          for (int j = 0; j < tokens; ++j) o += s[j] / z * at(b, j, 2, h, d);
          BOOST_CHECK_CLOSE(out[(b * tokens + i) * c + h * hd + d], o, 1e-10);
        }
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(attention_gradient_matches_finite_differences) {
  const int batch = 2, tokens = 4, c = 6, heads = 3;
  std::vector<double> qkv = random_vector(batch * tokens * 3 * c, 31, -1.5, 1.5);
  std::vector<double> r = random_vector(batch * tokens * c, 32);
  std::vector<double> out(r.size()), probs(batch * heads * tokens * tokens);
  auto objective = [&] {
    km::attention_forward(out.data(), probs.data(), qkv.data(), batch, tokens, c, heads);
    return dot(out, r);
  };
  objective();
  std::vector<double> d_qkv(qkv.size(), 7.0), scratch(probs.size());
  km::attention_backward(d_qkv.data(), scratch.data(), r.data(), qkv.data(), probs.data(), batch,
                         tokens, c, heads);
  BOOST_CHECK_EQUAL(check_gradient("attention d_qkv", d_qkv.data(), qkv.data(),
                                   all_coordinates(qkv.size()), objective),
                    0);
}

BOOST_AUTO_TEST_CASE(residual_gradients_reach_both_inputs) {
  std::vector<double> a = random_vector(7, 40), b = random_vector(7, 41), r = random_vector(7, 42);
  std::vector<double> out(7);
  auto objective = [&] {
    km::residual_forward(out.data(), a.data(), b.data(), a.size());
    return dot(out, r);
  };
  objective();
  BOOST_CHECK_CLOSE(out[3], a[3] + b[3], 1e-12);
  std::vector<double> da(7, 0.0), db(7, 0.0);
  km::residual_backward(da.data(), db.data(), r.data(), a.size());
  BOOST_CHECK_EQUAL(
      check_gradient("residual d_a", da.data(), a.data(), all_coordinates(7), objective), 0);
  BOOST_CHECK_EQUAL(
      check_gradient("residual d_b", db.data(), b.data(), all_coordinates(7), objective), 0);
}

BOOST_AUTO_TEST_CASE(cross_entropy_matches_hand_computed_values) {
  // 4 rows, 3 classes; rows 0, 2 and 3 are masked (selected), row 1 is not.
  const std::vector<double> logits = {1, 2, 3,   // target 0: lse = 3.40760596444438, loss 2.4076
                                      9, 0, 0,   // not selected
                                      5, 5, 1,   // target 0: tie between 0 and 1 -> argmax 0
                                      1, 5, 5};  // target 1: tie between 1 and 2 -> argmax 1
  const std::vector<std::int32_t> targets = {0, 2, 0, 1};
  const std::vector<double> mask = {1, 0, 1, 1};
  std::vector<double> lse(4), row_loss(4);
  const km::MaskedLossSum s = km::softmax_cross_entropy_forward(
      lse.data(), row_loss.data(), logits.data(), targets.data(), mask.data(), 4, 3);
  const double loss0 = 3.40760596444438 - 1.0;
  const double loss_tie = std::log(2.0 + std::exp(-4.0));  // lse(5,5,1) - 5
  BOOST_CHECK_CLOSE(row_loss[0], loss0, 1e-10);
  BOOST_CHECK_EQUAL(row_loss[1], 0.0);
  BOOST_CHECK_CLOSE(row_loss[2], loss_tie, 1e-10);
  BOOST_CHECK_CLOSE(s.loss, (loss0 + 2 * loss_tie) / 3.0, 1e-10);
  BOOST_CHECK_EQUAL(s.selected, 3);
  BOOST_CHECK_EQUAL(s.correct, 2);  // rows 2 and 3 (ties resolved to the lowest index)
  BOOST_CHECK_EQUAL(s.weight_sum, 3.0);

  std::vector<std::int32_t> bad = targets;
  bad[2] = 3;
  BOOST_CHECK_THROW(km::softmax_cross_entropy_forward(lse.data(), row_loss.data(), logits.data(),
                                                      bad.data(), mask.data(), 4, 3),
                    std::out_of_range);
  bad = targets;
  bad[1] = -5;  // unselected rows are not checked: MAE ignores them
  BOOST_CHECK_NO_THROW(km::softmax_cross_entropy_forward(lse.data(), row_loss.data(), logits.data(),
                                                         bad.data(), mask.data(), 4, 3));
}

BOOST_AUTO_TEST_CASE(cross_entropy_gradient_matches_finite_differences) {
  const int rows = 5, classes = 4;
  std::vector<double> logits = random_vector(rows * classes, 50, -3.0, 3.0);
  const std::vector<std::int32_t> targets = {3, 0, 1, 2, 2};
  const std::vector<double> mask = {1, 0, 1, 1, 0};
  std::vector<double> lse(rows), row_loss(rows), d_logits(logits.size());
  auto objective = [&] {
    return km::softmax_cross_entropy_forward(lse.data(), row_loss.data(), logits.data(),
                                             targets.data(), mask.data(), rows, classes)
        .loss;
  };
  objective();
  const double d_loss = 1.7;
  km::softmax_cross_entropy_backward(d_logits.data(), logits.data(), lse.data(), targets.data(),
                                     mask.data(), rows, classes, d_loss);
  for (double& g : d_logits) g /= d_loss;
  BOOST_CHECK_EQUAL(check_gradient("cross-entropy d_logits", d_logits.data(), logits.data(),
                                   all_coordinates(logits.size()), objective),
                    0);
  for (int c = 0; c < classes; ++c) BOOST_CHECK_EQUAL(d_logits[1 * classes + c], 0.0);
}

BOOST_AUTO_TEST_CASE(pixel_mse_uses_unbiased_variance_and_masked_mean) {
  // Row 0: patch (1, 2, 3, 4), mean 2.5, unbiased var 5/3, prediction 0:
  //   loss = (1/4) sum (x - 2.5)^2 / (5/3 + 1e-6) = (5/4) / (5/3 + 1e-6) ~= 0.75
  // (the biased variance 5/4 would give 1.0). Row 1 is visible and must not count.
  const std::vector<double> patches = {1, 2, 3, 4, 10, 0, 0, 0};
  const std::vector<double> pred = {0, 0, 0, 0, 5, 5, 5, 5};
  const std::vector<double> mask = {1, 0};
  std::vector<double> target(8), row_loss(2);
  const km::MaskedLossSum s = km::normalized_patch_mse_forward(
      target.data(), row_loss.data(), pred.data(), patches.data(), mask.data(), 2, 4, true);
  BOOST_CHECK_CLOSE(s.loss, 1.25 / (5.0 / 3.0 + 1e-6), 1e-10);
  BOOST_CHECK_CLOSE(target[0], -1.5 / std::sqrt(5.0 / 3.0 + 1e-6), 1e-10);
  BOOST_CHECK_EQUAL(s.selected, 1);
  // Without normalization the target is the raw patch: (1 + 4 + 9 + 16) / 4.
  const km::MaskedLossSum raw = km::normalized_patch_mse_forward(
      target.data(), row_loss.data(), pred.data(), patches.data(), mask.data(), 2, 4, false);
  BOOST_CHECK_CLOSE(raw.loss, 7.5, 1e-10);
}

BOOST_AUTO_TEST_CASE(pixel_mse_gradient_matches_finite_differences) {
  const int rows = 4, dim = 6;
  std::vector<double> patches = random_vector(rows * dim, 60, 0.0, 1.0);
  std::vector<double> pred = random_vector(rows * dim, 61);
  const std::vector<double> mask = {0, 1, 1, 1};
  std::vector<double> target(pred.size()), row_loss(rows), d_pred(pred.size());
  auto objective = [&] {
    return km::normalized_patch_mse_forward(target.data(), row_loss.data(), pred.data(),
                                            patches.data(), mask.data(), rows, dim, true)
        .loss;
  };
  objective();
  km::normalized_patch_mse_backward(d_pred.data(), pred.data(), target.data(), mask.data(), rows,
                                    dim, 1.0);
  BOOST_CHECK_EQUAL(check_gradient("pixel mse d_pred", d_pred.data(), pred.data(),
                                   all_coordinates(pred.size()), objective),
                    0);
}

BOOST_AUTO_TEST_CASE(float_layers_agree_with_double_layers) {
  // The float instantiation (sgemm, float softmax) against the double one on the same inputs.
  const int batch = 2, tokens = 17, c = 32, heads = 4;
  const std::vector<double> qkv_d = random_vector(batch * tokens * 3 * c, 70, -1.0, 1.0);
  const std::vector<float> qkv_f(qkv_d.begin(), qkv_d.end());
  std::vector<double> out_d(batch * tokens * c), probs_d(batch * heads * tokens * tokens);
  std::vector<float> out_f(out_d.size()), probs_f(probs_d.size());
  km::attention_forward(out_d.data(), probs_d.data(), qkv_d.data(), batch, tokens, c, heads);
  km::attention_forward(out_f.data(), probs_f.data(), qkv_f.data(), batch, tokens, c, heads);
  for (std::size_t i = 0; i < out_d.size(); ++i) BOOST_CHECK_SMALL(out_f[i] - out_d[i], 1e-5);
  const std::vector<double> dout_d = random_vector(out_d.size(), 71);
  const std::vector<float> dout_f(dout_d.begin(), dout_d.end());
  std::vector<double> dqkv_d(qkv_d.size()), scratch_d(probs_d.size());
  std::vector<float> dqkv_f(qkv_d.size()), scratch_f(probs_d.size());
  km::attention_backward(dqkv_d.data(), scratch_d.data(), dout_d.data(), qkv_d.data(),
                         probs_d.data(), batch, tokens, c, heads);
  km::attention_backward(dqkv_f.data(), scratch_f.data(), dout_f.data(), qkv_f.data(),
                         probs_f.data(), batch, tokens, c, heads);
  for (std::size_t i = 0; i < dqkv_d.size(); ++i) BOOST_CHECK_SMALL(dqkv_f[i] - dqkv_d[i], 1e-5);
}

BOOST_AUTO_TEST_CASE(float_attention_softmax_is_accurate_to_float_rounding) {
  // One head of width 1 (scale 1): q = 1 and k_j = s_j make the scores exactly s_j, so the
  // probabilities are softmax(s), which the test evaluates in double. The scores cover the
  // reduced range of the float exp (|r| up to ln2/2) and its underflow.
  const std::vector<double> scores = {0.0,  -0.3,  -0.34, -0.346, -0.35, -1.0, -2.5,
                                      -5.0, -10.0, -30.0, -80.0,  -95.0, 0.0};
  const int n = static_cast<int>(scores.size());
  std::vector<float> qkv(static_cast<std::size_t>(n) * 3);
  for (int j = 0; j < n; ++j) {
    qkv[j * 3 + 0] = 1.0f;                           // q
    qkv[j * 3 + 1] = static_cast<float>(scores[j]);  // k
    qkv[j * 3 + 2] = 1.0f;                           // v
  }
  std::vector<float> out(n), probs(static_cast<std::size_t>(n) * n);
  km::attention_forward(out.data(), probs.data(), qkv.data(), 1, n, 1, 1);
  double z = 0;
  for (int j = 0; j < n; ++j) z += std::exp(static_cast<double>(static_cast<float>(scores[j])));
  for (int j = 0; j < n; ++j) {
    const double expected = std::exp(static_cast<double>(static_cast<float>(scores[j]))) / z;
    if (expected < 1e-37) {
      BOOST_CHECK_SMALL(static_cast<double>(probs[j]), 1e-37);  // underflow: 0 or denormal
    } else {
      BOOST_CHECK_CLOSE(static_cast<double>(probs[j]), expected, 3e-5);  // percent: 3e-7
    }
  }
  BOOST_CHECK_CLOSE(out[0], 1.0f, 1e-4);
}

BOOST_AUTO_TEST_CASE(float_gelu_stays_close_to_the_exact_double_gelu) {
  // The float GELU uses a polynomial erfc (A&S 7.1.26, |error| <= 1.5e-7) and exp; compare with
  // the libm-based double version on a dense grid.
  std::vector<double> xd;
  for (double x = -12.0; x <= 12.0; x += 0.001) xd.push_back(x);
  const std::vector<float> xf(xd.begin(), xd.end());
  std::vector<double> yd(xd.size()), gd(xd.size()), ones_d(xd.size(), 1.0);
  std::vector<float> yf(xd.size()), gf(xd.size()), ones_f(xd.size(), 1.0f);
  km::gelu_forward(yd.data(), xd.data(), xd.size());
  km::gelu_forward(yf.data(), xf.data(), xf.size());
  km::gelu_backward(gd.data(), xd.data(), ones_d.data(), xd.size());
  km::gelu_backward(gf.data(), xf.data(), ones_f.data(), xf.size());
  double worst_value = 0, worst_slope = 0;
  for (std::size_t i = 0; i < xd.size(); ++i) {
    const double x = static_cast<double>(xf[i]);  // the float input, exactly
    const double exact = x * 0.5 * (1.0 + std::erf(x / std::sqrt(2.0)));
    const double slope = 0.5 * (1.0 + std::erf(x / std::sqrt(2.0))) +
                         x * std::exp(-0.5 * x * x) / std::sqrt(2.0 * std::numbers::pi);
    worst_value = std::max(worst_value, std::abs(yf[i] - exact) / (1.0 + std::abs(x)));
    worst_slope = std::max(worst_slope, std::abs(gf[i] - slope) / (1.0 + std::abs(x)));
  }
  BOOST_TEST_MESSAGE("float gelu: worst |error| / (1 + |x|) " << worst_value << ", slope "
                                                              << worst_slope);
  BOOST_CHECK_LT(worst_value, 3e-7);
  BOOST_CHECK_LT(worst_slope, 3e-7);
  BOOST_CHECK_EQUAL(yf[xf.size() - 1], xf.back());  // Phi(12) rounds to 1
  BOOST_CHECK_EQUAL(yf[0], -0.0f);                  // Phi(-12) underflows to 0
}

BOOST_AUTO_TEST_CASE(float_cross_entropy_matches_double_and_propagates_nan) {
  const int rows = 6, classes = 300;
  const std::vector<double> logits_d = random_vector(rows * classes, 80, -60.0, 60.0);
  const std::vector<float> logits_f(logits_d.begin(), logits_d.end());
  const std::vector<double> logits_dd(logits_f.begin(), logits_f.end());  // same inputs
  const std::vector<std::int32_t> targets = {0, 7, 299, 150, 3, 42};
  const std::vector<double> mask_d = {1, 1, 0, 1, 1, 1};
  const std::vector<float> mask_f(mask_d.begin(), mask_d.end());
  std::vector<double> lse_d(rows), loss_d(rows), grad_d(logits_d.size());
  std::vector<float> lse_f(rows), loss_f(rows), grad_f(logits_d.size());
  const double ld = km::softmax_cross_entropy_forward(lse_d.data(), loss_d.data(), logits_dd.data(),
                                                      targets.data(), mask_d.data(), rows, classes)
                        .loss;
  const double lf = km::softmax_cross_entropy_forward(lse_f.data(), loss_f.data(), logits_f.data(),
                                                      targets.data(), mask_f.data(), rows, classes)
                        .loss;
  BOOST_CHECK_CLOSE(lf, ld, 1e-4);
  km::softmax_cross_entropy_backward(grad_d.data(), logits_dd.data(), lse_d.data(), targets.data(),
                                     mask_d.data(), rows, classes, 1.0);
  km::softmax_cross_entropy_backward(grad_f.data(), logits_f.data(), lse_f.data(), targets.data(),
                                     mask_f.data(), rows, classes, 1.0);
  for (std::size_t i = 0; i < grad_d.size(); ++i) BOOST_REQUIRE_SMALL(grad_f[i] - grad_d[i], 1e-6);
  // A NaN logit must surface in the loss, not be hidden by the fast exp.
  std::vector<float> with_nan = logits_f;
  with_nan[1 * classes + 5] = std::nanf("");
  const double l_nan =
      km::softmax_cross_entropy_forward(lse_f.data(), loss_f.data(), with_nan.data(),
                                        targets.data(), mask_f.data(), rows, classes)
          .loss;
  BOOST_CHECK(std::isnan(l_nan));
}

BOOST_AUTO_TEST_SUITE_END()
