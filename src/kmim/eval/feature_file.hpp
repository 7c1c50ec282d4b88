// Feature files: pre-extracted features with their labels, the input of the fast linear probe
// and of kNN evaluation (docs/eval.md). kmim_extract (later) writes them; tests write them from
// Fashion-MNIST pixels.
//
//   /features   float32 [N, D]   one feature vector per image
//   /labels     int32   [N]      its class, in [0, num_classes)
//   attributes (optional): kind = "kmim_features", num_classes (int32; default: the largest
//                           label + 1 over the files used together), plus provenance
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <vector>

namespace kmim::eval {

inline constexpr const char* kFeatureFileKind = "kmim_features";

struct FeatureSet {
  std::filesystem::path file;
  std::size_t n = 0;
  std::size_t dim = 0;
  std::vector<float> features;      ///< [n, dim] row-major
  std::vector<std::int32_t> labels; ///< [n]
  int num_classes = 0;              ///< the file's num_classes attribute; 0 when absent
  std::string fingerprint;          ///< 16 hex digits over shape, labels and features
};

/// Reads and checks a whole feature file (serial HDF5; every rank may call it). Throws
/// FileError naming the file on: not HDF5, a missing dataset, wrong rank or element type,
/// feature/label count mismatch, no rows, a negative label, a label ≥ the num_classes
/// attribute, or a non-finite feature value.
FeatureSet read_feature_file(const std::filesystem::path& file);

/// Writes a feature file atomically (temporary name, renamed when complete), with the kind,
/// num_classes and provenance attributes.
void write_feature_file(const std::filesystem::path& file, std::span<const float> features,
                        std::size_t n, std::size_t dim, std::span<const std::int32_t> labels,
                        int num_classes, const std::string& program,
                        const std::string& config_ini);

/// A 64-bit digest (16 hex digits) of bytes, 8 at a time (FNV-style multiply-xor, a few GB/s):
/// a fingerprint for provenance and checkpoint compatibility, not a cryptographic hash.
std::string content_fingerprint(std::span<const std::byte> bytes, std::uint64_t seed = 0);

/// The number of classes of a train/val pair: the num_classes attribute when present (the two
/// must agree), else the largest label + 1 over both. Throws FileError when a label is out of
/// range of a declared num_classes or the attributes disagree.
int feature_num_classes(const FeatureSet& train, const FeatureSet& val);

}  // namespace kmim::eval
