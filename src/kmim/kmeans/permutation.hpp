// A seeded random permutation of 0..n-1 evaluated one index at a time, in O(1) memory.
//
// Mini-batch passes and sampling need "the i-th element of a random order of n items" for n up to
// hundreds of millions (one item per feature vector). Materialising the order would cost 8n bytes
// on every rank; instead a keyed Feistel network permutes the smallest 2^(2h) >= n domain and
// cycle-walks back into [0, n) (Black & Rogaway, "Ciphers with arbitrary finite domains", 2002).
// The order is a pure function of (n, seed, stream): identical on every rank and thread.
#pragma once

#include <array>
#include <cstdint>

namespace kmim::kmeans {

class IndexPermutation {
 public:
  IndexPermutation(std::uint64_t n, std::uint64_t seed, std::uint64_t stream);

  std::uint64_t size() const { return n_; }
  /// The element at position `position` (< size()).
  std::uint64_t operator()(std::uint64_t position) const;

 private:
  static constexpr int kRounds = 6;
  std::uint64_t feistel(std::uint64_t x) const;

  std::uint64_t n_;
  int half_bits_ = 1;
  std::uint64_t half_mask_ = 1;
  std::array<std::uint64_t, kRounds> keys_{};
};

}  // namespace kmim::kmeans
