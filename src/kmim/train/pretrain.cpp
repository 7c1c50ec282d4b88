#include "kmim/train/pretrain.hpp"

#include <fmt/format.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <stdexcept>
#include <utility>
#include <vector>

#include "kmim/core/error.hpp"
#include "kmim/core/log.hpp"
#include "kmim/core/progress.hpp"
#include "kmim/core/stop_request.hpp"
#include "kmim/io/atomic_output.hpp"
#include "kmim/kmeans/build_codebook.hpp"
#include "kmim/kmeans/codebook.hpp"
#include "kmim/model/layers.hpp"
#include "kmim/model/optimizer.hpp"
#include "kmim/train/checkpoint.hpp"
#include "kmim/train/metrics_log.hpp"
#include "kmim/train/pretrain_inputs.hpp"

namespace kmim::train {
namespace fs = std::filesystem;
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

void validate_params(const PretrainParams& p, int ranks) {
  require_option(!p.manifest.empty(), "manifest", p.manifest, "is required");
  require_option(!p.out_dir.empty(), "out-dir", p.out_dir, "is required");
  require_option(p.loss == "kmim" || p.loss == "mae", "loss", p.loss, "must be kmim or mae");
  if (p.loss == "kmim") {
    require_option(p.tokenizer == "pixel" || p.tokenizer == "feature" || p.tokenizer == "label" ||
                       p.tokenizer == "random",
                   "tokenizer", p.tokenizer, "must be pixel, feature, label or random");
    if (p.tokenizer == "pixel" || p.tokenizer == "feature")
      require_option(!p.codebook.empty(), "codebook", p.codebook,
                     fmt::format("is required by --tokenizer {}", p.tokenizer));
    if (p.tokenizer == "feature")
      require_option(!p.tokenizer_checkpoint.empty(), "tokenizer-checkpoint",
                     p.tokenizer_checkpoint, "is required by --tokenizer feature (the frozen ViT)");
    if (p.tokenizer == "random")
      require_option(p.random_k >= 2, "random-k", std::to_string(p.random_k),
                     "must be at least 2 for --tokenizer random");
  }
  require_option(p.epochs >= 1, "epochs", std::to_string(p.epochs), "must be at least 1");
  require_option(p.batch_size >= 1, "batch-size", std::to_string(p.batch_size),
                 "must be at least 1");
  require_option(p.accum_iter >= 1, "accum-iter", std::to_string(p.accum_iter),
                 "must be at least 1");
  const std::int64_t parts = static_cast<std::int64_t>(ranks) * p.accum_iter;
  require_option(p.batch_size % parts == 0, "batch-size", std::to_string(p.batch_size),
                 fmt::format("must be divisible by ranks x accum-iter = {} x {} = {} (every rank "
                             "takes an equal share of every micro-batch)",
                             ranks, p.accum_iter, parts));
  require_option(p.blr > 0 || p.lr > 0, "blr", fmt::format("{}", p.blr), "must be positive");
  require_option(p.lr >= 0, "lr", fmt::format("{}", p.lr), "must be 0 (use --blr) or positive");
  require_option(p.min_lr >= 0, "min-lr", fmt::format("{}", p.min_lr), "must not be negative");
  require_option(p.warmup_epochs >= 0 && p.warmup_epochs < p.epochs, "warmup-epochs",
                 fmt::format("{}", p.warmup_epochs),
                 fmt::format("must lie in [0, --epochs = {})", p.epochs));
  require_option(p.weight_decay >= 0, "weight-decay", fmt::format("{}", p.weight_decay),
                 "must not be negative");
  require_option(p.clip_grad >= 0, "clip-grad", fmt::format("{}", p.clip_grad),
                 "must be 0 (off) or positive");
  require_option(p.threads >= 0, "threads", std::to_string(p.threads),
                 "must be 0 (automatic) or positive");
  require_option(p.max_steps >= 0, "max-steps", std::to_string(p.max_steps),
                 "must not be negative");
  require_option(p.checkpoint_every >= 0, "checkpoint-every", std::to_string(p.checkpoint_every),
                 "must not be negative");
  require_option(p.keep_checkpoints >= 0, "keep-checkpoints", std::to_string(p.keep_checkpoints),
                 "must not be negative");
  require_option(p.log_every >= 1, "log-every", std::to_string(p.log_every), "must be at least 1");
  require_option(p.prefetch >= 1, "prefetch", std::to_string(p.prefetch), "must be at least 1");
}

/// The `key = value` lines a resumed run must share with its checkpoint: everything that changes
/// what the steps compute besides the schedule (epochs, lr, warmup, weight decay and clipping may
/// change, e.g. to extend a run; ranks and threads too, at the price of bit-identity).
std::string run_identity(const model::ModelConfig& c, const tokenize::TargetTokenizer* tokenizer,
                         const io::ShardDataset& data, const PretrainParams& p,
                         std::int64_t steps_per_epoch) {
  std::string s;
  s += fmt::format("model.name = {}\nmodel.img_size = {}\nmodel.patch_size = {}\n", c.name,
                   c.img_size, c.patch_size);
  s += fmt::format("model.channels = {}\nmodel.embed_dim = {}\nmodel.depth = {}\n", c.channels,
                   c.embed_dim, c.depth);
  s += fmt::format("model.num_heads = {}\nmodel.decoder_embed_dim = {}\nmodel.decoder_depth = {}\n",
                   c.num_heads, c.decoder_embed_dim, c.decoder_depth);
  s += fmt::format("model.decoder_num_heads = {}\nmodel.mlp_ratio = {}\nmodel.out_dim = {}\n",
                   c.decoder_num_heads, c.mlp_ratio, c.out_dim);
  s += fmt::format("model.loss = {}\nmodel.norm_pix_loss = {}\nmodel.mask_ratio = {}\n",
                   model::loss_kind_name(c.loss), c.norm_pix_loss, c.mask_ratio);
  if (tokenizer == nullptr) {
    s += "tokenizer.kind = none\n";
  } else {
    std::string line;
    const std::string id = tokenizer->identity();
    for (std::size_t pos = 0; pos < id.size();) {
      const std::size_t end = id.find('\n', pos);
      line = id.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
      if (!line.empty()) s += "tokenizer." + line + "\n";
      pos = end == std::string::npos ? id.size() : end + 1;
    }
  }
  s += fmt::format("data.fingerprint = {}\ndata.images = {}\ndata.image_size = {}\n",
                   data.fingerprint(), data.size(), data.image_size());
  s += fmt::format("seed = {}\nbatch_size = {}\naccum_iter = {}\nsteps_per_epoch = {}\n", p.seed,
                   p.batch_size, p.accum_iter, steps_per_epoch);
  const RandomResizedCropRange r;
  s += fmt::format(
      "augment = RandomResizedCrop(scale=({}, {}), ratio=({}, {}), bicubic) + flip(0.5)\n",
      r.scale_min, r.scale_max, r.ratio_min, r.ratio_max);
  return s;
}

/// Sends the training state from rank 0 to every rank.
void broadcast_state(const dist::Communicator& comm, model::Parameters& params,
                     std::vector<float>& m, std::vector<float>& v, std::int64_t& adam_step,
                     TrainingProgress& prog) {
  if (comm.size() == 1) return;
  comm.bcast(params.values());
  comm.bcast(std::span<float>(m));
  comm.bcast(std::span<float>(v));
  adam_step = comm.bcast(adam_step);
  std::vector<std::int64_t> ints = {prog.step,          prog.epoch,
                                    prog.step_in_epoch, prog.steps_per_epoch,
                                    prog.images_seen,   prog.epoch_steps};
  comm.bcast(std::span<std::int64_t>(ints));
  prog.step = ints[0];
  prog.epoch = ints[1];
  prog.step_in_epoch = ints[2];
  prog.steps_per_epoch = ints[3];
  prog.images_seen = ints[4];
  prog.epoch_steps = ints[5];
  std::vector<double> reals = {prog.epoch_loss_sum, prog.epoch_accuracy_sum, prog.epoch_seconds,
                               prog.elapsed_seconds, prog.last_lr};
  comm.bcast(std::span<double>(reals));
  prog.epoch_loss_sum = reals[0];
  prog.epoch_accuracy_sum = reals[1];
  prog.epoch_seconds = reals[2];
  prog.elapsed_seconds = reals[3];
  prog.last_lr = reals[4];
}

bool all_finite(std::span<const float> v) {
  for (const float x : v)
    if (!std::isfinite(x)) return false;
  return true;
}

std::string format_accuracy(std::optional<double> a) {
  return a ? fmt::format("{:.2f}%", 100.0 * *a) : std::string("n/a");
}

}  // namespace

model::ModelConfig pretrain_model_config(const PretrainParams& p, std::size_t num_tokens) {
  model::ModelConfig c;
  try {
    c = model::model_preset(p.model);
  } catch (const std::invalid_argument& e) {
    throw OptionError("model", p.model, e.what());
  }
  if (p.img_size > 0) c.img_size = p.img_size;
  if (p.patch_size > 0) c.patch_size = p.patch_size;
  c.mask_ratio = p.mask_ratio;
  if (p.loss == "mae") {
    c.use_pixel_mse_loss();
    c.norm_pix_loss = p.norm_pix_loss;
  } else {
    c.loss = model::LossKind::token_cross_entropy;
    c.out_dim = static_cast<int>(num_tokens);
  }
  try {
    c.validate();
  } catch (const std::invalid_argument& e) {
    const std::string what = e.what();
    if (what.find("img_size") != std::string::npos || what.find("patch_size") != std::string::npos)
      throw OptionError(p.img_size > 0 ? "img-size" : "patch-size",
                        std::to_string(p.img_size > 0 ? p.img_size : p.patch_size), what);
    if (what.find("mask_ratio") != std::string::npos)
      throw OptionError("mask-ratio", fmt::format("{}", p.mask_ratio), what);
    throw UsageError("kmim_pretrain: " + what);
  }
  return c;
}

std::unique_ptr<tokenize::TargetTokenizer> make_target_tokenizer(const PretrainParams& p,
                                                                 const model::ModelConfig& model,
                                                                 const io::ShardDataset& data,
                                                                 int max_micro_batch) {
  if (p.loss == "mae") return nullptr;
  if (p.tokenizer == "label")
    return std::make_unique<tokenize::LabelTargets>(static_cast<std::size_t>(data.num_classes()),
                                                    model.num_patches());
  if (p.tokenizer == "random")
    return std::make_unique<tokenize::RandomTargets>(static_cast<std::size_t>(p.random_k),
                                                     model.num_patches(), p.seed);
  kmeans::Codebook codebook = kmeans::Codebook::load(p.codebook);
  if (p.tokenizer == "pixel")
    return std::make_unique<tokenize::PixelCodebookTargets>(std::move(codebook), p.codebook, model);
  require_file(codebook.mode == "feature", p.codebook,
               fmt::format("is a {}-mode codebook; --tokenizer feature needs a feature codebook "
                           "(K-means over the frozen model's patch tokens)",
                           codebook.mode));
  model::Parameters frozen = load_model_parameters(p.tokenizer_checkpoint);
  // Converted DINO/DeiT/timm encoders carry a learned position table; kmim's own use sin-cos.
  std::vector<float> position_embedding =
      read_position_embedding(p.tokenizer_checkpoint, frozen.config());
  return std::make_unique<tokenize::FeatureCodebookTargets>(
      std::move(codebook), p.codebook, std::move(frozen), p.tokenizer_checkpoint, model,
      max_micro_batch, std::move(position_embedding));
}

int run_pretraining(dist::Communicator& comm, const PretrainParams& p,
                    const std::string& config_ini) {
  // From here on SIGUSR1/SIGTERM only set a flag (polled at every step boundary): a signal
  // during the setup must not kill the run without the exit code the job scripts expect.
  StopRequest stop;
  validate_params(p, comm.size());
  const int threads = p.threads > 0 ? p.threads : kmeans::default_thread_count(comm);
  omp_set_num_threads(threads);
  const fs::path out_dir = p.out_dir;
  if (comm.is_root()) io::ensure_writable_directory(out_dir);

  // ---- data, model, tokenizer
  const io::ShardDataset data(p.manifest);
  const std::int64_t global_batch = p.batch_size;
  const std::int64_t micro_global = global_batch / p.accum_iter;
  const std::int64_t micro_local = micro_global / comm.size();
  const std::int64_t steps_per_epoch = static_cast<std::int64_t>(
      io::num_batches(data.size(), static_cast<std::uint64_t>(global_batch), true));
  require_option(steps_per_epoch >= 1, "batch-size", std::to_string(global_batch),
                 fmt::format("is larger than the training split ({} images in '{}')", data.size(),
                             p.manifest));
  const model::ModelConfig geometry = pretrain_model_config(p, 2);
  std::unique_ptr<tokenize::TargetTokenizer> tokenizer =
      make_target_tokenizer(p, geometry, data, static_cast<int>(micro_local));
  const model::ModelConfig config =
      pretrain_model_config(p, tokenizer ? tokenizer->num_tokens() : 0);
  const std::string identity = run_identity(config, tokenizer.get(), data, p, steps_per_epoch);
  const double base_lr = p.lr > 0 ? p.lr : p.blr * static_cast<double>(global_batch) / 256.0;
  const std::int64_t total_steps = steps_per_epoch * p.epochs;
  const std::int64_t end_step = p.max_steps > 0 ? std::min(total_steps, p.max_steps) : total_steps;

  // ---- state: fresh or from a checkpoint (rank 0 reads, everyone receives)
  model::Parameters params(config);
  model::init_parameters(params, p.seed);
  const model::AdamWConfig adam_config{0.9, 0.95, 1e-8, p.weight_decay};
  model::AdamW adam(params.layout(), adam_config);
  std::int64_t adam_step = 0;
  TrainingProgress prog;
  prog.steps_per_epoch = steps_per_epoch;
  std::string resumed_from;
  int resuming = 0;
  // Rank 0 alone looks for and reads the checkpoint; its verdict (and any error) is shared, so
  // every rank stops with the same one-line message or continues with the same state.
  int failed = 0;
  std::string failure;
  if (comm.is_root()) {
    try {
      std::optional<fs::path> file;
      if (p.resume == "auto") {
        std::vector<std::string> skipped;
        const auto pick = newest_valid_checkpoint(out_dir, skipped);
        for (const auto& s : skipped) log().warn("pretrain: skipping a damaged checkpoint: {}", s);
        if (pick) {
          file = pick->path;
        } else {
          log().info("pretrain: --resume auto: no valid checkpoint in '{}', starting from scratch",
                     out_dir.string());
        }
      } else if (!p.resume.empty()) {
        file = fs::path(p.resume);
      } else if (!list_checkpoints(out_dir).empty()) {
        throw OptionError("out-dir", p.out_dir,
                          "already holds checkpoints of an earlier run; pass --resume auto to "
                          "continue it, or choose another --out-dir");
      }
      if (file) {
        Checkpoint ck = read_checkpoint(*file);
        const std::string diff = identity_difference(ck.run_identity, identity);
        if (!diff.empty()) {
          throw FileError(*file,
                          "was written by a run with other settings, refusing to resume "
                          "it (" +
                              diff + "); use matching options or another --out-dir");
        }
        params = std::move(ck.params);
        adam.first_moment() = std::move(ck.exp_avg);
        adam.second_moment() = std::move(ck.exp_avg_sq);
        adam_step = ck.adam_step;
        prog = ck.progress;
        resuming = 1;
        resumed_from = file->string();
      }
    } catch (const Error& e) {
      failed = 1;
      failure = e.what();
    }
  }
  failed = comm.bcast(failed);
  if (failed) throw UsageError(comm.bcast(failure));  // reported once, by rank 0
  resuming = comm.bcast(resuming);
  if (resuming) {
    broadcast_state(comm, params, adam.first_moment(), adam.second_moment(), adam_step, prog);
    adam.set_step_count(adam_step);
  }

  std::optional<MetricsLog> metrics;
  if (comm.is_root()) metrics.emplace(out_dir / "metrics.jsonl", resuming ? prog.step : -1);

  const model::FlopCount flops = model::flops_per_image(config);
  log().info("pretrain: {} images of {}x{} in '{}', {} ranks x {} threads, BLAS {}", data.size(),
             data.image_size(), data.image_size(), p.manifest, comm.size(), threads,
             model::blas_description());
  log().info(
      "pretrain: model {} (img {}, patch {}, D {}, depth {}, decoder {}x{}, out_dim {}, "
      "{:.2f} M parameters, {:.3f} GFLOP/image/step), loss {}, mask ratio {}",
      config.name, config.img_size, config.patch_size, config.embed_dim, config.depth,
      config.decoder_embed_dim, config.decoder_depth, config.out_dim,
      static_cast<double>(params.size()) / 1e6, flops.training / 1e9,
      model::loss_kind_name(config.loss), config.mask_ratio);
  log().info("pretrain: targets: {}",
             tokenizer ? tokenizer->description() : std::string("MAE pixels"));
  log().info(
      "pretrain: global batch {} = {} micro-batches x {} ranks x {} images; {} steps/epoch, "
      "{} epochs ({} steps{}); lr {:.3e} ({}), warmup {} epochs, min lr {}",
      global_batch, p.accum_iter, comm.size(), micro_local, steps_per_epoch, p.epochs, total_steps,
      end_step < total_steps ? fmt::format(", stopping at {}", end_step) : "", base_lr,
      p.lr > 0 ? std::string("--lr") : fmt::format("blr {} x {}/256", p.blr, global_batch),
      p.warmup_epochs, p.min_lr);
  if (resuming)
    log().info("pretrain: resumed from '{}' at step {} (epoch {}, batch {}/{})", resumed_from,
               prog.step, prog.epoch, prog.step_in_epoch, steps_per_epoch);

  model::Gradients grads(config);
  model::Activations<float> acts(config, static_cast<int>(micro_local));
  PretrainInputBuilder builder(config, p.seed, data.image_size(), tokenizer.get());
  PretrainInputs inputs;
  io::Batch raw;

  // Writes a checkpoint of the current state (rank 0). Returns false, writing nothing, when the
  // parameters are no longer finite: a checkpoint never holds a diverged model.
  auto save = [&](const char* why) -> bool {
    if (!all_finite(params.values())) {
      const auto last = list_checkpoints(out_dir);
      if (comm.is_root())
        log().error(
            "pretrain: parameters became non-finite at step {} (epoch {}); stopping "
            "without a checkpoint (last good checkpoint: {})",
            prog.step, prog.epoch, last.empty() ? std::string("none") : last.back().path.string());
      return false;
    }
    if (comm.is_root()) {
      // The state moves into the checkpoint for the write and back afterwards (also when the
      // write fails): no copy of parameters and moments, whatever the model size.
      Checkpoint ck(std::move(params));
      ck.exp_avg = std::move(adam.first_moment());
      ck.exp_avg_sq = std::move(adam.second_moment());
      auto restore = [&] {
        params = std::move(ck.params);
        adam.first_moment() = std::move(ck.exp_avg);
        adam.second_moment() = std::move(ck.exp_avg_sq);
      };
      ck.adam_step = adam.step_count();
      ck.adam = adam_config;
      ck.progress = prog;
      ck.run_identity = identity;
      ck.tokenizer_kind = tokenizer ? tokenizer->kind() : "none";
      ck.tokenizer_description = tokenizer ? tokenizer->description() : "MAE pixel targets";
      ck.manifest = p.manifest;
      ck.manifest_fingerprint = data.fingerprint();
      const fs::path file = checkpoint_path(out_dir, prog.step);
      const auto t0 = Clock::now();
      try {
        write_checkpoint(file, ck, "kmim_pretrain", config_ini);
      } catch (...) {
        restore();
        throw;
      }
      restore();
      for (const auto& removed : prune_checkpoints(out_dir, p.keep_checkpoints))
        log().debug("pretrain: removed old checkpoint '{}'", removed.string());
      log().info("pretrain: checkpoint '{}' ({}, step {}, {:.2f} s)", file.string(), why, prog.step,
                 seconds_since(t0));
    }
    comm.barrier();
    return true;
  };

  if (prog.step >= end_step) {
    log().info("pretrain: the checkpoint is at step {}, the run ends at step {}: nothing to do",
               prog.step, end_step);
    return 0;
  }
  if (comm.any(stop.requested())) {  // asked to stop during the setup: nothing new to save
    log().info("pretrain: stop requested before the first step; exit code {}", kExitCheckpointed);
    return kExitCheckpointed;
  }

  const auto run_start = Clock::now();
  const std::int64_t first_step = prog.step;
  auto interval_start = Clock::now();
  std::int64_t interval_steps = 0;
  while (prog.step < end_step) {
    const std::uint64_t epoch = static_cast<std::uint64_t>(prog.epoch);
    const std::vector<std::uint64_t> order = io::epoch_order(data.size(), p.seed, epoch);
    // This rank's micro-batches of the rest of the epoch, in order: global batch b, micro-batch
    // a is the contiguous slice [(b*A + a) * micro_global, ...) of the epoch order.
    std::uint64_t next_micro =
        static_cast<std::uint64_t>(prog.step_in_epoch) * static_cast<std::uint64_t>(p.accum_iter);
    const std::uint64_t micro_end =
        static_cast<std::uint64_t>(steps_per_epoch) * static_cast<std::uint64_t>(p.accum_iter);
    io::BatchPrefetcher prefetcher(
        data,
        [&, next_micro]() mutable -> std::optional<std::vector<std::uint64_t>> {
          if (next_micro >= micro_end) return std::nullopt;
          return io::rank_batch_indices(order, next_micro++,
                                        static_cast<std::uint64_t>(micro_global), comm.rank(),
                                        comm.size());
        },
        static_cast<std::size_t>(p.prefetch));

    while (prog.step_in_epoch < steps_per_epoch && prog.step < end_step) {
      const auto step_start = Clock::now();
      grads.zero();
      double loss_sum = 0.0;
      double accuracy_sum = 0.0;
      bool has_accuracy = false;
      for (int a = 0; a < p.accum_iter; ++a) {
        if (!prefetcher.next(raw)) throw Error("pretrain: the data ended before the epoch did");
        builder.build(epoch, raw.indices, raw.images, raw.labels, inputs);
        const model::LossResult r = model::vit_mae_forward(params, inputs.model_batch(), acts);
        loss_sum += r.loss;
        if (r.masked_accuracy) {
          accuracy_sum += *r.masked_accuracy;
          has_accuracy = true;
        }
        if (std::isfinite(r.loss)) model::vit_mae_backward(params, acts, grads, 1.0 / p.accum_iter);
      }
      // Every rank's loss, in rank order: the global loss is their mean (equal shares, equal
      // masked patches per image), and a non-finite one is reported with its rank.
      const std::vector<double> rank_loss = comm.allgather(loss_sum / p.accum_iter);
      const std::vector<double> rank_accuracy = comm.allgather(accuracy_sum / p.accum_iter);
      double loss = 0.0;
      double accuracy = 0.0;
      for (std::size_t r = 0; r < rank_loss.size(); ++r) {
        loss += rank_loss[r];
        accuracy += rank_accuracy[r];
      }
      loss /= static_cast<double>(comm.size());
      accuracy /= static_cast<double>(comm.size());
      if (!std::isfinite(loss)) {
        std::vector<std::string> parts;
        for (std::size_t r = 0; r < rank_loss.size(); ++r)
          if (!std::isfinite(rank_loss[r]))
            parts.push_back(fmt::format("rank {} loss {}", r, rank_loss[r]));
        const auto last = list_checkpoints(out_dir);
        if (comm.is_root())
          log().error(
              "pretrain: non-finite loss at step {} (epoch {}, batch {}): {}; stopping "
              "without a checkpoint (last good checkpoint: {}). Lower --blr/--lr or set "
              "--clip-grad.",
              prog.step + 1, prog.epoch, prog.step_in_epoch, fmt::join(parts, ", "),
              last.empty() ? std::string("none") : last.back().path.string());
        return kExitNonFinite;
      }

      // One allreduce over the contiguous gradient buffer, then the mean over ranks.
      comm.allreduce(grads.values());
      if (comm.size() > 1) {
        const float scale = 1.0f / static_cast<float>(comm.size());
        for (float& g : grads.values()) g *= scale;
      }
      const double grad_norm = p.clip_grad > 0 ? model::clip_grad_norm(grads.values(), p.clip_grad)
                                               : model::global_grad_norm(grads.values());
      if (!std::isfinite(grad_norm)) {
        const auto last = list_checkpoints(out_dir);
        if (comm.is_root())
          log().error(
              "pretrain: non-finite gradient norm ({}) at step {} (epoch {}, batch {}), "
              "loss {}; stopping without a checkpoint (last good checkpoint: {})",
              grad_norm, prog.step + 1, prog.epoch, prog.step_in_epoch, loss,
              last.empty() ? std::string("none") : last.back().path.string());
        return kExitNonFinite;
      }
      const double lr =
          model::lr_at(prog.step, steps_per_epoch, p.warmup_epochs, p.epochs, base_lr, p.min_lr);
      adam.step(params.values(), grads.values(), lr);

      const double step_seconds = seconds_since(step_start);
      ++prog.step;
      ++prog.step_in_epoch;
      prog.images_seen += global_batch;
      prog.epoch_loss_sum += loss;
      prog.epoch_accuracy_sum += accuracy;
      ++prog.epoch_steps;
      prog.epoch_seconds += step_seconds;
      prog.elapsed_seconds += step_seconds;
      prog.last_lr = lr;
      ++interval_steps;

      const std::optional<double> shown_accuracy =
          has_accuracy ? std::optional<double>(accuracy) : std::nullopt;
      if (prog.step % p.log_every == 0 || prog.step == end_step || prog.step == first_step + 1) {
        const double interval = seconds_since(interval_start);
        const double images_per_second =
            interval > 0 ? static_cast<double>(interval_steps * global_batch) / interval : 0.0;
        const double run_seconds = seconds_since(run_start);
        const double eta = static_cast<double>(end_step - prog.step) * run_seconds /
                           static_cast<double>(prog.step - first_step);
        log().info(
            "step {}/{} epoch {} ({}/{})  loss {:.4f}  acc {}  lr {:.3e}  grad_norm {:.3f}  "
            "{:.1f} img/s  {:.2f} GFLOP/s  ETA {}",
            prog.step, end_step, prog.epoch, prog.step_in_epoch, steps_per_epoch, loss,
            format_accuracy(shown_accuracy), lr, grad_norm, images_per_second,
            images_per_second * flops.training / 1e9, format_duration(eta));
        if (metrics) {
          nlohmann::json rec = {
              {"type", "step"},
              {"step", prog.step},
              {"epoch", prog.epoch},
              {"epoch_progress", static_cast<double>(prog.epoch) +
                                     static_cast<double>(prog.step_in_epoch) / steps_per_epoch},
              {"loss", loss},
              {"masked_accuracy", nullptr},
              {"lr", lr},
              {"grad_norm", grad_norm},
              {"images_seen", prog.images_seen},
              {"images_per_second", images_per_second},
              {"gflops_per_second", images_per_second * flops.training / 1e9},
              {"step_seconds", step_seconds},
              {"elapsed_seconds", prog.elapsed_seconds},
              {"eta_seconds", eta}};
          if (shown_accuracy) rec["masked_accuracy"] = *shown_accuracy;
          metrics->append(rec);
        }
        interval_start = Clock::now();
        interval_steps = 0;
      }

      const bool epoch_end = prog.step_in_epoch == steps_per_epoch;
      if (epoch_end) {
        const double n = static_cast<double>(std::max<std::int64_t>(prog.epoch_steps, 1));
        log().info("epoch {} done: mean loss {:.4f}, mean masked accuracy {}, {:.1f} s", prog.epoch,
                   prog.epoch_loss_sum / n,
                   has_accuracy ? format_accuracy(prog.epoch_accuracy_sum / n) : std::string("n/a"),
                   prog.epoch_seconds);
        if (metrics) {
          nlohmann::json rec = {{"type", "epoch"},
                                {"step", prog.step},
                                {"epoch", prog.epoch},
                                {"loss", prog.epoch_loss_sum / n},
                                {"masked_accuracy", nullptr},
                                {"steps", prog.epoch_steps},
                                {"images", prog.epoch_steps * global_batch},
                                {"seconds", prog.epoch_seconds},
                                {"lr", lr}};
          if (has_accuracy) rec["masked_accuracy"] = prog.epoch_accuracy_sum / n;
          metrics->append(rec);
        }
        ++prog.epoch;
        prog.step_in_epoch = 0;
        prog.epoch_loss_sum = 0.0;
        prog.epoch_accuracy_sum = 0.0;
        prog.epoch_steps = 0;
        prog.epoch_seconds = 0.0;
      }
      const bool stop_now = comm.any(stop.requested());
      const bool periodic = p.checkpoint_every > 0 && prog.step % p.checkpoint_every == 0;
      if (stop_now) {
        if (!save("stop requested")) return kExitNonFinite;
        log().info(
            "pretrain: stopped on request (signal) at step {}; exit code {} (requeue and "
            "rerun with --resume auto to continue)",
            prog.step, kExitCheckpointed);
        return kExitCheckpointed;
      }
      if (epoch_end || periodic || prog.step == end_step) {
        if (!save(prog.step == end_step ? (end_step == total_steps ? "final" : "--max-steps")
                                        : (epoch_end ? "epoch end" : "periodic")))
          return kExitNonFinite;
      }
      if (epoch_end) break;  // a new epoch: new order, new prefetcher
    }
  }
  log().info("pretrain: finished at step {} of {} ({} images, {:.1f} s of training)", prog.step,
             total_steps, prog.images_seen, prog.elapsed_seconds);
  return 0;
}

}  // namespace kmim::train
