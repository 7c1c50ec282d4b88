// IDX files (the MNIST / Fashion-MNIST format), gzip-compressed or raw.
// Format: magic 00 00 <type> <ndims>, then ndims big-endian uint32 sizes, then the data.
// kmim reads type 0x08 (unsigned byte) only, which is what image and label files use.
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

namespace kmim::io {

struct IdxArray {
  std::vector<std::uint32_t> dims;  ///< e.g. {60000, 28, 28} for images, {60000} for labels
  std::vector<std::uint8_t> data;   ///< row-major
};

/// Reads a whole IDX file (.gz or raw). Throws FileError naming the file on a bad magic number,
/// an unsupported element type, a truncated body or trailing bytes.
IdxArray read_idx(const std::filesystem::path& file);

}  // namespace kmim::io
