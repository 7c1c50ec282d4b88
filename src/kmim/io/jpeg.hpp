// JPEG encoding and decoding through libjpeg-turbo's TurboJPEG API (version 2).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kmim/io/image.hpp"

namespace kmim::io {

struct JpegEncodeOptions {
  int quality = 95;          ///< 1..100
  bool progressive = false;  ///< progressive (multi-scan) instead of baseline
};

/// Owns a TurboJPEG compressor and decompressor (one per thread; not thread-safe).
class JpegCodec {
 public:
  JpegCodec();
  ~JpegCodec();
  JpegCodec(const JpegCodec&) = delete;
  JpegCodec& operator=(const JpegCodec&) = delete;

  /// Encodes a grey (1 channel) or RGB (3 channels) image.
  std::vector<std::uint8_t> encode(const Image& image, const JpegEncodeOptions& options = {});
  /// Decodes a JPEG to RGB (or grey when `keep_grey` and the JPEG is greyscale). CMYK/YCCK
  /// JPEGs are converted to RGB. Throws kmim::Error with TurboJPEG's message on bad data.
  Image decode(std::span<const std::uint8_t> jpeg, bool keep_grey = false);

 private:
  void* compressor_ = nullptr;
  Image decode_unchecked(std::span<const std::uint8_t> jpeg, bool keep_grey);
  /// After a failed tjDecompress2: throws unless it was a harmless warning.
  void check_decode_warning();

  void* decompressor_ = nullptr;
  bool last_progressive_ = false;
};

}  // namespace kmim::io
