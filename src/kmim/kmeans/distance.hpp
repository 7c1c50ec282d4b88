// Squared L2 distances between row sets with sgemm, the building block shared by
// assign_nearest_centroid and k-means++ seeding.
#pragma once

#include <cstddef>

namespace kmim::kmeans {

/// ||v||² of n rows of v [n, d], accumulated in double (eight interleaved partial sums, added
/// pairwise) and rounded to float.
void squared_norms(const float* v, std::size_t n, std::size_t d, float* out);

/// out[i * m + j] = max(0, (||x_i||² - 2 x_i·c_j) + ||c_j||²) for x [n, d], c [m, d]; the same
/// rounding as assign_nearest_centroid. Threads over row blocks; the result does not depend on
/// the thread count.
void squared_distances(const float* x, std::size_t n, std::size_t d, const float* c, std::size_t m,
                       float* out);

/// While alive, OpenBLAS runs single-threaded (our OpenMP threads call it concurrently; its own
/// thread pool would compete with them for the cores). The previous setting is restored after.
class BlasSingleThreaded {
 public:
  BlasSingleThreaded();
  ~BlasSingleThreaded();
  BlasSingleThreaded(const BlasSingleThreaded&) = delete;
  BlasSingleThreaded& operator=(const BlasSingleThreaded&) = delete;

 private:
  int saved_;
};

}  // namespace kmim::kmeans
