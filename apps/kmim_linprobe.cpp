// kmim_linprobe: linear probe accuracy of frozen features (SPEC §4).
//
//   kmim_linprobe --mode features --train-features train.h5 --val-features val.h5 --out lp.h5
//
// --mode features trains BatchNorm(affine=False) + Linear with LARS on pre-extracted features
// (kmim/eval/linear_probe.hpp; file format in docs/eval.md), data-parallel over MPI ranks,
// checkpointing every epoch (--resume continues). --mode encoder (through the frozen encoder
// with augmentation) is reserved for later.
#include <omp.h>

#include <filesystem>
#include <string>

#include <fmt/format.h>

#include "kmim/core/error.hpp"
#include "kmim/core/log.hpp"
#include "kmim/core/options.hpp"
#include "kmim/dist/program.hpp"
#include "kmim/eval/feature_file.hpp"
#include "kmim/eval/knn.hpp"
#include "kmim/eval/linear_probe.hpp"
#include "kmim/io/atomic_output.hpp"

namespace fs = std::filesystem;
using namespace kmim;

namespace {

struct LinprobeParams {
  std::string mode = "features";   // features | encoder (reserved)
  std::string train_features;      // HDF5: /features float32 [N, D], /labels int32 [N]
  std::string val_features;
  std::string out;                 // report (HDF5)
  std::string checkpoint;          // default: <out>.checkpoint.h5
  bool resume = false;
  int stop_after = 0;              // stop after this many epochs in this run (0: run to the end)
  eval::LinearProbeConfig probe;   // epochs 90, warmup 10, batch 1024, base_lr 0.1, LARS ...
  std::size_t knn_k = 0;           // > 0: also report kNN accuracy (DINO: 20)
  double knn_temperature = 0.07;
  int threads = 0;                 // 0: OpenMP / OpenBLAS defaults
};

int run(dist::Communicator& comm, int argc, char** argv) {
  LinprobeParams p;
  OptionSet opts("kmim_linprobe",
                 "Linear probe (BatchNorm without affine + linear head, LARS, warmup + cosine)\n"
                 "on frozen features, MAE protocol (SPEC section 4). Writes per-epoch top-1/top-5\n"
                 "and per-class accuracy to an HDF5 report and prints a one-line summary.");
  opts.add("mode", p.mode, "features (pre-extracted feature files); encoder: not available yet")
      .add("train-features", p.train_features, "training feature file (/features [N,D] float32, /labels [N] int32); required")
      .add("val-features", p.val_features, "validation feature file (same layout); required")
      .add("out", p.out, "report file (HDF5), written when training completes; required")
      .add("checkpoint", p.checkpoint, "checkpoint file, rewritten after every epoch (default <out>.checkpoint.h5)")
      .add_flag("resume", p.resume, "continue from the checkpoint if it exists")
      .add("stop-after", p.stop_after, "stop after this many epochs in this run, keeping the checkpoint (0: run to the end)")
      .add("epochs", p.probe.epochs, "training epochs")
      .add("warmup-epochs", p.probe.warmup_epochs, "linear lr warmup epochs")
      .add("batch-size", p.probe.batch_size, "global batch size (all ranks together)")
      .add("base-lr", p.probe.base_lr, "base learning rate; lr = base-lr * batch-size / 256")
      .add("min-lr", p.probe.min_lr, "lr at the end of the cosine")
      .add("weight-decay", p.probe.weight_decay, "LARS weight decay (weight matrix only)")
      .add("momentum", p.probe.momentum, "LARS momentum")
      .add("trust-coefficient", p.probe.trust_coefficient, "LARS trust coefficient")
      .add("bn-eps", p.probe.bn_eps, "BatchNorm epsilon")
      .add("bn-momentum", p.probe.bn_momentum, "BatchNorm running-statistics momentum")
      .add("init-std", p.probe.init_std, "std of the truncated-normal weight initialisation")
      .add("seed", p.probe.seed, "seed of the initialisation and the per-epoch shuffles")
      .add("knn-k", p.knn_k, "also report weighted kNN accuracy with this many neighbours (0: off; DINO uses 20)")
      .add("knn-temperature", p.knn_temperature, "kNN vote temperature")
      .add("threads", p.threads, "threads per rank (0: default)");
  if (!opts.parse(argc, argv)) return 0;
  if (p.mode == "encoder")
    throw OptionError("mode", p.mode,
                      "not available yet: the probe through the frozen encoder comes with the "
                      "encoder-only forward; extract features and use --mode features");
  opts.require("mode", p.mode == "features", "expected features (or encoder, reserved)");
  opts.require("train-features", !p.train_features.empty(), "is required");
  opts.require("val-features", !p.val_features.empty(), "is required");
  opts.require("out", !p.out.empty(), "is required");
  opts.require("stop-after", p.stop_after >= 0, "must be 0 (run to the end) or positive");
  opts.require("threads", p.threads >= 0, "must be 0 (default) or positive");
  opts.require("knn-temperature", p.knn_temperature > 0.0, "must be positive");
  p.probe.validate();
  if (p.threads > 0) omp_set_num_threads(p.threads);
  const fs::path out = p.out;
  const fs::path checkpoint = p.checkpoint.empty() ? fs::path(p.out + ".checkpoint.h5")
                                                   : fs::path(p.checkpoint);
  io::ensure_writable_directory(out.parent_path().empty() ? fs::path(".") : out.parent_path());

  const eval::FeatureSet train = eval::read_feature_file(p.train_features);
  const eval::FeatureSet val = eval::read_feature_file(p.val_features);
  const int classes = eval::feature_num_classes(train, val);
  eval::check_probe_inputs(train, val, p.probe, comm);
  log().info("linprobe: {} training and {} validation features of dimension {}, {} classes; "
             "batch {} lr {:.4g} for {} epochs ({} warmup), {} rank(s)",
             train.n, val.n, train.dim, classes, p.probe.batch_size, p.probe.peak_lr(),
             p.probe.epochs, p.probe.warmup_epochs, comm.size());

  const std::string key = p.probe.training_key() +
                          fmt::format("train_fingerprint = {}\nval_fingerprint = {}\n"
                                      "classes = {}\n",
                                      train.fingerprint, val.fingerprint, classes);
  eval::LinearProbeState state;
  const bool have_checkpoint = fs::exists(checkpoint);
  if (have_checkpoint && !p.resume)
    throw FileError(checkpoint, "already exists (an earlier run); pass --resume to continue it "
                                "or remove the file to start over");
  if (have_checkpoint) {
    state = eval::load_probe_checkpoint(checkpoint, key);
    log().info("linprobe: resuming from '{}' after epoch {}", checkpoint.string(), state.epochs_done);
  } else {
    state = eval::init_linear_probe(train.dim, static_cast<std::size_t>(classes), p.probe);
  }

  eval::ProbeReportInfo info;
  info.program = "kmim_linprobe";
  info.config_ini = opts.effective_ini();
  info.train = &train;
  info.val = &val;
  info.config = p.probe;
  if (p.knn_k > 0) {
    eval::KnnParams kp;
    kp.k = p.knn_k;
    kp.temperature = p.knn_temperature;
    const auto knn = eval::knn_classify(train.features.data(), train.labels.data(), train.n,
                                        val.features.data(), val.labels.data(), val.n, train.dim,
                                        static_cast<std::size_t>(classes), kp, &comm);
    info.has_knn = true;
    info.knn_k = p.knn_k;
    info.knn_temperature = p.knn_temperature;
    info.knn_top1 = knn.top1;
    info.knn_top5 = knn.top5;
    log().info("linprobe: kNN (k {}, T {}) top-1 {:.2f} top-5 {:.2f}", p.knn_k, p.knn_temperature,
               knn.top1, knn.top5);
  }

  const bool complete = eval::train_linear_probe(
      state, train, val, p.probe, comm,
      [&](const eval::LinearProbeState& s) { eval::save_probe_checkpoint(checkpoint, s, key, comm); },
      p.stop_after);
  if (!complete) {
    log().info("linprobe: stopped after epoch {}/{} as asked (--stop-after {}); checkpoint '{}'; "
               "rerun with --resume to continue",
               state.epochs_done, p.probe.epochs, p.stop_after, checkpoint.string());
    return 0;
  }
  eval::write_probe_report(out, state, info, comm);
  if (comm.is_root())
    fmt::print("kmim_linprobe: {} ({} epochs, report {})\n",
               eval::summarize_probe(state.history).line(), state.epochs_done, out.string());
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return dist::run_program("kmim_linprobe", argc, argv, run); }
