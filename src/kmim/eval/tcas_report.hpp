// The TCAS report: one HDF5 group per tokenizer (count matrix, TCAS and the statistics beside
// it) and a printed table sorted by TCAS that names the recommended codebook (docs/eval.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "kmim/dist/mpi.hpp"
#include "kmim/eval/tcas.hpp"

namespace kmim::eval {

struct TokenizerTcas {
  std::string name;     ///< group name ("codebook_k50", "label", "random_k100")
  std::string kind;     ///< "codebook" (pixel), "feature", "label" or "random"
  std::string source;   ///< codebook file, or "" for the reference tokenizers
  std::string source_fingerprint;
  std::string centroids_crc32;      ///< codebooks: CRC-32 of the centroids (pretraining identity)
  std::string encoder;              ///< feature: the frozen encoder's checkpoint
  std::string encoder_fingerprint;  ///< feature: FrozenEncoder::fingerprint
  int patches_per_image = 0;
  std::vector<std::int64_t> counts;  ///< [tokens × classes]
  TcasResult result;
};

/// What the report says about the evaluation set and the run.
struct TcasRunInfo {
  std::string manifest;
  std::string manifest_fingerprint;
  std::uint64_t images = 0;           ///< images counted
  std::uint64_t max_per_class = 0;    ///< 0: all
  std::uint64_t seed = 0;
  std::vector<std::string> class_ids;
  std::string program;
  std::string config_ini;
};

/// True for the tokenizers made from a codebook (kinds "codebook" and "feature"), which compete
/// for the recommendation; label and random are references.
bool is_codebook_tokenizer(const TokenizerTcas& report);

/// Index (into `reports`) of the codebook (pixel or feature) with the lowest TCAS; -1 when there
/// is none. Ties go to the earlier one.
int recommended_codebook(const std::vector<TokenizerTcas>& reports);

/// The table printed at the end of a run: one row per tokenizer sorted by TCAS (ascending), the
/// recommended codebook marked, reference tokenizers labelled as such.
std::string format_tcas_table(const std::vector<TokenizerTcas>& reports);

/// Writes the report atomically (rank 0 writes; collective barrier at the end).
void write_tcas_report(const std::filesystem::path& file, const std::vector<TokenizerTcas>& reports,
                       const TcasRunInfo& info, const dist::Communicator& comm);

}  // namespace kmim::eval
