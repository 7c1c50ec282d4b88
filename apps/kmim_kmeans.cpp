// kmim_kmeans: K-means codebook over image patches (pixel mode) or feature vectors (feature
// mode), distributed over MPI ranks (docs/kmeans.md).
//
//   mpirun -np 4 kmim_kmeans --manifest shards/train.h5 --k 50 --algorithm minibatch --out codebook.h5
//   kmim_kmeans --features feats.h5 --dataset features --k 1000 --iters 30 --out codebook.h5
//   mpirun -np 4 kmim_kmeans --features feats.h5 --k 8192 --device gpu --out codebook.h5   (one GPU per rank)
#include <iostream>
#include <string>
#include <vector>

#include "kmim/core/options.hpp"
#include "kmim/dist/program.hpp"
#include "kmim/kmeans/build_codebook.hpp"
#include "kmim/core/stop_request.hpp"

namespace {

/// "-k 50", "-k50", "-k=50" → "--k ..." (Boost.Program_options knows only --k for a one-letter
/// long name).
std::vector<std::string> with_short_k(int argc, char** argv) {
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-k") args.push_back("--k");
    else if (a.size() > 2 && a.rfind("-k", 0) == 0 && a[2] != '-') args.push_back("--k=" + a.substr(a[2] == '=' ? 3 : 2));
    else args.push_back(a);
  }
  return args;
}

int run(kmim::dist::Communicator& comm, int argc, char** argv) {
  kmim::kmeans::KmeansParams params;
  kmim::OptionSet opts("kmim_kmeans",
                       "Builds a K-means codebook over image patches (--manifest) or feature vectors "
                       "(--features), on any number of MPI ranks.");
  kmim::kmeans::add_kmeans_options(opts, params);
  if (!opts.parse(with_short_k(argc, argv), std::cout)) return 0;
  const auto result = kmim::kmeans::build_codebook(params, opts.effective_ini(), comm);
  // Stopped on SIGUSR1 with a checkpoint written: 75 asks the job script to requeue (--resume).
  return result.stopped_on_request ? kmim::kExitCheckpointed : 0;
}

}  // namespace

int main(int argc, char** argv) { return kmim::dist::run_program("kmim_kmeans", argc, argv, run); }
