#include "kmim/kmeans/local_vectors.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <future>
#include <map>

#include <fmt/format.h>

#include "kmim/core/error.hpp"
#include "kmim/core/log.hpp"
#include "kmim/core/progress.hpp"

namespace kmim::kmeans {

LocalVectors::LocalVectors(VectorSource& source, const dist::Communicator& comm,
                           std::uint64_t memory_limit_bytes, std::uint64_t chunk_bytes)
    : source_(source), dim_(source.dim()), per_item_(source.vectors_per_item()) {
  std::tie(first_item_, end_item_) = comm.block_range(source.items());
  const std::uint64_t item_bytes = per_item_ * dim_ * sizeof(float);
  const std::uint64_t item_cache_bytes = source.byte_coded() ? per_item_ * dim_ : item_bytes;
  cache_bytes_ = (end_item_ - first_item_) * item_cache_bytes;
  cached_ = cache_bytes_ <= memory_limit_bytes;
  bytes_ = cached_ && source.byte_coded();
  chunk_items_ = std::max<std::uint64_t>(1, chunk_bytes / item_bytes);
  if (!cached_) return;

  Progress progress("kmeans: reading vectors (rank 0's share)", end_item_ - first_item_, "items", 10.0);
  if (bytes_) {
    codes_.resize(count() * dim_);
    for (std::uint64_t item = first_item_; item < end_item_; item += chunk_items_) {
      const std::uint64_t n = std::min(chunk_items_, end_item_ - item);
      std::uint8_t* out = codes_.data() + (item - first_item_) * per_item_ * dim_;
      source_.read_item_codes(item, n, std::span<std::uint8_t>(out, n * per_item_ * dim_));
      progress.advance(n);
    }
  } else {
    cache_.resize(count() * dim_);
    for (std::uint64_t item = first_item_; item < end_item_; item += chunk_items_) {
      const std::uint64_t n = std::min(chunk_items_, end_item_ - item);
      float* out = cache_.data() + (item - first_item_) * per_item_ * dim_;
      source_.read_items(item, n, std::span<float>(out, n * per_item_ * dim_));
      check_finite(out, n * per_item_, item * per_item_);
      progress.advance(n);
    }
  }
  progress.finish();
}

void LocalVectors::check_finite(const float* x, std::size_t n, std::uint64_t first_global_vector) const {
  const std::size_t total = n * dim_;
  bool finite = true;
  for (std::size_t i = 0; i < total; ++i) finite &= std::isfinite(x[i]);
  if (finite) return;
  for (std::size_t i = 0; i < total; ++i) {
    if (std::isfinite(x[i])) continue;
    const std::uint64_t vector = first_global_vector + i / dim_;
    throw FileError(source_.path(),
                    fmt::format("vector {} (item {}, component {}) is {}: K-means needs finite values",
                                vector, vector / per_item_, i % dim_, std::isnan(x[i]) ? "NaN" : "infinite"));
  }
}

void LocalVectors::for_each_chunk(const ChunkVisitor& visit) {
  // Chunks are whole items; in memory they are visited in the same pieces as when streaming so
  // that nothing depends on which mode a rank is in.
  if (cached_) {
    for (std::uint64_t item = first_item_; item < end_item_; item += chunk_items_) {
      const std::uint64_t n_items = std::min(chunk_items_, end_item_ - item);
      const std::uint64_t first = (item - first_item_) * per_item_;
      const std::size_t n = n_items * per_item_;
      if (!bytes_) {
        visit(cache_.data() + first * dim_, n, first);
      } else {
        buffer_.resize(n * dim_);
        source_.decode(codes_.data() + first * dim_, n, buffer_.data());
        visit(buffer_.data(), n, first);
      }
    }
    return;
  }
  // Streaming: the next chunk is read (and checked) on another thread while this one is used.
  auto read_chunk = [this](std::uint64_t item, std::vector<float>& buffer) {
    const std::uint64_t n_items = std::min(chunk_items_, end_item_ - item);
    buffer.resize(n_items * per_item_ * dim_);
    source_.read_items(item, n_items, buffer);
    check_finite(buffer.data(), n_items * per_item_, item * per_item_);
  };
  if (first_item_ == end_item_) return;
  read_chunk(first_item_, buffer_);
  for (std::uint64_t item = first_item_; item < end_item_; item += chunk_items_) {
    const std::uint64_t next = item + chunk_items_;
    std::future<void> ahead;
    if (next < end_item_)
      ahead = std::async(std::launch::async, read_chunk, next, std::ref(next_buffer_));
    const std::uint64_t n_items = std::min(chunk_items_, end_item_ - item);
    visit(buffer_.data(), n_items * per_item_, (item - first_item_) * per_item_);
    if (ahead.valid()) {
      ahead.get();  // rethrows a failed read
      std::swap(buffer_, next_buffer_);
    }
  }
}

void LocalVectors::copy_vectors(std::span<const std::uint64_t> local_indices, float* out) {
  if (cached_) {
    for (std::size_t i = 0; i < local_indices.size(); ++i) {
      if (!bytes_)
        std::copy_n(cache_.data() + local_indices[i] * dim_, dim_, out + i * dim_);
      else
        source_.decode(codes_.data() + local_indices[i] * dim_, 1, out + i * dim_);
    }
    return;
  }
  // Streaming: read each needed item once.
  std::map<std::uint64_t, std::vector<std::size_t>> by_item;
  for (std::size_t i = 0; i < local_indices.size(); ++i)
    by_item[first_item_ + local_indices[i] / per_item_].push_back(i);
  std::vector<std::uint64_t> items;
  for (const auto& entry : by_item) items.push_back(entry.first);
  std::vector<float> vectors;
  read_items(items, vectors);
  std::size_t slot = 0;
  for (const auto& [item, rows] : by_item) {
    for (const std::size_t i : rows) {
      const std::uint64_t within = local_indices[i] % per_item_;
      std::copy_n(vectors.data() + (slot * per_item_ + within) * dim_, dim_, out + i * dim_);
    }
    ++slot;
  }
}

void LocalVectors::read_items(std::span<const std::uint64_t> items, std::vector<float>& out) {
  out.resize(items.size() * per_item_ * dim_);
  if (cached_) {
    const std::size_t item_values = per_item_ * dim_;
    for (std::size_t i = 0; i < items.size(); ++i) {
      const std::size_t at = (items[i] - first_item_) * item_values;
      if (!bytes_)
        std::copy_n(cache_.data() + at, item_values, out.data() + i * item_values);
      else
        source_.decode(codes_.data() + at, per_item_, out.data() + i * item_values);
    }
    return;
  }
  source_.read_item_list(items, out);
  // Non-contiguous items: check per item to name the right vector.
  for (std::size_t i = 0; i < items.size(); ++i)
    check_finite(out.data() + i * per_item_ * dim_, per_item_, items[i] * per_item_);
}

std::uint64_t parse_byte_size(const std::string& text, const std::string& option) {
  std::size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    throw OptionError(option, text, "expected a size such as 8G, 512M or 1000000 (bytes)");
  }
  std::string suffix = text.substr(used);
  if (!suffix.empty() && (suffix.back() == 'B' || suffix.back() == 'b')) suffix.pop_back();
  double scale = 1;
  if (suffix.empty()) scale = 1;
  else if (suffix == "K" || suffix == "k") scale = 1024.0;
  else if (suffix == "M" || suffix == "m") scale = 1024.0 * 1024;
  else if (suffix == "G" || suffix == "g") scale = 1024.0 * 1024 * 1024;
  else if (suffix == "T" || suffix == "t") scale = 1024.0 * 1024 * 1024 * 1024;
  else throw OptionError(option, text, "unknown unit (use K, M, G or T)");
  if (!(value >= 0) || !std::isfinite(value * scale))
    throw OptionError(option, text, "must be a non-negative size");
  return static_cast<std::uint64_t>(value * scale);
}

std::vector<float> gather_vectors(LocalVectors& data, const dist::Communicator& comm,
                                  std::span<const std::uint64_t> global_indices) {
  const std::size_t d = data.dim();
  const std::uint64_t first = data.first_vector();
  const std::uint64_t end = first + data.count();
  std::vector<std::uint64_t> slots, local;
  for (std::size_t i = 0; i < global_indices.size(); ++i) {
    if (global_indices[i] >= first && global_indices[i] < end) {
      slots.push_back(i);
      local.push_back(global_indices[i] - first);
    }
  }
  std::vector<float> mine(local.size() * d);
  data.copy_vectors(local, mine.data());
  const auto all_slots = comm.allgatherv<std::uint64_t>(slots);
  const auto all_vectors = comm.allgatherv<float>(mine);
  if (all_slots.size() != global_indices.size())
    throw Error("gather_vectors: a requested vector is owned by no rank");
  std::vector<float> out(global_indices.size() * d);
  for (std::size_t r = 0; r < all_slots.size(); ++r)
    std::copy_n(all_vectors.data() + r * d, d, out.data() + all_slots[r] * d);
  return out;
}

}  // namespace kmim::kmeans
