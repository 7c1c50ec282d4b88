#include "kmim/eval/tcas.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "kmim/core/error.hpp"

namespace kmim::eval {

const char* const kTcasDefinition =
    "TCAS (token-class alignment score, kmim SPEC section 3): every patch inherits its image's "
    "class c and the tokenizer gives it token t; n[t][c] counts patches over a fixed "
    "un-augmented evaluation set (Resize+CenterCrop). alpha = sum_t p(t) * (1 - sum_c "
    "p(c|t)^2) (labeling error: chance that two patches of one token bucket differ in class); "
    "alpha0 = 1 - sum_c p(c)^2 (chance level); TCAS = alpha / alpha0 (0: class-wise tokenizer, "
    "e.g. the label itself; about 1: tokens carry no class information; lower is better). "
    "purity(t) = max_c p(c|t) (NaN for a dead token), mean_purity = sum_t p(t) purity(t); "
    "nmi = I(T;C) / ((H(T) + H(C)) / 2) (arithmetic mean, as scikit-learn's "
    "normalized_mutual_info_score); perplexity = exp(H(T)); dead_tokens = tokens with count 0; "
    "natural logarithms.";

namespace {

// Sums of squared counts can exceed 2^63 for very large evaluation sets (N > 3e9 patches), so the
// exact sums use 128-bit integers; __extension__ keeps -Wpedantic quiet about the GNU type.
__extension__ typedef __int128 Int128;

double entropy_of_counts(const std::vector<std::int64_t>& counts, double total) {
  double h = 0.0;
  for (std::int64_t n : counts) {
    if (n <= 0) continue;
    const double p = static_cast<double>(n) / total;
    h -= p * std::log(p);
  }
  return h;
}

}  // namespace

TcasResult tcas_from_counts(std::span<const std::int64_t> counts, std::size_t tokens,
                            std::size_t classes) {
  if (tokens == 0 || classes == 0 || counts.size() != tokens * classes)
    throw Error(fmt::format("TCAS: count matrix of {} values does not have the shape {} tokens x "
                            "{} classes", counts.size(), tokens, classes));
  TcasResult r;
  r.tokens = tokens;
  r.classes = classes;
  r.token_counts.assign(tokens, 0);
  r.class_counts.assign(classes, 0);
  for (std::size_t t = 0; t < tokens; ++t) {
    for (std::size_t c = 0; c < classes; ++c) {
      const std::int64_t n = counts[t * classes + c];
      if (n < 0)
        throw Error(fmt::format("TCAS: negative count {} for token {}, class {}", n, t, c));
      r.token_counts[t] += n;
      r.class_counts[c] += n;
    }
  }
  for (std::int64_t n : r.token_counts) r.total += n;
  if (r.total == 0) throw Error("TCAS: the count matrix is all zeros (no patches were counted)");
  const std::size_t classes_present = static_cast<std::size_t>(
      std::count_if(r.class_counts.begin(), r.class_counts.end(), [](std::int64_t n) { return n > 0; }));
  if (classes_present < 2)
    throw Error("TCAS: only one class occurs in the counted patches, so the chance level alpha0 = "
                "1 - sum_c p(c)^2 is 0 and TCAS is undefined; evaluate on images of at least two "
                "classes");

  const double total = static_cast<double>(r.total);
  // α = Σ_t p(t)(1 − Σ_c p(c|t)²) = (1/N) Σ_t (N_t² − Σ_c n_tc²) / N_t, with the numerator
  // exact: a pure token contributes exactly 0.
  double alpha_sum = 0.0;
  r.purity.assign(tokens, std::numeric_limits<double>::quiet_NaN());
  for (std::size_t t = 0; t < tokens; ++t) {
    const std::int64_t nt = r.token_counts[t];
    if (nt == 0) {
      ++r.dead_tokens;
      continue;
    }
    Int128 squares = 0;
    std::int64_t largest = 0;
    for (std::size_t c = 0; c < classes; ++c) {
      const std::int64_t n = counts[t * classes + c];
      squares += static_cast<Int128>(n) * n;
      largest = std::max(largest, n);
    }
    const Int128 mixed = static_cast<Int128>(nt) * nt - squares;
    alpha_sum += static_cast<double>(mixed) / static_cast<double>(nt);
    r.purity[t] = static_cast<double>(largest) / static_cast<double>(nt);
    r.mean_purity += static_cast<double>(largest) / total;  // p(t)·max_c p(c|t) = max_c n_tc / N
  }
  r.alpha = alpha_sum / total;
  Int128 class_squares = 0;
  for (std::int64_t n : r.class_counts) class_squares += static_cast<Int128>(n) * n;
  const Int128 total_squared = static_cast<Int128>(r.total) * r.total;
  r.alpha0 = static_cast<double>(total_squared - class_squares) / (total * total);
  r.tcas = r.alpha / r.alpha0;

  // Entropies and mutual information (nats). I(T;C) = Σ p(t,c) log(p(t,c) / (p(t) p(c)))
  // = Σ (n/N) log(n N / (N_t N_c)).
  r.token_entropy = entropy_of_counts(r.token_counts, total);
  r.class_entropy = entropy_of_counts(r.class_counts, total);
  double mi = 0.0;
  for (std::size_t t = 0; t < tokens; ++t) {
    for (std::size_t c = 0; c < classes; ++c) {
      const std::int64_t n = counts[t * classes + c];
      if (n == 0) continue;
      const double nn = static_cast<double>(n);
      mi += nn / total *
            std::log(nn * total / (static_cast<double>(r.token_counts[t]) *
                                   static_cast<double>(r.class_counts[c])));
    }
  }
  r.mutual_information = std::max(mi, 0.0);  // rounding can leave -1e-17 for independent T, C
  // H(C) > 0 here (two classes or more), so the denominator is positive.
  r.nmi = r.mutual_information / (0.5 * (r.token_entropy + r.class_entropy));
  r.nmi = std::min(r.nmi, 1.0);
  r.perplexity = std::exp(r.token_entropy);
  return r;
}

}  // namespace kmim::eval
