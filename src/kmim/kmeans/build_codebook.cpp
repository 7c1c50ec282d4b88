#include "kmim/kmeans/build_codebook.hpp"

#include <omp.h>
#include <sched.h>

#include <cmath>
#include <cstdlib>
#include <mutex>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "kmim/core/error.hpp"
#include "kmim/core/log.hpp"
#include "kmim/gpu/kmeans_assign.hpp"  // precision names (host-only, every build)
#include "kmim/io/atomic_output.hpp"
#include "kmim/io/hdf5.hpp"
#include "kmim/io/shard_dataset.hpp"
#include "kmim/kmeans/checkpoint.hpp"
#include "kmim/kmeans/local_vectors.hpp"
#include "kmim/kmeans/shard_patch_source.hpp"
#include "kmim/core/stop_request.hpp"
#include "kmim/kmeans/train.hpp"

namespace kmim::kmeans {

void add_kmeans_options(OptionSet& opts, KmeansParams& p) {
  opts.add("manifest", p.manifest, "pixel mode: shard split manifest (<out>/<split>.h5 of kmim_shard)")
      .add("features", p.features, "feature mode: HDF5 file with a float32 [N, D] dataset")
      .add("dataset", p.dataset, "feature mode: dataset name inside --features")
      .add("out", p.out, "output codebook (HDF5); checkpoints go to <out>.ckpt.h5")
      .add("k", p.k, "number of centroids (also -k)")
      .add("algorithm", p.algorithm, "lloyd | minibatch (scikit-learn MiniBatchKMeans semantics)")
      .add("iters", p.iters, "Lloyd iterations (at most; see --tol)")
      .add("tol", p.tol, "stop when |inertia change| / previous inertia < tol (0: run all iterations/passes)")
      .add("init", p.init, "kmeans++ | random (on a seeded sample gathered to all ranks)")
      .add("init-sample", p.init_sample,
           "vectors to initialise on (0: mini-batch: the first batch; Lloyd: max(65536, 64k))")
      .add("init-centroids", p.init_centroids,
           "start from the float32 /centroids [K, D] of this HDF5 file (e.g. a codebook) instead of --init")
      .add("device", p.device,
           "cpu | gpu: gpu runs Lloyd on one GPU per rank (needs --algorithm lloyd and the vectors "
           "cached in memory, see --memory-limit)")
      .add("precision", p.precision,
           "--device gpu: fp32 (IEEE products, matches the CPU) | tf32 (faster GEMMs, bounded distance error)")
      .add("seed", p.seed, "seed of every random choice (results do not depend on the rank count)")
      .add("batch-images", p.batch_images, "mini-batch: images (items) per global batch")
      .add("passes", p.passes, "mini-batch: passes over the data")
      .add("reassignment-ratio", p.reassignment_ratio,
           "mini-batch: centres with count < ratio * max count are moved to random batch vectors")
      .add("crop", p.crop, "pixel mode: centre crop side (pixels) of the stored images")
      .add("patch", p.patch, "pixel mode: patch side P (vectors have P*P*3 values)")
      .add("normalize", p.normalize, "pixel mode: imagenet (x/255 - mean) / std | none (x/255)")
      .add("max-images", p.max_images, "pixel mode: use a seeded random subset of this many images (0: all)")
      .add("patches-per-image", p.patches_per_image,
           "pixel mode: use a seeded random subset of this many patches per image (0: all)")
      .add("memory-limit", p.memory_limit,
           "per rank: hold the vectors in memory up to this size (e.g. 8G), else stream them every pass")
      .add("checkpoint-every", p.checkpoint_every, "write <out>.ckpt.h5 every N iterations/passes (0: never)")
      .add_flag("resume", p.resume, "continue from <out>.ckpt.h5 if it exists")
      .add("threads", p.threads, "OpenMP threads per rank (0: automatic)");
}

void validate_kmeans_params(const KmeansParams& p) {
  if (p.manifest.empty() == p.features.empty())
    throw UsageError("give exactly one input: --manifest (pixel mode) or --features (feature mode) (see --help)");
  require_option(!p.out.empty(), "out", p.out, "must not be empty");
  require_option(p.k >= 1, "k", std::to_string(p.k), "must be at least 1");
  require_option(p.iters >= 1, "iters", std::to_string(p.iters), "must be at least 1");
  require_option(p.passes >= 1, "passes", std::to_string(p.passes), "must be at least 1");
  require_option(p.tol >= 0, "tol", fmt::format("{}", p.tol), "must not be negative");
  require_option(p.batch_images >= 1, "batch-images", std::to_string(p.batch_images), "must be at least 1");
  require_option(p.reassignment_ratio >= 0, "reassignment-ratio", fmt::format("{}", p.reassignment_ratio),
                 "must not be negative");
  require_option(p.checkpoint_every >= 0, "checkpoint-every", std::to_string(p.checkpoint_every),
                 "must not be negative");
  require_option(p.threads >= 0, "threads", std::to_string(p.threads), "must not be negative");
  require_option(p.patches_per_image >= 0, "patches-per-image", std::to_string(p.patches_per_image),
                 "must not be negative");
  parse_algorithm(p.algorithm);
  parse_init_method(p.init);
  parse_byte_size(p.memory_limit, "memory-limit");
  const Device device = parse_device(p.device);
  gpu::precision_from_name(p.precision, "precision");
  require_option(device == Device::gpu || p.precision == "fp32", "precision", p.precision,
                 "applies to --device gpu only (the CPU computes in fp32)");
  require_option(device == Device::cpu || parse_algorithm(p.algorithm) == Algorithm::lloyd, "device", p.device,
                 "supports --algorithm lloyd only (run --algorithm minibatch with --device cpu)");
  if (!p.manifest.empty()) PixelNormalization::from_name(p.normalize);
}

std::vector<float> read_initial_centroids(const std::filesystem::path& file, std::size_t k, std::size_t d) {
  require_file(std::filesystem::exists(file), file, "does not exist");
  std::lock_guard lock(io::hdf5_mutex());
  const io::H5Object f = io::open_file(file, io::FileMode::read);
  require_file(f.has("centroids"), file, "has no dataset 'centroids' (--init-centroids)");
  const io::H5Dataset c = f.dataset("centroids");
  const auto dims = c.dims();
  require_file(dims.size() == 2 && dims[0] == k && dims[1] == d && c.holds<float>(), file,
               fmt::format("/centroids must be float32 [k={}, d={}] to initialise this run", k, d));
  std::vector<float> out = c.read<float>();
  for (const float v : out) require_file(std::isfinite(v), file, "/centroids holds NaN or infinite values");
  return out;
}

int default_thread_count(const dist::Communicator& comm) {
  if (const char* env = std::getenv("OMP_NUM_THREADS"); env != nullptr && std::atoi(env) > 0)
    return std::atoi(env);
  cpu_set_t set;
  CPU_ZERO(&set);
  int cpus = static_cast<int>(std::thread::hardware_concurrency());
  const int hardware = std::max(cpus, 1);
  if (sched_getaffinity(0, sizeof set, &set) == 0) cpus = CPU_COUNT(&set);
  if (cpus < hardware) return std::max(cpus, 1);  // bound (Slurm, mpirun --bind-to): use the mask
  // Unbound: share the node's CPUs among the ranks on it.
  MPI_Comm node = MPI_COMM_NULL;
  dist::check_mpi(MPI_Comm_split_type(comm.get(), MPI_COMM_TYPE_SHARED, comm.rank(), MPI_INFO_NULL, &node),
                  "MPI_Comm_split_type");
  int local_ranks = 1;
  MPI_Comm_size(node, &local_ranks);
  MPI_Comm_free(&node);
  return std::max(1, hardware / std::max(local_ranks, 1));
}

namespace {

/// The settings a checkpoint must share with the run that continues it (everything that changes
/// the sequence of centroids; --iters, --passes, --tol and resources may differ).
std::string run_identity(const KmeansParams& p, const VectorSource& source, const TrainConfig& c) {
  std::string s;
  s += fmt::format("mode = {}\n", source.mode());
  s += fmt::format("input_fingerprint = {}\n", source.fingerprint());
  s += fmt::format("items = {}\nvectors_per_item = {}\nd = {}\n", source.items(),
                   source.vectors_per_item(), source.dim());
  s += fmt::format("k = {}\nalgorithm = {}\nseed = {}\n", c.k, to_string(c.algorithm), c.seed);
  if (c.initial_centroids.empty()) {
    s += fmt::format("init = {}\ninit_sample = {}\n", to_string(c.init), c.init_sample);
  } else {
    io::shard_format::Fnv1a64 h;
    h.add(std::string_view(reinterpret_cast<const char*>(c.initial_centroids.data()),
                           c.initial_centroids.size() * sizeof(float)));
    s += fmt::format("init_centroids = {}\n", h.hex());
  }
  // GPU runs keep float centroids (docs/kmeans.md): a checkpoint continues on the device type
  // (and precision) that wrote it. CPU identities are unchanged from before --device existed.
  if (parse_device(p.device) == Device::gpu) s += fmt::format("device = gpu\nprecision = {}\n", p.precision);
  if (c.algorithm == Algorithm::minibatch)
    s += fmt::format("batch_images = {}\nreassignment_ratio = {}\n", c.batch_items, c.reassignment_ratio);
  if (source.mode() == "pixel")
    s += fmt::format("crop = {}\npatch = {}\nnormalize = {}\nmax_images = {}\npatches_per_image = {}\n",
                     p.crop, p.patch, p.normalize, p.max_images, p.patches_per_image);
  else
    s += fmt::format("dataset = {}\n", p.dataset);
  return s;
}

/// An input problem that every rank reports identically: a UsageError, so that run_program prints
/// it once and no rank is aborted.
class SharedInputError : public UsageError {
 public:
  using UsageError::UsageError;
};

/// Runs `step` (which must not communicate) on every rank. When it throws a kmim::Error on any
/// rank, every rank throws the message of the lowest failing rank as a SharedInputError, so a bad
/// input gives one clear line instead of one line per rank and an MPI_Abort.
template <class Step>
void agree_on_input_errors(const dist::Communicator& comm, Step&& step) {
  std::string message;
  bool failed = false;
  try {
    step();
  } catch (const Error& e) {
    failed = true;
    message = e.what();
  }
  if (comm.size() == 1) {
    if (failed) throw SharedInputError(message);
    return;
  }
  const std::vector<int> flags = comm.allgather(failed ? 1 : 0);
  for (int r = 0; r < comm.size(); ++r)
    if (flags[static_cast<std::size_t>(r)] != 0) throw SharedInputError(comm.bcast(message, r));
}

std::string gib(std::uint64_t bytes) { return fmt::format("{:.2f} GiB", static_cast<double>(bytes) / (1 << 30)); }

}  // namespace

BuildResult build_codebook(const KmeansParams& p, const std::string& config_ini,
                           const dist::Communicator& comm, const std::string& program) {
  const kmim::StopRequest stop_signal;  // SIGUSR1/SIGTERM: checkpoint at the next boundary
  validate_kmeans_params(p);
  const std::uint64_t memory_limit = parse_byte_size(p.memory_limit, "memory-limit");
  const Device device = parse_device(p.device);
  // No GPU (or no CUDA backend): one clear line before any input is read or output written.
  if (device == Device::gpu) agree_on_input_errors(comm, [] { require_usable_gpu(); });
  const std::filesystem::path out = p.out;
  const std::filesystem::path ckpt = checkpoint_path(out);
  // Fail before any work if the output cannot be written.
  if (comm.is_root())
    io::ensure_writable_directory(out.has_parent_path() ? out.parent_path() : std::filesystem::path("."));

  const int threads = p.threads > 0 ? p.threads : default_thread_count(comm);
  omp_set_num_threads(threads);

  TrainConfig config;
  config.k = p.k;
  config.algorithm = parse_algorithm(p.algorithm);
  config.init = parse_init_method(p.init);
  config.iters = p.iters;
  config.passes = p.passes;
  config.tol = p.tol;
  config.seed = p.seed;
  config.init_sample = p.init_sample;
  config.batch_items = p.batch_images;
  config.reassignment_ratio = p.reassignment_ratio;

  std::unique_ptr<VectorSource> source;
  ShardPatchOptions patch_options;
  agree_on_input_errors(comm, [&] {
    if (!p.manifest.empty()) {
      patch_options.geometry = PatchGeometry{p.crop, p.patch, 3};
      patch_options.normalization = PixelNormalization::from_name(p.normalize);
      patch_options.max_images = p.max_images;
      patch_options.patches_per_image = p.patches_per_image;
      patch_options.seed = p.seed;
      source = std::make_unique<ShardPatchSource>(p.manifest, patch_options);
    } else {
      source = std::make_unique<FeatureFileSource>(p.features, p.dataset);
    }
    require_option(p.k <= source->vectors(), "k", std::to_string(p.k),
                   fmt::format("is larger than the number of input vectors ({} in '{}')",
                               source->vectors(), source->path().string()));
  });
  const std::uint64_t total = source->vectors();
  log().info("kmeans: {} mode, {} items × {} vectors = {} vectors of dimension {} from '{}'",
             source->mode(), source->items(), source->vectors_per_item(), total, source->dim(),
             source->path().string());
  log().info("kmeans: k = {}, algorithm {}, init {}, seed {}, {} ranks × {} threads, device {}{}", p.k,
             p.algorithm, p.init, p.seed, comm.size(), threads, p.device,
             device == Device::gpu ? fmt::format(" ({})", p.precision) : std::string());

  // Reading the cache checks every value: a NaN on one rank is reported once, by every rank.
  std::unique_ptr<LocalVectors> local;
  agree_on_input_errors(comm, [&] { local = std::make_unique<LocalVectors>(*source, comm, memory_limit); });
  LocalVectors& data = *local;
  const std::uint64_t local_bytes = data.cache_bytes();
  const int streaming_ranks = comm.allreduce(data.cached() ? 0 : 1);
  if (streaming_ranks == 0)
    log().info("kmeans: vectors cached in memory{} ({} on rank 0, --memory-limit {})",
               data.cached_as_bytes() ? " as pixel bytes" : "", gib(local_bytes), p.memory_limit);
  else
    log().info("kmeans: streaming the vectors from the input every pass on {} of {} ranks ({} on "
               "rank 0 > --memory-limit {})",
               streaming_ranks, comm.size(), gib(local_bytes), p.memory_limit);

  if (device == Device::gpu)
    require_option(streaming_ranks == 0, "device", p.device,
                   fmt::format("needs every rank's vectors cached in memory ({} of {} ranks would stream "
                               "them; raise --memory-limit above {} or add ranks), or use --device cpu",
                               streaming_ranks, comm.size(), gib(local_bytes)));
  if (!p.init_centroids.empty())
    agree_on_input_errors(comm, [&] {
      config.initial_centroids = read_initial_centroids(p.init_centroids, config.k, source->dim());
    });
  const std::string identity = run_identity(p, *source, config);
  TrainState state;
  if (p.resume && std::filesystem::exists(ckpt)) {
    agree_on_input_errors(comm, [&] { state = load_checkpoint(ckpt, identity, config.k, source->dim()); });
    log().info("kmeans: resuming from '{}' after {} {}", ckpt.string(), state.completed,
               config.algorithm == Algorithm::lloyd ? "iterations" : "passes");
  } else {
    if (p.resume) log().info("kmeans: no checkpoint '{}' yet; starting from the beginning", ckpt.string());
    state = initial_state(data, config, comm);
  }

  const int planned = planned_iterations(config);
  const char* unit = config.algorithm == Algorithm::lloyd ? "iteration" : "pass";
  bool stopped = false;
  auto after_each = [&](const TrainState& s, const IterationReport& r) {
    log().info("kmeans: {} {}/{}  inertia {:.6e}  change {:.3e}  {} {}  {:.2f} s  {:.3e} vectors/s  {:.1f} GFLOP/s",
               unit, r.iteration, planned, r.inertia, r.relative_change,
               config.algorithm == Algorithm::lloyd ? "empty" : "reassigned", r.events, r.seconds,
               static_cast<double>(r.vectors) / std::max(r.seconds, 1e-12), r.gflops);
    const bool last = s.converged || s.completed >= planned;
    stopped = !last && comm.any(stop_signal.requested());
    if ((p.checkpoint_every > 0 && (s.completed % p.checkpoint_every == 0 || last)) || stopped) {
      if (comm.is_root()) save_checkpoint(ckpt, s, identity, program, config_ini);
      comm.barrier();  // the checkpoint is complete before anyone exits
    }
    return !stopped;
  };
  std::optional<FinalAssignment> gpu_final;
  if (device == Device::gpu) gpu_final = train_kmeans_gpu(data, config, comm, state, p.precision, after_each);
  else train_kmeans(data, config, comm, state, after_each);
  if (stopped) {
    log().info("kmeans: stopped on request (SIGUSR1) after {} {}s; checkpoint '{}' written, run again "
               "with --resume to continue",
               state.completed, unit, ckpt.string());
    return BuildResult{Codebook{}, true};
  }
  if (state.converged) log().info("kmeans: converged (relative inertia change < {})", p.tol);

  const FinalAssignment final = gpu_final ? *gpu_final : final_assignment(data, state.centroids, config.k, comm);
  Codebook book;
  book.k = config.k;
  book.d = source->dim();
  book.centroids.resize(state.centroids.size());
  for (std::size_t i = 0; i < state.centroids.size(); ++i)
    book.centroids[i] = static_cast<float>(state.centroids[i]);
  book.mode = source->mode();
  if (book.mode == "pixel") {
    book.patch_size = p.patch;
    book.crop = p.crop;
    book.channels = 3;
    book.normalization = patch_options.normalization;
  } else {
    book.feature_dataset = p.dataset;
  }
  book.cluster_sizes = final.cluster_sizes;
  book.inertia = state.inertia;
  book.empty_cluster_events = state.empty_events;
  book.final_inertia = final.inertia;
  book.algorithm = p.algorithm;
  book.init = p.init_centroids.empty() ? p.init : "given";
  book.seed = p.seed;
  book.iterations = state.completed;
  book.converged = state.converged;
  book.input = source->path().string();
  book.input_fingerprint = source->fingerprint();
  std::int64_t dead = 0;
  for (const auto s : final.cluster_sizes) dead += s == 0 ? 1 : 0;
  if (comm.is_root()) book.save(out, program, config_ini);
  comm.barrier();
  log().info("kmeans: wrote '{}' (k = {}, d = {}, {} {}s, final inertia {:.6e}, {} empty clusters)",
             out.string(), book.k, book.d, state.completed, unit, final.inertia, dead);
  return BuildResult{std::move(book), false};
}

}  // namespace kmim::kmeans
