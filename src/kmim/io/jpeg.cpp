#include "kmim/io/jpeg.hpp"

#include <turbojpeg.h>

#include <fmt/format.h>

#include "kmim/core/error.hpp"

namespace kmim::io {

JpegCodec::JpegCodec() : compressor_(tjInitCompress()), decompressor_(tjInitDecompress()) {
  if (!compressor_ || !decompressor_) throw Error("TurboJPEG: cannot create a codec handle");
}

JpegCodec::~JpegCodec() {
  if (compressor_) tjDestroy(compressor_);
  if (decompressor_) tjDestroy(decompressor_);
}

std::vector<std::uint8_t> JpegCodec::encode(const Image& image, const JpegEncodeOptions& options) {
  if (image.channels != 1 && image.channels != 3)
    throw Error("JPEG encode: expected a grey or RGB image");
  if (options.progressive != last_progressive_) {
    // libjpeg-turbo 2.1 keeps the progressive scan script in a compressor handle: a baseline
    // encode after a progressive one on the same handle yields a corrupt file. A fresh handle
    // whenever the mode changes avoids it.
    tjDestroy(compressor_);
    compressor_ = tjInitCompress();
    if (!compressor_) throw Error("TurboJPEG: cannot create a codec handle");
    last_progressive_ = options.progressive;
  }
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  const int pf = image.channels == 1 ? TJPF_GRAY : TJPF_RGB;
  const int subsamp = image.channels == 1 ? TJSAMP_GRAY : TJSAMP_420;
  const int flags = TJFLAG_ACCURATEDCT | (options.progressive ? TJFLAG_PROGRESSIVE : 0);
  if (tjCompress2(compressor_, image.pixels.data(), image.width, 0, image.height, pf, &buf, &size,
                  subsamp, options.quality, flags) != 0) {
    const std::string msg = tjGetErrorStr2(compressor_);
    tjFree(buf);
    throw Error("JPEG encode: " + msg);
  }
  std::vector<std::uint8_t> out(buf, buf + size);
  tjFree(buf);
  return out;
}

void JpegCodec::check_decode_warning() {
  // libjpeg reports damage as warnings and keeps decoding. Harmless ones (e.g. "extraneous bytes
  // before marker", which some ImageNet files have and PIL accepts) leave a correct image. Data
  // that ends early or is corrupt leaves grey or garbage blocks: those files are rejected so
  // that such an image never enters a shard (PIL refuses truncated files too).
  const std::string msg = tjGetErrorStr2(decompressor_);
  const bool warning = tjGetErrorCode(decompressor_) == TJERR_WARNING;
  const bool extraneous = msg.find("extraneous bytes") != std::string::npos;
  const bool damaged = msg.find("Premature end") != std::string::npos ||
                       msg.find("premature end") != std::string::npos ||
                       (msg.find("Corrupt") != std::string::npos && !extraneous);
  if (!warning || damaged) throw Error(fmt::format("corrupt JPEG: {}", msg));
}

Image JpegCodec::decode(std::span<const std::uint8_t> jpeg, bool keep_grey) {
  try {
    return decode_unchecked(jpeg, keep_grey);
  } catch (const Error&) {
    // After a failure TurboJPEG 2.1 leaves the handle unusable ("tjDecompress2(): Invalid
    // argument" on the next, valid file): start the next decode from a fresh handle.
    tjDestroy(decompressor_);
    decompressor_ = tjInitDecompress();
    if (!decompressor_) throw Error("TurboJPEG: cannot create a codec handle");
    throw;
  }
}

Image JpegCodec::decode_unchecked(std::span<const std::uint8_t> jpeg, bool keep_grey) {
  int w = 0, h = 0, subsamp = 0, colorspace = 0;
  auto* data = const_cast<unsigned char*>(jpeg.data());
  if (tjDecompressHeader3(decompressor_, data, jpeg.size(), &w, &h, &subsamp, &colorspace) != 0)
    throw Error(fmt::format("not a readable JPEG: {}", tjGetErrorStr2(decompressor_)));
  if (colorspace == TJCS_CMYK || colorspace == TJCS_YCCK) {
    // libjpeg returns CMYK samples as stored. Adobe applications (the source of ImageNet's
    // CMYK files) store them inverted (stored = 255 - ink). With inks c, k the usual conversion
    // (Pillow's) is R = (255 - c)(255 - k)/255, which on stored values is R = C·K/255.
    std::vector<std::uint8_t> cmyk(std::size_t(w) * h * 4);
    if (tjDecompress2(decompressor_, data, jpeg.size(), cmyk.data(), w, 0, h, TJPF_CMYK,
                      TJFLAG_ACCURATEDCT) != 0)
      check_decode_warning();
    Image out(w, h, 3);
    for (std::size_t i = 0; i < std::size_t(w) * h; ++i) {
      const unsigned k = cmyk[4 * i + 3];
      for (int c = 0; c < 3; ++c)
        out.pixels[3 * i + c] = static_cast<std::uint8_t>((cmyk[4 * i + c] * k + 127) / 255);
    }
    return out;
  }
  const bool grey = colorspace == TJCS_GRAY && keep_grey;
  Image out(w, h, grey ? 1 : 3);
  if (tjDecompress2(decompressor_, data, jpeg.size(), out.pixels.data(), w, 0, h,
                    grey ? TJPF_GRAY : TJPF_RGB, TJFLAG_ACCURATEDCT) != 0)
    check_decode_warning();
  return out;
}

}  // namespace kmim::io
