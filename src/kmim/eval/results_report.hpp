// kmim_report's engine (docs/eval.md, "kmim_report"): reads the outputs of the pipeline —
// pretraining metrics.jsonl, kmim_tcas reports, kmim_linprobe reports — and renders
//
//   pretrain_loss.png             training loss against epoch, one curve per pretraining run
//   pretrain_masked_accuracy.png  masked-token accuracy against epoch (K-MIM runs)
//   tcas_vs_k.png                 TCAS (left axis) and linear-probe top-1 (right axis) against K,
//                                 one series per tokenizer kind (pixel / feature codebooks)
//   linprobe_accuracy.png         validation top-1 (and top-5, dashed) per epoch of every probe
//   summary.md                    Markdown tables: tokenizer, K, TCAS, linear-probe top-1 (the
//                                 paper's table), the pretraining runs, the probes
//
// with gnuplot: the data go to <out>/data/*.dat and a script <out>/plots.gp that gnuplot runs
// (pngcairo terminal, png when cairo is missing); the script stays for users who restyle plots.
//
// Joining a linear probe to a TCAS row: the probe report records the pretraining checkpoint's
// tokenizer (encoder_tokenizer_kind, encoder_centroids_crc32, encoder_tokens = K); a TCAS row of a
// codebook records the CRC-32 of its centroids. Equal CRCs join; label and random tokenizers join
// on (kind, K).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace kmim::eval {

/// One pretraining run's curves (metrics.jsonl, docs/pretrain.md).
struct PretrainCurves {
  std::string name;
  std::filesystem::path file;
  // Step records: x = fractional epoch (epoch_progress), loss, masked accuracy in percent (NaN
  // when the record has none, e.g. the MAE pixel loss).
  std::vector<double> step_epoch, step_loss, step_accuracy;
  // Epoch records: epoch (1-based: the epoch completed), mean loss, mean accuracy (percent/NaN).
  std::vector<double> epoch, epoch_loss, epoch_accuracy;
  double images_per_second = 0.0;  ///< of the last step record
  std::int64_t steps = 0;          ///< of the last record
  std::size_t skipped_lines = 0;   ///< lines that did not parse (e.g. one cut by a crash)
};

/// Reads <dir>/metrics.jsonl (or the file itself). Throws FileError naming the file when it is
/// missing or holds no record.
PretrainCurves read_pretrain_metrics(const std::string& name, const std::filesystem::path& path);

/// One tokenizer of a kmim_tcas report.
struct TcasEntry {
  std::string report;   ///< the report file
  std::string name;     ///< group name (codebook_k50, feature_k100, label, random_k50)
  std::string kind;     ///< codebook (pixel), feature, label, random
  std::string source;   ///< codebook file
  std::int64_t k = 0;
  double tcas = 0.0, alpha = 0.0, alpha0 = 0.0, nmi = 0.0, perplexity = 0.0;
  std::string centroids_crc32;
};

/// Every tokenizer of a kmim_tcas report; throws FileError naming the file when it is not one.
std::vector<TcasEntry> read_tcas_report(const std::filesystem::path& file);

/// One kmim_linprobe report.
struct LinprobeRun {
  std::string name;
  std::filesystem::path file;
  std::string mode;                  ///< encoder | features
  std::string pool;
  std::vector<double> epoch, top1, top5;
  double best_top1 = 0.0, last_top1 = 0.0, best_top5 = 0.0, last_top5 = 0.0;
  int best_epoch = 0;
  bool has_knn = false;
  double knn_top1 = 0.0;
  // The encoder's pretraining tokenizer (encoder mode; empty/0 when unknown).
  std::string tokenizer_kind, tokenizer, centroids_crc32, checkpoint;
  std::int64_t tokens = 0;           ///< K of the pretraining targets
};

/// Reads a kmim_linprobe report; throws FileError naming the file when it is not one.
LinprobeRun read_linprobe_report(const std::string& name, const std::filesystem::path& file);

/// "NAME=PATH" → (NAME, PATH); a bare PATH gets its file stem (or folder name) as the name.
/// Throws OptionError naming `option` for an empty name or path.
std::pair<std::string, std::string> parse_named_input(const std::string& option,
                                                      const std::string& text);

struct ResultsReportInputs {
  std::vector<PretrainCurves> pretrain;
  std::vector<TcasEntry> tcas;
  std::vector<LinprobeRun> linprobe;
};

struct ResultsReportOptions {
  std::string gnuplot = "gnuplot";   ///< the gnuplot program
  std::string terminal = "auto";     ///< auto (pngcairo, else png), pngcairo or png
  std::string title = "kmim";        ///< prefix of the plot titles and the summary heading
  int width = 960, height = 600;     ///< PNG size in pixels
};

/// The Markdown summary (no I/O).
std::string results_summary_markdown(const ResultsReportInputs& inputs, const std::string& title);

/// Writes summary.md, data/*.dat and plots.gp into out_dir and runs gnuplot on the script.
/// Returns the PNG files written. Throws FileError/Error when gnuplot is missing or fails (its
/// messages are in <out>/gnuplot.log); summary.md is written before the plots are tried.
std::vector<std::filesystem::path> write_results_report(const ResultsReportInputs& inputs,
                                                        const std::filesystem::path& out_dir,
                                                        const ResultsReportOptions& options);

}  // namespace kmim::eval
