// Small synthetic data sets for the K-means tests (seeded, identical on every rank).
#pragma once

#include <cstdint>
#include <vector>

#include "kmim/core/rng.hpp"

namespace kmim::kmeans::testing {

/// Random normal vectors [n, d].
inline std::vector<float> normal_vectors(std::size_t n, std::size_t d, std::uint64_t seed) {
  RandomStream rng(seed, 1);
  std::vector<float> x(n * d);
  for (auto& v : x) v = static_cast<float>(rng.normal());
  return x;
}

/// `blobs` well-separated Gaussian blobs (centres 100 apart on distinct axes-ish, spread 1),
/// `per_blob` points each, interleaved (point i belongs to blob i % blobs). Also returns the
/// exact blob means of the generated points in `means` [blobs, d].
inline std::vector<float> blob_vectors(std::size_t blobs, std::size_t per_blob, std::size_t d,
                                       std::uint64_t seed, std::vector<double>* means = nullptr) {
  RandomStream rng(seed, 2);
  std::vector<double> centres(blobs * d);
  for (auto& c : centres) c = 100.0 * rng.uniform_double() - 50.0;
  for (std::size_t b = 0; b < blobs; ++b) centres[b * d + b % d] += 300.0 * static_cast<double>(b + 1);
  std::vector<float> x(blobs * per_blob * d);
  if (means) means->assign(blobs * d, 0.0);
  for (std::size_t i = 0; i < blobs * per_blob; ++i) {
    const std::size_t b = i % blobs;
    for (std::size_t t = 0; t < d; ++t) {
      const float v = static_cast<float>(centres[b * d + t] + rng.normal());
      x[i * d + t] = v;
      if (means) (*means)[b * d + t] += v;
    }
  }
  if (means)
    for (auto& m : *means) m /= static_cast<double>(per_blob);
  return x;
}

}  // namespace kmim::kmeans::testing
