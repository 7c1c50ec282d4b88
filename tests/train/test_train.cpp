// The pretraining engine's parts (kmim/train): RandomResizedCrop geometry (bounds, fallback,
// determinism per (seed, epoch, index)), the flip, the crop+resize against io::resize_bicubic,
// the input builder's batch-split independence, checkpoints (round trip, damage detection,
// non-finite refusal, pruning, identities), metrics.jsonl truncation on resume, and the
// SIGUSR1/SIGTERM stop request.
#define BOOST_TEST_MODULE train
#include <hdf5.h>
#include <unistd.h>

#include <boost/test/unit_test.hpp>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "kmim/core/error.hpp"
#include "kmim/core/rng.hpp"
#include "kmim/core/stop_request.hpp"
#include "kmim/dist/mpi.hpp"
#include "kmim/io/atomic_output.hpp"
#include "kmim/io/hdf5.hpp"
#include "kmim/io/image.hpp"
#include "kmim/kmeans/patches.hpp"
#include "kmim/model/vit_mae.hpp"
#include "kmim/tokenize/target_tokenizer.hpp"
#include "kmim/train/augment.hpp"
#include "kmim/train/checkpoint.hpp"
#include "kmim/train/metrics_log.hpp"
#include "kmim/train/pretrain_inputs.hpp"

using namespace kmim;
using namespace kmim::train;
namespace fs = std::filesystem;
namespace km = kmim::model;

namespace {

struct MpiFixture {
  dist::MpiSession session;
};

bool throws_with(const std::function<void()>& f, const std::string& text) {
  try {
    f();
  } catch (const Error& e) {
    BOOST_TEST_MESSAGE("message: " << e.what());
    return std::string(e.what()).find(text) != std::string::npos;
  }
  return false;
}

fs::path scratch(const std::string& name) {
  const fs::path p =
      fs::temp_directory_path() / ("kmim_test_train_" + std::to_string(::getpid())) / name;
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

std::vector<std::uint8_t> random_image(int h, int w, std::uint64_t seed) {
  RandomStream rng(seed, 3);
  std::vector<std::uint8_t> v(static_cast<std::size_t>(h) * w * 3);
  for (auto& x : v) x = static_cast<std::uint8_t>(rng.below(256));
  return v;
}

}  // namespace

BOOST_TEST_GLOBAL_FIXTURE(MpiFixture);

// ------------------------------------------------------------------ RandomResizedCrop

BOOST_AUTO_TEST_CASE(random_resized_crop_boxes_respect_scale_and_ratio) {
  for (const auto& [h, w] : std::vector<std::pair<int, int>>{{40, 40}, {40, 64}, {256, 200}}) {
    const double area = static_cast<double>(h) * w;
    int min_top = h, max_bottom_gap = h, fallbacks = 0;
    double min_scale = 1e9, max_scale = 0;
    const CropBox fallback = fallback_crop_box(h, w);
    for (std::uint64_t i = 0; i < 3000; ++i) {
      RandomStream rng(1, stream_id({9, i}));
      const CropBox b = random_resized_crop_box(rng, h, w);
      BOOST_TEST_REQUIRE((b.top >= 0 && b.left >= 0 && b.height >= 1 && b.width >= 1));
      BOOST_TEST_REQUIRE((b.top + b.height <= h && b.left + b.width <= w));
      if (b == fallback) {
        ++fallbacks;
        continue;
      }
      // w = round(sqrt(A r)), h = round(sqrt(A / r)) with A in [0.2, 1]·area, r in [3/4, 4/3]:
      // the rounding moves each side by at most 1/2.
      const double bw = b.width, bh = b.height;
      BOOST_TEST((bw + 0.5) * (bh + 0.5) >= 0.2 * area);
      BOOST_TEST((bw - 0.5) * (bh - 0.5) <= area);
      BOOST_TEST((bw + 0.5) / (bh - 0.5) >= 0.75 - 1e-12);
      BOOST_TEST((bw - 0.5) / (bh + 0.5) <= 4.0 / 3.0 + 1e-12);
      min_scale = std::min(min_scale, bw * bh / area);
      max_scale = std::max(max_scale, bw * bh / area);
      min_top = std::min(min_top, b.top);
      max_bottom_gap = std::min(max_bottom_gap, h - b.top - b.height);
    }
    // The whole scale range is used and the positions reach both edges.
    BOOST_TEST(min_scale < 0.25);
    BOOST_TEST(max_scale > 0.75);  // 40x64 allows at most 53x40 (ratio 4/3): 0.83
    BOOST_TEST(min_top == 0);
    BOOST_TEST(max_bottom_gap == 0);
    BOOST_TEST(fallbacks < 300);  // the fallback is rare for these shapes
  }
}

BOOST_AUTO_TEST_CASE(random_resized_crop_fallback_is_the_ratio_clamped_centre) {
  // A scale range no attempt can satisfy forces the fallback.
  RandomResizedCropRange impossible;
  impossible.scale_min = 2.0;
  impossible.scale_max = 3.0;
  RandomStream rng(0, 1);
  // Wide: W/H = 2.5 > 4/3 → h = H, w = round(H · 4/3) = 53, centred.
  BOOST_TEST((random_resized_crop_box(rng, 40, 100, impossible) == CropBox{0, 23, 40, 53}));
  // Tall: W/H = 1/3 < 3/4 → w = W, h = round(W / (3/4)) = 40, centred.
  BOOST_TEST((random_resized_crop_box(rng, 90, 30, impossible) == CropBox{25, 0, 40, 30}));
  // Within the ratio range: the whole image.
  BOOST_TEST((random_resized_crop_box(rng, 40, 48, impossible) == CropBox{0, 0, 40, 48}));
  // Python's round halves to even: H = 3, ratio_max 1.5 → w = round(4.5) = 4, not 5.
  RandomResizedCropRange r = impossible;
  r.ratio_max = 1.5;
  BOOST_TEST((random_resized_crop_box(rng, 3, 10, r) == CropBox{0, 3, 3, 4}));
  // A 1x1 image still gets a valid box.
  BOOST_TEST((random_resized_crop_box(rng, 1, 1) == CropBox{0, 0, 1, 1}));
}

BOOST_AUTO_TEST_CASE(augmentation_is_a_function_of_seed_epoch_and_index) {
  std::set<std::tuple<int, int, int, int, bool>> seen;
  int flips = 0;
  for (std::uint64_t index = 0; index < 400; ++index) {
    const SampleAugmentation a = draw_augmentation(5, 2, index, 40, 40);
    const SampleAugmentation b = draw_augmentation(5, 2, index, 40, 40);
    BOOST_TEST((a.box == b.box && a.flip == b.flip));
    seen.insert({a.box.top, a.box.left, a.box.height, a.box.width, a.flip});
    flips += a.flip ? 1 : 0;
  }
  BOOST_TEST(seen.size() > 350u);            // images get different crops
  BOOST_TEST((flips > 150 && flips < 250));  // p = 0.5
  int same_epoch = 0, same_seed = 0;
  for (std::uint64_t index = 0; index < 100; ++index) {
    const auto a = draw_augmentation(5, 2, index, 40, 40);
    same_epoch += a.box == draw_augmentation(5, 3, index, 40, 40).box;
    same_seed += a.box == draw_augmentation(6, 2, index, 40, 40).box;
  }
  BOOST_TEST(same_epoch < 10);
  BOOST_TEST(same_seed < 10);
  // Masking noise: deterministic, in [0, 1), and keyed by epoch.
  std::vector<float> n1(64), n2(64), n3(64);
  draw_mask_noise(5, 2, 17, 64, n1.data());
  draw_mask_noise(5, 2, 17, 64, n2.data());
  draw_mask_noise(5, 3, 17, 64, n3.data());
  BOOST_TEST(n1 == n2);
  BOOST_TEST(n1 != n3);
  for (float u : n1) BOOST_TEST((u >= 0.0f && u < 1.0f));
}

BOOST_AUTO_TEST_CASE(horizontal_flip_mirrors_columns) {
  const int h = 5, w = 7;
  auto img = random_image(h, w, 1);
  auto flipped = img;
  horizontal_flip(flipped.data(), h, w, 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c)
        BOOST_TEST(flipped[(static_cast<std::size_t>(y) * w + x) * 3 + c] ==
                   img[(static_cast<std::size_t>(y) * w + (w - 1 - x)) * 3 + c]);
  horizontal_flip(flipped.data(), h, w, 3);
  BOOST_TEST(flipped == img);
}

BOOST_AUTO_TEST_CASE(resized_crop_matches_crop_then_resize_bicubic) {
  const int h = 48, w = 40;
  // A smooth image plus noise: both the filter and the rounding are exercised.
  std::vector<std::uint8_t> img = random_image(h, w, 2);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c) {
        auto& v = img[(static_cast<std::size_t>(y) * w + x) * 3 + c];
        v = static_cast<std::uint8_t>((v / 4) + 3 * x + 2 * y + 20 * c);
      }
  io::Image full(w, h, 3);
  full.pixels = img;
  for (const CropBox box : {CropBox{3, 5, 20, 17}, CropBox{0, 0, 48, 40}, CropBox{8, 2, 40, 36},
                            CropBox{7, 9, 9, 12}}) {
    const int out = 32;
    std::vector<std::uint8_t> got(static_cast<std::size_t>(out) * out * 3);
    resized_crop_bicubic(img.data(), h, w, 3, box, out, got.data());
    io::Image crop(box.width, box.height, 3);
    for (int y = 0; y < box.height; ++y)
      for (int x = 0; x < box.width; ++x)
        for (int c = 0; c < 3; ++c) crop.at(y, x, c) = full.at(box.top + y, box.left + x, c);
    const io::Image want = io::resize_bicubic(crop, out, out);
    int worst = 0;
    for (std::size_t i = 0; i < got.size(); ++i)
      worst =
          std::max(worst, std::abs(static_cast<int>(got[i]) - static_cast<int>(want.pixels[i])));
    BOOST_TEST(worst <= 1);
  }
  std::vector<std::uint8_t> out(32 * 32 * 3);
  BOOST_CHECK_THROW(
      resized_crop_bicubic(img.data(), h, w, 3, CropBox{40, 0, 10, 10}, 32, out.data()), Error);
}

// -------------------------------------------------------------------------- input builder

BOOST_AUTO_TEST_CASE(input_builder_does_not_depend_on_how_the_batch_is_split) {
  km::ModelConfig c = km::model_preset("vit_tiny_demo");
  c.out_dim = 10;
  const int stored = 40, n = 6;
  tokenize::RandomTargets tok(10, c.num_patches(), 3);
  PretrainInputBuilder builder(c, 42, stored, &tok);
  std::vector<std::uint8_t> images;
  for (int i = 0; i < n; ++i) {
    const auto im = random_image(stored, stored, 100 + static_cast<std::uint64_t>(i));
    images.insert(images.end(), im.begin(), im.end());
  }
  std::vector<std::uint64_t> indices = {11, 3, 57, 8, 21, 4};
  std::vector<std::int32_t> labels = {1, 2, 3, 4, 5, 6};
  PretrainInputs all, first, second;
  builder.build(7, indices, images, labels, all);
  const std::size_t half_bytes = images.size() / 2;
  builder.build(7, std::span(indices).first(3), std::span(images).first(half_bytes),
                std::span(labels).first(3), first);
  builder.build(7, std::span(indices).subspan(3), std::span(images).subspan(half_bytes),
                std::span(labels).subspan(3), second);
  auto joined = [](const auto& a, const auto& b) {
    auto v = a;
    v.insert(v.end(), b.begin(), b.end());
    return v;
  };
  BOOST_TEST(all.crops == joined(first.crops, second.crops));
  BOOST_TEST(all.patches == joined(first.patches, second.patches));
  BOOST_TEST(all.noise == joined(first.noise, second.noise));
  BOOST_TEST(all.targets == joined(first.targets, second.targets));
  // The model input is the ImageNet-normalised patchified crop.
  std::vector<float> want(static_cast<std::size_t>(c.num_patches()) * c.patch_dim());
  kmeans::extract_patches(all.crops.data() + 2 * 32 * 32 * 3, 32, 32, {32, 4, 3},
                          kmeans::PixelNormalization::imagenet(), {}, want.data());
  BOOST_TEST(std::equal(want.begin(), want.end(),
                        all.patches.begin() + 2 * static_cast<std::ptrdiff_t>(want.size())));
  // The crop is what draw_augmentation says for (seed, epoch, index).
  const SampleAugmentation a = draw_augmentation(42, 7, 57, stored, stored);
  std::vector<std::uint8_t> crop(32 * 32 * 3);
  resized_crop_bicubic(images.data() + 2 * stored * stored * 3, stored, stored, 3, a.box, 32,
                       crop.data());
  if (a.flip) horizontal_flip(crop.data(), 32, 32, 3);
  BOOST_TEST(std::equal(crop.begin(), crop.end(), all.crops.begin() + 2 * 32 * 32 * 3));
  // Another epoch: other crops and masks.
  PretrainInputs other;
  builder.build(8, indices, images, labels, other);
  BOOST_TEST(other.crops != all.crops);
  BOOST_TEST(other.noise != all.noise);
}

// ----------------------------------------------------------------------------- checkpoints

namespace {

Checkpoint sample_checkpoint(std::uint64_t seed) {
  km::ModelConfig c = km::model_preset("vit_tiny_demo");
  c.out_dim = 16;
  Checkpoint ck(c);
  km::init_parameters(ck.params, seed);
  RandomStream rng(seed, 2);
  ck.exp_avg.resize(ck.params.size());
  ck.exp_avg_sq.resize(ck.params.size());
  for (auto& v : ck.exp_avg) v = static_cast<float>(rng.normal() * 1e-3);
  for (auto& v : ck.exp_avg_sq) v = static_cast<float>(rng.uniform() * 1e-6);
  ck.adam_step = 37;
  ck.adam.weight_decay = 0.05;
  ck.progress.step = 37;
  ck.progress.epoch = 3;
  ck.progress.step_in_epoch = 7;
  ck.progress.steps_per_epoch = 10;
  ck.progress.images_seen = 37 * 64;
  ck.progress.epoch_loss_sum = 12.5;
  ck.progress.epoch_accuracy_sum = 1.75;
  ck.progress.epoch_steps = 7;
  ck.progress.epoch_seconds = 1.5;
  ck.progress.elapsed_seconds = 9.25;
  ck.progress.last_lr = 1.5e-4;
  ck.run_identity = "model.name = vit_tiny_demo\nseed = 1\n";
  ck.tokenizer_kind = "pixel";
  ck.tokenizer_description = "pixel codebook 'cb.h5'";
  ck.manifest = "shards/train.h5";
  ck.manifest_fingerprint = "0123456789abcdef";
  return ck;
}

}  // namespace

BOOST_AUTO_TEST_CASE(checkpoint_round_trip_keeps_every_bit) {
  const fs::path dir = scratch("roundtrip");
  const Checkpoint ck = sample_checkpoint(1);
  const fs::path file = checkpoint_path(dir, ck.progress.step);
  BOOST_TEST(file.filename() == "checkpoint-00000037.h5");
  write_checkpoint(file, ck, "test_train", "seed = 1\n");
  BOOST_TEST(!fs::exists(dir / "checkpoint-00000037.h5.partial"));
  const Checkpoint back = read_checkpoint(file);
  BOOST_TEST((back.params.config() == ck.params.config()));
  BOOST_TEST(std::equal(back.params.values().begin(), back.params.values().end(),
                        ck.params.values().begin()));
  BOOST_TEST(back.exp_avg == ck.exp_avg);
  BOOST_TEST(back.exp_avg_sq == ck.exp_avg_sq);
  BOOST_TEST(back.adam_step == 37);
  BOOST_TEST(back.progress.step_in_epoch == 7);
  BOOST_TEST(back.progress.epoch_loss_sum == 12.5);
  BOOST_TEST(back.progress.last_lr == 1.5e-4);
  BOOST_TEST(back.run_identity == ck.run_identity);
  BOOST_TEST(back.manifest_fingerprint == ck.manifest_fingerprint);
  // The documented layout: MAE names and shapes under /model, readable without kmim.
  const io::H5Object f = io::open_file(file);
  BOOST_TEST(f.string_attribute("kind") == kCheckpointKind);
  const auto qkv = f.group("model").dataset("blocks.0.attn.qkv.weight").dims();
  BOOST_TEST((qkv == std::vector<hsize_t>{192, 64}));
  BOOST_TEST((f.group("model").dataset("cls_token").dims() == std::vector<hsize_t>{1, 1, 64}));
  BOOST_TEST(f.group("optimizer").group("exp_avg").has("decoder_pred.weight"));
  BOOST_TEST(f.group("model").attribute<std::int32_t>("embed_dim") == 64);
  // load_model_parameters and read_checkpoint_model_config see the same model.
  const km::Parameters p = load_model_parameters(file);
  BOOST_TEST(std::equal(p.values().begin(), p.values().end(), ck.params.values().begin()));
  BOOST_TEST(read_checkpoint_model_config(file).out_dim == 16);
}

BOOST_AUTO_TEST_CASE(damaged_and_truncated_checkpoints_are_detected_and_skipped) {
  const fs::path dir = scratch("damaged");
  for (std::int64_t step : {10, 20, 30}) {
    Checkpoint ck = sample_checkpoint(static_cast<std::uint64_t>(step));
    ck.progress.step = step;
    write_checkpoint(checkpoint_path(dir, step), ck, "test_train", "");
  }
  std::ofstream(dir / "checkpoint-00000040.h5.partial") << "unfinished";
  std::ofstream(dir / "notes.h5") << "other";
  const auto files = list_checkpoints(dir);
  BOOST_TEST_REQUIRE(files.size() == 3u);
  BOOST_TEST(files.back().step == 30);
  // Truncate the newest: the previous one is chosen, and the skipped one is named.
  const fs::path newest = files.back().path;
  fs::resize_file(newest, fs::file_size(newest) / 2);
  std::vector<std::string> skipped;
  auto pick = newest_valid_checkpoint(dir, skipped);
  BOOST_TEST_REQUIRE(pick.has_value());
  BOOST_TEST(pick->step == 20);
  BOOST_TEST_REQUIRE(skipped.size() == 1u);
  BOOST_TEST(skipped[0].find("checkpoint-00000030.h5") != std::string::npos);
  // Flip bits inside a tensor of the middle one (a valid HDF5 file, wrong data): the CRC catches
  // it.
  {
    const io::H5Object f = io::open_file(files[1].path, io::FileMode::read_write);
    const io::H5Dataset d = f.group("model").dataset("norm.weight");
    std::vector<float> v = d.read<float>();
    v[3] += 1.0f;
    d.write<float>(v);
  }
  BOOST_TEST(throws_with([&] { (void)read_checkpoint(files[1].path); }, "checksum mismatch"));
  skipped.clear();
  pick = newest_valid_checkpoint(dir, skipped);
  BOOST_TEST_REQUIRE(pick.has_value());
  BOOST_TEST(pick->step == 10);
  BOOST_TEST(skipped.size() == 2u);
  BOOST_TEST(
      throws_with([&] { (void)read_checkpoint(dir / "notes.h5"); }, "not a readable HDF5 file"));
  // Pruning keeps the newest N (by step).
  const auto removed = prune_checkpoints(dir, 2);
  BOOST_TEST(removed.size() == 1u);
  BOOST_TEST(list_checkpoints(dir).front().step == 20);
  BOOST_TEST(prune_checkpoints(dir, 0).empty());
}

BOOST_AUTO_TEST_CASE(non_finite_state_is_never_written) {
  const fs::path dir = scratch("nonfinite");
  Checkpoint ck = sample_checkpoint(3);
  ck.params.tensor("blocks.1.mlp.fc1.weight")[5] = std::numeric_limits<float>::quiet_NaN();
  const fs::path file = checkpoint_path(dir, 5);
  BOOST_TEST(throws_with([&] { write_checkpoint(file, ck, "test_train", ""); },
                         "blocks.1.mlp.fc1.weight"));
  BOOST_TEST(!fs::exists(file));
  BOOST_TEST(!fs::exists(io::partial_path(file)));
  Checkpoint ck2 = sample_checkpoint(3);
  ck2.exp_avg_sq[0] = std::numeric_limits<float>::infinity();
  BOOST_TEST(throws_with([&] { write_checkpoint(file, ck2, "test_train", ""); }, "second moment"));
  BOOST_TEST(!fs::exists(file));
}

BOOST_AUTO_TEST_CASE(identity_difference_names_the_first_differing_setting) {
  const std::string a = "model.name = vit_tiny_demo\nmodel.embed_dim = 64\ntokenizer.k = 16\n";
  BOOST_TEST(identity_difference(a, a).empty());
  const std::string b = "model.name = vit_tiny_demo\nmodel.embed_dim = 64\ntokenizer.k = 50\n";
  BOOST_TEST(identity_difference(a, b) == "tokenizer.k: checkpoint has '16', this run '50'");
  BOOST_TEST(identity_difference(a, "model.name = vit_tiny_demo\nmodel.embed_dim = 64\n") ==
             "tokenizer.k: checkpoint has '16', this run '(not set)'");
}

// ---------------------------------------------------------------------------- metrics log

BOOST_AUTO_TEST_CASE(metrics_log_drops_records_after_the_resumed_step) {
  const fs::path dir = scratch("metrics");
  const fs::path file = dir / "metrics.jsonl";
  {
    MetricsLog log(file, -1);
    for (int s = 1; s <= 6; ++s) log.append({{"type", "step"}, {"step", s}, {"loss", 1.0 / s}});
    log.append({{"type", "epoch"}, {"step", 6}, {"epoch", 0}});
  }
  std::ofstream(file, std::ios::app) << "{\"type\": \"step\", \"step\": 7, \"lo";  // torn last line
  {
    MetricsLog log(file, 4);  // resumed from step 4
    log.append({{"type", "step"}, {"step", 5}, {"loss", 0.5}});
  }
  std::ifstream in(file);
  std::vector<std::int64_t> steps;
  std::string line;
  while (std::getline(in, line))
    steps.push_back(nlohmann::json::parse(line)["step"].get<std::int64_t>());
  BOOST_TEST((steps == std::vector<std::int64_t>{1, 2, 3, 4, 5}));
  MetricsLog fresh(file, -1);
  BOOST_TEST(fs::file_size(file) == 0u);
}

// ----------------------------------------------------------------------------- stop request

BOOST_AUTO_TEST_CASE(stop_request_is_set_by_sigusr1_and_sigterm) {
  BOOST_TEST(kExitCheckpointed == 75);
  {
    StopRequest stop;
    BOOST_TEST(!stop.requested());
    std::raise(SIGUSR1);
    BOOST_TEST(stop.requested());
    BOOST_TEST(stop.signal_number() == SIGUSR1);
  }
  {
    StopRequest stop;
    BOOST_TEST(!stop.requested());
    std::raise(SIGTERM);  // would end the process without the handler
    BOOST_TEST(stop.requested());
    BOOST_TEST(stop.signal_number() == SIGTERM);
  }
}
