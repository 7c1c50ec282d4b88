#include "kmim/eval/results_report.hpp"

#include <spawn.h>
#include <sys/wait.h>
#include <fcntl.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "kmim/core/error.hpp"
#include "kmim/core/log.hpp"
#include "kmim/io/atomic_output.hpp"
#include "kmim/io/hdf5.hpp"

extern char** environ;

namespace kmim::eval {

namespace fs = std::filesystem;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double json_number(const nlohmann::json& record, const char* key) {
  const auto it = record.find(key);
  return it != record.end() && it->is_number() ? it->get<double>() : kNaN;
}

std::string text_attribute(const io::H5Object& o, const std::string& name) {
  return o.has_attribute(name) ? o.string_attribute(name) : std::string();
}

template <class T>
T number_attribute(const io::H5Object& o, const std::string& name, T fallback) {
  return o.has_attribute(name) ? o.attribute<T>(name) : fallback;
}

std::string fixed(double v, int digits) {
  return std::isfinite(v) ? fmt::format("{:.{}f}", v, digits) : std::string("—");
}

/// A Markdown table cell: pipes escaped.
std::string cell(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '|') out += "\\|";
    else if (c == '\n') out += ' ';
    else out += c;
  }
  return out.empty() ? "—" : out;
}

/// A gnuplot single-quoted string.
std::string quoted(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

/// Label of a tokenizer kind in tables and legends.
std::string kind_label(const std::string& kind) {
  if (kind == "codebook" || kind == "pixel") return "K-MIM PIXEL";
  if (kind == "feature") return "K-MIM feature";
  if (kind == "label") return "label (reference)";
  if (kind == "random") return "random (reference)";
  return kind;
}

/// The probes that measured a model pretrained with this tokenizer.
std::vector<const LinprobeRun*> probes_of(const TcasEntry& t, const std::vector<LinprobeRun>& runs) {
  std::vector<const LinprobeRun*> out;
  for (const LinprobeRun& r : runs) {
    const bool by_crc = !t.centroids_crc32.empty() && r.centroids_crc32 == t.centroids_crc32;
    const bool by_kind = (t.kind == "label" || t.kind == "random") && r.tokenizer_kind == t.kind &&
                         r.tokens == t.k;
    if (by_crc || by_kind) out.push_back(&r);
  }
  return out;
}

/// Runs a program, its output appended to `log`; returns the exit status (-1: could not start).
int run_program_logged(const std::vector<std::string>& argv, const fs::path& log) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return -1;
  int status = 0;
  if (waitpid(pid, &status, 0) < 0) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

void write_text(const fs::path& file, const std::string& text) {
  std::ofstream out(file, std::ios::binary);
  out << text;
  if (!out) throw FileError(file, "cannot write");
}

}  // namespace

PretrainCurves read_pretrain_metrics(const std::string& name, const fs::path& path) {
  PretrainCurves c;
  c.name = name;
  c.file = fs::is_directory(path) ? path / "metrics.jsonl" : path;
  std::ifstream in(c.file);
  if (!in)
    throw FileError(c.file, fs::exists(c.file) ? "cannot be read"
                                               : "does not exist (a kmim_pretrain --out-dir holds "
                                                 "metrics.jsonl)");
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const nlohmann::json r = nlohmann::json::parse(line, nullptr, false);
    if (r.is_discarded() || !r.is_object() || !r.contains("type")) {
      ++c.skipped_lines;
      continue;
    }
    const std::string type = r["type"].is_string() ? r["type"].get<std::string>() : "";
    const double accuracy = json_number(r, "masked_accuracy") * 100.0;
    const double step = json_number(r, "step");
    if (std::isfinite(step)) c.steps = static_cast<std::int64_t>(step);
    if (type == "step") {
      double x = json_number(r, "epoch_progress");
      if (!std::isfinite(x)) x = json_number(r, "epoch");
      c.step_epoch.push_back(x);
      c.step_loss.push_back(json_number(r, "loss"));
      c.step_accuracy.push_back(accuracy);
      const double ips = json_number(r, "images_per_second");
      if (std::isfinite(ips)) c.images_per_second = ips;
    } else if (type == "epoch") {
      c.epoch.push_back(json_number(r, "epoch") + 1.0);
      c.epoch_loss.push_back(json_number(r, "loss"));
      c.epoch_accuracy.push_back(accuracy);
    }
  }
  if (c.step_epoch.empty() && c.epoch.empty())
    throw FileError(c.file, "holds no step or epoch record (docs/pretrain.md, metrics.jsonl)");
  if (c.skipped_lines > 0)
    log().warn("report: {}: skipped {} line(s) that are not metrics records", c.file.string(),
               c.skipped_lines);
  return c;
}

std::vector<TcasEntry> read_tcas_report(const fs::path& file) {
  const io::H5Object root = io::open_file(file, io::FileMode::read);
  if (text_attribute(root, "kind") != "kmim_tcas_report")
    throw FileError(file, "is not a kmim_tcas report (attribute kind is not 'kmim_tcas_report')");
  std::vector<TcasEntry> out;
  for (const std::string& name : root.read_strings("tokenizers")) {
    const io::H5Object g = root.group(name);
    TcasEntry e;
    e.report = file.string();
    e.name = name;
    e.kind = text_attribute(g, "kind");
    e.source = text_attribute(g, "source");
    e.k = g.attribute<std::int64_t>("tokens");
    e.tcas = g.attribute<double>("tcas");
    e.alpha = g.attribute<double>("alpha");
    e.alpha0 = g.attribute<double>("alpha0");
    e.nmi = g.attribute<double>("nmi");
    e.perplexity = g.attribute<double>("perplexity");
    e.centroids_crc32 = text_attribute(g, "centroids_crc32");
    out.push_back(std::move(e));
  }
  return out;
}

LinprobeRun read_linprobe_report(const std::string& name, const fs::path& file) {
  const io::H5Object root = io::open_file(file, io::FileMode::read);
  if (text_attribute(root, "kind") != "kmim_linprobe_report")
    throw FileError(file, "is not a kmim_linprobe report (attribute kind is not "
                          "'kmim_linprobe_report')");
  LinprobeRun r;
  r.name = name;
  r.file = file;
  r.mode = text_attribute(root, "mode");
  r.pool = text_attribute(root, "pool");
  if (root.has("epoch")) {
    for (std::int32_t e : root.read_dataset<std::int32_t>("epoch")) r.epoch.push_back(e);
    r.top1 = root.read_dataset<double>("val_top1");
    r.top5 = root.read_dataset<double>("val_top5");
  }
  r.best_top1 = root.attribute<double>("best_top1");
  r.last_top1 = root.attribute<double>("last_top1");
  r.best_top5 = root.attribute<double>("best_top5");
  r.last_top5 = root.attribute<double>("last_top5");
  r.best_epoch = root.attribute<std::int32_t>("best_top1_epoch");
  r.has_knn = root.has_attribute("knn_top1");
  r.knn_top1 = number_attribute<double>(root, "knn_top1", kNaN);
  r.tokenizer_kind = text_attribute(root, "encoder_tokenizer_kind");
  r.tokenizer = text_attribute(root, "encoder_tokenizer");
  r.centroids_crc32 = text_attribute(root, "encoder_centroids_crc32");
  r.checkpoint = text_attribute(root, "checkpoint");
  r.tokens = number_attribute<std::int64_t>(root, "encoder_tokens", 0);
  return r;
}

std::pair<std::string, std::string> parse_named_input(const std::string& option,
                                                      const std::string& text) {
  const auto eq = text.find('=');
  std::string name, path;
  if (eq == std::string::npos) {
    path = text;
    fs::path p(text);
    while (!p.empty() && p.filename().empty()) p = p.parent_path();  // "dir/" → "dir"
    name = fs::is_directory(p) ? p.filename().string() : p.stem().string();
  } else {
    name = text.substr(0, eq);
    path = text.substr(eq + 1);
  }
  require_option(!name.empty() && !path.empty(), option, text, "expected NAME=PATH (or PATH)");
  return {name, path};
}

std::string results_summary_markdown(const ResultsReportInputs& in, const std::string& title) {
  std::string md = fmt::format("# {} results\n\n", title);
  if (!in.tcas.empty() || !in.linprobe.empty()) {
    md += "## Tokenizers: TCAS and linear probe\n\n"
          "TCAS = alpha / alpha0 on the un-augmented evaluation set (SPEC section 3; lower is "
          "better: 0 = class-wise tokens, about 1 = tokens without class information), beside the "
          "top-1 of the linear probe of the model pretrained with that tokenizer (higher is "
          "better). Compare orderings with the paper (TCAS: DeiT < DINO < MAE < PIXEL), not "
          "absolute values.\n\n"
          "| tokenizer | kind | K | TCAS | NMI | perplexity | linear probe | LP top-1 best | LP "
          "top-1 last |\n|---|---|---:|---:|---:|---:|---|---:|---:|\n";
    std::vector<const TcasEntry*> rows;
    for (const TcasEntry& t : in.tcas) rows.push_back(&t);
    auto order = [](const std::string& kind) {
      return kind == "codebook" ? 0 : kind == "feature" ? 1 : kind == "label" ? 2 : 3;
    };
    std::stable_sort(rows.begin(), rows.end(), [&](const TcasEntry* a, const TcasEntry* b) {
      if (order(a->kind) != order(b->kind)) return order(a->kind) < order(b->kind);
      return a->k < b->k;
    });
    std::set<const LinprobeRun*> joined;
    for (const TcasEntry* t : rows) {
      const auto probes = probes_of(*t, in.linprobe);
      if (probes.empty()) {
        md += fmt::format("| {} | {} | {} | {} | {} | {} | — | — | — |\n", cell(t->name),
                          kind_label(t->kind), t->k, fixed(t->tcas, 4), fixed(t->nmi, 4),
                          fixed(t->perplexity, 1));
      }
      for (const LinprobeRun* r : probes) {
        joined.insert(r);
        md += fmt::format("| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n", cell(t->name),
                          kind_label(t->kind), t->k, fixed(t->tcas, 4), fixed(t->nmi, 4),
                          fixed(t->perplexity, 1), cell(r->name), fixed(r->best_top1, 2),
                          fixed(r->last_top1, 2));
      }
    }
    for (const LinprobeRun& r : in.linprobe) {
      if (joined.count(&r) > 0) continue;
      md += fmt::format("| {} | {} | {} | — | — | — | {} | {} | {} |\n",
                        cell(r.tokenizer.empty() ? "(unknown: no TCAS row)" : r.tokenizer),
                        cell(r.tokenizer_kind.empty() ? std::string() : kind_label(r.tokenizer_kind)),
                        r.tokens > 0 ? std::to_string(r.tokens) : std::string("—"), cell(r.name),
                        fixed(r.best_top1, 2), fixed(r.last_top1, 2));
    }
    md += "\n";
  }
  if (!in.pretrain.empty()) {
    md += "## Pretraining\n\n| run | epochs | steps | last epoch loss | last masked accuracy (%) "
          "| images/s | metrics |\n|---|---:|---:|---:|---:|---:|---|\n";
    for (const PretrainCurves& c : in.pretrain) {
      const double loss = !c.epoch_loss.empty() ? c.epoch_loss.back()
                          : !c.step_loss.empty() ? c.step_loss.back() : kNaN;
      const double acc = !c.epoch_accuracy.empty() ? c.epoch_accuracy.back()
                         : !c.step_accuracy.empty() ? c.step_accuracy.back() : kNaN;
      md += fmt::format("| {} | {} | {} | {} | {} | {} | {} |\n", cell(c.name), c.epoch.size(),
                        c.steps, fixed(loss, 4), fixed(acc, 2), fixed(c.images_per_second, 1),
                        cell(c.file.string()));
    }
    md += "\n";
  }
  if (!in.linprobe.empty()) {
    md += "## Linear probes\n\n| run | mode | pool | epochs | top-1 best (epoch) | top-1 last | "
          "top-5 best | kNN top-1 | K | report |\n|---|---|---|---:|---:|---:|---:|---:|---:|---|\n";
    for (const LinprobeRun& r : in.linprobe)
      md += fmt::format("| {} | {} | {} | {} | {} ({}) | {} | {} | {} | {} | {} |\n", cell(r.name),
                        cell(r.mode), cell(r.pool), r.epoch.size(), fixed(r.best_top1, 2),
                        r.best_epoch, fixed(r.last_top1, 2), fixed(r.best_top5, 2),
                        r.has_knn ? fixed(r.knn_top1, 2) : std::string("—"),
                        r.tokens > 0 ? std::to_string(r.tokens) : std::string("—"),
                        cell(r.file.string()));
    md += "\n";
  }
  return md;
}

std::vector<fs::path> write_results_report(const ResultsReportInputs& in, const fs::path& out_dir,
                                           const ResultsReportOptions& options) {
  io::ensure_writable_directory(out_dir);
  const fs::path dir = fs::absolute(out_dir);
  io::write_text_file_atomic(dir / "summary.md", results_summary_markdown(in, options.title));
  const fs::path data = dir / "data";
  io::ensure_writable_directory(data);

  // Terminal: pngcairo (antialiased) when this gnuplot has it, else the libgd png terminal.
  const fs::path log_file = dir / "gnuplot.log";
  fs::remove(log_file);
  std::string terminal = options.terminal;
  if (terminal == "auto") {
    const int rc = run_program_logged({options.gnuplot, "-e", "set terminal pngcairo"}, log_file);
    if (rc < 0)
      throw FileError(options.gnuplot, "cannot be started: is gnuplot installed (Debian: "
                                       "gnuplot-nox)? --gnuplot names the program");
    terminal = rc == 0 ? "pngcairo" : "png";
  }
  require_option(terminal == "pngcairo" || terminal == "png", "terminal", terminal,
                 "must be auto, pngcairo or png");

  std::string gp = fmt::format(
      "# Written by kmim_report: the plots of {}/*.png. Run `gnuplot plots.gp` to redraw.\n"
      "set terminal {} size {},{} noenhanced font 'sans,11'\nset grid\nset key below\n"
      "set datafile missing 'nan'\nset offsets graph 0.02, graph 0.02, graph 0.05, graph 0.05\n",
      dir.string(), terminal, options.width, options.height);
  std::vector<fs::path> plots;
  auto begin_plot = [&](const std::string& file, const std::string& title, const std::string& xlabel,
                        const std::string& ylabel) {
    plots.push_back(dir / file);
    gp += fmt::format("\nset output {}\nset title {}\nset xlabel {}\nset ylabel {}\n",
                      quoted((dir / file).string()), quoted(options.title + ": " + title),
                      quoted(xlabel), quoted(ylabel));
  };
  auto series_file = [&](const std::string& name, const std::vector<std::vector<double>>& columns) {
    const fs::path f = data / (name + ".dat");
    std::string text;
    for (std::size_t i = 0; i < columns[0].size(); ++i) {
      for (std::size_t c = 0; c < columns.size(); ++c) {
        if (c > 0) text.push_back(' ');
        text.append(std::isfinite(columns[c][i]) ? fmt::format("{:.10g}", columns[c][i]) : "nan");
      }
      text.push_back('\n');
    }
    write_text(f, text);
    return f.string();
  };

  // Pretraining loss and masked accuracy against (fractional) epoch.
  for (const bool accuracy : {false, true}) {
    std::vector<std::string> lines;
    for (std::size_t r = 0; r < in.pretrain.size(); ++r) {
      const PretrainCurves& c = in.pretrain[r];
      const bool steps = !c.step_epoch.empty();
      const auto& x = steps ? c.step_epoch : c.epoch;
      const auto& y = accuracy ? (steps ? c.step_accuracy : c.epoch_accuracy)
                               : (steps ? c.step_loss : c.epoch_loss);
      if (std::none_of(y.begin(), y.end(), [](double v) { return std::isfinite(v); })) continue;
      const std::string f =
          series_file(fmt::format("pretrain_{}_{}", accuracy ? "accuracy" : "loss", r), {x, y});
      lines.push_back(fmt::format("{} using 1:2 with lines lw 2 title {}", quoted(f), quoted(c.name)));
    }
    if (lines.empty()) continue;
    begin_plot(accuracy ? "pretrain_masked_accuracy.png" : "pretrain_loss.png",
               accuracy ? "masked-token accuracy (pretraining)" : "pretraining loss", "epoch",
               accuracy ? "masked-token accuracy (%)" : "loss");
    gp += "unset logscale x\nunset y2tics\nunset y2label\nset ytics mirror\nplot " +
          fmt::format("{}", fmt::join(lines, ", \\\n     ")) + "\n";
  }

  // TCAS and linear-probe top-1 against K, per tokenizer kind.
  {
    std::map<std::string, std::vector<std::pair<double, double>>> tcas, probe;
    for (const TcasEntry& t : in.tcas)
      if (t.kind == "codebook" || t.kind == "feature") tcas[t.kind].emplace_back(t.k, t.tcas);
    for (const LinprobeRun& r : in.linprobe)  // probes of K-MIM models (pixel/feature targets)
      if (r.tokens > 0 && (r.tokenizer_kind == "pixel" || r.tokenizer_kind == "feature"))
        probe[r.tokenizer_kind == "pixel" ? "codebook" : "feature"].emplace_back(r.tokens, r.best_top1);
    std::vector<std::string> lines;
    double kmin = 1e300, kmax = 0;
    for (auto* group : {&tcas, &probe}) {
      const bool is_probe = group == &probe;
      for (auto& [kind, points] : *group) {
        std::sort(points.begin(), points.end());
        std::vector<double> x, y;
        for (const auto& [k, v] : points) {
          x.push_back(k);
          y.push_back(v);
          kmin = std::min(kmin, k);
          kmax = std::max(kmax, k);
        }
        const std::string f = series_file(fmt::format("{}_{}", is_probe ? "linprobe_vs_k" : "tcas_vs_k", kind), {x, y});
        lines.push_back(fmt::format("{} using 1:2 axes x1y{} with linespoints lw 2 pt {} {} title {}",
                                    quoted(f), is_probe ? 2 : 1, is_probe ? 9 : 7,
                                    is_probe ? "dt 2" : "", quoted(kind_label(kind) + (is_probe ? " linear-probe top-1" : " TCAS"))));
      }
    }
    if (!lines.empty()) {
      begin_plot("tcas_vs_k.png", "TCAS (lower is better) and linear-probe top-1 against K",
                 "K (codebook size)", "TCAS");
      gp += std::string(kmax >= 10 * kmin ? "set logscale x\n" : "unset logscale x\n") +
            "set yrange [0:*]\n" +
            (probe.empty() ? "unset y2tics\nunset y2label\nset ytics mirror\n"
                           : "set ytics nomirror\nset y2tics\nset y2range [0:*]\n"
                             "set y2label 'linear-probe top-1 (%)'\n") +
            "plot " + fmt::format("{}", fmt::join(lines, ", \\\n     ")) + "\n";
    }
  }

  // Linear-probe accuracy per epoch.
  {
    std::vector<std::string> lines;
    for (std::size_t r = 0; r < in.linprobe.size(); ++r) {
      const LinprobeRun& run = in.linprobe[r];
      if (run.epoch.empty()) continue;
      const std::string f = series_file(fmt::format("linprobe_{}", r), {run.epoch, run.top1, run.top5});
      lines.push_back(fmt::format("{} using 1:2 with linespoints lw 2 lc {} title {}", quoted(f), r + 1,
                                  quoted(run.name + " top-1")));
      lines.push_back(fmt::format("{} using 1:3 with lines dt 2 lc {} title {}", quoted(f), r + 1,
                                  quoted(run.name + " top-5")));
    }
    if (!lines.empty()) {
      begin_plot("linprobe_accuracy.png", "linear-probe validation accuracy", "epoch",
                 "accuracy (%)");
      gp += "unset logscale x\nset autoscale y\nunset y2tics\nunset y2label\nset ytics mirror\nplot " +
            fmt::format("{}", fmt::join(lines, ", \\\n     ")) + "\n";
    }
  }
  gp += "\nunset output\n";
  const fs::path script = dir / "plots.gp";
  write_text(script, gp);
  if (plots.empty()) return plots;
  for (const auto& p : plots) fs::remove(p);
  const int rc = run_program_logged({options.gnuplot, script.string()}, log_file);
  if (rc < 0)
    throw FileError(options.gnuplot, "cannot be started: is gnuplot installed (Debian: "
                                     "gnuplot-nox)? --gnuplot names the program");
  if (rc != 0)
    throw FileError(script, fmt::format("gnuplot failed (exit {}); its messages are in '{}'", rc,
                                        log_file.string()));
  for (const auto& p : plots)
    if (!fs::exists(p) || fs::file_size(p) == 0)
      throw FileError(p, fmt::format("was not written by gnuplot (see '{}')", log_file.string()));
  return plots;
}

}  // namespace kmim::eval
