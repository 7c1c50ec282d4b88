// kmim_tcas: the token-class alignment score of tokenizers on a shard split (SPEC §3).
//
//   kmim_tcas --manifest shards/val.h5 --sweep 'codebooks/k*.h5' --label-tokenizer
//             --random-tokenizer 50 --out tcas.h5
//   kmim_tcas --manifest shards/val.h5 --feature-codebook dino_k100.h5
//             --tokenizer-checkpoint dino_vits16.h5 --out tcas_dino.h5
//
// Counts n[t][c] (patches of class c given token t) for every tokenizer in one pass over the
// images (ranks take blocks of images; counts are summed with MPI), computes TCAS and the
// statistics beside it (kmim/eval/tcas.hpp), writes one HDF5 group per tokenizer and prints a
// table sorted by TCAS naming the recommended codebook (the lowest TCAS among real codebooks;
// the label and random tokenizers are references).
#include <glob.h>
#include <omp.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "kmim/core/error.hpp"
#include "kmim/core/log.hpp"
#include "kmim/core/options.hpp"
#include "kmim/dist/program.hpp"
#include "kmim/eval/feature_codebook_tokenizer.hpp"
#include "kmim/eval/frozen_encoder.hpp"
#include "kmim/eval/tcas.hpp"
#include "kmim/eval/tcas_report.hpp"
#include "kmim/eval/tcas_tokenizers.hpp"
#include "kmim/eval/token_class_counts.hpp"
#include "kmim/io/atomic_output.hpp"
#include "kmim/io/shard_dataset.hpp"
#include "kmim/kmeans/codebook.hpp"
#include "kmim/tokenize/target_tokenizer.hpp"

namespace fs = std::filesystem;
using namespace kmim;

namespace {

struct TcasParams {
  std::string manifest;                  // shard split manifest (e.g. shards/val.h5)
  std::vector<std::string> codebooks;    // --codebook FILE, repeatable (pixel, or feature with
                                         //   --tokenizer-checkpoint)
  std::vector<std::string> sweep;        // --sweep PATTERN: files or shell globs, repeatable
  std::vector<std::string> feature_codebooks;  // --feature-codebook FILE: feature-mode, repeatable
  std::string tokenizer_checkpoint;      // the frozen encoder of the feature codebooks
  bool label_tokenizer = false;          // reference: token = class (TCAS 0)
  std::vector<std::size_t> random_tokenizers;  // reference: K uniformly random tokens (TCAS ≈ 1)
  std::uint64_t max_per_class = 0;       // 0: every image; else a seeded sample per class
  std::uint64_t seed = 0;                // per-class sample and random tokenizers
  int crop = 0;                          // reference tokenizers' patch grid: 0 = as the first
  int patch = 0;                         //   codebook, else patch 16 and the largest crop ≤ image
  std::string out;                       // report (HDF5)
  std::size_t batch_images = 64;         // images read and tokenized together
  int threads = 0;                       // 0: OpenMP default
};

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

/// Files matching a shell pattern, sorted; a pattern without wildcards is taken as a file name.
/// Side files of kmim programs that a pattern like 'cb/k*.h5' also matches (kmim_kmeans
/// checkpoints "<codebook>.ckpt.h5", unfinished "<file>.partial") are left out.
std::vector<std::string> expand_pattern(const std::string& pattern) {
  if (pattern.find_first_of("*?[") == std::string::npos) return {pattern};
  glob_t g{};
  const int rc = ::glob(pattern.c_str(), 0, nullptr, &g);
  std::vector<std::string> files;
  if (rc == 0) {
    for (std::size_t i = 0; i < g.gl_pathc; ++i) {
      const std::string file = g.gl_pathv[i];
      if (ends_with(file, ".ckpt.h5") || ends_with(file, ".partial")) {
        log().info("tcas: --sweep {}: skipping '{}' (a checkpoint or unfinished file)", pattern, file);
        continue;
      }
      files.push_back(file);
    }
  }
  globfree(&g);
  if (files.empty()) throw OptionError("sweep", pattern, "matches no file");
  std::sort(files.begin(), files.end());
  return files;
}

int run(dist::Communicator& comm, int argc, char** argv) {
  TcasParams p;
  OptionSet opts("kmim_tcas",
                 "Token-class alignment score (TCAS, SPEC section 3) of pixel codebooks, feature\n"
                 "codebooks over a frozen encoder (K-MIM DINO/DeiT/MAE) and reference tokenizers\n"
                 "on a shard split: alpha = sum_t p(t)(1 - sum_c p(c|t)^2),\n"
                 "alpha0 = 1 - sum_c p(c)^2, TCAS = alpha / alpha0 (lower is better).");
  opts.add_required("manifest", p.manifest, "shard split manifest (<shards>/<split>.h5), e.g. the val split")
      .add("codebook", p.codebooks, "codebook from kmim_kmeans (repeatable): pixel mode, or feature mode with --tokenizer-checkpoint")
      .add("sweep", p.sweep, "codebook files or shell patterns, e.g. 'cb/k*.h5' (repeatable)")
      .add("feature-codebook", p.feature_codebooks, "feature-mode codebook (kmim_kmeans --features over kmim_extract --pool patches) of the --tokenizer-checkpoint encoder's patch tokens (repeatable)")
      .add("tokenizer-checkpoint", p.tokenizer_checkpoint, "kmim checkpoint of the frozen encoder whose final-LayerNorm patch tokens the feature codebooks cluster")
      .add_flag("label-tokenizer", p.label_tokenizer, "add the label tokenizer (token = class; TCAS 0)")
      .add("random-tokenizer", p.random_tokenizers, "add a uniformly random tokenizer with K tokens (repeatable; TCAS about 1)")
      .add("max-per-class", p.max_per_class, "count at most this many images per class, a seeded sample (0: all)")
      .add("seed", p.seed, "seed of the per-class sample and the random tokenizers")
      .add("crop", p.crop, "reference tokenizers: centre crop (0: as the first codebook, else the largest multiple of --patch that fits)")
      .add("patch", p.patch, "reference tokenizers: patch size (0: as the first codebook, else 16)")
      .add_required("out", p.out, "report file (HDF5)")
      .add("batch-images", p.batch_images, "images read and tokenized together")
      .add("threads", p.threads, "threads per rank (0: default)");
  if (!opts.parse(argc, argv)) return 0;
  opts.require("batch-images", p.batch_images >= 1, "must be at least 1");
  opts.require("threads", p.threads >= 0, "must be 0 (default) or positive");
  opts.require("crop", p.crop >= 0, "must be 0 (automatic) or positive");
  opts.require("patch", p.patch >= 0, "must be 0 (automatic) or positive");
  for (std::size_t k : p.random_tokenizers)
    require_option(k >= 1, "random-tokenizer", std::to_string(k), "must be at least 1");
  if (p.threads > 0) omp_set_num_threads(p.threads);

  // Codebook files in order: --codebook, --sweep, --feature-codebook (the last must be feature
  // mode); each file measured once.
  std::vector<std::pair<std::string, bool>> codebook_files;  // (file, given as --feature-codebook)
  for (const auto& f : p.codebooks) codebook_files.emplace_back(f, false);
  for (const auto& pattern : p.sweep)
    for (auto& f : expand_pattern(pattern)) codebook_files.emplace_back(std::move(f), false);
  for (const auto& f : p.feature_codebooks) codebook_files.emplace_back(f, true);
  {
    std::set<std::string> seen;
    std::vector<std::pair<std::string, bool>> unique;
    for (auto& f : codebook_files)
      if (seen.insert(fs::weakly_canonical(f.first).string()).second) unique.push_back(f);
    codebook_files = std::move(unique);
  }
  if (codebook_files.empty() && !p.label_tokenizer && p.random_tokenizers.empty())
    throw UsageError("kmim_tcas: nothing to measure; give --codebook, --sweep, --feature-codebook, "
                     "--label-tokenizer or --random-tokenizer");
  const fs::path out = p.out;
  io::ensure_writable_directory(out.parent_path().empty() ? fs::path(".") : out.parent_path());

  const io::ShardDataset data(p.manifest);
  const int image_size = data.image_size();
  const auto classes = static_cast<std::size_t>(data.num_classes());

  std::vector<std::unique_ptr<eval::PatchTokenizer>> tokenizers;
  std::vector<eval::TokenizerTcas> reports;
  std::set<std::string> names;
  auto unique_name = [&names](std::string name) {
    std::string candidate = name;
    for (int i = 2; names.count(candidate) > 0; ++i) candidate = fmt::format("{}_{}", name, i);
    names.insert(candidate);
    return candidate;
  };
  std::shared_ptr<eval::EncoderTokenCache> encoder;  // shared by every feature codebook
  for (const auto& [file, must_be_feature] : codebook_files) {
    const std::string mode = kmeans::Codebook::load(file).mode;
    eval::TokenizerTcas r;
    r.source = file;
    if (mode == "feature" || must_be_feature) {
      eval::FeatureCodebook cb = eval::load_feature_codebook(file);  // refuses pixel mode
      if (p.tokenizer_checkpoint.empty())
        throw FileError(file, "is a feature-mode codebook; give --tokenizer-checkpoint, the frozen "
                              "encoder whose patch tokens it clusters");
      if (!encoder) {
        eval::FrozenEncoder frozen = eval::load_frozen_encoder(p.tokenizer_checkpoint);
        eval::check_encoder_fits_images(frozen, image_size, p.manifest);
        encoder = std::make_shared<eval::EncoderTokenCache>(std::move(frozen));
      }
      r.kind = "feature";
      r.source_fingerprint = cb.fingerprint;
      r.centroids_crc32 = cb.centroids_crc32;
      r.encoder = p.tokenizer_checkpoint;
      r.encoder_fingerprint = encoder->encoder().fingerprint;
      r.name = unique_name(fmt::format("feature_k{}", cb.k));
      tokenizers.push_back(
          std::make_unique<eval::FeatureCodebookTokenizer>(std::move(cb), encoder, image_size, r.name));
    } else {
      eval::PixelCodebook cb = eval::load_pixel_codebook(file);
      r.kind = "codebook";
      r.source_fingerprint = cb.fingerprint;
      r.centroids_crc32 = tokenize::float_digest(cb.centroids);
      r.name = unique_name(fmt::format("codebook_k{}", cb.k));
      tokenizers.push_back(
          std::make_unique<eval::PixelCodebookTokenizer>(std::move(cb), image_size, r.name));
    }
    reports.push_back(std::move(r));
  }
  if (!p.tokenizer_checkpoint.empty() && !encoder)
    throw OptionError("tokenizer-checkpoint", p.tokenizer_checkpoint,
                      "is given but no feature-mode codebook is (--feature-codebook)");
  if (encoder) log().info("tcas: feature tokenizer encoder {}", encoder->encoder().description());
  // The reference tokenizers' patch grid: the first codebook's, unless given.
  int patch = p.patch, crop = p.crop;
  if (const auto* first = tokenizers.empty() ? nullptr
                              : dynamic_cast<const eval::PixelCodebookTokenizer*>(tokenizers[0].get())) {
    if (patch == 0) patch = first->codebook().geometry.patch;
    if (crop == 0) crop = first->codebook().geometry.crop;
  } else if (const auto* feature = tokenizers.empty() ? nullptr
                                   : dynamic_cast<const eval::FeatureCodebookTokenizer*>(tokenizers[0].get())) {
    if (patch == 0) patch = feature->encoder().config().patch_size;
    if (crop == 0) crop = feature->encoder().config().img_size;
  }
  if (patch == 0) patch = std::min(16, image_size);
  if (crop == 0) crop = image_size / patch * patch;
  if (p.label_tokenizer || !p.random_tokenizers.empty()) {
    require_option(crop % patch == 0, "patch", std::to_string(patch),
                   fmt::format("must divide the crop size {}", crop));
    require_option(crop <= image_size, "crop", std::to_string(crop),
                   fmt::format("is larger than the stored images ({}x{}) of '{}'", image_size,
                               image_size, p.manifest));
  }
  const int grid = crop / std::max(patch, 1);
  const int reference_patches = grid * grid;
  if (p.label_tokenizer) {
    tokenizers.push_back(std::make_unique<eval::LabelTokenizer>(classes, reference_patches));
    eval::TokenizerTcas r;
    r.name = unique_name("label");
    r.kind = "label";
    reports.push_back(std::move(r));
  }
  for (std::size_t k : p.random_tokenizers) {
    auto t = std::make_unique<eval::RandomTokenizer>(k, reference_patches, p.seed);
    eval::TokenizerTcas r;
    r.name = unique_name(t->name());
    r.kind = "random";
    reports.push_back(std::move(r));
    tokenizers.push_back(std::move(t));
  }

  const auto images = eval::select_evaluation_images(data.labels(), classes, p.max_per_class, p.seed);
  if (images.empty()) throw FileError(p.manifest, "holds no images");
  log().info("tcas: {} tokenizer(s) on {} of {} images ({}x{}, {} classes) of '{}', {} rank(s)",
             tokenizers.size(), images.size(), data.size(), image_size, image_size, classes,
             p.manifest, comm.size());
  std::vector<const eval::PatchTokenizer*> views;
  for (const auto& t : tokenizers) views.push_back(t.get());
  eval::CountOptions count_options;
  count_options.batch_images = p.batch_images;
  auto counts = eval::count_token_classes(data, images, views, comm, count_options);

  for (std::size_t i = 0; i < reports.size(); ++i) {
    eval::TokenizerTcas& r = reports[i];
    r.patches_per_image = tokenizers[i]->patches_per_image();
    r.counts = std::move(counts[i]);
    try {
      r.result = eval::tcas_from_counts(r.counts, tokenizers[i]->num_tokens(), classes);
    } catch (const FileError&) {
      throw;
    } catch (const Error& e) {
      throw FileError(p.manifest, fmt::format("tokenizer {}: {}", r.name, e.what()));
    }
  }

  eval::TcasRunInfo info;
  info.manifest = p.manifest;
  info.manifest_fingerprint = data.fingerprint();
  info.images = images.size();
  info.max_per_class = p.max_per_class;
  info.seed = p.seed;
  info.class_ids = data.class_ids();
  info.program = "kmim_tcas";
  info.config_ini = opts.effective_ini();
  eval::write_tcas_report(out, reports, info, comm);
  if (comm.is_root())
    fmt::print("kmim_tcas: {} images, {} classes (lower TCAS is better; report {})\n{}",
               images.size(), classes, out.string(), eval::format_tcas_table(reports));
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return dist::run_program("kmim_tcas", argc, argv, run); }
