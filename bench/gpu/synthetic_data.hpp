// Synthetic benchmark vectors, generated identically on the GPU here and in torch_kmeans.py
// (PyTorch int64 arithmetic), so both sides time the same data without writing gigabytes to disk:
//
//   mix     = lowbias32(seed)
//   h       = lowbias32(lowbias32(row XOR mix) + col)            (uint32 arithmetic)
//   x[r][c] = ((h >> 8) − 2^23) · 2^-22                          uniform in [−2, 2), exact in fp32
//
// (lowbias32 is Chris Wellons' 32-bit integer hash.) The range resembles ImageNet-normalised
// pixels; centroids use seed + 1. Never zeros: timings on zeros can be optimistic.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kmim/gpu/resources.hpp"

namespace kmim_bench {

std::uint32_t lowbias32(std::uint32_t x);

/// Fills out [rows, cols] (device) as above and waits for it.
void generate_synthetic(float* out, std::size_t rows, std::size_t cols, std::uint32_t seed,
                        const kmim::gpu::Stream& stream);

}  // namespace kmim_bench
