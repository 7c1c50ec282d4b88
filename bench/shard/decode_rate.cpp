// Decode-only rate of libjpeg-turbo on a list of JPEG files: the ceiling kmim_shard's pipeline
// (read + decode + resize + crop + checksum + HDF5 write) is compared with. Same decode call as
// kmim::io::JpegCodec (tjDecompress2 to RGB, TJFLAG_ACCURATEDCT). Files are read into memory
// first, so this measures decoding only.
//   decode_rate FILE_LIST [REPEATS]   → prints "decode_only_images_per_s_per_core <rate>"
#include <turbojpeg.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: decode_rate FILE_LIST [REPEATS]\n");
    return 2;
  }
  const int repeats = argc > 2 ? std::stoi(argv[2]) : 1;
  std::ifstream list(argv[1]);
  std::vector<std::vector<unsigned char>> files;
  for (std::string path; std::getline(list, path);) {
    std::ifstream f(path, std::ios::binary);
    files.emplace_back(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }
  tjhandle h = tjInitDecompress();
  std::vector<unsigned char> rgb;
  std::size_t decoded = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int r = 0; r < repeats; ++r) {
    for (auto& bytes : files) {
      int w = 0, hgt = 0, sub = 0, cs = 0;
      if (tjDecompressHeader3(h, bytes.data(), bytes.size(), &w, &hgt, &sub, &cs) != 0) continue;
      rgb.resize(std::size_t(w) * hgt * 3);
      if (tjDecompress2(h, bytes.data(), bytes.size(), rgb.data(), w, 0, hgt, TJPF_RGB, TJFLAG_ACCURATEDCT) == 0)
        ++decoded;
    }
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  tjDestroy(h);
  std::printf("decoded %zu images in %.3f s\n", decoded, s);
  std::printf("decode_only_images_per_s_per_core %.1f\n", decoded / s);
  return 0;
}
