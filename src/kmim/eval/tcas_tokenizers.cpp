#include "kmim/eval/tcas_tokenizers.hpp"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include <fmt/format.h>

#include "kmim/core/error.hpp"
#include "kmim/core/rng.hpp"
#include "kmim/eval/feature_file.hpp"
#include "kmim/eval/blas_threads.hpp"
#include "kmim/kmeans/codebook.hpp"

namespace kmim::eval {

namespace {

void check_batch(const PatchTokenizer& tokenizer, const ImageBatchView& batch,
                 std::span<std::int32_t> tokens) {
  if (batch.labels.size() != batch.size() ||
      tokens.size() != batch.size() * static_cast<std::size_t>(tokenizer.patches_per_image()))
    throw Error(fmt::format("tokenizer {}: batch of {} images with {} labels cannot fill {} tokens",
                            tokenizer.name(), batch.size(), batch.labels.size(), tokens.size()));
}

/// Rows per sgemm tile of the nearest-centroid search.
constexpr std::size_t kTileRows = 128;

}  // namespace

void nearest_centroid_exact(const float* x, std::size_t n, std::size_t d, const float* c,
                            std::size_t k, const double* c_norms2, std::int32_t* labels) {
  if (n == 0) return;
  // Float error of the screening distance v_j = ||x||² − 2 fl(x·c_j) + ||c_j||² (norms in
  // double): |fl(x·c) − x·c| ≤ γ_d Σ|x_t c_t| ≤ d·u·(||x||² + ||c||²)/2 for any summation order
  // (u = 2⁻²⁴), so |v_j − true_j| ≤ d·u·(||x||² + ||c_j||²); the bound below has a 4× margin.
  const double bound = 4.0 * static_cast<double>(d) * std::ldexp(1.0, -24) + 1e-12;
  const std::size_t blocks = (n + kTileRows - 1) / kTileRows;
  BlasSingleThreaded blas_guard;
#pragma omp parallel
  {
    std::vector<float> tile(kTileRows * k);
    std::vector<double> v(k), tol(k);
#pragma omp for schedule(dynamic, 1)
    for (std::size_t b = 0; b < blocks; ++b) {
      const std::size_t first = b * kTileRows;
      const std::size_t rows = std::min(kTileRows, n - first);
      const float* xb = x + first * d;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows),
                  static_cast<int>(k), static_cast<int>(d), 1.0f, xb, static_cast<int>(d), c,
                  static_cast<int>(d), 0.0f, tile.data(), static_cast<int>(k));
      for (std::size_t r = 0; r < rows; ++r) {
        const float* xr = xb + r * d;
        double xn = 0.0;
        for (std::size_t t = 0; t < d; ++t) xn += static_cast<double>(xr[t]) * xr[t];
        double upper = std::numeric_limits<double>::infinity();
        for (std::size_t j = 0; j < k; ++j) {
          v[j] = xn - 2.0 * static_cast<double>(tile[r * k + j]) + c_norms2[j];
          tol[j] = bound * (xn + c_norms2[j]);
          upper = std::min(upper, v[j] + tol[j]);
        }
        // Candidates: every centroid whose true distance may be the smallest. One → done;
        // several → exact double distances decide (ties: lowest index).
        std::int32_t best = -1;
        double best_exact = std::numeric_limits<double>::infinity();
        std::size_t candidates = 0;
        for (std::size_t j = 0; j < k; ++j)
          if (v[j] - tol[j] <= upper) {
            ++candidates;
            best = static_cast<std::int32_t>(j);
          }
        if (candidates > 1) {
          best = -1;
          for (std::size_t j = 0; j < k; ++j) {
            if (!(v[j] - tol[j] <= upper)) continue;
            const float* cj = c + j * d;
            double s = 0.0;
            for (std::size_t t = 0; t < d; ++t) {
              const double diff = static_cast<double>(xr[t]) - static_cast<double>(cj[t]);
              s += diff * diff;
            }
            if (s < best_exact) {
              best_exact = s;
              best = static_cast<std::int32_t>(j);
            }
          }
        }
        labels[first + r] = best;
      }
    }
  }
}

PixelCodebook load_pixel_codebook(const std::filesystem::path& file) {
  kmeans::Codebook cb = kmeans::Codebook::load(file);
  if (cb.mode != "pixel")
    throw FileError(file, fmt::format("is a {}-mode codebook; a feature codebook needs the frozen "
                                      "encoder its vectors came from: --feature-codebook with "
                                      "--tokenizer-checkpoint",
                                      cb.mode));
  PixelCodebook out;
  out.file = file;
  out.k = cb.k;
  out.d = cb.d;
  out.geometry = cb.geometry();
  out.normalization = cb.normalization;
  out.centroids = std::move(cb.centroids);
  out.fingerprint = content_fingerprint(std::as_bytes(std::span<const float>(out.centroids)));
  return out;
}

PixelCodebookTokenizer::PixelCodebookTokenizer(PixelCodebook codebook, int image_size,
                                               std::string name)
    : codebook_(std::move(codebook)), name_(std::move(name)) {
  const auto& g = codebook_.geometry;
  const auto& file = codebook_.file;
  require_file(codebook_.k >= 1, file, "holds no centroids");
  require_file(codebook_.centroids.size() == codebook_.k * codebook_.d, file,
               fmt::format("holds {} centroid values, expected k × d = {} × {}",
                           codebook_.centroids.size(), codebook_.k, codebook_.d));
  require_file(g.channels == 3, file,
               fmt::format("is a {}-channel pixel codebook; the image shards are RGB (3 channels)",
                           g.channels));
  require_file(g.patch >= 1 && g.crop >= 1 && g.crop % g.patch == 0, file,
               fmt::format("patch size {} does not divide its crop size {}", g.patch, g.crop));
  require_file(codebook_.d == g.dim(), file,
               fmt::format("centroids have {} values but patch {} × {} × {} channels gives {}",
                           codebook_.d, g.patch, g.patch, g.channels, g.dim()));
  require_file(g.crop <= image_size, file,
               fmt::format("crop {} is larger than the stored images ({}×{}) of the evaluation "
                           "set; build the shards at a larger --size or use a codebook made for "
                           "this size", g.crop, image_size, image_size));
  centroid_norms2_.resize(codebook_.k);
  for (std::size_t j = 0; j < codebook_.k; ++j) {
    double s = 0.0;
    for (std::size_t t = 0; t < codebook_.d; ++t) {
      const double v = codebook_.centroids[j * codebook_.d + t];
      s += v * v;
    }
    centroid_norms2_[j] = s;
  }
}

void PixelCodebookTokenizer::tokenize(const ImageBatchView& batch,
                                      std::span<std::int32_t> tokens) const {
  check_batch(*this, batch, tokens);
  const std::size_t n = batch.size();
  const std::size_t image_bytes =
      static_cast<std::size_t>(batch.image_size) * static_cast<std::size_t>(batch.image_size) * 3;
  if (batch.pixels.size() != n * image_bytes)
    throw Error(fmt::format("tokenizer {}: pixel buffer of {} bytes for {} images of {}×{}", name_,
                            batch.pixels.size(), n, batch.image_size, batch.image_size));
  const std::size_t per_image = static_cast<std::size_t>(patches_per_image());
  const std::size_t d = codebook_.d;
  std::vector<float> vectors(n * per_image * d);
#pragma omp parallel for schedule(static)
  for (std::size_t i = 0; i < n; ++i)
    kmeans::extract_patches(batch.pixels.data() + i * image_bytes, batch.image_size,
                            batch.image_size, codebook_.geometry, codebook_.normalization, {},
                            vectors.data() + i * per_image * d);
  nearest_centroid_exact(vectors.data(), n * per_image, d, codebook_.centroids.data(),
                         codebook_.k, centroid_norms2_.data(), tokens.data());
}

LabelTokenizer::LabelTokenizer(std::size_t num_classes, int patches_per_image)
    : classes_(num_classes), patches_(patches_per_image) {
  if (classes_ == 0 || patches_ < 1)
    throw Error("label tokenizer: needs at least one class and one patch per image");
}

void LabelTokenizer::tokenize(const ImageBatchView& batch, std::span<std::int32_t> tokens) const {
  check_batch(*this, batch, tokens);
  const auto per_image = static_cast<std::size_t>(patches_);
  for (std::size_t i = 0; i < batch.size(); ++i) {
    const std::int32_t label = batch.labels[i];
    if (label < 0 || static_cast<std::size_t>(label) >= classes_)
      throw Error(fmt::format("label tokenizer: image {} has label {} outside [0, {})",
                              batch.indices[i], label, classes_));
    std::fill_n(tokens.begin() + static_cast<std::ptrdiff_t>(i * per_image), per_image, label);
  }
}

RandomTokenizer::RandomTokenizer(std::size_t k, int patches_per_image, std::uint64_t seed)
    : k_(k), patches_(patches_per_image), seed_(seed) {
  if (k_ == 0 || patches_ < 1)
    throw Error("random tokenizer: needs at least one token and one patch per image");
}

std::string RandomTokenizer::name() const { return fmt::format("random_k{}", k_); }

void RandomTokenizer::tokenize(const ImageBatchView& batch, std::span<std::int32_t> tokens) const {
  check_batch(*this, batch, tokens);
  const auto per_image = static_cast<std::size_t>(patches_);
  for (std::size_t i = 0; i < batch.size(); ++i) {
    // One stream per image, one draw per patch in tile order: the token of (image, patch) is a
    // pure function of (seed, image index, patch), whatever rank or batch holds the image.
    RandomStream stream(seed_, stream_id({kRandomTokenKey, batch.indices[i]}));
    for (std::size_t p = 0; p < per_image; ++p)
      tokens[i * per_image + p] = static_cast<std::int32_t>(stream.below(k_));
  }
}

}  // namespace kmim::eval
