// HDF5 with RAII handles, typed reads and writes, and errors that name the file and object.
//
// Every HDF5 failure becomes kmim::FileError: "file 'x.h5': /images: cannot read rows 10..20:
// <HDF5's own message>". HDF5's automatic error printing is switched off; the message it would
// have printed is in the exception instead.
//
// Files can be opened by one process (serial I/O) or by all ranks of a communicator together
// (MPI-IO through parallel HDF5). Collective rules apply to the latter: creating datasets,
// groups and attributes is collective; data transfers are independent unless
// H5Dataset::set_collective(true) is used.
#pragma once

#include <cstdint>
#include <filesystem>
#include <mutex>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include <hdf5.h>

#include "kmim/core/error.hpp"
#include "kmim/core/options.hpp"

namespace kmim::io {

/// The HDF5 library Debian ships is built without thread safety: every HDF5 call in a process
/// must be serialised. ShardDataset and BatchPrefetcher take this lock around theirs; code that
/// uses HDF5 on another thread while a prefetcher runs must take it too.
std::mutex& hdf5_mutex();

template <class T>
hid_t h5_native_type() {
  if constexpr (std::is_same_v<T, float>) return H5T_NATIVE_FLOAT;
  else if constexpr (std::is_same_v<T, double>) return H5T_NATIVE_DOUBLE;
  else if constexpr (std::is_same_v<T, std::uint8_t>) return H5T_NATIVE_UINT8;
  else if constexpr (std::is_same_v<T, std::int8_t>) return H5T_NATIVE_INT8;
  else if constexpr (std::is_same_v<T, std::int32_t>) return H5T_NATIVE_INT32;
  else if constexpr (std::is_same_v<T, std::uint32_t>) return H5T_NATIVE_UINT32;
  else if constexpr (std::is_same_v<T, std::int64_t> || std::is_same_v<T, long long>) return H5T_NATIVE_INT64;
  else if constexpr (std::is_same_v<T, std::uint64_t> || std::is_same_v<T, unsigned long long>) return H5T_NATIVE_UINT64;
  else static_assert(sizeof(T) == 0, "no HDF5 type for this C++ type");
}

/// Owns one HDF5 identifier and closes it with the right H5?close.
class H5Id {
 public:
  H5Id() = default;
  explicit H5Id(hid_t id) : id_(id) {}
  ~H5Id() { reset(); }
  H5Id(H5Id&& o) noexcept : id_(o.id_) { o.id_ = H5I_INVALID_HID; }
  H5Id& operator=(H5Id&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = o.id_;
      o.id_ = H5I_INVALID_HID;
    }
    return *this;
  }
  H5Id(const H5Id&) = delete;
  H5Id& operator=(const H5Id&) = delete;
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  void reset();

 private:
  hid_t id_ = H5I_INVALID_HID;
};

class H5Dataset;

/// A file or a group: something that holds datasets, groups and attributes.
class H5Object {
 public:
  H5Object(H5Id id, std::filesystem::path file, std::string path, bool parallel);

  hid_t id() const { return id_.get(); }
  const std::filesystem::path& file() const { return file_; }
  /// The object's path inside the file ("/" for the file itself).
  const std::string& path() const { return path_; }
  bool parallel() const { return parallel_; }

  bool has(const std::string& name) const;
  H5Object group(const std::string& name) const;
  H5Object create_group(const std::string& name) const;
  H5Dataset dataset(const std::string& name) const;
  /// Creates a dataset of element type T; chunk empty → contiguous layout.
  template <class T>
  H5Dataset create_dataset(const std::string& name, const std::vector<hsize_t>& dims,
                           const std::vector<hsize_t>& chunk = {}) const;
  /// Creates and writes a whole dataset in one call.
  template <class T>
  H5Dataset write_dataset(const std::string& name, std::span<const T> data,
                          const std::vector<hsize_t>& dims) const;
  template <class T>
  std::vector<T> read_dataset(const std::string& name) const;
  /// Variable-length UTF-8 string dataset (1-D).
  void write_strings(const std::string& name, const std::vector<std::string>& values) const;
  std::vector<std::string> read_strings(const std::string& name) const;

  bool has_attribute(const std::string& name) const;
  void set_attribute(const std::string& name, const std::string& value) const;
  void set_attribute(const std::string& name, const char* value) const {
    set_attribute(name, std::string(value));
  }
  template <class T>
  void set_attribute(const std::string& name, T value) const {
    set_attribute_array<T>(name, std::span<const T>(&value, 1), true);
  }
  template <class T>
  void set_attribute(const std::string& name, std::span<const T> values) const {
    set_attribute_array<T>(name, values, false);
  }
  std::string string_attribute(const std::string& name) const;
  template <class T>
  T attribute(const std::string& name) const {
    auto v = array_attribute<T>(name);
    if (v.size() != 1) throw_error(name, "attribute is not a scalar");
    return v[0];
  }
  template <class T>
  std::vector<T> array_attribute(const std::string& name) const;

  /// Writes the standard provenance attributes: program, kmim version, creation time (UTC,
  /// ISO 8601) and the program's effective configuration as INI text (`config`).
  void set_provenance(const std::string& program, const std::string& config_ini) const;

  [[noreturn]] void throw_error(const std::string& object, const std::string& problem) const;

 protected:
  template <class T>
  void set_attribute_array(const std::string& name, std::span<const T> values, bool scalar) const;

  H5Id id_;
  std::filesystem::path file_;
  std::string path_;
  bool parallel_ = false;
};

/// A dataset. Row operations address the first dimension.
class H5Dataset : public H5Object {
 public:
  using H5Object::H5Object;

  std::vector<hsize_t> dims() const;
  /// Number of elements per row (product of all dimensions but the first).
  hsize_t row_size() const;
  /// Independent (default) or collective transfers for parallel files.
  void set_collective(bool collective) { collective_ = collective; }

  template <class T>
  void write(std::span<const T> data) const;
  template <class T>
  std::vector<T> read() const;
  /// Writes rows [first, first + count); data holds count * row_size() elements.
  template <class T>
  void write_rows(hsize_t first, hsize_t count, std::span<const T> data) const;
  /// Reads rows [first, first + count) into out (count * row_size() elements).
  template <class T>
  void read_rows(hsize_t first, hsize_t count, std::span<T> out) const;
  /// True when the stored element type is the class of T (integer/float) with T's size.
  template <class T>
  bool holds() const;

 private:
  void transfer(bool write, hid_t mem_type, hsize_t first, hsize_t count, void* buf) const;
  hid_t transfer_plist() const;
  bool collective_ = false;
  mutable H5Id dxpl_;
};

enum class FileMode { read, read_write };

/// Opens an existing file. With a communicator of size > 1 the file is opened by all its ranks
/// together through MPI-IO (collective call).
H5Object open_file(const std::filesystem::path& file, FileMode mode = FileMode::read,
                   MPI_Comm comm = MPI_COMM_NULL);
/// Creates (truncates) a file. Prefer AtomicOutput's temporary path for final outputs.
H5Object create_file(const std::filesystem::path& file, MPI_Comm comm = MPI_COMM_NULL);

/// True when `file` exists and HDF5 recognises it as an HDF5 file.
bool is_hdf5_file(const std::filesystem::path& file);

// ---- template definitions ----------------------------------------------------------------

namespace detail {
void check(herr_t rc, const H5Object& where, const std::string& object, const char* what);
hid_t check_id(hid_t id, const H5Object& where, const std::string& object, const char* what);
std::string join_path(const std::string& parent, const std::string& name);
H5Dataset create_dataset_raw(const H5Object& parent, const std::string& name, hid_t type,
                             const std::vector<hsize_t>& dims, const std::vector<hsize_t>& chunk);
void set_attribute_raw(const H5Object& obj, const std::string& name, hid_t type,
                       const void* data, hsize_t n, bool scalar);
std::vector<hsize_t> attribute_shape(const H5Object& obj, const std::string& name, hid_t& type);
void read_attribute_raw(const H5Object& obj, const std::string& name, hid_t mem_type, void* out);
}  // namespace detail

template <class T>
H5Dataset H5Object::create_dataset(const std::string& name, const std::vector<hsize_t>& dims,
                                   const std::vector<hsize_t>& chunk) const {
  return detail::create_dataset_raw(*this, name, h5_native_type<T>(), dims, chunk);
}

template <class T>
H5Dataset H5Object::write_dataset(const std::string& name, std::span<const T> data,
                                  const std::vector<hsize_t>& dims) const {
  H5Dataset d = create_dataset<T>(name, dims);
  d.write<T>(data);
  return d;
}

template <class T>
std::vector<T> H5Object::read_dataset(const std::string& name) const {
  return dataset(name).read<T>();
}

template <class T>
void H5Object::set_attribute_array(const std::string& name, std::span<const T> values,
                                   bool scalar) const {
  detail::set_attribute_raw(*this, name, h5_native_type<T>(), values.data(), values.size(),
                            scalar);
}

template <class T>
std::vector<T> H5Object::array_attribute(const std::string& name) const {
  hid_t type = H5I_INVALID_HID;
  const auto shape = detail::attribute_shape(*this, name, type);
  hsize_t n = 1;
  for (hsize_t s : shape) n *= s;
  std::vector<T> out(n);
  detail::read_attribute_raw(*this, name, h5_native_type<T>(), out.data());
  return out;
}

template <class T>
void H5Dataset::write(std::span<const T> data) const {
  const auto d = dims();
  if (d.empty()) {
    if (data.size() != 1) throw_error("", "scalar dataset: expected exactly one value");
    transfer(true, h5_native_type<T>(), 0, 0, const_cast<T*>(data.data()));
    return;
  }
  write_rows<T>(0, d[0], data);
}

template <class T>
std::vector<T> H5Dataset::read() const {
  const auto d = dims();
  if (d.empty()) {
    std::vector<T> out(1);
    transfer(false, h5_native_type<T>(), 0, 0, out.data());
    return out;
  }
  std::vector<T> out(d[0] * row_size());
  read_rows<T>(0, d[0], out);
  return out;
}

template <class T>
void H5Dataset::write_rows(hsize_t first, hsize_t count, std::span<const T> data) const {
  if (data.size() != count * row_size())
    throw_error("", "write: buffer size does not match the rows written");
  transfer(true, h5_native_type<T>(), first, count, const_cast<T*>(data.data()));
}

template <class T>
void H5Dataset::read_rows(hsize_t first, hsize_t count, std::span<T> out) const {
  if (out.size() != count * row_size())
    throw_error("", "read: buffer size does not match the rows read");
  transfer(false, h5_native_type<T>(), first, count, out.data());
}

template <class T>
bool H5Dataset::holds() const {
  H5Id type(H5Dget_type(id()));
  const H5T_class_t cls = H5Tget_class(type.get());
  const bool is_float = std::is_floating_point_v<T>;
  if (cls != (is_float ? H5T_FLOAT : H5T_INTEGER)) return false;
  if (H5Tget_size(type.get()) != sizeof(T)) return false;
  if constexpr (std::is_integral_v<T>)
    return (H5Tget_sign(type.get()) == H5T_SGN_2) == std::is_signed_v<T>;
  return true;
}

}  // namespace kmim::io
