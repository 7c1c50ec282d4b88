// kmim_linprobe: linear probe accuracy of a frozen encoder (SPEC §4; docs/eval.md).
//
//   kmim_linprobe --checkpoint pretrain/checkpoint-00100000.h5 --train shards/train.h5
//                 --val shards/val.h5 --out lp.h5                      (--mode encoder)
//   kmim_linprobe --train-features train.h5 --val-features val.h5 --out lp.h5   (--mode features)
//
// Both modes train BatchNorm(affine=False) + Linear with LARS, warmup + cosine, data-parallel
// over MPI ranks (kmim/eval/linear_probe.hpp). --mode encoder runs the frozen encoder of a kmim
// checkpoint on augmented training crops every step (kmim/eval/encoder_probe.hpp: MAE's
// protocol); --mode features reads pre-extracted feature files (kmim_extract). The probe's own
// state is checkpointed (--probe-checkpoint) after every epoch and, on SIGUSR1/SIGTERM, at the
// next step boundary (exit 75; rerun with --resume to continue bit-identically).
#include <omp.h>

#include <filesystem>
#include <optional>
#include <string>

#include <fmt/format.h>

#include "kmim/core/error.hpp"
#include "kmim/core/log.hpp"
#include "kmim/core/options.hpp"
#include "kmim/core/stop_request.hpp"
#include "kmim/dist/program.hpp"
#include "kmim/eval/encoder_probe.hpp"
#include "kmim/eval/feature_file.hpp"
#include "kmim/eval/frozen_encoder.hpp"
#include "kmim/eval/knn.hpp"
#include "kmim/eval/linear_probe.hpp"
#include "kmim/io/atomic_output.hpp"
#include "kmim/io/shard_dataset.hpp"

namespace fs = std::filesystem;
using namespace kmim;

namespace {

struct LinprobeParams {
  std::string mode = "auto";       // encoder | features | auto (from the inputs given)
  std::string checkpoint;          // encoder mode: the PRETRAINED encoder (kmim checkpoint)
  std::string train;               // encoder mode: training split manifest
  std::string val;                 // encoder mode: validation split manifest
  std::string train_features;      // features mode: /features float32 [N, D], /labels int32 [N]
  std::string val_features;
  std::string out;                 // report (HDF5)
  std::string probe_checkpoint;    // the probe's state; default <out>.probe.h5
  bool resume = false;
  int stop_after = 0;              // stop after this many epochs in this run (0: run to the end)
  eval::LinearProbeConfig probe;   // epochs 90, warmup 10, batch 1024, base_lr 0.1, LARS ...
  std::string pool = "cls";        // encoder mode: cls | mean
  double crop_scale_min = 0.08;    // encoder mode: RandomResizedCrop scale (MAE linear probe)
  double crop_scale_max = 1.0;
  int encoder_batch = 64;          // encoder mode: images per forward pass
  int prefetch = 2;                // encoder mode: training batches read ahead
  std::size_t knn_k = 0;           // > 0: also report kNN accuracy (DINO: 20)
  double knn_temperature = 0.07;
  int threads = 0;                 // 0: OpenMP / OpenBLAS defaults
};

/// The mode from --mode and the inputs given; throws OptionError when they do not fit together.
std::string resolve_mode(const LinprobeParams& p) {
  const bool encoder_inputs = !p.checkpoint.empty() || !p.train.empty() || !p.val.empty();
  const bool feature_inputs = !p.train_features.empty() || !p.val_features.empty();
  std::string mode = p.mode;
  if (mode == "auto") {
    if (encoder_inputs && feature_inputs)
      throw OptionError("mode", mode,
                        "is ambiguous: both encoder inputs (--checkpoint/--train/--val) and "
                        "feature files (--train-features/--val-features) are given; pick one or "
                        "pass --mode");
    if (!encoder_inputs && !feature_inputs)
      throw UsageError("kmim_linprobe: give --checkpoint with --train and --val (probe through "
                       "the frozen encoder) or --train-features and --val-features");
    mode = encoder_inputs ? "encoder" : "features";
  }
  require_option(mode == "encoder" || mode == "features", "mode", mode,
                 "must be encoder, features or auto");
  if (mode == "encoder") {
    require_option(!p.checkpoint.empty(), "checkpoint", p.checkpoint,
                   "is required with --mode encoder (the pretrained encoder's kmim checkpoint)");
    require_option(!p.train.empty(), "train", p.train,
                   "is required with --mode encoder (the training split manifest)");
    require_option(!p.val.empty(), "val", p.val,
                   "is required with --mode encoder (the validation split manifest)");
    require_option(!feature_inputs, "train-features",
                   p.train_features.empty() ? p.val_features : p.train_features,
                   "belongs to --mode features");
  } else {
    require_option(!p.train_features.empty(), "train-features", p.train_features,
                   "is required with --mode features");
    require_option(!p.val_features.empty(), "val-features", p.val_features,
                   "is required with --mode features");
    require_option(!encoder_inputs, p.checkpoint.empty() ? (p.train.empty() ? "val" : "train") : "checkpoint",
                   p.checkpoint.empty() ? (p.train.empty() ? p.val : p.train) : p.checkpoint,
                   "belongs to --mode encoder");
  }
  return mode;
}

int run(dist::Communicator& comm, int argc, char** argv) {
  LinprobeParams p;
  OptionSet opts("kmim_linprobe",
                 "Linear probe (BatchNorm without affine + linear head, LARS, warmup + cosine)\n"
                 "of a frozen encoder, MAE protocol (SPEC section 4): through the encoder of a\n"
                 "kmim checkpoint with RandomResizedCrop + flip (--mode encoder), or on\n"
                 "pre-extracted features (--mode features). Writes per-epoch top-1/top-5 and\n"
                 "per-class accuracy to an HDF5 report and prints a one-line summary. Exit 75\n"
                 "after SIGUSR1/SIGTERM with the probe checkpointed (rerun with --resume).");
  opts.add("mode", p.mode, "encoder, features, or auto: encoder when --checkpoint is given, features when feature files are")
      .add("checkpoint", p.checkpoint, "encoder mode: the PRETRAINED encoder (kmim checkpoint from kmim_pretrain or tools/convert_timm_vit.py)")
      .add("train", p.train, "encoder mode: training split manifest (<shards>/train.h5)")
      .add("val", p.val, "encoder mode: validation split manifest (<shards>/val.h5)")
      .add("train-features", p.train_features, "features mode: training feature file (/features [N,D] float32, /labels [N] int32)")
      .add("val-features", p.val_features, "features mode: validation feature file (same layout)")
      .add("out", p.out, "report file (HDF5), written when training completes; required")
      .add("probe-checkpoint", p.probe_checkpoint, "the probe's checkpoint, rewritten after every epoch (default <out>.probe.h5)")
      .add_flag("resume", p.resume, "continue from the probe checkpoint if it exists")
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
      .add("seed", p.probe.seed, "seed of the initialisation, the per-epoch shuffles and the crops")
      .add("pool", p.pool, "encoder mode: cls (CLS token, MAE) or mean (mean of the patch tokens)")
      .add("crop-scale-min", p.crop_scale_min, "encoder mode: RandomResizedCrop smallest area fraction")
      .add("crop-scale-max", p.crop_scale_max, "encoder mode: RandomResizedCrop largest area fraction")
      .add("encoder-batch", p.encoder_batch, "encoder mode: images per encoder forward pass")
      .add("prefetch", p.prefetch, "encoder mode: training batches read ahead")
      .add("knn-k", p.knn_k, "also report weighted kNN accuracy with this many neighbours (0: off; DINO uses 20)")
      .add("knn-temperature", p.knn_temperature, "kNN vote temperature")
      .add("threads", p.threads, "threads per rank (0: default)");
  if (!opts.parse(argc, argv)) return 0;
  const std::string mode = resolve_mode(p);
  opts.require("out", !p.out.empty(), "is required");
  opts.require("stop-after", p.stop_after >= 0, "must be 0 (run to the end) or positive");
  opts.require("threads", p.threads >= 0, "must be 0 (default) or positive");
  opts.require("knn-temperature", p.knn_temperature > 0.0, "must be positive");
  // Defaults made for 90 epochs on ImageNet shrink for short runs and small sets (demo, tests);
  // values given explicitly are checked as they are.
  if (!opts.given("warmup-epochs") && p.probe.warmup_epochs > p.probe.epochs) {
    p.probe.warmup_epochs = p.probe.epochs / 9;  // MAE's 10 of 90
    log().info("linprobe: --epochs {} is shorter than the default warmup: --warmup-epochs {}",
               p.probe.epochs, p.probe.warmup_epochs);
  }
  const auto default_batch_for = [&](std::size_t samples) {
    if (!opts.given("batch-size") && p.probe.batch_size > samples && samples >= 2) {
      p.probe.batch_size = samples;
      log().info("linprobe: {} training samples, fewer than the default batch: --batch-size {}",
                 samples, samples);
    }
  };
  p.probe.validate();
  eval::EncoderProbeSettings settings;
  settings.pool = eval::feature_pool_from_name(p.pool);
  opts.require("pool", settings.pool != eval::FeaturePool::patches, "must be cls or mean");
  settings.crop.scale_min = p.crop_scale_min;
  settings.crop.scale_max = p.crop_scale_max;
  settings.encoder_batch = p.encoder_batch;
  settings.prefetch = p.prefetch;
  settings.validate();
  if (p.threads > 0) omp_set_num_threads(p.threads);
  const fs::path out = p.out;
  const fs::path probe_checkpoint = p.probe_checkpoint.empty() ? fs::path(p.out + ".probe.h5")
                                                               : fs::path(p.probe_checkpoint);
  io::ensure_writable_directory(out.parent_path().empty() ? fs::path(".") : out.parent_path());
  const bool have_checkpoint = fs::exists(probe_checkpoint);
  if (have_checkpoint && !p.resume)
    throw FileError(probe_checkpoint, "already exists (an earlier run); pass --resume to continue "
                                      "it or remove the file to start over");
  const StopRequest stop;
  const auto stop_requested = [&stop] { return stop.requested(); };

  // Inputs: feature files, or the encoder + manifests (val features encoded once).
  std::optional<eval::FrozenEncoder> encoder;
  std::optional<eval::EncoderRunner> runner;
  std::optional<io::ShardDataset> train_data, val_data;
  eval::FeatureSet train, val;
  int classes = 0;
  std::string key;
  eval::ProbeReportInfo info;
  info.program = "kmim_linprobe";
  info.mode = mode;
  if (mode == "features") {
    train = eval::read_feature_file(p.train_features);
    val = eval::read_feature_file(p.val_features);
    classes = eval::feature_num_classes(train, val);
    default_batch_for(train.n);
    eval::check_probe_inputs(train, val, p.probe, comm);
    key = p.probe.training_key() + fmt::format("train_fingerprint = {}\nval_fingerprint = {}\nclasses = {}\n",
                       train.fingerprint, val.fingerprint, classes);
    info.train = &train;
    info.val = &val;
    log().info("linprobe: {} training and {} validation features of dimension {}, {} classes; "
               "batch {} lr {:.4g} for {} epochs ({} warmup), {} rank(s)",
               train.n, val.n, train.dim, classes, p.probe.batch_size, p.probe.peak_lr(),
               p.probe.epochs, p.probe.warmup_epochs, comm.size());
  } else {
    encoder.emplace(eval::load_frozen_encoder(p.checkpoint));
    train_data.emplace(p.train);
    val_data.emplace(p.val);
    eval::check_encoder_fits_images(*encoder, val_data->image_size(), p.val);
    require_file(val_data->class_ids() == train_data->class_ids(), p.val,
                 fmt::format("has other classes than the training split '{}' ({} vs {} classes, "
                             "or another order)",
                             p.train, val_data->num_classes(), train_data->num_classes()));
    classes = train_data->num_classes();
    default_batch_for(train_data->size());
    require_option(p.probe.batch_size <= train_data->size(), "batch-size",
                   std::to_string(p.probe.batch_size),
                   fmt::format("is larger than the {} training images of '{}'", train_data->size(), p.train));
    require_option(p.probe.batch_size >= static_cast<std::size_t>(comm.size()), "batch-size",
                   std::to_string(p.probe.batch_size),
                   fmt::format("is smaller than the number of ranks ({})", comm.size()));
    if (encoder->config().img_size > train_data->image_size())
      log().warn("linprobe: the training images ({}x{}) are smaller than the model's img_size {}: "
                 "the random crops are upscaled",
                 train_data->image_size(), train_data->image_size(), encoder->config().img_size);
    key = p.probe.training_key() + settings.training_key() +
           fmt::format("encoder_fingerprint = {}\ntrain_fingerprint = {}\nval_fingerprint = {}\n"
                       "classes = {}\n",
                       encoder->fingerprint, train_data->fingerprint(), val_data->fingerprint(),
                       classes);
    log().info("linprobe: encoder {}; {} training and {} validation images, {} classes, pool {}; "
               "batch {} lr {:.4g} for {} epochs ({} warmup), {} rank(s)",
               encoder->description(), train_data->size(), val_data->size(), classes, p.pool,
               p.probe.batch_size, p.probe.peak_lr(), p.probe.epochs, p.probe.warmup_epochs,
               comm.size());
    runner.emplace(*encoder, p.encoder_batch);
    val = eval::encode_split(*runner, *val_data, settings.pool, comm, "linprobe val features");
    const model::ModelConfig& mc = encoder->config();
    info.text_attributes = {
        {"checkpoint", p.checkpoint},
        {"checkpoint_fingerprint", encoder->fingerprint},
        {"model", mc.name},
        {"pool", p.pool},
        {"train_manifest", p.train},
        {"train_fingerprint", train_data->fingerprint()},
        {"val_manifest", p.val},
        {"val_fingerprint", val_data->fingerprint()},
        {"encoder_tokenizer_kind", encoder->tokenizer_kind},
        {"encoder_tokenizer", encoder->tokenizer_description},
        {"encoder_centroids_crc32", encoder->centroids_crc32},
        {"encoder_converted_from", encoder->converted_from},
    };
    info.integer_attributes = {
        {"train_samples", static_cast<std::int64_t>(train_data->size())},
        {"val_samples", static_cast<std::int64_t>(val_data->size())},
        {"img_size", mc.img_size},
        {"patch_size", mc.patch_size},
        // K of the pretraining targets (0: MAE pixel loss, or a converted model's decoder stub)
        {"encoder_tokens", mc.loss == model::LossKind::token_cross_entropy &&
                                   encoder->converted_from.empty()
                               ? mc.out_dim
                               : 0},
    };
    info.real_attributes = {{"crop_scale_min", p.crop_scale_min}, {"crop_scale_max", p.crop_scale_max}};
  }

  info.config = p.probe;  // with the defaults adjusted to the inputs
  info.config_ini = opts.effective_ini();
  eval::LinearProbeState state;
  const std::size_t dim = mode == "features" ? train.dim : val.dim;
  if (have_checkpoint) {
    state = eval::load_probe_checkpoint(probe_checkpoint, key);
    log().info("linprobe: resuming from '{}' after epoch {}{}", probe_checkpoint.string(),
               state.epochs_done,
               state.steps_in_epoch > 0 ? fmt::format(" and {} step(s) of epoch {}",
                                                      state.steps_in_epoch, state.epochs_done + 1)
                                        : std::string());
  } else {
    state = eval::init_linear_probe(dim, static_cast<std::size_t>(classes), p.probe);
  }

  if (p.knn_k > 0) {
    eval::KnnParams kp;
    kp.k = p.knn_k;
    kp.temperature = p.knn_temperature;
    if (mode == "encoder")  // kNN on the un-augmented (centre-crop) training features
      train = eval::encode_split(*runner, *train_data, settings.pool, comm, "linprobe train features");
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
    if (mode == "encoder") train = eval::FeatureSet{};
  }

  const auto save = [&](const eval::LinearProbeState& s) {
    eval::save_probe_checkpoint(probe_checkpoint, s, key, comm);
  };
  eval::ProbeRunEnd end = eval::ProbeRunEnd::complete;
  if (mode == "features") {
    // Polled by every rank after every epoch: the ranks agree on it.
    bool stopped = false;
    const bool complete = eval::train_linear_probe(
        state, train, val, p.probe, comm, save, p.stop_after,
        [&] { return stopped = comm.any(stop.requested()); });
    if (!complete)
      end = stopped ? eval::ProbeRunEnd::stopped_on_request : eval::ProbeRunEnd::stopped_by_epochs;
  } else {
    end = eval::train_linear_probe_encoder(state, *runner, *train_data, val, p.probe, settings,
                                           comm, save, p.stop_after, stop_requested);
  }
  if (end == eval::ProbeRunEnd::stopped_on_request) {
    log().info("linprobe: stopped on request (signal {}) after epoch {}{}; checkpoint '{}'; exit "
               "code {} (rerun with --resume to continue)",
               stop.signal_number(), state.epochs_done,
               state.steps_in_epoch > 0 ? fmt::format(" + {} step(s)", state.steps_in_epoch)
                                        : std::string(),
               probe_checkpoint.string(), kExitCheckpointed);
    return kExitCheckpointed;
  }
  if (end == eval::ProbeRunEnd::stopped_by_epochs) {
    log().info("linprobe: stopped after epoch {}/{} as asked (--stop-after {}); checkpoint '{}'; "
               "rerun with --resume to continue",
               state.epochs_done, p.probe.epochs, p.stop_after, probe_checkpoint.string());
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
