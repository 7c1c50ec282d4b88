// Per-cluster sums of assigned vectors in fp64 (SPEC §6), in an order that does not depend on
// the number of threads: vectors are bucketed by label (stable counting sort) and each cluster's
// members are added in vector order by one thread, clusters being spread over the threads.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kmim::kmeans {

/// sums[j*d + t] += x[i*d + t] and counts[j] += 1 for every row i with labels[i] == j.
void accumulate_cluster_sums(const float* x, std::size_t n, std::size_t d, const std::int32_t* labels,
                             std::size_t k, double* sums, std::int64_t* counts);

}  // namespace kmim::kmeans
