#include "kmim/kmeans/vector_source.hpp"

#include <algorithm>
#include <mutex>

#include <fmt/format.h>

#include "kmim/core/error.hpp"
#include "kmim/io/hdf5.hpp"
#include "kmim/io/shard_dataset.hpp"

namespace kmim::kmeans {

void VectorSource::read_item_codes(std::uint64_t, std::uint64_t, std::span<std::uint8_t>) {
  throw Error("VectorSource::read_item_codes: this source is not byte-coded");
}

void VectorSource::decode(const std::uint8_t*, std::size_t, float*) const {
  throw Error("VectorSource::decode: this source is not byte-coded");
}

// ---- MemoryVectorSource ----------------------------------------------------------------------

MemoryVectorSource::MemoryVectorSource(std::vector<float> data, std::size_t dim,
                                       std::size_t vectors_per_item, std::filesystem::path name)
    : data_(std::move(data)), dim_(dim), per_item_(vectors_per_item), name_(std::move(name)) {
  const std::size_t item_floats = dim_ * per_item_;
  if (item_floats == 0 || data_.size() % item_floats != 0)
    throw Error("MemoryVectorSource: data size is not a whole number of items");
  items_ = data_.size() / item_floats;
}

void MemoryVectorSource::read_items(std::uint64_t first, std::uint64_t count, std::span<float> out) {
  const std::size_t item_floats = dim_ * per_item_;
  if (first + count > items_ || out.size() != count * item_floats)
    throw Error("MemoryVectorSource: read outside the data or wrong buffer size");
  std::copy_n(data_.begin() + static_cast<std::ptrdiff_t>(first * item_floats), count * item_floats,
              out.begin());
}

void MemoryVectorSource::read_item_list(std::span<const std::uint64_t> items, std::span<float> out) {
  const std::size_t item_floats = dim_ * per_item_;
  if (out.size() != items.size() * item_floats) throw Error("MemoryVectorSource: wrong buffer size");
  for (std::size_t i = 0; i < items.size(); ++i)
    read_items(items[i], 1, out.subspan(i * item_floats, item_floats));
}

std::string MemoryVectorSource::fingerprint() const {
  io::shard_format::Fnv1a64 h;
  h.add_u64(items_).add_u64(per_item_).add_u64(dim_);
  h.add(std::string_view(reinterpret_cast<const char*>(data_.data()), data_.size() * sizeof(float)));
  return h.hex();
}

// ---- FeatureFileSource -----------------------------------------------------------------------

struct FeatureFileSource::Handles {
  io::H5Object file;
  io::H5Dataset dataset;
};

FeatureFileSource::FeatureFileSource(const std::filesystem::path& file, const std::string& dataset)
    : file_(file), dataset_name_(dataset) {
  std::lock_guard lock(io::hdf5_mutex());
  require_file(std::filesystem::exists(file_), file_, "does not exist");
  require_file(io::is_hdf5_file(file_), file_, "is not an HDF5 file");
  io::H5Object f = io::open_file(file_, io::FileMode::read);
  require_file(f.has(dataset_name_), file_,
               fmt::format("has no dataset '{}' (choose one with --dataset)", dataset_name_));
  io::H5Dataset d = f.dataset(dataset_name_);
  const auto dims = d.dims();
  require_file(dims.size() == 2 || dims.size() == 3, file_,
               fmt::format("dataset '{}': expected 2 dimensions [N, D] (or 3: [N, T, D]), found {}",
                           dataset_name_, dims.size()));
  require_file(d.holds<float>(), file_,
               fmt::format("dataset '{}': expected float32 values", dataset_name_));
  items_ = dims[0];
  per_item_ = dims.size() == 3 ? dims[1] : 1;
  dim_ = dims.back();
  require_file(dim_ > 0 && per_item_ > 0, file_,
               fmt::format("dataset '{}': a dimension is zero", dataset_name_));
  require_file(items_ > 0, file_, fmt::format("dataset '{}' is empty (no vectors)", dataset_name_));

  // Fingerprint: FNV-1a over the shape and the first, middle and last rows (reading everything
  // would cost a pass over the data; this catches a different or regenerated file).
  io::shard_format::Fnv1a64 h;
  h.add(dataset_name_);
  for (hsize_t v : dims) h.add_u64(v);
  const std::size_t row = per_item_ * dim_;
  const std::uint64_t probe = std::min<std::uint64_t>(items_, 16);
  std::vector<float> buffer(probe * row);
  for (const std::uint64_t first : {std::uint64_t{0}, (items_ - probe) / 2, items_ - probe}) {
    d.read_rows<float>(first, probe, buffer);
    h.add(std::string_view(reinterpret_cast<const char*>(buffer.data()), buffer.size() * sizeof(float)));
  }
  fingerprint_ = h.hex();
  handles_ = std::make_unique<Handles>(Handles{std::move(f), std::move(d)});
}

FeatureFileSource::~FeatureFileSource() {
  std::lock_guard lock(io::hdf5_mutex());
  handles_.reset();
}

void FeatureFileSource::read_items(std::uint64_t first, std::uint64_t count, std::span<float> out) {
  if (first + count > items_ || out.size() != count * per_item_ * dim_)
    throw FileError(file_, "internal: read outside the dataset or wrong buffer size");
  std::lock_guard lock(io::hdf5_mutex());
  handles_->dataset.read_rows<float>(first, count, out);
}

void FeatureFileSource::read_item_list(std::span<const std::uint64_t> items, std::span<float> out) {
  const std::size_t row = per_item_ * dim_;
  if (out.size() != items.size() * row) throw FileError(file_, "internal: wrong buffer size");
  // One read per run of consecutive items.
  std::size_t i = 0;
  while (i < items.size()) {
    std::size_t j = i + 1;
    while (j < items.size() && items[j] == items[j - 1] + 1) ++j;
    read_items(items[i], j - i, out.subspan(i * row, (j - i) * row));
    i = j;
  }
}

}  // namespace kmim::kmeans
