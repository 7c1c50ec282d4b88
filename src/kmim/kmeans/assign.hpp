// Nearest-centroid assignment: the kernel of K-means (SPEC §2, "Targets": nearest centroid by
// squared L2 distance ||x||^2 - 2 x·c + ||c||^2, ties to the lowest index).
//
// assign_nearest_centroid is the fast CPU path (OpenBLAS sgemm over row blocks, OpenMP threads)
// and the product on machines without a GPU; assign_nearest_centroid_reference is the plain
// double-precision definition it is tested against. A CUDA kernel with the same signature is
// tested against both.
//
// Threads: the fast path splits x into row blocks over the OpenMP threads, each calling sgemm
// with OpenBLAS set to one thread for the duration of the call (the caller's OpenBLAS thread
// count is restored afterwards), so call it from one thread at a time. Block sizes depend on k
// only, so results are bit-identical for any thread count.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kmim::kmeans {

/// For each of n rows of x [n, d] (row-major), the nearest of k centroids c [k, d] by squared L2
/// distance computed as ||x||^2 - 2 x·c + ||c||^2 (sgemm for x·c^T), clamped at 0; ties go to the
/// lowest centroid index. Writes labels[n] and dist2[n]. Uses all OpenMP threads; processes x in
/// row blocks so the n×k distance matrix is never materialised whole. c_norms2 may be null
/// (computed internally) or hold ||c_j||^2 precomputed.
void assign_nearest_centroid(const float* x, std::size_t n, std::size_t d, const float* c, std::size_t k,
                             std::int32_t* labels, float* dist2, const float* c_norms2 = nullptr);

/// Brute-force reference (double precision, direct sum of squared differences), for tests.
/// Same contract as assign_nearest_centroid (c_norms2 is accepted for signature parity and
/// ignored); dist2 holds the double result rounded to float.
void assign_nearest_centroid_reference(const float* x, std::size_t n, std::size_t d, const float* c,
                                       std::size_t k, std::int32_t* labels, float* dist2,
                                       const float* c_norms2 = nullptr);

}  // namespace kmim::kmeans
