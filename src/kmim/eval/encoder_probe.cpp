#include "kmim/eval/encoder_probe.hpp"

#include <algorithm>
#include <chrono>
#include <optional>
#include <vector>

#include <fmt/format.h>

#include "kmim/core/error.hpp"
#include "kmim/core/log.hpp"
#include "kmim/core/progress.hpp"
#include "kmim/core/rng.hpp"
#include "kmim/io/shard_dataset.hpp"

namespace kmim::eval {

namespace {
using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}
}  // namespace

void EncoderProbeSettings::validate() const {
  require_option(crop.scale_min > 0.0 && crop.scale_min <= crop.scale_max && crop.scale_max <= 1.0,
                 "crop-scale-min", fmt::format("{}", crop.scale_min),
                 fmt::format("must satisfy 0 < crop-scale-min <= crop-scale-max ({}) <= 1",
                             crop.scale_max));
  require_option(encoder_batch >= 1, "encoder-batch", std::to_string(encoder_batch),
                 "must be at least 1");
  require_option(prefetch >= 1, "prefetch", std::to_string(prefetch), "must be at least 1");
}

std::string EncoderProbeSettings::training_key() const {
  return fmt::format("pool = {}\ncrop_scale_min = {}\ncrop_scale_max = {}\ncrop_ratio_min = {}\n"
                     "crop_ratio_max = {}\n",
                     feature_pool_name(pool), crop.scale_min, crop.scale_max, crop.ratio_min,
                     crop.ratio_max);
}

void probe_training_crop(const std::uint8_t* image, int stored_size, int out_size,
                         std::uint64_t seed, std::uint64_t epoch, std::uint64_t index,
                         const train::RandomResizedCropRange& range, std::uint8_t* out) {
  RandomStream rng(seed, stream_id({kProbeAugmentKey, epoch, index}));
  const train::CropBox box = train::random_resized_crop_box(rng, stored_size, stored_size, range);
  const bool flip = rng.uniform() < 0.5f;  // RandomHorizontalFlip: torch.rand(1) < p
  train::resized_crop_bicubic(image, stored_size, stored_size, 3, box, out_size, out);
  if (flip) train::horizontal_flip(out, out_size, out_size, 3);
}

FeatureSet encode_split(EncoderRunner& runner, const io::ShardDataset& data, FeaturePool pool,
                        const dist::Communicator& comm, const std::string& label) {
  const std::size_t d = runner.dim();
  const std::size_t rows = runner.rows_per_image(pool);
  const auto [first, last] = comm.block_range(data.size());
  const std::uint64_t step = static_cast<std::uint64_t>(std::max(runner.max_batch(), 1)) * 4;
  std::vector<float> local(static_cast<std::size_t>(last - first) * rows * d);
  std::vector<std::uint8_t> pixels;
  Progress progress(label, data.size(), "images");
  for (std::uint64_t i = first; i < last; i += step) {
    const std::uint64_t n = std::min(step, last - i);
    pixels.resize(n * data.image_bytes());
    data.read_range(i, n, pixels);
    runner.center_crop_features(pixels.data(), n, data.image_size(), pool,
                                local.data() + (i - first) * rows * d);
    progress.update(std::min<std::uint64_t>(data.size(), (i + n - first) * comm.size()));
  }
  progress.update(data.size());
  progress.finish();
  FeatureSet set;
  set.file = data.path();
  set.n = data.size() * rows;
  set.dim = d;
  set.features = comm.allgatherv(std::span<const float>(local));
  set.labels.reserve(set.n);
  for (std::uint64_t i = 0; i < data.size(); ++i)
    for (std::size_t r = 0; r < rows; ++r) set.labels.push_back(data.labels()[i]);
  set.num_classes = data.num_classes();
  set.fingerprint = data.fingerprint();
  return set;
}

ProbeRunEnd train_linear_probe_encoder(LinearProbeState& state, EncoderRunner& runner,
                                       const io::ShardDataset& train, const FeatureSet& val,
                                       const LinearProbeConfig& config,
                                       const EncoderProbeSettings& settings,
                                       const dist::Communicator& comm,
                                       const std::function<void(const LinearProbeState&)>& save,
                                       int max_epochs_this_run,
                                       const std::function<bool()>& stop_requested) {
  const model::ModelConfig& mc = runner.encoder().config();
  const int crop = mc.img_size;
  const int stored = train.image_size();
  const std::size_t D = runner.dim();
  const std::size_t B = config.batch_size;
  const std::uint64_t N = train.size();
  const std::uint64_t iterations = N / B;
  const auto [lo, hi] = dist::block_range(B, comm.size(), comm.rank());
  const std::size_t rows = static_cast<std::size_t>(hi - lo);
  const std::size_t crop_bytes = static_cast<std::size_t>(crop) * crop * 3;
  std::vector<std::uint8_t> crops(rows * crop_bytes);
  std::vector<float> features(std::max<std::size_t>(rows, 1) * D);
  io::Batch batch;
  int run_epochs = 0;

  while (state.epochs_done < config.epochs) {
    if (max_epochs_this_run > 0 && run_epochs >= max_epochs_this_run)
      return ProbeRunEnd::stopped_by_epochs;
    const auto epoch = static_cast<std::uint64_t>(state.epochs_done);
    const auto order = random_permutation(N, config.seed, stream_id({kProbeShuffleKey, epoch}));
    auto next = static_cast<std::uint64_t>(state.steps_in_epoch);
    io::BatchPrefetcher prefetcher(
        train,
        [&, next]() mutable -> std::optional<std::vector<std::uint64_t>> {
          if (next >= iterations) return std::nullopt;
          const std::uint64_t base = next++ * B;
          return std::vector<std::uint64_t>(order.begin() + static_cast<std::ptrdiff_t>(base + lo),
                                            order.begin() + static_cast<std::ptrdiff_t>(base + hi));
        },
        static_cast<std::size_t>(settings.prefetch));
    Progress progress(fmt::format("linprobe epoch {}", epoch + 1), iterations * B, "images");
    progress.update(static_cast<std::uint64_t>(state.steps_in_epoch) * B);
    while (static_cast<std::uint64_t>(state.steps_in_epoch) < iterations) {
      const auto step_start = Clock::now();
      const auto it = static_cast<std::uint64_t>(state.steps_in_epoch);
      if (!prefetcher.next(batch)) throw Error("linprobe: the data ended before the epoch did");
#pragma omp parallel for schedule(dynamic, 1)
      for (std::ptrdiff_t i = 0; i < static_cast<std::ptrdiff_t>(rows); ++i)
        probe_training_crop(batch.images.data() + static_cast<std::size_t>(i) * train.image_bytes(),
                            stored, crop, config.seed, epoch, batch.indices[static_cast<std::size_t>(i)],
                            settings.crop, crops.data() + static_cast<std::size_t>(i) * crop_bytes);
      runner.crop_features(crops.data(), rows, settings.pool, features.data());
      const double lr = probe_learning_rate(
          config, static_cast<double>(epoch) + static_cast<double>(it) / static_cast<double>(iterations));
      const double local_loss = probe_train_step(state, features.data(), batch.labels.data(), rows,
                                                 B, lr, config, comm);
      state.epoch_loss_sum += comm.allreduce(local_loss);
      state.epoch_last_lr = lr;
      state.steps_in_epoch = static_cast<std::int64_t>(it + 1);
      state.epoch_seconds += seconds_since(step_start);
      progress.update((it + 1) * B);
      if (it + 1 < iterations && comm.any(stop_requested && stop_requested())) {
        if (save) save(state);
        return ProbeRunEnd::stopped_on_request;
      }
    }
    // (no final progress line: the epoch's summary line follows)
    const auto eval_start = Clock::now();
    EpochTraining t;
    t.mean_loss = iterations > 0 ? state.epoch_loss_sum / static_cast<double>(iterations * B) : 0.0;
    t.last_lr = state.epoch_last_lr;
    state.epochs_done += 1;
    const ProbeEvaluation e = evaluate_probe(state, val, comm);
    const double seconds = state.epoch_seconds + seconds_since(eval_start);
    state.steps_in_epoch = 0;
    state.epoch_loss_sum = 0.0;
    state.epoch_seconds = 0.0;
    state.epoch_last_lr = 0.0;
    record_probe_epoch(state, t, e, seconds, iterations * B + val.n, config);
    if (save) save(state);
    ++run_epochs;
    if (state.epochs_done < config.epochs && comm.any(stop_requested && stop_requested()))
      return ProbeRunEnd::stopped_on_request;
  }
  return ProbeRunEnd::complete;
}

}  // namespace kmim::eval
