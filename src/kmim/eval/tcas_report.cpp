#include "kmim/eval/tcas_report.hpp"

#include <algorithm>
#include <numeric>

#include <fmt/format.h>

#include "kmim/io/atomic_output.hpp"
#include "kmim/io/hdf5.hpp"

namespace kmim::eval {

bool is_codebook_tokenizer(const TokenizerTcas& report) {
  return report.kind == "codebook" || report.kind == "feature";
}

int recommended_codebook(const std::vector<TokenizerTcas>& reports) {
  int best = -1;
  for (std::size_t i = 0; i < reports.size(); ++i) {
    if (!is_codebook_tokenizer(reports[i])) continue;
    if (best < 0 || reports[i].result.tcas < reports[static_cast<std::size_t>(best)].result.tcas)
      best = static_cast<int>(i);
  }
  return best;
}

std::string format_tcas_table(const std::vector<TokenizerTcas>& reports) {
  std::vector<std::size_t> order(reports.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return reports[a].result.tcas < reports[b].result.tcas;
  });
  const int best = recommended_codebook(reports);
  std::size_t name_width = 9;
  for (const auto& r : reports) name_width = std::max(name_width, r.name.size());
  std::string out = fmt::format("{:<{}}  {:<10} {:>6} {:>8} {:>8} {:>8} {:>7} {:>7} {:>10} {:>6}\n",
                                "tokenizer", name_width, "kind", "K", "TCAS", "alpha", "alpha0",
                                "purity", "NMI", "perplexity", "dead");
  for (std::size_t i : order) {
    const TokenizerTcas& r = reports[i];
    const TcasResult& t = r.result;
    std::string note;
    if (static_cast<int>(i) == best) note = "  <- recommended";
    else if (r.kind == "label") note = "  (reference: class-wise, ideal)";
    else if (r.kind == "random") note = "  (reference: no class information)";
    out += fmt::format("{:<{}}  {:<10} {:>6} {:>8.4f} {:>8.4f} {:>8.4f} {:>7.4f} {:>7.4f} {:>10.1f} "
                       "{:>6}{}\n",
                       r.name, name_width, r.kind, t.tokens, t.tcas, t.alpha, t.alpha0,
                       t.mean_purity, t.nmi, t.perplexity, t.dead_tokens, note);
  }
  if (best >= 0) {
    const TokenizerTcas& r = reports[static_cast<std::size_t>(best)];
    out += fmt::format("recommended codebook: {} (TCAS {:.4f}, lowest among {} codebooks)\n",
                       r.source, r.result.tcas,
                       std::count_if(reports.begin(), reports.end(),
                                     [](const TokenizerTcas& x) { return is_codebook_tokenizer(x); }));
  }
  return out;
}

void write_tcas_report(const std::filesystem::path& file, const std::vector<TokenizerTcas>& reports,
                       const TcasRunInfo& info, const dist::Communicator& comm) {
  if (comm.is_root()) {
    io::AtomicOutput out(file);
    {
      const io::H5Object root = io::create_file(out.temp_path());
      root.set_attribute("kind", "kmim_tcas_report");
      root.set_attribute("tcas_definition", kTcasDefinition);
      root.set_provenance(info.program, info.config_ini);
      root.set_attribute("manifest", info.manifest);
      root.set_attribute("manifest_fingerprint", info.manifest_fingerprint);
      root.set_attribute<std::uint64_t>("images", info.images);
      root.set_attribute<std::uint64_t>("max_per_class", info.max_per_class);
      root.set_attribute<std::uint64_t>("seed", info.seed);
      if (!info.class_ids.empty()) root.write_strings("class_ids", info.class_ids);
      const int best = recommended_codebook(reports);
      root.set_attribute("recommended",
                         best >= 0 ? reports[static_cast<std::size_t>(best)].name : std::string());
      root.set_attribute("recommended_codebook",
                         best >= 0 ? reports[static_cast<std::size_t>(best)].source : std::string());
      std::vector<std::string> names;
      for (const auto& r : reports) names.push_back(r.name);
      root.write_strings("tokenizers", names);
      for (const TokenizerTcas& r : reports) {
        const TcasResult& t = r.result;
        const io::H5Object g = root.create_group(r.name);
        g.set_attribute("kind", r.kind);
        g.set_attribute("source", r.source);
        g.set_attribute("source_fingerprint", r.source_fingerprint);
        if (!r.centroids_crc32.empty()) g.set_attribute("centroids_crc32", r.centroids_crc32);
        if (!r.encoder.empty()) {
          g.set_attribute("encoder", r.encoder);
          g.set_attribute("encoder_fingerprint", r.encoder_fingerprint);
        }
        g.set_attribute<std::int32_t>("patches_per_image", r.patches_per_image);
        g.set_attribute<std::int64_t>("tokens", static_cast<std::int64_t>(t.tokens));
        g.set_attribute<std::int64_t>("classes", static_cast<std::int64_t>(t.classes));
        g.set_attribute<std::int64_t>("patches", t.total);
        g.set_attribute<double>("alpha", t.alpha);
        g.set_attribute<double>("alpha0", t.alpha0);
        g.set_attribute<double>("tcas", t.tcas);
        g.set_attribute<double>("mean_purity", t.mean_purity);
        g.set_attribute<double>("nmi", t.nmi);
        g.set_attribute<double>("mutual_information", t.mutual_information);
        g.set_attribute<double>("token_entropy", t.token_entropy);
        g.set_attribute<double>("class_entropy", t.class_entropy);
        g.set_attribute<double>("perplexity", t.perplexity);
        g.set_attribute<std::int64_t>("dead_tokens", static_cast<std::int64_t>(t.dead_tokens));
        g.write_dataset<std::int64_t>("counts", r.counts, {t.tokens, t.classes});
        g.write_dataset<double>("purity", t.purity, {t.tokens});
        g.write_dataset<std::int64_t>("token_counts", t.token_counts, {t.tokens});
        g.write_dataset<std::int64_t>("class_counts", t.class_counts, {t.classes});
      }
    }
    out.commit();
  }
  comm.barrier();
}

}  // namespace kmim::eval
