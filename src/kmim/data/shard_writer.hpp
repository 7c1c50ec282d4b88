// kmim_shard's engine: an ImageNet-style folder tree → HDF5 image shards + one manifest per
// split (docs/shard.md). SPEC §1, first stage of the pipeline.
//
// Work split (rank-count independent by construction):
// - rank 0 scans the tree once and broadcasts the candidate list of every split, sorted by
//   (label, path) and optionally permuted (--shuffle, keyed by seed and split name);
// - shard s covers candidates [s*shard_size, (s+1)*shard_size) and is written whole by rank
//   s % size; files that fail to decode are left out, so a shard can hold fewer images, but
//   which images land in which shard never depends on the rank count;
// - inside a rank, OpenMP threads decode a shard's images in parallel into a buffer slot per
//   candidate, then the good ones are packed in candidate order;
// - rank 0 writes the manifest (virtual datasets over the shards), the skipped-files report and
//   a one-line summary per split.
// Every file is written under a temporary name and renamed when complete; a rerun reuses the
// shards that are complete and verified (same config, same candidates, checksum matches data).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kmim/core/error.hpp"
#include "kmim/dist/mpi.hpp"

namespace kmim::data {

/// kmim_shard's parameters; the defaults are the documented ones (docs/shard.md).
struct ShardParams {
  std::string root;                 ///< dataset root holding train/ and val/
  std::string out;                  ///< output folder
  std::string splits = "train,val"; ///< comma-separated split folder names
  std::string classes;              ///< optional class list (one wnid per line), e.g. ImageNet-100
  std::string class_names;          ///< LOC_synset_mapping.txt-style names (default: in <root>)
  std::string val_labels;           ///< label file for a flat val/ folder
  int size = 256;                   ///< output side (short-side resize + centre crop), SPEC §2
  int shard_size = 1024;            ///< candidate images per shard (~192 MiB at size 256)
  bool shuffle = false;             ///< permute each split's candidates before sharding
  std::uint64_t seed = 0;           ///< permutation seed (with --shuffle)
  bool strict = false;              ///< any unreadable image is an error instead of a skip
  int threads = 0;                  ///< decode threads per rank; 0 = cores / ranks on the node
  int compression = 0;              ///< gzip level 0..9 for images (0 = none, fastest reads)
};

/// Splits "train,val" into its names; throws OptionError on an empty or bad name.
std::vector<std::string> parse_split_list(const std::string& splits);

/// Throws OptionError for the first parameter that is out of range.
void validate(const ShardParams& params);

/// What one split produced (identical on every rank).
struct SplitSummary {
  std::string split;
  std::uint64_t candidates = 0;
  std::uint64_t images = 0;
  std::uint64_t skipped = 0;  ///< decode failures + unlabelled files
  std::size_t shards = 0;
  std::size_t shards_reused = 0;
  double seconds = 0;
  std::string fingerprint;
};

/// A bad input found by rank 0 while planning (missing root, unknown class, unwritable output
/// folder): every rank throws it, so it is reported once and no rank is aborted.
class ShardSetupError : public UsageError {
 public:
  using UsageError::UsageError;
};

/// Runs the whole job on every rank of `comm`. `config_ini` (the effective options) is stored
/// as provenance in every output file.
std::vector<SplitSummary> write_shards(const dist::Communicator& comm, const ShardParams& params,
                                       const std::string& config_ini);

}  // namespace kmim::data
