// Counter-based random numbers (Philox 4x32-10, Salmon et al., SC'11).
//
// Every random draw in kmim comes from a RandomStream keyed by (seed, stream id) and positioned
// by a counter. A stream's values depend only on those numbers, never on which rank or thread
// draws them, so data order, crops, masks and initialisations are identical for any rank count
// and thread count. Stream ids for structured keys (epoch, sample index, purpose) are built with
// stream_id().
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <vector>

namespace kmim {

/// The Philox 4x32 bijection with 10 rounds: one 128-bit counter block → 128 random bits.
std::array<std::uint32_t, 4> philox4x32_10(std::array<std::uint32_t, 4> counter,
                                           std::array<std::uint32_t, 2> key);

/// Combines structured parts (e.g. {purpose, epoch, sample}) into one 64-bit stream id.
/// Different part lists give unrelated ids (splitmix64 mixing of each part in order).
std::uint64_t stream_id(std::initializer_list<std::uint64_t> parts);

/// A sequence of 32-bit random words: word i of stream (seed, stream) is a pure function of
/// (seed, stream, i). position() and seek() make the stream checkpointable.
class RandomStream {
 public:
  RandomStream(std::uint64_t seed, std::uint64_t stream, std::uint64_t position = 0);

  std::uint32_t next_u32();
  std::uint64_t next_u64();
  /// Uniform in [0, 1) with 24 random bits (every value exactly representable as float).
  float uniform();
  /// Uniform in [0, 1) with 53 random bits.
  double uniform_double();
  /// Uniform in [lo, hi).
  double uniform(double lo, double hi);
  /// Standard normal (Box–Muller on two 53-bit uniforms).
  double normal();
  /// Uniform integer in [0, n), unbiased (Lemire's multiply-and-reject). n must be > 0.
  std::uint64_t below(std::uint64_t n);

  std::uint64_t seed() const { return seed_; }
  std::uint64_t stream() const { return stream_; }
  /// Number of 32-bit words consumed so far.
  std::uint64_t position() const { return position_; }
  void seek(std::uint64_t position);

 private:
  std::uint64_t seed_;
  std::uint64_t stream_;
  std::uint64_t position_ = 0;
  std::uint64_t cached_block_ = ~std::uint64_t{0};
  std::array<std::uint32_t, 4> cache_{};
};

/// A uniformly random permutation of 0..n-1 (Fisher–Yates driven by stream (seed, stream)).
std::vector<std::uint64_t> random_permutation(std::uint64_t n, std::uint64_t seed,
                                              std::uint64_t stream);

}  // namespace kmim
