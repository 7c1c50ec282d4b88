// TCAS, the token-class alignment score (SPEC §3), and the statistics reported beside it.
//
// Input: a count matrix n[t][c] (int64, tokens × classes, row-major) — how many patches of class
// c (the class of the image the patch comes from) the tokenizer maps to token t, counted over a
// fixed un-augmented evaluation set. With N = Σ n, p(t) = Σ_c n[t][c] / N, p(c) = Σ_t n[t][c] / N
// and p(c|t) = n[t][c] / Σ_c n[t][c]:
//
//   α    = Σ_t p(t) · (1 − Σ_c p(c|t)²)   labeling error: the chance that two patches drawn (with
//                                         replacement) from one token bucket differ in class
//   α₀   = 1 − Σ_c p(c)²                  the same chance for a tokenizer that ignores class
//   TCAS = α / α₀                         0: no token is shared across classes (label tokenizer);
//                                         ≈1: tokens carry no class information. Lower is better.
//
// Beside it (SPEC §3): per-token purity max_c p(c|t) and its p(t)-weighted mean, the normalized
// mutual information between token and class with the arithmetic-mean normalization
// NMI = I(T;C) / ((H(T) + H(C)) / 2) (scikit-learn's normalized_mutual_info_score default), and
// token usage: perplexity exp(H(T)) (natural logarithms) and the number of dead tokens (count 0).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace kmim::eval {

/// The TCAS definition as stored in every report (attribute `tcas_definition`) and printed by
/// docs/eval.md.
extern const char* const kTcasDefinition;

struct TcasResult {
  std::size_t tokens = 0;            ///< K (rows of the count matrix)
  std::size_t classes = 0;           ///< C (columns)
  std::int64_t total = 0;            ///< N, the number of counted patches
  double alpha = 0.0;                ///< labeling error α
  double alpha0 = 0.0;               ///< chance level α₀
  double tcas = 0.0;                 ///< α / α₀
  std::vector<double> purity;        ///< [K] max_c p(c|t); NaN for a dead token
  double mean_purity = 0.0;          ///< Σ_t p(t) · purity(t)
  double mutual_information = 0.0;   ///< I(T;C) in nats
  double token_entropy = 0.0;        ///< H(T) in nats
  double class_entropy = 0.0;        ///< H(C) in nats
  double nmi = 0.0;                  ///< I(T;C) / ((H(T) + H(C)) / 2)
  double perplexity = 0.0;           ///< exp(H(T)): the effective number of tokens used
  std::size_t dead_tokens = 0;       ///< tokens with count 0
  std::vector<std::int64_t> token_counts;  ///< [K] Σ_c n[t][c]
  std::vector<std::int64_t> class_counts;  ///< [C] Σ_t n[t][c]
};

/// Computes TCAS and the statistics beside it from counts [tokens × classes] (row-major).
/// α and α₀ are computed from exact integer sums of squares, so a tokenizer that never shares a
/// token across classes scores exactly 0. Throws kmim::Error when the shape does not match,
/// a count is negative, all counts are zero, or only one class occurs (α₀ = 0: TCAS undefined).
TcasResult tcas_from_counts(std::span<const std::int64_t> counts, std::size_t tokens,
                            std::size_t classes);

}  // namespace kmim::eval
