#include "kmim/eval/feature_file.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include <fmt/format.h>

#include "kmim/core/error.hpp"
#include "kmim/io/atomic_output.hpp"
#include "kmim/io/hdf5.hpp"

namespace kmim::eval {

namespace {
constexpr const char* kLayoutHint =
    "a kmim feature file holds /features float32 [N, D] and /labels int32 [N] (docs/eval.md)";
}

std::string content_fingerprint(std::span<const std::byte> bytes, std::uint64_t seed) {
  std::uint64_t h = 0xcbf29ce484222325ull ^ (seed * 0x9e3779b97f4a7c15ull);
  constexpr std::uint64_t prime = 0x100000001b3ull;
  const std::size_t words = bytes.size() / 8;
  for (std::size_t i = 0; i < words; ++i) {
    std::uint64_t w;
    std::memcpy(&w, bytes.data() + i * 8, 8);
    h = (h ^ w) * prime;
    h ^= h >> 29;
  }
  for (std::size_t i = words * 8; i < bytes.size(); ++i)
    h = (h ^ static_cast<std::uint64_t>(bytes[i])) * prime;
  h = (h ^ bytes.size()) * prime;
  h ^= h >> 32;
  return fmt::format("{:016x}", h);
}

FeatureSet read_feature_file(const std::filesystem::path& file) {
  FeatureSet set;
  set.file = file;
  const io::H5Object root = io::open_file(file, io::FileMode::read);
  for (const char* name : {"features", "labels"})
    if (!root.has(name))
      throw FileError(file, fmt::format("has no dataset '/{}'; {}", name, kLayoutHint));
  const io::H5Dataset features = root.dataset("features");
  const io::H5Dataset labels = root.dataset("labels");
  const auto fdims = features.dims();
  const auto ldims = labels.dims();
  if (fdims.size() != 2 || !features.holds<float>())
    throw FileError(file, fmt::format("/features must be a 2-D float32 dataset [N, D] ({})",
                                      kLayoutHint));
  if (ldims.size() != 1 || !labels.holds<std::int32_t>())
    throw FileError(file, fmt::format("/labels must be a 1-D int32 dataset [N] ({})", kLayoutHint));
  if (fdims[0] != ldims[0])
    throw FileError(file, fmt::format("/features has {} rows but /labels has {} labels", fdims[0],
                                      ldims[0]));
  if (fdims[0] == 0 || fdims[1] == 0)
    throw FileError(file, fmt::format("/features is empty ({} x {})", fdims[0], fdims[1]));
  set.n = fdims[0];
  set.dim = fdims[1];
  if (root.has_attribute("num_classes")) {
    set.num_classes = root.attribute<std::int32_t>("num_classes");
    if (set.num_classes < 1)
      throw FileError(file, fmt::format("attribute num_classes = {} must be at least 1",
                                        set.num_classes));
  }
  set.features = features.read<float>();
  set.labels = labels.read<std::int32_t>();
  for (std::size_t i = 0; i < set.n; ++i) {
    const std::int32_t l = set.labels[i];
    if (l < 0 || (set.num_classes > 0 && l >= set.num_classes))
      throw FileError(file, fmt::format("/labels[{}] = {} is outside [0, {})", i, l,
                                        set.num_classes > 0 ? fmt::format("{}", set.num_classes)
                                                            : std::string("inf")));
  }
  for (std::size_t i = 0; i < set.features.size(); ++i)
    if (!std::isfinite(set.features[i]))
      throw FileError(file, fmt::format("/features[{}, {}] is not finite ({})", i / set.dim,
                                        i % set.dim, set.features[i]));
  const std::uint64_t shape[2] = {set.n, set.dim};
  std::string digest = content_fingerprint(std::as_bytes(std::span<const std::uint64_t>(shape)));
  digest += content_fingerprint(std::as_bytes(std::span<const std::int32_t>(set.labels)));
  digest += content_fingerprint(std::as_bytes(std::span<const float>(set.features)));
  set.fingerprint = content_fingerprint(std::as_bytes(std::span<const char>(digest)));
  return set;
}

void write_feature_file(const std::filesystem::path& file, std::span<const float> features,
                        std::size_t n, std::size_t dim, std::span<const std::int32_t> labels,
                        int num_classes, const std::string& program,
                        const std::string& config_ini) {
  if (features.size() != n * dim || labels.size() != n)
    throw FileError(file, fmt::format("cannot write {} features of dimension {} from {} values "
                                      "and {} labels", n, dim, features.size(), labels.size()));
  io::AtomicOutput out(file);
  {
    const io::H5Object root = io::create_file(out.temp_path());
    root.write_dataset<float>("features", features, {n, dim});
    root.write_dataset<std::int32_t>("labels", labels, {n});
    root.set_attribute("kind", kFeatureFileKind);
    root.set_attribute<std::int32_t>("num_classes", num_classes);
    root.set_provenance(program, config_ini);
  }
  out.commit();
}

int feature_num_classes(const FeatureSet& train, const FeatureSet& val) {
  if (train.num_classes > 0 && val.num_classes > 0 && train.num_classes != val.num_classes)
    throw FileError(val.file, fmt::format("declares num_classes = {} but '{}' declares {}",
                                          val.num_classes, train.file.string(),
                                          train.num_classes));
  const int declared = std::max(train.num_classes, val.num_classes);
  std::int32_t largest = 0;
  for (const FeatureSet* set : {&train, &val}) {
    for (std::int32_t l : set->labels) {
      if (declared > 0 && l >= declared)
        throw FileError(set->file, fmt::format("holds label {} but num_classes is {}", l, declared));
      largest = std::max(largest, l);
    }
  }
  return declared > 0 ? declared : largest + 1;
}

}  // namespace kmim::eval
