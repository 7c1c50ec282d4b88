#include "kmim/core/rng.hpp"

#include <cmath>
#include <numbers>
#include <numeric>

namespace kmim {
namespace {

constexpr std::uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr std::uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr std::uint32_t kPhiloxW0 = 0x9E3779B9u;  // golden ratio
constexpr std::uint32_t kPhiloxW1 = 0xBB67AE85u;  // sqrt(3) - 1

inline void mulhilo(std::uint32_t a, std::uint32_t b, std::uint32_t& hi, std::uint32_t& lo) {
  const std::uint64_t p = static_cast<std::uint64_t>(a) * b;
  hi = static_cast<std::uint32_t>(p >> 32);
  lo = static_cast<std::uint32_t>(p);
}

// 64×64 → 128-bit product as (hi, lo), portable (no __int128, which -Wpedantic rejects).
inline void mul64(std::uint64_t a, std::uint64_t b, std::uint64_t& hi, std::uint64_t& lo) {
  const std::uint64_t a_lo = a & 0xFFFFFFFFu, a_hi = a >> 32, b_lo = b & 0xFFFFFFFFu, b_hi = b >> 32;
  const std::uint64_t p0 = a_lo * b_lo, p1 = a_lo * b_hi, p2 = a_hi * b_lo, p3 = a_hi * b_hi;
  const std::uint64_t mid = (p0 >> 32) + (p1 & 0xFFFFFFFFu) + (p2 & 0xFFFFFFFFu);
  lo = (mid << 32) | (p0 & 0xFFFFFFFFu);
  hi = p3 + (p1 >> 32) + (p2 >> 32) + (mid >> 32);
}

std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace

std::array<std::uint32_t, 4> philox4x32_10(std::array<std::uint32_t, 4> c,
                                           std::array<std::uint32_t, 2> k) {
  for (int round = 0; round < 10; ++round) {
    std::uint32_t hi0, lo0, hi1, lo1;
    mulhilo(kPhiloxM0, c[0], hi0, lo0);
    mulhilo(kPhiloxM1, c[2], hi1, lo1);
    c = {hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0};
    k[0] += kPhiloxW0;
    k[1] += kPhiloxW1;
  }
  return c;
}

std::uint64_t stream_id(std::initializer_list<std::uint64_t> parts) {
  std::uint64_t h = 0x6B6D696D5F726E67ull;  // "kmim_rng"
  for (std::uint64_t p : parts) h = splitmix64(h ^ splitmix64(p));
  return h;
}

RandomStream::RandomStream(std::uint64_t seed, std::uint64_t stream, std::uint64_t position)
    : seed_(seed), stream_(stream), position_(position) {}

void RandomStream::seek(std::uint64_t position) { position_ = position; }

std::uint32_t RandomStream::next_u32() {
  // Counter block b holds words 4b..4b+3: counter = (b_lo, b_hi, stream_lo, stream_hi),
  // key = (seed_lo, seed_hi).
  const std::uint64_t block = position_ >> 2;
  if (block != cached_block_) {
    cache_ = philox4x32_10(
        {static_cast<std::uint32_t>(block), static_cast<std::uint32_t>(block >> 32),
         static_cast<std::uint32_t>(stream_), static_cast<std::uint32_t>(stream_ >> 32)},
        {static_cast<std::uint32_t>(seed_), static_cast<std::uint32_t>(seed_ >> 32)});
    cached_block_ = block;
  }
  return cache_[position_++ & 3];
}

std::uint64_t RandomStream::next_u64() {
  const std::uint64_t lo = next_u32();
  const std::uint64_t hi = next_u32();
  return lo | (hi << 32);
}

float RandomStream::uniform() {
  return static_cast<float>(next_u32() >> 8) * (1.0f / 16777216.0f);
}

double RandomStream::uniform_double() {
  return static_cast<double>(next_u64() >> 11) * (1.0 / 9007199254740992.0);
}

double RandomStream::uniform(double lo, double hi) { return lo + (hi - lo) * uniform_double(); }

double RandomStream::normal() {
  // 1 - u lies in (0, 1], so the log is finite.
  const double u1 = 1.0 - uniform_double();
  const double u2 = uniform_double();
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

std::uint64_t RandomStream::below(std::uint64_t n) {
  // Lemire, "Fast random integer generation in an interval" (2019).
  std::uint64_t high, low;
  mul64(next_u64(), n, high, low);
  if (low < n) {
    const std::uint64_t threshold = (0 - n) % n;
    while (low < threshold) mul64(next_u64(), n, high, low);
  }
  return high;
}

std::vector<std::uint64_t> random_permutation(std::uint64_t n, std::uint64_t seed,
                                              std::uint64_t stream) {
  std::vector<std::uint64_t> perm(n);
  std::iota(perm.begin(), perm.end(), std::uint64_t{0});
  RandomStream rng(seed, stream);
  for (std::uint64_t i = n; i > 1; --i) std::swap(perm[i - 1], perm[rng.below(i)]);
  return perm;
}

}  // namespace kmim
