// Sine-cosine position embeddings (see pos_embed.hpp for the formulas).
#include "kmim/model/pos_embed.hpp"

#include <cmath>
#include <stdexcept>
#include <string>

namespace kmim::model {

std::vector<double> sincos_1d_position_embedding(int embed_dim,
                                                 const std::vector<double>& positions) {
  if (embed_dim <= 0 || embed_dim % 2 != 0) {
    throw std::invalid_argument(
        "sincos_1d_position_embedding: embed_dim must be positive and even, got " +
        std::to_string(embed_dim));
  }
  const int half = embed_dim / 2;
  std::vector<double> out(positions.size() * static_cast<std::size_t>(embed_dim));
  for (std::size_t m = 0; m < positions.size(); ++m) {
    double* row = out.data() + m * static_cast<std::size_t>(embed_dim);
    for (int k = 0; k < half; ++k) {
      const double omega = 1.0 / std::pow(10000.0, static_cast<double>(k) / half);
      const double angle = positions[m] * omega;
      row[k] = std::sin(angle);
      row[half + k] = std::cos(angle);
    }
  }
  return out;
}

std::vector<double> sincos_2d_position_embedding(int embed_dim, int grid_size,
                                                 bool with_cls_token) {
  if (embed_dim <= 0 || embed_dim % 4 != 0) {
    throw std::invalid_argument(
        "sincos_2d_position_embedding: embed_dim must be a positive multiple of 4, got " +
        std::to_string(embed_dim));
  }
  if (grid_size <= 0) {
    throw std::invalid_argument("sincos_2d_position_embedding: grid_size must be positive, got " +
                                std::to_string(grid_size));
  }
  const std::size_t patches = static_cast<std::size_t>(grid_size) * grid_size;
  std::vector<double> cols(patches), rows(patches);
  for (std::size_t i = 0; i < patches; ++i) {
    cols[i] = static_cast<double>(i % static_cast<std::size_t>(grid_size));
    rows[i] = static_cast<double>(i / static_cast<std::size_t>(grid_size));
  }
  const int half = embed_dim / 2;
  const std::vector<double> emb_first = sincos_1d_position_embedding(half, cols);   // w index
  const std::vector<double> emb_second = sincos_1d_position_embedding(half, rows);  // h index
  const std::size_t offset = with_cls_token ? 1 : 0;
  const std::size_t d = static_cast<std::size_t>(embed_dim);
  std::vector<double> out((offset + patches) * d, 0.0);  // CLS row (if any) stays zero
  for (std::size_t i = 0; i < patches; ++i) {
    double* row = out.data() + (offset + i) * d;
    for (int k = 0; k < half; ++k) {
      row[k] = emb_first[i * half + k];
      row[half + k] = emb_second[i * half + k];
    }
  }
  return out;
}

}  // namespace kmim::model
