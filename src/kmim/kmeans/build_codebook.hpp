// kmim_kmeans as a library call: options → input → distributed K-means → codebook.h5.
// apps/kmim_kmeans.cpp only parses the options into KmeansParams and calls build_codebook.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "kmim/core/options.hpp"
#include "kmim/dist/mpi.hpp"
#include "kmim/kmeans/codebook.hpp"

namespace kmim::kmeans {

/// Every option of kmim_kmeans; member initialisers are the documented defaults (docs/kmeans.md).
struct KmeansParams {
  // Input: exactly one of manifest (pixel mode) and features (feature mode).
  std::string manifest;               ///< shard split manifest (kmim_shard output)
  std::string features;               ///< HDF5 file with a float32 [N, D] (or [N, T, D]) dataset
  std::string dataset = "features";   ///< dataset name inside --features
  std::string out = "codebook.h5";    ///< output codebook (checkpoint: <out>.ckpt.h5)

  // K-means.
  std::uint64_t k = 50;               ///< centroids (SPEC §2: K = 50 for K-MIM PIXEL on IN-100)
  std::string algorithm = "lloyd";    ///< lloyd | minibatch
  int iters = 50;                     ///< Lloyd iterations (upper bound with --tol)
  double tol = 1e-4;                  ///< stop when the relative inertia change is below (0: never)
  std::string init = "kmeans++";      ///< kmeans++ | random
  std::uint64_t init_sample = 0;      ///< vectors to seed on (0: automatic, see docs)
  std::string init_centroids;         ///< start from these centroids (HDF5 /centroids [K, D])
  std::string device = "cpu";         ///< cpu | gpu (Lloyd on cached vectors only)
  std::string precision = "fp32";     ///< --device gpu: fp32 | tf32 distance GEMMs (docs/gpu.md)
  std::uint64_t seed = 0;
  std::uint64_t batch_images = 256;   ///< mini-batch size in images (items) (SPEC §2: 256 × 196)
  int passes = 100;                   ///< mini-batch passes over the data (SPEC §2: 100)
  double reassignment_ratio = 0.01;   ///< mini-batch low-count reassignment (scikit-learn default)

  // Pixel mode (SPEC §2: Resize(256) + CenterCrop(224), ImageNet normalisation, 16×16 patches).
  int crop = 224;
  int patch = 16;
  std::string normalize = "imagenet"; ///< imagenet | none
  std::uint64_t max_images = 0;       ///< 0: all images; else a seeded random subset
  int patches_per_image = 0;          ///< 0: all patches; else a seeded random subset per image

  // Resources and fault tolerance.
  std::string memory_limit = "8G";    ///< per rank: cache the vectors in memory up to this size
  int checkpoint_every = 1;           ///< iterations/passes between checkpoints (0: never)
  bool resume = false;                ///< continue from <out>.ckpt.h5 when it exists
  int threads = 0;                    ///< OpenMP threads per rank (0: OMP_NUM_THREADS, else the
                                      ///< CPUs this rank may use / ranks sharing them)
};

/// Binds every field of p to an option of opts.
void add_kmeans_options(OptionSet& opts, KmeansParams& p);

/// Checks option values that need no input (throws OptionError).
void validate_kmeans_params(const KmeansParams& p);

struct BuildResult {
  Codebook codebook;          ///< the written codebook (empty when stopped on request)
  bool stopped_on_request = false;  ///< SIGUSR1: checkpoint written, no codebook; exit 75
};

/// Runs the whole stage on every rank of comm; rank 0 writes p.out (atomically). On SIGUSR1
/// (kmim/core/stop_request.hpp: SIGUSR1 or SIGTERM) it writes the checkpoint at the next iteration/pass boundary and returns
/// with stopped_on_request set instead.
BuildResult build_codebook(const KmeansParams& p, const std::string& config_ini,
                           const dist::Communicator& comm, const std::string& program = "kmim_kmeans");

/// Reads float32 /centroids [k, d] from an HDF5 file (a codebook or any file holding one);
/// throws FileError naming the file when missing or of another shape.
std::vector<float> read_initial_centroids(const std::filesystem::path& file, std::size_t k, std::size_t d);

/// The thread count --threads=0 resolves to on this rank.
int default_thread_count(const dist::Communicator& comm);

}  // namespace kmim::kmeans
