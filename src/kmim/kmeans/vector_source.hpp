// Where K-means vectors come from. A source is a sequence of `items`, each holding the same
// number of vectors of `dim` floats:
//   pixel mode    item = one image of a shard split, vectors = its patch vectors (patches.hpp)
//   feature mode  item = one row of the first dimension of an HDF5 float32 dataset
//                 ([N, D]: one vector per item; [N, T, D]: T vectors per item)
// Vector v of the input is vector v % vectors_per_item() of item v / vectors_per_item(); this
// global numbering is what sampling, seeding and rank-count independence are defined on.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace kmim::kmeans {

class VectorSource {
 public:
  virtual ~VectorSource() = default;

  virtual std::uint64_t items() const = 0;
  virtual std::size_t vectors_per_item() const = 0;
  virtual std::size_t dim() const = 0;
  std::uint64_t vectors() const { return items() * vectors_per_item(); }

  /// Reads items [first, first + count) into out (count * vectors_per_item() rows of dim()).
  virtual void read_items(std::uint64_t first, std::uint64_t count, std::span<float> out) = 0;
  /// Reads the listed items (ascending order) into out, one item after the other.
  virtual void read_item_list(std::span<const std::uint64_t> items, std::span<float> out) = 0;

  /// Byte-coded sources (pixel patches): every vector component is table[component % channels]
  /// [byte], so a rank can cache the bytes (4× smaller than floats) and decode them when used.
  virtual bool byte_coded() const { return false; }
  /// Reads the bytes of items [first, first + count) (byte-coded sources only).
  virtual void read_item_codes(std::uint64_t first, std::uint64_t count, std::span<std::uint8_t> out);
  /// Turns n_vectors vectors of bytes into floats, exactly the values read_items gives.
  virtual void decode(const std::uint8_t* codes, std::size_t n_vectors, float* out) const;

  /// The input file (named in error messages).
  virtual const std::filesystem::path& path() const = 0;
  /// A stable text identifying the input's content (provenance, checkpoint compatibility).
  virtual std::string fingerprint() const = 0;
  /// "pixel" or "feature".
  virtual std::string mode() const = 0;
};

/// Vectors already in memory (tests, benchmarks): `data` holds items * vectors_per_item rows.
class MemoryVectorSource final : public VectorSource {
 public:
  MemoryVectorSource(std::vector<float> data, std::size_t dim, std::size_t vectors_per_item = 1,
                     std::filesystem::path name = "memory");

  std::uint64_t items() const override { return items_; }
  std::size_t vectors_per_item() const override { return per_item_; }
  std::size_t dim() const override { return dim_; }
  void read_items(std::uint64_t first, std::uint64_t count, std::span<float> out) override;
  void read_item_list(std::span<const std::uint64_t> items, std::span<float> out) override;
  const std::filesystem::path& path() const override { return name_; }
  std::string fingerprint() const override;
  std::string mode() const override { return "feature"; }

 private:
  std::vector<float> data_;
  std::size_t dim_;
  std::size_t per_item_;
  std::uint64_t items_;
  std::filesystem::path name_;
};

/// Feature mode: a float32 dataset [N, D] or [N, T, D] in an HDF5 file, read by each rank on its
/// own (serial HDF5; set HDF5_USE_FILE_LOCKING=FALSE on shared file systems).
class FeatureFileSource final : public VectorSource {
 public:
  /// Opens and checks the file; throws FileError naming the file and dataset on any problem
  /// (missing, not float32, not 2-D/3-D, empty).
  FeatureFileSource(const std::filesystem::path& file, const std::string& dataset);
  ~FeatureFileSource() override;

  std::uint64_t items() const override { return items_; }
  std::size_t vectors_per_item() const override { return per_item_; }
  std::size_t dim() const override { return dim_; }
  void read_items(std::uint64_t first, std::uint64_t count, std::span<float> out) override;
  void read_item_list(std::span<const std::uint64_t> items, std::span<float> out) override;
  const std::filesystem::path& path() const override { return file_; }
  std::string fingerprint() const override { return fingerprint_; }
  std::string mode() const override { return "feature"; }
  const std::string& dataset_name() const { return dataset_name_; }

 private:
  struct Handles;
  std::filesystem::path file_;
  std::string dataset_name_;
  std::unique_ptr<Handles> handles_;
  std::uint64_t items_ = 0;
  std::size_t per_item_ = 1;
  std::size_t dim_ = 0;
  std::string fingerprint_;
};

}  // namespace kmim::kmeans
