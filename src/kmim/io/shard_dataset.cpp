#include "kmim/io/shard_dataset.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <cstring>
#include <numeric>

#include <fmt/format.h>
#include <zlib.h>

#include "kmim/core/error.hpp"
#include "kmim/core/rng.hpp"
#include "kmim/io/hdf5.hpp"

namespace kmim::io {
namespace fs = std::filesystem;

// ---- shard_format ----------------------------------------------------------------------

namespace shard_format {

void Checksum::add(std::span<const std::uint8_t> bytes) {
  // zlib's crc32 takes uInt lengths: feed large buffers in 1 GiB pieces.
  constexpr std::size_t kPiece = std::size_t{1} << 30;
  for (std::size_t pos = 0; pos < bytes.size(); pos += kPiece) {
    const std::size_t n = std::min(kPiece, bytes.size() - pos);
    crc_ = static_cast<std::uint32_t>(
        crc32(crc_, reinterpret_cast<const Bytef*>(bytes.data() + pos), static_cast<uInt>(n)));
  }
}

void Checksum::add_labels(std::span<const std::int32_t> labels) {
  // The checksum is defined over little-endian int32 bytes; x86/ARM hosts store them so.
  static_assert(sizeof(std::int32_t) == 4);
  add(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(labels.data()),
                                    labels.size() * sizeof(std::int32_t)));
}

Fnv1a64& Fnv1a64::add(std::string_view bytes) {
  for (const char c : bytes) {
    hash_ ^= static_cast<std::uint8_t>(c);
    hash_ *= 0x100000001b3ull;
  }
  return *this;
}

Fnv1a64& Fnv1a64::add_u64(std::uint64_t value) {
  char bytes[8];
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((value >> (8 * i)) & 0xFF);
  return add(std::string_view(bytes, 8));
}

std::string Fnv1a64::hex() const { return fmt::format("{:016x}", hash_); }

std::string shard_file_name(const std::string& split, std::size_t index, std::size_t count) {
  return fmt::format("{}-{:05d}-of-{:05d}.h5", split, index, count);
}

std::string manifest_fingerprint(const std::string& content_digest, int image_size,
                                 const std::vector<std::string>& class_ids,
                                 const std::vector<std::uint64_t>& shard_counts,
                                 const std::vector<std::uint32_t>& shard_checksums) {
  Fnv1a64 h;
  h.add(content_digest).add_u64(static_cast<std::uint64_t>(image_size));
  h.add_u64(class_ids.size());
  for (const auto& id : class_ids) h.add(id).add_u64(id.size());
  h.add_u64(shard_counts.size());
  for (std::size_t s = 0; s < shard_counts.size(); ++s)
    h.add_u64(shard_counts[s]).add_u64(s < shard_checksums.size() ? shard_checksums[s] : 0);
  return h.hex();
}

std::uint32_t compute_shard_checksum(const H5Dataset& images, const H5Dataset& labels,
                                     std::size_t rows_per_read) {
  const auto dims = images.dims();
  const hsize_t n = dims.empty() ? 0 : dims[0];
  const hsize_t row = images.row_size();
  Checksum sum;
  std::vector<std::uint8_t> buf;
  for (hsize_t first = 0; first < n; first += rows_per_read) {
    const hsize_t count = std::min<hsize_t>(rows_per_read, n - first);
    buf.resize(count * row);
    images.read_rows<std::uint8_t>(first, count, buf);
    sum.add(buf);
  }
  const auto label_values = labels.read<std::int32_t>();
  sum.add_labels(label_values);
  return sum.value();
}

}  // namespace shard_format


// ---- ShardDataset ----------------------------------------------------------------------

struct ShardDataset::OpenShard {
  std::size_t shard;
  H5Object file;
  H5Dataset images;
};

namespace {

/// Default cap on open shard files: half the process's descriptor limit, leaving room for
/// everything else (MPI, logs, other files), and at least 8.
std::size_t default_max_open() {
  rlimit lim{};
  if (getrlimit(RLIMIT_NOFILE, &lim) != 0 || lim.rlim_cur == RLIM_INFINITY) return 512;
  const auto half = static_cast<std::size_t>(lim.rlim_cur / 2);
  return std::max<std::size_t>(8, half > 64 ? half - 64 : 8);
}

std::string string_attr_or(const H5Object& obj, const std::string& name) {
  return obj.has_attribute(name) ? obj.string_attribute(name) : std::string();
}

void check_image_dataset(const H5Dataset& images, std::uint64_t n, int size) {
  const auto d = images.dims();
  if (d.size() != 4 || d[0] != n || d[1] != static_cast<hsize_t>(size) ||
      d[2] != static_cast<hsize_t>(size) || d[3] != 3)
    images.throw_error("", fmt::format("expected uint8 images of shape [{},{},{},3]", n, size, size));
  if (!images.holds<std::uint8_t>()) images.throw_error("", "images are not uint8");
}

}  // namespace

ShardDataset::ShardDataset(const fs::path& manifest) : path_(manifest), max_open_(default_max_open()) {
  std::lock_guard lock(hdf5_mutex());
  const H5Object f = open_file(manifest);
  if (string_attr_or(f, "format") != shard_format::kManifestKind)
    throw FileError(manifest, fmt::format("not a kmim shard manifest (attribute 'format' is not "
                                          "'{}'; make one with kmim_shard)",
                                          shard_format::kManifestKind));
  const int version = f.attribute<std::int32_t>("format_version");
  if (version < 1 || version > shard_format::kVersion)
    throw FileError(manifest, fmt::format("shard format version {} is not supported (this kmim "
                                          "reads up to version {})",
                                          version, shard_format::kVersion));
  split_ = f.string_attribute("split");
  image_size_ = f.attribute<std::int32_t>("image_size");
  if (image_size_ <= 0) throw FileError(manifest, "attribute image_size is not positive");
  class_ids_ = f.read_strings("class_ids");
  if (class_ids_.empty()) throw FileError(manifest, "/class_ids is empty");
  class_names_ = f.has("class_names") ? f.read_strings("class_names")
                                      : std::vector<std::string>(class_ids_.size());
  if (class_names_.size() != class_ids_.size())
    throw FileError(manifest, "/class_names and /class_ids differ in length");

  const auto files = f.read_strings("shard_files");
  shard_offsets_ = f.read_dataset<std::uint64_t>("shard_offsets");
  shard_checksums_ = f.read_dataset<std::uint32_t>("shard_checksums");
  const auto num_images = f.attribute<std::uint64_t>("num_images");
  if (shard_offsets_.size() != files.size() + 1 || shard_checksums_.size() != files.size() ||
      shard_offsets_.front() != 0 || shard_offsets_.back() != num_images ||
      !std::is_sorted(shard_offsets_.begin(), shard_offsets_.end()))
    throw FileError(manifest, "the shard tables (/shard_files, /shard_offsets, /shard_checksums) "
                              "are inconsistent");
  const std::string digest = f.string_attribute("content_digest");
  fingerprint_ = f.string_attribute("fingerprint");

  // Every shard must exist and match what the manifest recorded (count, checksum, shapes).
  // The data itself is re-checked only by verify(): reading a whole split on open is too slow.
  const fs::path folder = manifest.has_parent_path() ? manifest.parent_path() : fs::path(".");
  labels_.resize(num_images);
  std::vector<std::uint64_t> counts(files.size());
  for (std::size_t s = 0; s < files.size(); ++s) {
    const fs::path shard = folder / files[s];
    const std::uint64_t n = shard_offsets_[s + 1] - shard_offsets_[s];
    counts[s] = n;
    if (!fs::exists(shard))
      throw FileError(shard, fmt::format("shard is missing (listed in manifest '{}')",
                                         manifest.string()));
    const H5Object sf = open_file(shard);
    if (string_attr_or(sf, "format") != shard_format::kShardKind)
      throw FileError(shard, "not a kmim shard file");
    if (sf.attribute<std::uint64_t>("num_images") != n ||
        sf.attribute<std::uint32_t>("checksum") != shard_checksums_[s] ||
        sf.string_attribute("content_digest") != digest)
      throw FileError(shard, fmt::format("shard has changed since manifest '{}' was written "
                                         "(image count, checksum or config differ); rerun "
                                         "kmim_shard",
                                         manifest.string()));
    check_image_dataset(sf.dataset("images"), n, image_size_);
    const H5Dataset labels = sf.dataset("labels");
    if (labels.dims() != std::vector<hsize_t>{n} || !labels.holds<std::int32_t>())
      throw FileError(shard, fmt::format("/labels: expected int32 of shape [{}]", n));
    if (n > 0)
      labels.read_rows<std::int32_t>(0, n, std::span<std::int32_t>(labels_.data() + shard_offsets_[s], n));
    shard_files_.push_back(shard);
  }
  if (shard_format::manifest_fingerprint(digest, image_size_, class_ids_, counts,
                                         shard_checksums_) != fingerprint_)
    throw FileError(manifest, "attribute fingerprint does not match the manifest's content "
                              "(edited or damaged manifest)");
  class_counts_.assign(class_ids_.size(), 0);
  for (const std::int32_t l : labels_) {
    if (l < 0 || l >= num_classes())
      throw FileError(manifest, fmt::format("a shard holds label {} outside 0..{}", l,
                                            num_classes() - 1));
    ++class_counts_[static_cast<std::size_t>(l)];
  }
}

ShardDataset::~ShardDataset() {
  std::lock_guard lock(hdf5_mutex());
  open_.clear();
}

std::size_t ShardDataset::image_bytes() const {
  return static_cast<std::size_t>(image_size_) * static_cast<std::size_t>(image_size_) * 3;
}

std::int32_t ShardDataset::label(std::uint64_t index) const {
  if (index >= labels_.size())
    throw Error(fmt::format("ShardDataset '{}': index {} is out of range (size {})",
                            path_.string(), index, labels_.size()));
  return labels_[index];
}

std::pair<std::uint64_t, std::uint64_t> ShardDataset::shard_range(std::size_t shard) const {
  if (shard >= shard_files_.size())
    throw Error(fmt::format("ShardDataset '{}': shard {} is out of range ({} shards)",
                            path_.string(), shard, shard_files_.size()));
  return {shard_offsets_[shard], shard_offsets_[shard + 1]};
}

const fs::path& ShardDataset::shard_path(std::size_t shard) const {
  shard_range(shard);  // range check
  return shard_files_[shard];
}

void ShardDataset::set_max_open_shards(std::size_t n) {
  std::lock_guard lock(hdf5_mutex());
  max_open_ = std::max<std::size_t>(1, n);
  while (open_.size() > max_open_) open_.pop_back();
}

std::size_t ShardDataset::shard_of(std::uint64_t index) const {
  // The last offset <= index among shards that hold images (empty shards have equal offsets).
  const auto it = std::upper_bound(shard_offsets_.begin(), shard_offsets_.end(), index);
  return static_cast<std::size_t>(it - shard_offsets_.begin()) - 1;
}

ShardDataset::OpenShard& ShardDataset::open_shard(std::size_t shard) const {
  for (auto it = open_.begin(); it != open_.end(); ++it) {
    if ((*it)->shard == shard) {
      if (it != open_.begin()) open_.splice(open_.begin(), open_, it);
      return *open_.front();
    }
  }
  while (open_.size() >= max_open_) open_.pop_back();
  H5Object file = open_file(shard_files_[shard]);
  // No chunk cache: every image is one chunk and is read whole, so caching would only add a
  // copy and up to 1 MiB of memory per open shard (HDF5's default).
  H5Id dapl(H5Pcreate(H5P_DATASET_ACCESS));
  H5Pset_chunk_cache(dapl.get(), 0, 0, H5D_CHUNK_CACHE_W0_DEFAULT);
  const hid_t id = H5Dopen2(file.id(), "images", dapl.get());
  if (id < 0) file.throw_error("images", "cannot open dataset");
  H5Dataset images(H5Id(id), file.file(), "/images", false);
  check_image_dataset(images, shard_offsets_[shard + 1] - shard_offsets_[shard], image_size_);
  open_.push_front(std::make_unique<OpenShard>(OpenShard{shard, std::move(file), std::move(images)}));
  return *open_.front();
}

void ShardDataset::read_rows_locked(std::size_t shard, std::uint64_t first_in_shard,
                                    std::uint64_t count, std::uint8_t* out) const {
  OpenShard& s = open_shard(shard);
  s.images.read_rows<std::uint8_t>(first_in_shard, count,
                                   std::span<std::uint8_t>(out, count * image_bytes()));
}

void ShardDataset::read_range(std::uint64_t first, std::uint64_t count,
                              std::span<std::uint8_t> images, std::span<std::int32_t> labels) const {
  if (first > size() || count > size() - first)
    throw Error(fmt::format("ShardDataset '{}': images {}..{} are out of range (size {})",
                            path_.string(), first, first + count, size()));
  if (images.size() != count * image_bytes())
    throw Error(fmt::format("ShardDataset::read_range: the image buffer holds {} bytes, {} "
                            "images need {}",
                            images.size(), count, count * image_bytes()));
  if (!labels.empty() && labels.size() != count)
    throw Error("ShardDataset::read_range: the label buffer size differs from count");
  if (!labels.empty())
    std::copy_n(labels_.begin() + static_cast<std::ptrdiff_t>(first), count, labels.begin());
  std::lock_guard lock(hdf5_mutex());
  std::uint64_t done = 0;
  while (done < count) {
    const std::uint64_t index = first + done;
    const std::size_t shard = shard_of(index);
    const std::uint64_t run = std::min(count - done, shard_offsets_[shard + 1] - index);
    read_rows_locked(shard, index - shard_offsets_[shard], run, images.data() + done * image_bytes());
    done += run;
  }
}

void ShardDataset::read_indices(std::span<const std::uint64_t> indices,
                                std::span<std::uint8_t> images,
                                std::span<std::int32_t> labels) const {
  const std::size_t n = indices.size();
  const std::size_t bytes = image_bytes();
  if (images.size() != n * bytes)
    throw Error(fmt::format("ShardDataset::read_indices: the image buffer holds {} bytes, {} "
                            "images need {}",
                            images.size(), n, n * bytes));
  if (!labels.empty() && labels.size() != n)
    throw Error("ShardDataset::read_indices: the label buffer size differs from the index count");
  for (std::size_t i = 0; i < n; ++i) {
    if (indices[i] >= size())
      throw Error(fmt::format("ShardDataset '{}': index {} is out of range (size {})",
                              path_.string(), indices[i], size()));
    if (!labels.empty()) labels[i] = labels_[indices[i]];
  }
  // Visit the indices in storage order so that each run of consecutive images in one shard is
  // one HDF5 read; runs whose destinations are consecutive too are read in place.
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return indices[a] < indices[b]; });
  std::lock_guard lock(hdf5_mutex());
  std::size_t i = 0;
  while (i < n) {
    const std::uint64_t start = indices[order[i]];
    const std::size_t shard = shard_of(start);
    // Extend over equal (duplicate) or next indices within the shard.
    std::size_t j = i + 1;
    std::uint64_t last = start;
    bool in_place = true;  // destinations consecutive, no duplicates
    while (j < n) {
      const std::uint64_t v = indices[order[j]];
      if (v == last) {
        in_place = false;
      } else if (v == last + 1 && v < shard_offsets_[shard + 1]) {
        if (order[j] != order[j - 1] + 1) in_place = false;
        last = v;
      } else {
        break;
      }
      ++j;
    }
    const std::uint64_t count = last - start + 1;
    if (in_place) {
      read_rows_locked(shard, start - shard_offsets_[shard], count, images.data() + order[i] * bytes);
    } else {
      scratch_.resize(count * bytes);
      read_rows_locked(shard, start - shard_offsets_[shard], count, scratch_.data());
      for (std::size_t k = i; k < j; ++k)
        std::memcpy(images.data() + order[k] * bytes,
                    scratch_.data() + (indices[order[k]] - start) * bytes, bytes);
    }
    i = j;
  }
}

void ShardDataset::verify() const {
  std::lock_guard lock(hdf5_mutex());
  for (std::size_t s = 0; s < shard_files_.size(); ++s) {
    const H5Object f = open_file(shard_files_[s]);
    const std::uint32_t sum =
        shard_format::compute_shard_checksum(f.dataset("images"), f.dataset("labels"));
    if (sum != shard_checksums_[s])
      throw FileError(shard_files_[s],
                      fmt::format("data do not match the checksum recorded in manifest '{}' "
                                  "(crc32 {:08x}, expected {:08x}): the shard is damaged",
                                  path_.string(), sum, shard_checksums_[s]));
  }
}

// ---- epoch order and batches -------------------------------------------------------------

namespace {
// stream_id purpose tag for epoch orders ("epoch_or" in ASCII).
constexpr std::uint64_t kEpochOrderPurpose = 0x65706f63685f6f72ull;
}  // namespace

std::vector<std::uint64_t> epoch_order(std::uint64_t n, std::uint64_t seed, std::uint64_t epoch) {
  return random_permutation(n, seed, stream_id({kEpochOrderPurpose, epoch}));
}

std::uint64_t num_batches(std::uint64_t n, std::uint64_t global_batch, bool drop_last) {
  if (global_batch == 0) throw Error("num_batches: the global batch size must be positive");
  return drop_last ? n / global_batch : (n + global_batch - 1) / global_batch;
}

std::vector<std::uint64_t> rank_batch_indices(const std::vector<std::uint64_t>& order,
                                              std::uint64_t batch, std::uint64_t global_batch,
                                              int rank, int size) {
  if (global_batch == 0) throw Error("rank_batch_indices: the global batch size must be positive");
  if (size < 1 || rank < 0 || rank >= size)
    throw Error(fmt::format("rank_batch_indices: rank {} of {} is invalid", rank, size));
  const std::uint64_t n = order.size();
  if (batch >= num_batches(n, global_batch, false))
    throw Error(fmt::format("rank_batch_indices: batch {} is past the end ({} items, global "
                            "batch {})",
                            batch, n, global_batch));
  const std::uint64_t begin = batch * global_batch;
  const std::uint64_t len = std::min(global_batch, n - begin);
  // The block partition of dist::block_range (the first len % size ranks get one more); kept
  // here so that kmim_io does not depend on kmim_dist.
  const auto parts = static_cast<std::uint64_t>(size), r = static_cast<std::uint64_t>(rank);
  const std::uint64_t base = len / parts, extra = len % parts;
  const std::uint64_t b = r * base + std::min(r, extra);
  const std::uint64_t e = b + base + (r < extra ? 1 : 0);
  return std::vector<std::uint64_t>(order.begin() + static_cast<std::ptrdiff_t>(begin + b),
                                    order.begin() + static_cast<std::ptrdiff_t>(begin + e));
}

// ---- BatchPrefetcher -------------------------------------------------------------------

BatchPrefetcher::BatchPrefetcher(const ShardDataset& data, IndexSource source, std::size_t depth)
    : data_(data), source_(std::move(source)), depth_(std::max<std::size_t>(1, depth)) {
  free_.resize(depth_);
  thread_ = std::thread([this] { run(); });
}

BatchPrefetcher::BatchPrefetcher(const ShardDataset& data,
                                 std::vector<std::vector<std::uint64_t>> batches, std::size_t depth)
    : BatchPrefetcher(
          data,
          [list = std::move(batches), next = std::size_t{0}]() mutable
          -> std::optional<std::vector<std::uint64_t>> {
            if (next == list.size()) return std::nullopt;
            return std::move(list[next++]);
          },
          depth) {}

BatchPrefetcher::~BatchPrefetcher() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void BatchPrefetcher::run() {
  for (;;) {
    Batch batch;
    {
      std::unique_lock lock(mutex_);
      cv_.wait(lock, [&] { return stop_ || !free_.empty(); });
      if (stop_) return;
      batch = std::move(free_.back());
      free_.pop_back();
    }
    try {
      std::optional<std::vector<std::uint64_t>> indices = source_();
      if (!indices) {
        std::lock_guard lock(mutex_);
        finished_ = true;
        cv_.notify_all();
        return;
      }
      batch.indices = std::move(*indices);
      batch.sequence = produced_++;
      batch.images.resize(batch.indices.size() * data_.image_bytes());
      batch.labels.resize(batch.indices.size());
      data_.read_indices(batch.indices, batch.images, batch.labels);
    } catch (...) {
      std::lock_guard lock(mutex_);
      error_ = std::current_exception();
      finished_ = true;
      cv_.notify_all();
      return;
    }
    {
      std::lock_guard lock(mutex_);
      ready_.push_back(std::move(batch));
    }
    cv_.notify_all();
  }
}

bool BatchPrefetcher::next(Batch& batch) {
  std::unique_lock lock(mutex_);
  cv_.wait(lock, [&] { return !ready_.empty() || finished_; });
  if (ready_.empty()) {
    if (error_) {
      std::exception_ptr e = error_;
      error_ = nullptr;
      std::rethrow_exception(e);
    }
    return false;
  }
  Batch old = std::move(batch);
  batch = std::move(ready_.front());
  ready_.pop_front();
  free_.push_back(std::move(old));  // recycle the caller's previous buffers
  lock.unlock();
  cv_.notify_all();
  return true;
}

}  // namespace kmim::io
