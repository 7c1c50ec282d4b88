// kmim_report: plots and a summary table of a study's results (docs/eval.md, "kmim_report").
//
//   kmim_report --pretrain-run pixel_k50=runs/k50 --pretrain-run mae=runs/mae
//               --tcas tcas.h5 --linprobe pixel_k50=lp_k50.h5 --linprobe mae=lp_mae.h5 --out report/
//
// Reads pretraining metrics.jsonl files, kmim_tcas reports and kmim_linprobe reports and writes
// PNG plots (gnuplot: loss and masked-token accuracy curves, TCAS and linear-probe top-1 against
// K, probe accuracy per epoch), their data and gnuplot script, and summary.md (tokenizer, K,
// TCAS, linear-probe top-1, as the paper's table) into --out.
#include <filesystem>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "kmim/core/error.hpp"
#include "kmim/core/options.hpp"
#include "kmim/dist/program.hpp"
#include "kmim/eval/results_report.hpp"

using namespace kmim;

namespace {

struct ReportParams {
  std::vector<std::string> pretrain_runs;  // NAME=DIR (a kmim_pretrain --out-dir) or NAME=metrics.jsonl
  std::vector<std::string> tcas;           // kmim_tcas reports
  std::vector<std::string> linprobe;       // NAME=FILE kmim_linprobe reports
  std::string out;                         // output folder
  eval::ResultsReportOptions plot;         // gnuplot, terminal, title, size
};

int run(dist::Communicator& comm, int argc, char** argv) {
  ReportParams p;
  OptionSet opts("kmim_report",
                 "Plots (PNG, with gnuplot) and a Markdown summary of kmim results: pretraining\n"
                 "loss and masked-token accuracy, TCAS and linear-probe top-1 against K, probe\n"
                 "accuracy per epoch; summary.md lists tokenizer, K, TCAS and linear-probe top-1.");
  opts.add("pretrain-run", p.pretrain_runs, "NAME=DIR: a kmim_pretrain --out-dir (its metrics.jsonl) or the file itself (repeatable)")
      .add("tcas", p.tcas, "kmim_tcas report (repeatable)")
      .add("linprobe", p.linprobe, "NAME=FILE: a kmim_linprobe report (repeatable)")
      .add_required("out", p.out, "output folder (PNG plots, summary.md, plots.gp, data/)")
      .add("gnuplot", p.plot.gnuplot, "the gnuplot program")
      .add("terminal", p.plot.terminal, "auto (pngcairo when available, else png), pngcairo or png")
      .add("title", p.plot.title, "title prefix of the plots and the summary")
      .add("width", p.plot.width, "PNG width in pixels")
      .add("height", p.plot.height, "PNG height in pixels");
  if (!opts.parse(argc, argv)) return 0;
  opts.require("width", p.plot.width >= 200, "must be at least 200");
  opts.require("height", p.plot.height >= 150, "must be at least 150");
  if (p.pretrain_runs.empty() && p.tcas.empty() && p.linprobe.empty())
    throw UsageError("kmim_report: nothing to report; give --pretrain-run, --tcas or --linprobe");
  if (!comm.is_root()) return 0;  // one process writes the report
  eval::ResultsReportInputs in;
  for (const auto& text : p.pretrain_runs) {
    const auto [name, path] = eval::parse_named_input("pretrain-run", text);
    in.pretrain.push_back(eval::read_pretrain_metrics(name, path));
  }
  for (const auto& file : p.tcas)
    for (auto& entry : eval::read_tcas_report(file)) in.tcas.push_back(std::move(entry));
  for (const auto& text : p.linprobe) {
    const auto [name, path] = eval::parse_named_input("linprobe", text);
    in.linprobe.push_back(eval::read_linprobe_report(name, path));
  }
  const auto plots = eval::write_results_report(in, p.out, p.plot);
  fmt::print("kmim_report: wrote {} and {} plot(s) in '{}'\n", "summary.md", plots.size(), p.out);
  for (const auto& plot : plots) fmt::print("  {}\n", plot.string());
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return dist::run_program("kmim_report", argc, argv, run); }
