// Central finite differences for the gradient checks of tests/model. Everything runs in double:
// the layers and the model are templates, and their double instantiation is checked here.
#pragma once

#include <boost/test/unit_test.hpp>
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

namespace kmim::model::testing {

/// (f(x + h e_i) - f(x - h e_i)) / 2h; x[i] is restored afterwards.
template <typename Objective>
double central_difference(double* x, std::size_t i, Objective&& f, double h = 1e-5) {
  const double saved = x[i];
  x[i] = saved + h;
  const double up = f();
  x[i] = saved - h;
  const double down = f();
  x[i] = saved;
  return (up - down) / (2.0 * h);
}

/// Checks analytic[i] against the central difference of f at x[i] for every i in coords:
/// |analytic - numeric| <= abs_tol + rel_tol * |numeric|. Returns the number of mismatches
/// (each also reported through BOOST_CHECK_MESSAGE).
template <typename Objective>
int check_gradient(const std::string& what, const double* analytic, double* x,
                   const std::vector<std::size_t>& coords, Objective&& f, double abs_tol = 1e-7,
                   double rel_tol = 1e-6) {
  int failures = 0;
  for (std::size_t i : coords) {
    const double numeric = central_difference(x, i, f);
    const bool ok = std::abs(analytic[i] - numeric) <= abs_tol + rel_tol * std::abs(numeric);
    if (!ok) ++failures;
    BOOST_CHECK_MESSAGE(
        ok, what << "[" << i << "]: analytic " << analytic[i] << " vs numeric " << numeric);
  }
  return failures;
}

/// All coordinates 0..n-1.
inline std::vector<std::size_t> all_coordinates(std::size_t n) {
  std::vector<std::size_t> c(n);
  for (std::size_t i = 0; i < n; ++i) c[i] = i;
  return c;
}

/// sum_i a[i] * b[i], the scalar objective <out, R> whose gradient w.r.t. out is R.
inline double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

}  // namespace kmim::model::testing
