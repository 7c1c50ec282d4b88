#include "kmim/eval/linear_probe.hpp"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <mutex>
#include <numbers>
#include <sstream>

#include <fmt/format.h>

#include "kmim/core/error.hpp"
#include "kmim/core/log.hpp"
#include "kmim/core/progress.hpp"
#include "kmim/core/rng.hpp"
#include "kmim/io/atomic_output.hpp"
#include "kmim/io/hdf5.hpp"

namespace kmim::eval {

namespace {

/// The per-epoch history as 1-D datasets [epochs] (val_class_accuracy [epochs, classes]), written
/// into `where`: the checkpoint's /history group and the report's root share this layout
/// (docs/formats.md); only the name of the seconds dataset differs between the two files.
void write_probe_history(const io::H5Object& where, const std::vector<ProbeEpoch>& history,
                         std::size_t classes, const std::string& seconds_name) {
  const std::size_t E = history.size();
  std::vector<std::int32_t> epoch(E);
  std::vector<double> loss(E), lr(E), top1(E), top5(E), seconds(E), per_class;
  for (std::size_t i = 0; i < E; ++i) {
    const ProbeEpoch& h = history[i];
    epoch[i] = h.epoch;
    loss[i] = h.train_loss;
    lr[i] = h.last_lr;
    top1[i] = h.top1;
    top5[i] = h.top5;
    seconds[i] = h.seconds;
    per_class.insert(per_class.end(), h.class_accuracy.begin(), h.class_accuracy.end());
  }
  where.write_dataset<std::int32_t>("epoch", epoch, {E});
  where.write_dataset<double>("train_loss", loss, {E});
  where.write_dataset<double>("lr", lr, {E});
  where.write_dataset<double>("val_top1", top1, {E});
  where.write_dataset<double>("val_top5", top5, {E});
  where.write_dataset<double>(seconds_name, seconds, {E});
  where.write_dataset<double>("val_class_accuracy", per_class, {E, classes});
}

constexpr const char* kCheckpointKind = "kmim_linprobe_checkpoint";

double norm2(std::span<const float> v) {
  double s = 0.0;
  for (float x : v) s += static_cast<double>(x) * x;
  return std::sqrt(s);
}

/// logits [rows, C] = y [rows, D] · W^T + b.
void head_forward(const LinearProbeState& s, const float* y, std::size_t rows, float* logits) {
  if (rows == 0) return;
  const int C = static_cast<int>(s.classes), D = static_cast<int>(s.dim);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), C, D, 1.0f, y, D,
              s.weight.data(), D, 0.0f, logits, C);
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t c = 0; c < s.classes; ++c) logits[r * s.classes + c] += s.bias[c];
}

/// Rank of the true class among the logits: classes with a larger logit, or an equal one and a
/// lower index, come first. 0 = top-1.
std::size_t rank_of(const float* logits, std::size_t classes, std::size_t truth) {
  const float v = logits[truth];
  std::size_t rank = 0;
  for (std::size_t c = 0; c < classes; ++c)
    if (logits[c] > v || (logits[c] == v && c < truth)) ++rank;
  return rank;
}

/// The first line of `a` that differs from `b` ("(none)" when a line is missing).
std::string first_difference(const std::string& a, const std::string& b) {
  std::istringstream sa(a), sb(b);
  std::string la, lb;
  while (true) {
    const bool ha = static_cast<bool>(std::getline(sa, la));
    const bool hb = static_cast<bool>(std::getline(sb, lb));
    if (!ha && !hb) return "";
    if (!ha) la = "(none)";
    if (!hb) lb = "(none)";
    if (la != lb) return fmt::format("checkpoint has '{}', this run has '{}'", la, lb);
  }
}

}  // namespace

void LinearProbeConfig::validate() const {
  require_option(epochs >= 1, "epochs", std::to_string(epochs), "must be at least 1");
  require_option(warmup_epochs >= 0 && warmup_epochs <= epochs, "warmup-epochs",
                 std::to_string(warmup_epochs), "must be between 0 and --epochs");
  require_option(batch_size >= 2, "batch-size", std::to_string(batch_size),
                 "must be at least 2 (BatchNorm needs more than one sample per batch)");
  require_option(base_lr > 0.0, "base-lr", fmt::format("{}", base_lr), "must be positive");
  require_option(min_lr >= 0.0, "min-lr", fmt::format("{}", min_lr), "must not be negative");
  require_option(weight_decay >= 0.0, "weight-decay", fmt::format("{}", weight_decay),
                 "must not be negative");
  require_option(momentum >= 0.0 && momentum < 1.0, "momentum", fmt::format("{}", momentum),
                 "must be in [0, 1)");
  require_option(trust_coefficient > 0.0, "trust-coefficient",
                 fmt::format("{}", trust_coefficient), "must be positive");
  require_option(bn_eps > 0.0, "bn-eps", fmt::format("{}", bn_eps), "must be positive");
  require_option(bn_momentum >= 0.0 && bn_momentum <= 1.0, "bn-momentum",
                 fmt::format("{}", bn_momentum), "must be in [0, 1]");
  require_option(init_std > 0.0, "init-std", fmt::format("{}", init_std), "must be positive");
}

std::string LinearProbeConfig::training_key() const {
  return fmt::format(
      "epochs = {}\nwarmup_epochs = {}\nbatch_size = {}\nbase_lr = {}\nmin_lr = {}\n"
      "weight_decay = {}\nmomentum = {}\ntrust_coefficient = {}\nbn_eps = {}\nbn_momentum = {}\n"
      "init_std = {}\nseed = {}\n",
      epochs, warmup_epochs, batch_size, base_lr, min_lr, weight_decay, momentum,
      trust_coefficient, bn_eps, bn_momentum, init_std, seed);
}

double probe_learning_rate(const LinearProbeConfig& config, double epoch) {
  const double lr = config.peak_lr();
  if (epoch < config.warmup_epochs) return lr * epoch / config.warmup_epochs;
  const double span = config.epochs - config.warmup_epochs;
  if (span <= 0.0) return lr;
  return config.min_lr + (lr - config.min_lr) * 0.5 *
                             (1.0 + std::cos(std::numbers::pi * (epoch - config.warmup_epochs) / span));
}

LinearProbeState init_linear_probe(std::size_t dim, std::size_t classes,
                                   const LinearProbeConfig& config) {
  if (dim == 0 || classes == 0) throw Error("linear probe: needs features and classes");
  LinearProbeState s;
  s.dim = dim;
  s.classes = classes;
  s.weight.resize(classes * dim);
  RandomStream stream(config.seed, stream_id({kProbeInitKey}));
  for (float& w : s.weight) {
    double v;
    do {
      v = stream.normal() * config.init_std;
    } while (v < -2.0 || v > 2.0);  // timm trunc_normal_ bounds (absolute, a=-2, b=2)
    w = static_cast<float>(v);
  }
  s.bias.assign(classes, 0.0f);
  s.weight_momentum.assign(classes * dim, 0.0f);
  s.bias_momentum.assign(classes, 0.0f);
  s.running_mean.assign(dim, 0.0f);
  s.running_var.assign(dim, 1.0f);
  s.bn_eps = config.bn_eps;
  return s;
}

void lars_update(std::span<float> param, std::span<const float> grad, std::span<float> momentum,
                 double lr, const LinearProbeConfig& config, bool adapt) {
  const std::size_t n = param.size();
  std::vector<float> step(grad.begin(), grad.end());
  if (adapt) {
    if (config.weight_decay != 0.0)
      for (std::size_t i = 0; i < n; ++i)
        step[i] = static_cast<float>(step[i] + config.weight_decay * param[i]);
    const double param_norm = norm2(param);
    const double update_norm = norm2(step);
    const double q = (param_norm > 0.0 && update_norm > 0.0)
                         ? config.trust_coefficient * param_norm / update_norm
                         : 1.0;
    for (float& v : step) v = static_cast<float>(v * q);
  }
  const auto m = static_cast<float>(config.momentum);
  const auto rate = static_cast<float>(lr);
  for (std::size_t i = 0; i < n; ++i) {
    momentum[i] = m * momentum[i] + step[i];
    param[i] -= rate * momentum[i];
  }
}

double probe_train_step(LinearProbeState& s, float* x, const std::int32_t* labels,
                        std::size_t rows, std::size_t global_batch, double lr,
                        const LinearProbeConfig& config, const dist::Communicator& comm) {
  const std::size_t D = s.dim, C = s.classes, B = global_batch, L = rows;
  std::vector<double> stats(D), mean(D), inv_std(D);
  std::vector<float> logits(std::max<std::size_t>(L, 1) * C);
  std::vector<float> grad(C * D + C);  // dW then db, reduced in one call
  // BatchNorm statistics over the global batch: mean, then the mean squared deviation (two
  // passes in double, summed over ranks).
  for (std::size_t r = 0; r < L; ++r)
    for (std::size_t j = 0; j < D; ++j) stats[j] += x[r * D + j];
  comm.allreduce(std::span<double>(stats));
  for (std::size_t j = 0; j < D; ++j) mean[j] = stats[j] / static_cast<double>(B);
  std::fill(stats.begin(), stats.end(), 0.0);
  for (std::size_t r = 0; r < L; ++r)
    for (std::size_t j = 0; j < D; ++j) {
      const double dev = x[r * D + j] - mean[j];
      stats[j] += dev * dev;
    }
  comm.allreduce(std::span<double>(stats));
  const double m = config.bn_momentum;
  const double unbias = static_cast<double>(B) / static_cast<double>(B - 1);
  for (std::size_t j = 0; j < D; ++j) {
    const double var = stats[j] / static_cast<double>(B);
    inv_std[j] = 1.0 / std::sqrt(var + config.bn_eps);
    s.running_mean[j] = static_cast<float>((1.0 - m) * s.running_mean[j] + m * mean[j]);
    s.running_var[j] = static_cast<float>((1.0 - m) * s.running_var[j] + m * var * unbias);
  }
  for (std::size_t r = 0; r < L; ++r)
    for (std::size_t j = 0; j < D; ++j)
      x[r * D + j] = static_cast<float>((x[r * D + j] - mean[j]) * inv_std[j]);

  // Forward and cross-entropy; logits become dL/dlogits = (softmax − onehot) / B.
  head_forward(s, x, L, logits.data());
  const float inv_b = 1.0f / static_cast<float>(B);
  double loss_sum = 0.0;
  for (std::size_t r = 0; r < L; ++r) {
    float* z = logits.data() + r * C;
    const float zmax = *std::max_element(z, z + C);
    double sum = 0.0;
    for (std::size_t c = 0; c < C; ++c) sum += std::exp(static_cast<double>(z[c] - zmax));
    const auto truth = static_cast<std::size_t>(labels[r]);
    loss_sum += std::log(sum) - static_cast<double>(z[truth] - zmax);
    for (std::size_t c = 0; c < C; ++c) {
      const double p = std::exp(static_cast<double>(z[c] - zmax)) / sum;
      z[c] = static_cast<float>(p - (c == truth ? 1.0 : 0.0)) * inv_b;
    }
  }
  // dW [C, D] = G^T [C, L] · Y [L, D];  db = column sums of G.
  if (L > 0) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(C), static_cast<int>(D),
                static_cast<int>(L), 1.0f, logits.data(), static_cast<int>(C), x,
                static_cast<int>(D), 0.0f, grad.data(), static_cast<int>(D));
  }
  for (std::size_t c = 0; c < C; ++c) {
    double g = 0.0;
    for (std::size_t r = 0; r < L; ++r) g += logits[r * C + c];
    grad[C * D + c] = static_cast<float>(g);
  }
  comm.allreduce(std::span<float>(grad));
  lars_update(s.weight, std::span<const float>(grad.data(), C * D), s.weight_momentum, lr, config,
              true);
  lars_update(s.bias, std::span<const float>(grad.data() + C * D, C), s.bias_momentum, lr, config,
              false);
  return loss_sum;
}

EpochTraining train_probe_epoch(LinearProbeState& s, const FeatureSet& train,
                                const LinearProbeConfig& config, const dist::Communicator& comm) {
  const std::size_t D = s.dim, B = config.batch_size;
  const std::size_t iterations = train.n / B;
  const int epoch = s.epochs_done;
  const auto order = random_permutation(train.n, config.seed,
                                        stream_id({kProbeShuffleKey, static_cast<std::uint64_t>(epoch)}));
  const auto [lo, hi] = dist::block_range(B, comm.size(), comm.rank());
  const std::size_t L = static_cast<std::size_t>(hi - lo);

  std::vector<float> y(std::max<std::size_t>(L, 1) * D);
  std::vector<std::int32_t> labels(std::max<std::size_t>(L, 1));
  double loss_sum = 0.0;
  EpochTraining out;
  for (std::size_t it = 0; it < iterations; ++it) {
    const double lr = probe_learning_rate(
        config, epoch + static_cast<double>(it) / static_cast<double>(iterations));
    out.last_lr = lr;
    const std::size_t base = it * B + static_cast<std::size_t>(lo);
    for (std::size_t r = 0; r < L; ++r) {
      const std::uint64_t row = order[base + r];
      std::copy_n(train.features.data() + row * D, D, y.data() + r * D);
      labels[r] = train.labels[row];
    }
    loss_sum += probe_train_step(s, y.data(), labels.data(), L, B, lr, config, comm);
  }
  loss_sum = comm.allreduce(loss_sum);
  out.mean_loss = iterations > 0 ? loss_sum / static_cast<double>(iterations * B) : 0.0;
  s.epochs_done = epoch + 1;
  return out;
}

ProbeEvaluation evaluate_probe(const LinearProbeState& s, const FeatureSet& val,
                               const dist::Communicator& comm) {
  const std::size_t D = s.dim, C = s.classes;
  if (val.dim != D)
    throw FileError(val.file, fmt::format("features have dimension {}, the probe expects {}",
                                          val.dim, D));
  const auto [first, last] = comm.block_range(val.n);
  const std::size_t top = std::min<std::size_t>(5, C);
  // counts: [correct1, correct5, class_total[C], class_correct[C]]
  std::vector<std::int64_t> counts(2 + 2 * C, 0);
  // BN at evaluation: (x − running_mean) / sqrt(running_var + eps).
  std::vector<double> inv_std(D);
  for (std::size_t j = 0; j < D; ++j)
    inv_std[j] = 1.0 / std::sqrt(static_cast<double>(s.running_var[j]) + s.bn_eps);
  const std::size_t chunk = 1024;
  std::vector<float> y(chunk * D), logits(chunk * C);
  for (std::uint64_t r0 = first; r0 < last; r0 += chunk) {
    const std::size_t rows = static_cast<std::size_t>(std::min<std::uint64_t>(chunk, last - r0));
    for (std::size_t r = 0; r < rows; ++r) {
      const float* x = val.features.data() + (r0 + r) * D;
      for (std::size_t j = 0; j < D; ++j)
        y[r * D + j] =
            static_cast<float>((x[j] - static_cast<double>(s.running_mean[j])) * inv_std[j]);
    }
    head_forward(s, y.data(), rows, logits.data());
    for (std::size_t r = 0; r < rows; ++r) {
      const std::int32_t label = val.labels[r0 + r];
      if (label < 0 || static_cast<std::size_t>(label) >= C)
        throw FileError(val.file, fmt::format("/labels[{}] = {} is outside [0, {})", r0 + r, label, C));
      const auto truth = static_cast<std::size_t>(label);
      const std::size_t rank = rank_of(logits.data() + r * C, C, truth);
      counts[2 + truth] += 1;
      if (rank == 0) {
        counts[0] += 1;
        counts[2 + C + truth] += 1;
      }
      if (rank < top) counts[1] += 1;
    }
  }
  comm.allreduce(std::span<std::int64_t>(counts));
  ProbeEvaluation e;
  e.total = static_cast<std::int64_t>(val.n);
  e.correct1 = counts[0];
  e.correct5 = counts[1];
  e.top1 = 100.0 * static_cast<double>(e.correct1) / static_cast<double>(e.total);
  e.top5 = 100.0 * static_cast<double>(e.correct5) / static_cast<double>(e.total);
  e.class_total.assign(counts.begin() + 2, counts.begin() + 2 + static_cast<std::ptrdiff_t>(C));
  e.class_correct.assign(counts.begin() + 2 + static_cast<std::ptrdiff_t>(C), counts.end());
  e.class_accuracy.resize(C);
  for (std::size_t c = 0; c < C; ++c)
    e.class_accuracy[c] = e.class_total[c] > 0 ? 100.0 * static_cast<double>(e.class_correct[c]) /
                                                     static_cast<double>(e.class_total[c])
                                               : std::numeric_limits<double>::quiet_NaN();
  return e;
}

}  // namespace kmim::eval

namespace kmim::eval {

void record_probe_epoch(LinearProbeState& state, const EpochTraining& training,
                        const ProbeEvaluation& evaluation, double seconds, std::size_t samples,
                        const LinearProbeConfig& config) {
  ProbeEpoch record;
  record.epoch = state.epochs_done;
  record.train_loss = training.mean_loss;
  record.last_lr = training.last_lr;
  record.top1 = evaluation.top1;
  record.top5 = evaluation.top5;
  record.class_accuracy = evaluation.class_accuracy;
  record.seconds = seconds;
  state.history.push_back(record);
  const int left = config.epochs - state.epochs_done;
  log().info("linprobe: epoch {}/{} loss {:.4f} lr {:.4g} val top-1 {:.2f} top-5 {:.2f} "
             "({:.2f} s, {:.0f} samples/s, ETA {})",
             record.epoch, config.epochs, record.train_loss, record.last_lr, record.top1,
             record.top5, record.seconds,
             static_cast<double>(samples) / std::max(record.seconds, 1e-9),
             format_duration(record.seconds * left));
}

bool train_linear_probe(LinearProbeState& state, const FeatureSet& train, const FeatureSet& val,
                        const LinearProbeConfig& config, const dist::Communicator& comm,
                        const std::function<void(const LinearProbeState&)>& after_epoch,
                        int max_epochs_this_run, const std::function<bool()>& stop_requested) {
  int run = 0;
  while (state.epochs_done < config.epochs) {
    if (max_epochs_this_run > 0 && run >= max_epochs_this_run) return false;
    const auto start = std::chrono::steady_clock::now();
    const EpochTraining t = train_probe_epoch(state, train, config, comm);
    const ProbeEvaluation e = evaluate_probe(state, val, comm);
    record_probe_epoch(state, t, e,
                       std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(),
                       train.n + val.n, config);
    if (after_epoch) after_epoch(state);
    ++run;
    if (stop_requested && stop_requested() && state.epochs_done < config.epochs) return false;
  }
  return true;
}

void check_probe_inputs(const FeatureSet& train, const FeatureSet& val,
                        const LinearProbeConfig& config, const dist::Communicator& comm) {
  config.validate();
  if (train.dim != val.dim)
    throw FileError(val.file, fmt::format("features have dimension {} but the training features "
                                          "'{}' have dimension {}",
                                          val.dim, train.file.string(), train.dim));
  require_option(config.batch_size <= train.n, "batch-size", std::to_string(config.batch_size),
                 fmt::format("is larger than the {} training samples of '{}'", train.n,
                             train.file.string()));
  require_option(config.batch_size >= static_cast<std::size_t>(comm.size()), "batch-size",
                 std::to_string(config.batch_size),
                 fmt::format("is smaller than the number of ranks ({})", comm.size()));
}

void save_probe_checkpoint(const std::filesystem::path& file, const LinearProbeState& s,
                           const std::string& key, const dist::Communicator& comm) {
  if (comm.is_root()) {
    // A BatchPrefetcher (encoder mode) may be reading shards on another thread: HDF5 calls are
    // serialised by io::hdf5_mutex().
    std::lock_guard<std::mutex> lock(io::hdf5_mutex());
    io::AtomicOutput out(file);
    {
      const io::H5Object root = io::create_file(out.temp_path());
      root.set_attribute("kind", kCheckpointKind);
      root.set_attribute("key", key);
      root.set_attribute<std::int32_t>("epochs_done", s.epochs_done);
      root.set_attribute<std::int64_t>("steps_in_epoch", s.steps_in_epoch);
      root.set_attribute<double>("epoch_loss_sum", s.epoch_loss_sum);
      root.set_attribute<double>("epoch_seconds", s.epoch_seconds);
      root.set_attribute<double>("epoch_last_lr", s.epoch_last_lr);
      root.set_attribute<std::int64_t>("dim", static_cast<std::int64_t>(s.dim));
      root.set_attribute<std::int64_t>("classes", static_cast<std::int64_t>(s.classes));
      root.set_attribute<double>("bn_eps", s.bn_eps);
      root.write_dataset<float>("weight", s.weight, {s.classes, s.dim});
      root.write_dataset<float>("bias", s.bias, {s.classes});
      root.write_dataset<float>("weight_momentum", s.weight_momentum, {s.classes, s.dim});
      root.write_dataset<float>("bias_momentum", s.bias_momentum, {s.classes});
      root.write_dataset<float>("running_mean", s.running_mean, {s.dim});
      root.write_dataset<float>("running_var", s.running_var, {s.dim});
      if (!s.history.empty())
        write_probe_history(root.create_group("history"), s.history, s.classes, "seconds");
    }
    out.commit();
  }
  comm.barrier();
}

LinearProbeState load_probe_checkpoint(const std::filesystem::path& file, const std::string& key) {
  std::lock_guard<std::mutex> lock(io::hdf5_mutex());
  const io::H5Object root = io::open_file(file, io::FileMode::read);
  if (!root.has_attribute("kind") || root.string_attribute("kind") != kCheckpointKind)
    throw FileError(file, "is not a kmim_linprobe checkpoint");
  const std::string stored = root.string_attribute("key");
  if (stored != key)
    throw FileError(file, fmt::format("was written for other inputs or settings ({}); remove it or "
                                      "rerun with the original options",
                                      first_difference(stored, key)));
  LinearProbeState s;
  s.epochs_done = root.attribute<std::int32_t>("epochs_done");
  if (root.has_attribute("steps_in_epoch")) {  // absent in checkpoints of epoch-only probes
    s.steps_in_epoch = root.attribute<std::int64_t>("steps_in_epoch");
    s.epoch_loss_sum = root.attribute<double>("epoch_loss_sum");
    s.epoch_seconds = root.attribute<double>("epoch_seconds");
    s.epoch_last_lr = root.attribute<double>("epoch_last_lr");
  }
  s.dim = static_cast<std::size_t>(root.attribute<std::int64_t>("dim"));
  s.classes = static_cast<std::size_t>(root.attribute<std::int64_t>("classes"));
  s.bn_eps = root.attribute<double>("bn_eps");
  s.weight = root.read_dataset<float>("weight");
  s.bias = root.read_dataset<float>("bias");
  s.weight_momentum = root.read_dataset<float>("weight_momentum");
  s.bias_momentum = root.read_dataset<float>("bias_momentum");
  s.running_mean = root.read_dataset<float>("running_mean");
  s.running_var = root.read_dataset<float>("running_var");
  if (s.weight.size() != s.classes * s.dim || s.weight_momentum.size() != s.weight.size() ||
      s.bias.size() != s.classes || s.bias_momentum.size() != s.classes ||
      s.running_mean.size() != s.dim || s.running_var.size() != s.dim)
    throw FileError(file, "checkpoint datasets do not match its dim/classes attributes");
  if (root.has("history")) {
    const io::H5Object g = root.group("history");
    const auto epoch = g.read_dataset<std::int32_t>("epoch");
    const auto loss = g.read_dataset<double>("train_loss");
    const auto lr = g.read_dataset<double>("lr");
    const auto top1 = g.read_dataset<double>("val_top1");
    const auto top5 = g.read_dataset<double>("val_top5");
    const auto seconds = g.read_dataset<double>("seconds");
    const auto per_class = g.read_dataset<double>("val_class_accuracy");
    const std::size_t E = epoch.size();
    if (loss.size() != E || lr.size() != E || top1.size() != E || top5.size() != E ||
        seconds.size() != E || per_class.size() != E * s.classes)
      throw FileError(file, "checkpoint history datasets differ in length");
    for (std::size_t i = 0; i < E; ++i) {
      ProbeEpoch h;
      h.epoch = epoch[i];
      h.train_loss = loss[i];
      h.last_lr = lr[i];
      h.top1 = top1[i];
      h.top5 = top5[i];
      h.seconds = seconds[i];
      h.class_accuracy.assign(per_class.begin() + static_cast<std::ptrdiff_t>(i * s.classes),
                              per_class.begin() + static_cast<std::ptrdiff_t>((i + 1) * s.classes));
      s.history.push_back(std::move(h));
    }
  }
  if (s.history.size() != static_cast<std::size_t>(s.epochs_done))
    throw FileError(file, fmt::format("checkpoint says {} epochs done but holds {} history rows",
                                      s.epochs_done, s.history.size()));
  return s;
}

ProbeSummary summarize_probe(const std::vector<ProbeEpoch>& history) {
  ProbeSummary sum;
  if (history.empty()) return sum;
  sum.best_top1 = -1.0;
  for (const ProbeEpoch& h : history) {
    if (h.top1 > sum.best_top1) {
      sum.best_top1 = h.top1;
      sum.best_epoch = h.epoch;
    }
    sum.best_top5 = std::max(sum.best_top5, h.top5);
  }
  sum.last_top1 = history.back().top1;
  sum.last_top5 = history.back().top5;
  return sum;
}

std::string ProbeSummary::line() const {
  return fmt::format("top-1 best {:.2f} (epoch {}) last {:.2f}; top-5 best {:.2f} last {:.2f}",
                     best_top1, best_epoch, last_top1, best_top5, last_top5);
}

}  // namespace kmim::eval

namespace kmim::eval {

void write_probe_report(const std::filesystem::path& file, const LinearProbeState& s,
                        const ProbeReportInfo& info, const dist::Communicator& comm) {
  if (comm.is_root()) {
    const ProbeSummary sum = summarize_probe(s.history);
    const std::size_t E = s.history.size();
    std::lock_guard<std::mutex> lock(io::hdf5_mutex());
    io::AtomicOutput out(file);
    {
      const io::H5Object root = io::create_file(out.temp_path());
      root.set_attribute("kind", "kmim_linprobe_report");
      root.set_attribute("mode", info.mode);
      root.set_attribute(
          "protocol",
          std::string(info.mode == "encoder"
                          ? "linear probe through the frozen encoder (kmim SPEC section 4, MAE "
                            "protocol): train RandomResizedCrop(img_size, scale, ratio 3/4-4/3, "
                            "bicubic) + horizontal flip, val centre crop of the stored images, "
                            "ImageNet normalisation, encoder CLS token (or mean of patch tokens) "
                            "after the final LayerNorm; "
                          : "linear probe on pre-extracted features (kmim SPEC section 4, MAE "
                            "protocol): ") +
          "BatchNorm1d(affine=False, eps) + Linear head (trunc_normal std init_std, bias 0), "
          "LARS (momentum, trust_coefficient, weight_decay on >1-D parameters only), "
          "lr = base_lr * batch_size / 256 with per-iteration linear warmup then half-cycle "
          "cosine, cross-entropy, seeded per-epoch shuffle, last partial batch dropped; "
          "val top-1/top-5 after every epoch with the running BN statistics");
      root.set_provenance(info.program, info.config_ini);
      root.set_attribute("summary", sum.line());
      root.set_attribute<std::int32_t>("epochs", static_cast<std::int32_t>(E));
      root.set_attribute<std::int32_t>("best_top1_epoch", sum.best_epoch);
      root.set_attribute<double>("best_top1", sum.best_top1);
      root.set_attribute<double>("best_top5", sum.best_top5);
      root.set_attribute<double>("last_top1", sum.last_top1);
      root.set_attribute<double>("last_top5", sum.last_top5);
      root.set_attribute<double>("peak_lr", info.config.peak_lr());
      root.set_attribute<std::int64_t>("dim", static_cast<std::int64_t>(s.dim));
      root.set_attribute<std::int64_t>("num_classes", static_cast<std::int64_t>(s.classes));
      if (info.train != nullptr) {
        root.set_attribute("train_features", info.train->file.string());
        root.set_attribute("train_fingerprint", info.train->fingerprint);
        root.set_attribute<std::int64_t>("train_samples", static_cast<std::int64_t>(info.train->n));
      }
      if (info.val != nullptr) {
        root.set_attribute("val_features", info.val->file.string());
        root.set_attribute("val_fingerprint", info.val->fingerprint);
        root.set_attribute<std::int64_t>("val_samples", static_cast<std::int64_t>(info.val->n));
      }
      for (const auto& [name, value] : info.text_attributes) root.set_attribute(name, value);
      for (const auto& [name, value] : info.integer_attributes)
        root.set_attribute<std::int64_t>(name, value);
      for (const auto& [name, value] : info.real_attributes) root.set_attribute<double>(name, value);
      if (info.has_knn) {
        root.set_attribute<std::int64_t>("knn_k", static_cast<std::int64_t>(info.knn_k));
        root.set_attribute<double>("knn_temperature", info.knn_temperature);
        root.set_attribute<double>("knn_top1", info.knn_top1);
        root.set_attribute<double>("knn_top5", info.knn_top5);
      }
      if (E > 0) write_probe_history(root, s.history, s.classes, "epoch_seconds");
      const io::H5Object head = root.create_group("head");
      head.write_dataset<float>("weight", s.weight, {s.classes, s.dim});
      head.write_dataset<float>("bias", s.bias, {s.classes});
      head.write_dataset<float>("bn_running_mean", s.running_mean, {s.dim});
      head.write_dataset<float>("bn_running_var", s.running_var, {s.dim});
      head.set_attribute<double>("bn_eps", s.bn_eps);
    }
    out.commit();
  }
  comm.barrier();
}

}  // namespace kmim::eval
