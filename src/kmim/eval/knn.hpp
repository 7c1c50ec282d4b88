// Weighted k-nearest-neighbour classification on extracted features (SPEC §4, the cheap monitor),
// as DINO's knn_classifier does it: features are L2-normalised, similarity is the cosine
// (a dot product, computed with sgemm in blocks), each test sample takes its k most similar
// training samples, and neighbour j votes for its class with weight exp(sim_j / T). Classes are
// ranked by total vote; top-1 / top-5 accuracy count the true class among the first 1 / 5.
//
// Deterministic tie rules (DINO leaves them to torch.topk / sort): among equal similarities the
// lower training index is the nearer neighbour; among equal votes the lower class index ranks
// first.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kmim/dist/mpi.hpp"

namespace kmim::eval {

struct KnnParams {
  std::size_t k = 20;             ///< neighbours (DINO: 20); clamped to the training set size
  double temperature = 0.07;      ///< vote weight exp(sim / T) (DINO: 0.07)
  std::size_t test_block = 128;   ///< test rows per similarity tile
  std::size_t train_block = 8192; ///< training rows per similarity tile
};

struct KnnResult {
  std::int64_t total = 0;      ///< test samples evaluated (all ranks)
  std::int64_t correct1 = 0;
  std::int64_t correct5 = 0;
  double top1 = 0.0;           ///< percent
  double top5 = 0.0;           ///< percent
  std::size_t ranked = 0;      ///< classes listed per sample in `predictions`: min(5, classes)
  std::uint64_t first_test = 0;  ///< first test row this rank evaluated
  /// For this rank's test rows [first_test, first_test + rows): the `ranked` best classes, best
  /// first, row-major.
  std::vector<std::int32_t> predictions;
};

/// L2-normalises each row in place: x / max(||x||, 1e-12) (torch.nn.functional.normalize).
void l2_normalize_rows(float* x, std::size_t n, std::size_t d);

/// kNN accuracy of test [n_test, d] against train [n_train, d] (raw features; normalised copies
/// are made). Labels lie in [0, num_classes). With a communicator of several ranks every rank
/// must hold the same data; each evaluates a block of the test rows and the counts are summed.
/// Throws kmim::Error on empty inputs, a bad label, k = 0 or T <= 0.
KnnResult knn_classify(const float* train, const std::int32_t* train_labels, std::size_t n_train,
                       const float* test, const std::int32_t* test_labels, std::size_t n_test,
                       std::size_t d, std::size_t num_classes, const KnnParams& params,
                       const dist::Communicator* comm = nullptr);

}  // namespace kmim::eval
