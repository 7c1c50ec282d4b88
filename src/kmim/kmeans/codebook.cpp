#include "kmim/kmeans/codebook.hpp"

#include <cmath>
#include <mutex>

#include <fmt/format.h>

#include "kmim/core/error.hpp"
#include "kmim/io/atomic_output.hpp"
#include "kmim/io/hdf5.hpp"
#include "kmim/io/shard_dataset.hpp"

namespace kmim::kmeans {

void Codebook::validate() const {
  if (k == 0 || d == 0) throw Error("codebook: k and d must be positive");
  if (centroids.size() != k * d)
    throw Error(fmt::format("codebook: centroids hold {} values, expected k·d = {}", centroids.size(), k * d));
  if (!cluster_sizes.empty() && cluster_sizes.size() != k)
    throw Error(fmt::format("codebook: cluster_sizes has {} entries, expected k = {}", cluster_sizes.size(), k));
  if (inertia.size() != empty_cluster_events.size())
    throw Error("codebook: inertia and empty_cluster_events differ in length");
  if (mode != "pixel" && mode != "feature")
    throw Error(fmt::format("codebook: mode '{}' (expected pixel or feature)", mode));
  if (mode == "pixel") {
    if (patch_size < 1 || crop < patch_size || crop % patch_size != 0 || (channels != 1 && channels != 3))
      throw Error(fmt::format("codebook: invalid pixel geometry (patch {}, crop {}, channels {})",
                              patch_size, crop, channels));
    if (d != geometry().dim())
      throw Error(fmt::format("codebook: d = {} but patch {}×{}×{} vectors have {} values", d,
                              patch_size, patch_size, channels, geometry().dim()));
  }
  for (const float v : centroids)
    if (!std::isfinite(v)) throw Error("codebook: a centroid value is NaN or infinite");
}

void Codebook::save(const std::filesystem::path& file, const std::string& program,
                    const std::string& config_ini) const {
  validate();
  io::AtomicOutput out(file);
  {
    std::lock_guard lock(io::hdf5_mutex());
    io::H5Object f = io::create_file(out.temp_path());
    f.set_provenance(program, config_ini);
    f.set_attribute("kind", kCodebookKind);
    f.set_attribute<std::int32_t>("format_version", kCodebookFormatVersion);
    f.set_attribute("mode", mode);
    f.set_attribute<std::int64_t>("k", static_cast<std::int64_t>(k));
    f.set_attribute<std::int64_t>("d", static_cast<std::int64_t>(d));
    f.set_attribute("algorithm", algorithm);
    f.set_attribute("init", init);
    f.set_attribute<std::uint64_t>("seed", seed);
    f.set_attribute<std::int32_t>("iterations", iterations);
    f.set_attribute<std::int32_t>("converged", converged ? 1 : 0);
    f.set_attribute<double>("final_inertia", final_inertia);
    f.set_attribute("input", input);
    f.set_attribute("input_fingerprint", input_fingerprint);
    if (mode == "pixel") {
      f.set_attribute<std::int32_t>("patch_size", patch_size);
      f.set_attribute<std::int32_t>("crop", crop);
      f.set_attribute<std::int32_t>("channels", channels);
      f.set_attribute("normalization", normalization.name);
      f.set_attribute<float>("normalization_mean", std::span<const float>(normalization.mean));
      f.set_attribute<float>("normalization_std", std::span<const float>(normalization.std));
    } else {
      f.set_attribute("feature_dataset", feature_dataset);
    }
    const auto kk = static_cast<hsize_t>(k), dd = static_cast<hsize_t>(d);
    f.write_dataset<float>("centroids", centroids, {kk, dd});
    std::vector<std::int64_t> sizes = cluster_sizes;
    sizes.resize(k, 0);
    f.write_dataset<std::int64_t>("cluster_sizes", sizes, {kk});
    f.write_dataset<double>("inertia", inertia, {static_cast<hsize_t>(inertia.size())});
    f.write_dataset<std::int64_t>("empty_cluster_events", empty_cluster_events,
                                  {static_cast<hsize_t>(empty_cluster_events.size())});
  }
  out.commit();
}

Codebook Codebook::load(const std::filesystem::path& file) {
  require_file(std::filesystem::exists(file), file, "does not exist");
  require_file(io::is_hdf5_file(file), file, "is not an HDF5 file");
  std::lock_guard lock(io::hdf5_mutex());
  const io::H5Object f = io::open_file(file, io::FileMode::read);
  require_file(f.has_attribute("kind") && f.string_attribute("kind") == kCodebookKind, file,
               "is not a kmim codebook (attribute kind != 'kmim_codebook')");
  const int version = f.attribute<std::int32_t>("format_version");
  require_file(version == kCodebookFormatVersion, file,
               fmt::format("codebook format version {} (this kmim reads version {})", version,
                           kCodebookFormatVersion));
  Codebook c;
  c.mode = f.string_attribute("mode");
  c.k = static_cast<std::size_t>(f.attribute<std::int64_t>("k"));
  c.d = static_cast<std::size_t>(f.attribute<std::int64_t>("d"));
  c.algorithm = f.string_attribute("algorithm");
  c.init = f.string_attribute("init");
  c.seed = f.attribute<std::uint64_t>("seed");
  c.iterations = f.attribute<std::int32_t>("iterations");
  c.converged = f.attribute<std::int32_t>("converged") != 0;
  c.final_inertia = f.attribute<double>("final_inertia");
  c.input = f.string_attribute("input");
  c.input_fingerprint = f.string_attribute("input_fingerprint");
  if (c.mode == "pixel") {
    c.patch_size = f.attribute<std::int32_t>("patch_size");
    c.crop = f.attribute<std::int32_t>("crop");
    c.channels = f.attribute<std::int32_t>("channels");
    c.normalization.name = f.string_attribute("normalization");
    const auto mean = f.array_attribute<float>("normalization_mean");
    const auto sd = f.array_attribute<float>("normalization_std");
    require_file(mean.size() == 3 && sd.size() == 3, file,
                 "normalization_mean/normalization_std must hold 3 values");
    std::copy(mean.begin(), mean.end(), c.normalization.mean.begin());
    std::copy(sd.begin(), sd.end(), c.normalization.std.begin());
  } else if (c.mode == "feature") {
    c.feature_dataset = f.string_attribute("feature_dataset");
  }
  require_file(f.has("centroids"), file, "has no /centroids dataset");
  const io::H5Dataset cd = f.dataset("centroids");
  const auto dims = cd.dims();
  require_file(dims.size() == 2 && dims[0] == c.k && dims[1] == c.d && cd.holds<float>(), file,
               fmt::format("/centroids must be float32 [k={}, d={}]", c.k, c.d));
  c.centroids = cd.read<float>();
  c.cluster_sizes = f.read_dataset<std::int64_t>("cluster_sizes");
  c.inertia = f.read_dataset<double>("inertia");
  c.empty_cluster_events = f.read_dataset<std::int64_t>("empty_cluster_events");
  try {
    c.validate();
  } catch (const FileError&) {
    throw;
  } catch (const Error& e) {
    throw FileError(file, e.what());
  }
  return c;
}

}  // namespace kmim::kmeans
