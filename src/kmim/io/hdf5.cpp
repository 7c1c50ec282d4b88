#include "kmim/io/hdf5.hpp"

#include <chrono>
#include <ctime>

#include <fmt/format.h>

#include "kmim/core/options.hpp"

namespace kmim::io {
namespace {

/// Silences HDF5's own printing of error stacks (we report them as exceptions).
void silence_hdf5() {
  static const bool once = [] {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    return true;
  }();
  (void)once;
}

herr_t collect_message(unsigned n, const H5E_error2_t* err, void* data) {
  auto* out = static_cast<std::string*>(data);
  // Innermost first (H5E_WALK_UPWARD): the first entry is the root cause.
  if (n == 0 && err->desc) *out = err->desc;
  return 0;
}

std::string hdf5_message() {
  std::string msg;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, collect_message, &msg);
  H5Eclear2(H5E_DEFAULT);
  return msg.empty() ? "HDF5 reported an error" : msg;
}

H5Id file_access_plist(MPI_Comm comm) {
  H5Id fapl(H5Pcreate(H5P_FILE_ACCESS));
  if (comm != MPI_COMM_NULL) {
    int size = 1;
    MPI_Comm_size(comm, &size);
    if (size > 1) H5Pset_fapl_mpio(fapl.get(), comm, MPI_INFO_NULL);
  }
  return fapl;
}

bool is_parallel(MPI_Comm comm) {
  if (comm == MPI_COMM_NULL) return false;
  int size = 1;
  MPI_Comm_size(comm, &size);
  return size > 1;
}

}  // namespace

std::mutex& hdf5_mutex() {
  static std::mutex m;
  return m;
}

void H5Id::reset() {
  if (id_ < 0) return;
  switch (H5Iget_type(id_)) {
    case H5I_FILE: H5Fclose(id_); break;
    case H5I_GROUP: H5Gclose(id_); break;
    case H5I_DATASET: H5Dclose(id_); break;
    case H5I_DATASPACE: H5Sclose(id_); break;
    case H5I_DATATYPE: H5Tclose(id_); break;
    case H5I_ATTR: H5Aclose(id_); break;
    case H5I_GENPROP_LST: H5Pclose(id_); break;
    default: break;
  }
  id_ = H5I_INVALID_HID;
}

namespace detail {

std::string join_path(const std::string& parent, const std::string& name) {
  if (!name.empty() && name[0] == '/') return name;
  if (parent.empty() || parent == "/") return "/" + name;
  return parent + "/" + name;
}

void check(herr_t rc, const H5Object& where, const std::string& object, const char* what) {
  if (rc < 0) where.throw_error(object, fmt::format("{}: {}", what, hdf5_message()));
}

hid_t check_id(hid_t id, const H5Object& where, const std::string& object, const char* what) {
  if (id < 0) where.throw_error(object, fmt::format("{}: {}", what, hdf5_message()));
  return id;
}

H5Dataset create_dataset_raw(const H5Object& parent, const std::string& name, hid_t type,
                             const std::vector<hsize_t>& dims, const std::vector<hsize_t>& chunk) {
  H5Id space(dims.empty() ? H5Screate(H5S_SCALAR)
                          : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr));
  H5Id dcpl(H5Pcreate(H5P_DATASET_CREATE));
  if (!chunk.empty()) {
    std::vector<hsize_t> c = chunk;
    for (std::size_t i = 0; i < c.size() && i < dims.size(); ++i)
      c[i] = std::max<hsize_t>(1, std::min(c[i], std::max<hsize_t>(dims[i], 1)));
    check(H5Pset_chunk(dcpl.get(), static_cast<int>(c.size()), c.data()), parent, name,
          "cannot set chunking");
  }
  // Allocate early so parallel writers never race on allocation; no fill needed.
  H5Pset_fill_time(dcpl.get(), H5D_FILL_TIME_NEVER);
  H5Id id(check_id(H5Dcreate2(parent.id(), name.c_str(), type, space.get(), H5P_DEFAULT,
                              dcpl.get(), H5P_DEFAULT),
                   parent, name, "cannot create dataset"));
  return H5Dataset(std::move(id), parent.file(), join_path(parent.path(), name), parent.parallel());
}

void set_attribute_raw(const H5Object& obj, const std::string& name, hid_t type,
                       const void* data, hsize_t n, bool scalar) {
  if (H5Aexists(obj.id(), name.c_str()) > 0)
    check(H5Adelete(obj.id(), name.c_str()), obj, name, "cannot replace attribute");
  H5Id space(scalar ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &n, nullptr));
  H5Id attr(check_id(H5Acreate2(obj.id(), name.c_str(), type, space.get(), H5P_DEFAULT,
                                H5P_DEFAULT),
                     obj, name, "cannot create attribute"));
  check(H5Awrite(attr.get(), type, data), obj, name, "cannot write attribute");
}

std::vector<hsize_t> attribute_shape(const H5Object& obj, const std::string& name, hid_t& type) {
  if (H5Aexists(obj.id(), name.c_str()) <= 0) obj.throw_error(name, "attribute is missing");
  H5Id attr(check_id(H5Aopen(obj.id(), name.c_str(), H5P_DEFAULT), obj, name,
                     "cannot open attribute"));
  H5Id space(H5Aget_space(attr.get()));
  const int rank = H5Sget_simple_extent_ndims(space.get());
  std::vector<hsize_t> shape(static_cast<std::size_t>(std::max(rank, 0)));
  if (rank > 0) H5Sget_simple_extent_dims(space.get(), shape.data(), nullptr);
  type = H5I_INVALID_HID;
  return shape;
}

void read_attribute_raw(const H5Object& obj, const std::string& name, hid_t mem_type, void* out) {
  H5Id attr(check_id(H5Aopen(obj.id(), name.c_str(), H5P_DEFAULT), obj, name,
                     "cannot open attribute"));
  H5Id ftype(H5Aget_type(attr.get()));
  const H5T_class_t cls = H5Tget_class(ftype.get());
  if (cls != H5T_INTEGER && cls != H5T_FLOAT)
    obj.throw_error(name, "attribute is not numeric");
  check(H5Aread(attr.get(), mem_type, out), obj, name, "cannot read attribute");
}

}  // namespace detail

H5Object::H5Object(H5Id id, std::filesystem::path file, std::string path, bool parallel)
    : id_(std::move(id)), file_(std::move(file)), path_(std::move(path)), parallel_(parallel) {}

void H5Object::throw_error(const std::string& object, const std::string& problem) const {
  const std::string where = object.empty() ? path_ : detail::join_path(path_, object);
  throw FileError(file_, fmt::format("{}: {}", where, problem));
}

bool H5Object::has(const std::string& name) const {
  // Walk the path so that intermediate missing groups do not raise errors.
  std::string partial;
  std::size_t pos = 0;
  while (pos <= name.size()) {
    const std::size_t next = name.find('/', pos);
    partial += name.substr(pos, next == std::string::npos ? std::string::npos : next - pos);
    if (!partial.empty() && H5Lexists(id(), partial.c_str(), H5P_DEFAULT) <= 0) return false;
    if (next == std::string::npos) break;
    partial += '/';
    pos = next + 1;
  }
  return true;
}

H5Object H5Object::group(const std::string& name) const {
  if (!has(name)) throw_error(name, "group is missing");
  H5Id g(detail::check_id(H5Gopen2(id(), name.c_str(), H5P_DEFAULT), *this, name,
                          "cannot open group"));
  return H5Object(std::move(g), file_, detail::join_path(path_, name), parallel_);
}

H5Object H5Object::create_group(const std::string& name) const {
  H5Id g(detail::check_id(H5Gcreate2(id(), name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                          *this, name, "cannot create group"));
  return H5Object(std::move(g), file_, detail::join_path(path_, name), parallel_);
}

H5Dataset H5Object::dataset(const std::string& name) const {
  if (!has(name)) throw_error(name, "dataset is missing");
  H5Id d(detail::check_id(H5Dopen2(id(), name.c_str(), H5P_DEFAULT), *this, name,
                          "cannot open dataset"));
  return H5Dataset(std::move(d), file_, detail::join_path(path_, name), parallel_);
}

namespace {
H5Id utf8_string_type() {
  H5Id t(H5Tcopy(H5T_C_S1));
  H5Tset_size(t.get(), H5T_VARIABLE);
  H5Tset_cset(t.get(), H5T_CSET_UTF8);
  return t;
}
}  // namespace

void H5Object::write_strings(const std::string& name, const std::vector<std::string>& values) const {
  H5Id type = utf8_string_type();
  const hsize_t n = values.size();
  H5Id space(H5Screate_simple(1, &n, nullptr));
  H5Id d(detail::check_id(H5Dcreate2(id(), name.c_str(), type.get(), space.get(), H5P_DEFAULT,
                                     H5P_DEFAULT, H5P_DEFAULT),
                          *this, name, "cannot create string dataset"));
  std::vector<const char*> ptrs;
  ptrs.reserve(values.size());
  for (const auto& v : values) ptrs.push_back(v.c_str());
  if (n > 0)
    detail::check(H5Dwrite(d.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data()), *this,
                  name, "cannot write string dataset");
}

std::vector<std::string> H5Object::read_strings(const std::string& name) const {
  H5Dataset d = dataset(name);
  H5Id ftype(H5Dget_type(d.id()));
  if (H5Tget_class(ftype.get()) != H5T_STRING) throw_error(name, "dataset does not hold strings");
  const auto dims = d.dims();
  const hsize_t n = dims.empty() ? 1 : dims[0];
  std::vector<std::string> out;
  out.reserve(n);
  if (n == 0) return out;
  if (H5Tis_variable_str(ftype.get()) > 0) {
    H5Id type = utf8_string_type();
    std::vector<char*> ptrs(n, nullptr);
    detail::check(H5Dread(d.id(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data()), *this,
                  name, "cannot read string dataset");
    for (char* p : ptrs) {
      out.emplace_back(p ? p : "");
      H5free_memory(p);
    }
  } else {
    const std::size_t len = H5Tget_size(ftype.get());
    std::vector<char> buf(n * len);
    detail::check(H5Dread(d.id(), ftype.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()), *this,
                  name, "cannot read string dataset");
    for (hsize_t i = 0; i < n; ++i) {
      const char* s = buf.data() + i * len;
      out.emplace_back(s, strnlen(s, len));
    }
  }
  return out;
}

bool H5Object::has_attribute(const std::string& name) const {
  return H5Aexists(id(), name.c_str()) > 0;
}

void H5Object::set_attribute(const std::string& name, const std::string& value) const {
  H5Id type = utf8_string_type();
  const char* ptr = value.c_str();
  detail::set_attribute_raw(*this, name, type.get(), &ptr, 1, true);
}

std::string H5Object::string_attribute(const std::string& name) const {
  if (!has_attribute(name)) throw_error(name, "attribute is missing");
  H5Id attr(detail::check_id(H5Aopen(id(), name.c_str(), H5P_DEFAULT), *this, name,
                             "cannot open attribute"));
  H5Id ftype(H5Aget_type(attr.get()));
  if (H5Tget_class(ftype.get()) != H5T_STRING) throw_error(name, "attribute is not a string");
  if (H5Tis_variable_str(ftype.get()) > 0) {
    H5Id type = utf8_string_type();
    char* p = nullptr;
    detail::check(H5Aread(attr.get(), type.get(), &p), *this, name, "cannot read attribute");
    std::string out = p ? p : "";
    H5free_memory(p);
    return out;
  }
  const std::size_t len = H5Tget_size(ftype.get());
  std::string buf(len, '\0');
  detail::check(H5Aread(attr.get(), ftype.get(), buf.data()), *this, name,
                "cannot read attribute");
  buf.resize(strnlen(buf.data(), len));
  return buf;
}

void H5Object::set_provenance(const std::string& program, const std::string& config_ini) const {
  const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&now, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
  set_attribute("program", program);
  set_attribute("kmim_version", std::string(kmim::version()));
  set_attribute("created", std::string(stamp));
  set_attribute("config", config_ini);
}

std::vector<hsize_t> H5Dataset::dims() const {
  H5Id space(H5Dget_space(id()));
  const int rank = H5Sget_simple_extent_ndims(space.get());
  std::vector<hsize_t> d(static_cast<std::size_t>(std::max(rank, 0)));
  if (rank > 0) H5Sget_simple_extent_dims(space.get(), d.data(), nullptr);
  return d;
}

hsize_t H5Dataset::row_size() const {
  const auto d = dims();
  hsize_t n = 1;
  for (std::size_t i = 1; i < d.size(); ++i) n *= d[i];
  return n;
}

hid_t H5Dataset::transfer_plist() const {
  if (!parallel_) return H5P_DEFAULT;
  if (!dxpl_.valid()) dxpl_ = H5Id(H5Pcreate(H5P_DATASET_XFER));
  H5Pset_dxpl_mpio(dxpl_.get(), collective_ ? H5FD_MPIO_COLLECTIVE : H5FD_MPIO_INDEPENDENT);
  return dxpl_.get();
}

void H5Dataset::transfer(bool write, hid_t mem_type, hsize_t first, hsize_t count,
                         void* buf) const {
  auto d = dims();
  H5Id fspace(H5Dget_space(id()));
  H5Id mspace;
  if (d.empty()) {
    mspace = H5Id(H5Screate(H5S_SCALAR));
  } else {
    if (first + count > d[0])
      throw_error("", fmt::format("rows {}..{} are out of range (the dataset has {} rows)", first,
                                  first + count, d[0]));
    std::vector<hsize_t> start(d.size(), 0), shape = d;
    start[0] = first;
    shape[0] = count;
    detail::check(H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start.data(), nullptr,
                                      shape.data(), nullptr),
                  *this, "", "cannot select rows");
    mspace = H5Id(H5Screate_simple(static_cast<int>(shape.size()), shape.data(), nullptr));
    if (count == 0) {
      H5Sselect_none(fspace.get());
      H5Sselect_none(mspace.get());
    }
  }
  const std::string what =
      fmt::format("cannot {} rows {}..{}", write ? "write" : "read", first, first + count);
  const herr_t rc = write ? H5Dwrite(id(), mem_type, mspace.get(), fspace.get(), transfer_plist(), buf)
                          : H5Dread(id(), mem_type, mspace.get(), fspace.get(), transfer_plist(), buf);
  detail::check(rc, *this, "", what.c_str());
}

H5Object open_file(const std::filesystem::path& file, FileMode mode, MPI_Comm comm) {
  silence_hdf5();
  if (!std::filesystem::exists(file)) throw FileError(file, "does not exist");
  if (H5Fis_hdf5(file.c_str()) <= 0) {
    H5Eclear2(H5E_DEFAULT);
    throw FileError(file, "is not an HDF5 file (or is truncated)");
  }
  H5Id fapl = file_access_plist(comm);
  const hid_t id = H5Fopen(file.c_str(), mode == FileMode::read ? H5F_ACC_RDONLY : H5F_ACC_RDWR,
                           fapl.get());
  if (id < 0) throw FileError(file, fmt::format("cannot open: {}", hdf5_message()));
  return H5Object(H5Id(id), file, "/", is_parallel(comm));
}

H5Object create_file(const std::filesystem::path& file, MPI_Comm comm) {
  silence_hdf5();
  H5Id fapl = file_access_plist(comm);
  const hid_t id = H5Fcreate(file.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get());
  if (id < 0) throw FileError(file, fmt::format("cannot create: {}", hdf5_message()));
  return H5Object(H5Id(id), file, "/", is_parallel(comm));
}

bool is_hdf5_file(const std::filesystem::path& file) {
  silence_hdf5();
  if (!std::filesystem::is_regular_file(file)) return false;
  const htri_t r = H5Fis_hdf5(file.c_str());
  H5Eclear2(H5E_DEFAULT);
  return r > 0;
}

}  // namespace kmim::io
