#include "kmim/io/idx.hpp"

#include <zlib.h>

#include <fmt/format.h>

#include "kmim/core/error.hpp"

namespace kmim::io {
namespace {

struct GzFile {
  gzFile f = nullptr;
  ~GzFile() {
    if (f) gzclose(f);
  }
};

}  // namespace

IdxArray read_idx(const std::filesystem::path& file) {
  if (!std::filesystem::exists(file)) throw FileError(file, "does not exist");
  GzFile in;
  in.f = gzopen(file.c_str(), "rb");  // reads gzip and plain files alike
  if (!in.f) throw FileError(file, "cannot open");
  unsigned char header[4];
  if (gzread(in.f, header, 4) != 4) throw FileError(file, "too short for an IDX header");
  if (header[0] != 0 || header[1] != 0)
    throw FileError(file, fmt::format("not an IDX file (magic {:02x}{:02x}{:02x}{:02x})", header[0],
                                      header[1], header[2], header[3]));
  if (header[2] != 0x08)
    throw FileError(file, fmt::format("IDX element type 0x{:02x} is not supported (only 0x08, "
                                      "unsigned byte)", header[2]));
  const int ndims = header[3];
  if (ndims < 1 || ndims > 4) throw FileError(file, fmt::format("IDX rank {} is not supported", ndims));
  IdxArray out;
  std::uint64_t total = 1;
  for (int i = 0; i < ndims; ++i) {
    unsigned char b[4];
    if (gzread(in.f, b, 4) != 4) throw FileError(file, "truncated IDX header");
    const std::uint32_t d = (std::uint32_t(b[0]) << 24) | (std::uint32_t(b[1]) << 16) |
                            (std::uint32_t(b[2]) << 8) | b[3];
    out.dims.push_back(d);
    total *= d;
  }
  if (total > (std::uint64_t{1} << 34)) throw FileError(file, "IDX dimensions are implausibly large");
  out.data.resize(total);
  std::uint64_t got = 0;
  while (got < total) {
    const unsigned chunk = static_cast<unsigned>(std::min<std::uint64_t>(total - got, 1u << 30));
    const int n = gzread(in.f, out.data.data() + got, chunk);
    if (n < 0) throw FileError(file, "corrupt gzip stream");
    if (n == 0) break;
    got += static_cast<std::uint64_t>(n);
  }
  if (got < total)
    throw FileError(file, fmt::format("truncated: the header promises {} bytes of data, the file "
                                      "has {}", total, got));
  unsigned char extra;
  if (gzread(in.f, &extra, 1) > 0)
    throw FileError(file, "has trailing bytes after the data the header describes");
  return out;
}

}  // namespace kmim::io
