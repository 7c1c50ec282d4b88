// This rank's share of the input vectors: a contiguous block of items (dist::block_range over
// items), held in memory when it fits the memory limit and streamed from the source on every
// pass otherwise (SPEC §6: ImageNet-1k patches do not fit in memory).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "kmim/dist/mpi.hpp"
#include "kmim/kmeans/vector_source.hpp"

namespace kmim::kmeans {

class LocalVectors {
 public:
  /// Chunk visitor: x holds n vectors (rows of dim()), the first being local vector `first`.
  using ChunkVisitor = std::function<void(const float* x, std::size_t n, std::uint64_t first)>;

  /// Takes the block of items owned by comm's rank. Caches the block in memory when its
  /// vectors take at most memory_limit_bytes (as bytes for byte-coded sources, else as floats;
  /// read now, every value checked finite), else streams it in chunks of about chunk_bytes.
  LocalVectors(VectorSource& source, const dist::Communicator& comm, std::uint64_t memory_limit_bytes,
               std::uint64_t chunk_bytes = std::uint64_t{64} << 20);

  VectorSource& source() const { return source_; }
  std::size_t dim() const { return dim_; }
  std::size_t vectors_per_item() const { return per_item_; }
  std::uint64_t first_item() const { return first_item_; }
  std::uint64_t end_item() const { return end_item_; }
  std::uint64_t first_vector() const { return first_item_ * per_item_; }
  std::uint64_t count() const { return (end_item_ - first_item_) * per_item_; }  ///< local vectors
  bool cached() const { return cached_; }
  /// Cached as bytes (pixel mode: 1 byte per value, decoded per chunk when used).
  bool cached_as_bytes() const { return cached_ && bytes_; }
  /// Bytes this rank's share takes in memory when cached (floats, or bytes for byte-coded input).
  std::uint64_t cache_bytes() const { return cache_bytes_; }
  bool owns_item(std::uint64_t item) const { return item >= first_item_ && item < end_item_; }

  /// Visits every local vector once, in order (streaming: reading one chunk ahead on another
  /// thread).
  void for_each_chunk(const ChunkVisitor& visit);
  /// Copies the listed local vectors (local indices, any order) into out (one row each).
  void copy_vectors(std::span<const std::uint64_t> local_indices, float* out);
  /// The vectors of the listed owned items (global item indices, ascending) into out.
  void read_items(std::span<const std::uint64_t> items, std::vector<float>& out);

  /// Throws FileError naming the input and the global vector when a value is NaN or infinite.
  void check_finite(const float* x, std::size_t n, std::uint64_t first_global_vector) const;

 private:
  VectorSource& source_;
  std::size_t dim_;
  std::size_t per_item_;
  std::uint64_t first_item_ = 0;
  std::uint64_t end_item_ = 0;
  std::uint64_t chunk_items_ = 1;
  bool cached_ = false;
  std::uint64_t cache_bytes_ = 0;
  bool bytes_ = false;  // the cache holds bytes (byte-coded source)
  std::vector<float> cache_;
  std::vector<std::uint8_t> codes_;  // byte-coded cache
  std::vector<float> buffer_;
  std::vector<float> next_buffer_;  // streaming: the chunk being read ahead
};

/// Parses a byte count: "8G", "512M", "64k", "1.5G", "1000000" (K/M/G/T are powers of 1024).
/// Throws OptionError for `option` otherwise.
std::uint64_t parse_byte_size(const std::string& text, const std::string& option);

/// The vectors at the listed global vector indices, in list order, on every rank (each rank
/// contributes the ones it owns; allgatherv).
std::vector<float> gather_vectors(LocalVectors& data, const dist::Communicator& comm,
                                  std::span<const std::uint64_t> global_indices);

}  // namespace kmim::kmeans
