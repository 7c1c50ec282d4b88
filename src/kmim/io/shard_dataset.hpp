// Reading the image shards written by kmim_shard (docs/shard.md has the file format).
//
// A split is a manifest `<out>/<split>.h5` plus shard files `<out>/<split>/<split>-NNNNN-of-MMMMM.h5`.
// The manifest presents all shards as one dataset through HDF5 virtual datasets (for h5py and
// h5dump users); ShardDataset instead opens the shard files directly (faster, and independent of
// where HDF5 looks for VDS sources), keeps their handles open lazily, and reads contiguous runs
// of images with one HDF5 call each.
//
// Data order for training: epoch_order() gives the global order of an epoch (a pure function of
// seed and epoch), rank_batch_indices() cuts this rank's part of a global batch out of it, so the
// global batches are identical for every rank count (SPEC §6: data-parallel pretraining).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <filesystem>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "kmim/io/hdf5.hpp"  // hdf5_mutex()

namespace kmim::io {

class H5Object;
class H5Dataset;

/// Names and numbers of the shard file format (docs/shard.md). Writer and reader share them.
namespace shard_format {
inline constexpr const char* kShardKind = "kmim_shard";
inline constexpr const char* kManifestKind = "kmim_shard_manifest";
inline constexpr int kVersion = 1;
inline constexpr const char* kChecksumAlgorithm = "crc32";

/// The per-shard checksum: zlib's CRC-32 over the bytes of `images` (uint8, row-major
/// [n,H,W,3]) followed by the bytes of `labels` (int32 little-endian). Feed it in that order.
class Checksum {
 public:
  void add(std::span<const std::uint8_t> bytes);
  void add_labels(std::span<const std::int32_t> labels);
  std::uint32_t value() const { return crc_; }

 private:
  std::uint32_t crc_ = 0;
};

/// 64-bit FNV-1a, for the small digests (config, candidate lists, fingerprints).
class Fnv1a64 {
 public:
  Fnv1a64& add(std::string_view bytes);
  Fnv1a64& add_u64(std::uint64_t value);  // 8 bytes, little-endian
  std::uint64_t value() const { return hash_; }
  std::string hex() const;

 private:
  std::uint64_t hash_ = 0xcbf29ce484222325ull;
};

/// The shard file name of shard `index` of `count` in split `split`: "train-00003-of-00125.h5".
std::string shard_file_name(const std::string& split, std::size_t index, std::size_t count);

/// The manifest's fingerprint: FNV-1a 64 (hex) over the content digest, image size, class ids,
/// and every shard's image count and checksum, in this order (docs/shard.md).
std::string manifest_fingerprint(const std::string& content_digest, int image_size,
                                 const std::vector<std::string>& class_ids,
                                 const std::vector<std::uint64_t>& shard_counts,
                                 const std::vector<std::uint32_t>& shard_checksums);

/// Recomputes the checksum of a shard's stored images and labels (reads the whole shard,
/// `rows_per_read` images at a time).
std::uint32_t compute_shard_checksum(const H5Dataset& images, const H5Dataset& labels,
                                     std::size_t rows_per_read = 64);
}  // namespace shard_format

class ShardDataset {
 public:
  /// Opens and validates a split manifest (<out>/<split>.h5). Throws FileError naming the file
  /// on anything wrong (missing datasets, shards missing or changed, wrong shapes).
  explicit ShardDataset(const std::filesystem::path& manifest);
  ~ShardDataset();
  ShardDataset(const ShardDataset&) = delete;
  ShardDataset& operator=(const ShardDataset&) = delete;

  std::uint64_t size() const { return labels_.size(); }  // number of images
  int image_size() const { return image_size_; }         // H == W
  int num_classes() const { return static_cast<int>(class_ids_.size()); }
  const std::vector<std::string>& class_ids() const { return class_ids_; }  // wnids, index = label
  /// Human-readable class names (empty strings when the dataset was made without them).
  const std::vector<std::string>& class_names() const { return class_names_; }
  std::int32_t label(std::uint64_t index) const;  // labels are kept in memory
  const std::vector<std::int32_t>& labels() const { return labels_; }
  std::size_t image_bytes() const;  // H*W*3
  /// Images per class (index = label).
  const std::vector<std::uint64_t>& class_counts() const { return class_counts_; }
  const std::string& split() const { return split_; }

  /// Reads images [first, first+count) (uint8 HWC RGB, contiguous) and, if labels is non-empty,
  /// their labels.
  void read_range(std::uint64_t first, std::uint64_t count, std::span<std::uint8_t> images,
                  std::span<std::int32_t> labels = {}) const;
  /// Reads arbitrary indices (any order, duplicates allowed) — batches of a shuffled epoch.
  void read_indices(std::span<const std::uint64_t> indices, std::span<std::uint8_t> images,
                    std::span<std::int32_t> labels = {}) const;

  std::size_t num_shards() const { return shard_files_.size(); }
  std::pair<std::uint64_t, std::uint64_t> shard_range(std::size_t shard) const;  // [first, last)
  const std::filesystem::path& shard_path(std::size_t shard) const;
  /// A stable hex id of the manifest content (checksums + config), for provenance.
  std::string fingerprint() const { return fingerprint_; }
  const std::filesystem::path& path() const { return path_; }

  /// Re-reads every shard and recomputes its checksum; throws FileError naming the first shard
  /// whose data does not match (slow: reads the whole split).
  void verify() const;

  /// Most shard files kept open at once (least recently used ones are closed beyond it).
  std::size_t max_open_shards() const { return max_open_; }
  void set_max_open_shards(std::size_t n);

 private:
  struct OpenShard;
  std::size_t shard_of(std::uint64_t index) const;
  /// The open handle of `shard` (opens it, closing the least recently used beyond the cap).
  /// Call with hdf5_mutex() held.
  OpenShard& open_shard(std::size_t shard) const;
  void read_rows_locked(std::size_t shard, std::uint64_t first_in_shard, std::uint64_t count,
                        std::uint8_t* out) const;

  std::filesystem::path path_;
  std::string split_;
  int image_size_ = 0;
  std::vector<std::string> class_ids_;
  std::vector<std::string> class_names_;
  std::vector<std::int32_t> labels_;
  std::vector<std::uint64_t> class_counts_;
  std::vector<std::filesystem::path> shard_files_;
  std::vector<std::uint64_t> shard_offsets_;  // size num_shards + 1
  std::vector<std::uint32_t> shard_checksums_;
  std::string fingerprint_;
  std::size_t max_open_ = 64;
  mutable std::list<std::unique_ptr<OpenShard>> open_;  // most recently used first
  mutable std::vector<std::uint8_t> scratch_;
};

/// The global index order of `epoch`: a permutation of 0..n-1 that depends only on
/// (seed, epoch).
std::vector<std::uint64_t> epoch_order(std::uint64_t n, std::uint64_t seed, std::uint64_t epoch);

/// Number of global batches of size `global_batch` in `n` items (the last one may be partial).
std::uint64_t num_batches(std::uint64_t n, std::uint64_t global_batch, bool drop_last);

/// This rank's part of a global batch: the global batch b of size global_batch is
/// order[b*global_batch, min((b+1)*global_batch, n)) (the last batch may be partial); rank r
/// gets a contiguous block of it (dist::block_range). Identical global order for any rank count.
std::vector<std::uint64_t> rank_batch_indices(const std::vector<std::uint64_t>& order,
                                              std::uint64_t batch, std::uint64_t global_batch,
                                              int rank, int size);

/// One batch read by a BatchPrefetcher.
struct Batch {
  std::uint64_t sequence = 0;           ///< 0, 1, 2, ... in the order the index lists came
  std::vector<std::uint64_t> indices;   ///< the dataset indices, in batch order
  std::vector<std::uint8_t> images;     ///< indices.size() * image_bytes(), HWC RGB
  std::vector<std::int32_t> labels;     ///< indices.size()
  std::size_t size() const { return indices.size(); }
};

/// Background prefetch: a thread reads the next batches into a small ring of buffers while the
/// caller works on the current one.
///
///   BatchPrefetcher pf(data, [&, b = 0ull]() mutable -> std::optional<std::vector<uint64_t>> {
///     if (b == batches) return std::nullopt;
///     return rank_batch_indices(order, b++, global_batch, rank, size);
///   });
///   Batch batch;
///   while (pf.next(batch)) train_step(batch);
///
/// The index source is called on the background thread, in order, until it returns nullopt.
/// An exception thrown by the source or by a read is rethrown by next() in place of the batch
/// that failed. The destructor stops the thread cleanly (also mid-sequence).
class BatchPrefetcher {
 public:
  using IndexSource = std::function<std::optional<std::vector<std::uint64_t>>()>;

  /// `depth`: batches read ahead (at least 1).
  BatchPrefetcher(const ShardDataset& data, IndexSource source, std::size_t depth = 2);
  /// A fixed list of batches.
  BatchPrefetcher(const ShardDataset& data, std::vector<std::vector<std::uint64_t>> batches,
                  std::size_t depth = 2);
  ~BatchPrefetcher();
  BatchPrefetcher(const BatchPrefetcher&) = delete;
  BatchPrefetcher& operator=(const BatchPrefetcher&) = delete;

  /// Moves the next batch into `batch` (its old buffers are recycled for reading ahead).
  /// Returns false when the sequence has ended. Rethrows a failure of the reading thread.
  bool next(Batch& batch);

 private:
  void run();

  const ShardDataset& data_;
  IndexSource source_;
  std::size_t depth_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Batch> ready_;
  std::vector<Batch> free_;
  std::exception_ptr error_;
  bool finished_ = false;  // the source ended or failed: nothing more after ready_
  bool stop_ = false;
  std::uint64_t produced_ = 0;
  std::thread thread_;
};

}  // namespace kmim::io
