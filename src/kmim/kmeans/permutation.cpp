#include "kmim/kmeans/permutation.hpp"

#include "kmim/core/error.hpp"
#include "kmim/core/rng.hpp"

namespace kmim::kmeans {
namespace {
std::uint64_t mix64(std::uint64_t x) {
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
}  // namespace

IndexPermutation::IndexPermutation(std::uint64_t n, std::uint64_t seed, std::uint64_t stream) : n_(n) {
  // Smallest even bit count 2h with 2^(2h) >= n (h >= 1): the domain is at most 4n, so
  // cycle-walking takes fewer than 4 steps on average.
  int bits = 2;
  while (bits < 64 && (std::uint64_t{1} << bits) < n) bits += 2;
  half_bits_ = bits / 2;
  half_mask_ = (std::uint64_t{1} << half_bits_) - 1;
  RandomStream rng(seed, stream);
  for (auto& k : keys_) k = rng.next_u64();
}

std::uint64_t IndexPermutation::feistel(std::uint64_t x) const {
  std::uint64_t left = x >> half_bits_;
  std::uint64_t right = x & half_mask_;
  for (const std::uint64_t key : keys_) {
    const std::uint64_t next = left ^ (mix64(right ^ key) & half_mask_);
    left = right;
    right = next;
  }
  return (left << half_bits_) | right;
}

std::uint64_t IndexPermutation::operator()(std::uint64_t position) const {
  if (position >= n_) throw Error("IndexPermutation: position out of range");
  std::uint64_t x = feistel(position);
  while (x >= n_) x = feistel(x);  // cycle-walk: stays a bijection on [0, n)
  return x;
}

}  // namespace kmim::kmeans
