#include "kmim/kmeans/checkpoint.hpp"

#include <mutex>
#include <sstream>

#include <fmt/format.h>

#include "kmim/core/error.hpp"
#include "kmim/io/atomic_output.hpp"
#include "kmim/io/hdf5.hpp"
#include "kmim/io/shard_dataset.hpp"

namespace kmim::kmeans {

std::filesystem::path checkpoint_path(const std::filesystem::path& out) {
  std::filesystem::path p = out;
  p += ".ckpt.h5";
  return p;
}

void save_checkpoint(const std::filesystem::path& file, const TrainState& state,
                     const std::string& run_identity, const std::string& program,
                     const std::string& config_ini) {
  io::AtomicOutput out(file);
  {
    std::lock_guard lock(io::hdf5_mutex());
    io::H5Object f = io::create_file(out.temp_path());
    f.set_provenance(program, config_ini);
    f.set_attribute("kind", kCheckpointKind);
    f.set_attribute("run_identity", run_identity);
    f.set_attribute<std::int32_t>("completed", state.completed);
    f.set_attribute<std::int32_t>("converged", state.converged ? 1 : 0);
    f.set_attribute<std::int64_t>("since_reassign", state.since_reassign);
    f.write_dataset<double>("centroids_fp64", state.centroids,
                            {static_cast<hsize_t>(state.centroids.size())});
    f.write_dataset<std::int64_t>("counts", state.counts, {static_cast<hsize_t>(state.counts.size())});
    f.write_dataset<double>("inertia", state.inertia, {static_cast<hsize_t>(state.inertia.size())});
    f.write_dataset<std::int64_t>("empty_cluster_events", state.empty_events,
                                  {static_cast<hsize_t>(state.empty_events.size())});
  }
  out.commit();
}

namespace {
/// The first line that differs between two identity texts ("name = value" lines).
std::string first_difference(const std::string& stored, const std::string& current) {
  std::istringstream a(stored), b(current);
  std::string la, lb;
  while (true) {
    const bool ha = static_cast<bool>(std::getline(a, la));
    const bool hb = static_cast<bool>(std::getline(b, lb));
    if (!ha && !hb) return "";
    if (la != lb || ha != hb)
      return fmt::format("checkpoint has '{}', this run has '{}'", ha ? la : "(nothing)",
                         hb ? lb : "(nothing)");
  }
}
}  // namespace

TrainState load_checkpoint(const std::filesystem::path& file, const std::string& run_identity,
                           std::size_t k, std::size_t d) {
  require_file(io::is_hdf5_file(file), file, "is not an HDF5 file (a damaged checkpoint? remove it)");
  std::lock_guard lock(io::hdf5_mutex());
  const io::H5Object f = io::open_file(file, io::FileMode::read);
  require_file(f.has_attribute("kind") && f.string_attribute("kind") == kCheckpointKind, file,
               "is not a kmim_kmeans checkpoint");
  const std::string stored = f.string_attribute("run_identity");
  if (stored != run_identity)
    throw FileError(file, fmt::format("was written by a run with different settings ({}); "
                                      "remove it or run without --resume",
                                      first_difference(stored, run_identity)));
  TrainState s;
  s.completed = f.attribute<std::int32_t>("completed");
  s.converged = f.attribute<std::int32_t>("converged") != 0;
  s.since_reassign = f.attribute<std::int64_t>("since_reassign");
  s.centroids = f.read_dataset<double>("centroids_fp64");
  s.counts = f.read_dataset<std::int64_t>("counts");
  s.inertia = f.read_dataset<double>("inertia");
  s.empty_events = f.read_dataset<std::int64_t>("empty_cluster_events");
  require_file(s.centroids.size() == k * d, file,
               fmt::format("centroids_fp64 holds {} values, expected {}×{}", s.centroids.size(), k, d));
  require_file(s.counts.empty() || s.counts.size() == k, file, "counts has the wrong length");
  require_file(s.inertia.size() == static_cast<std::size_t>(s.completed) &&
                   s.empty_events.size() == s.inertia.size(),
               file, "histories do not match the completed iteration count");
  return s;
}

}  // namespace kmim::kmeans
