// The evaluation stage's frozen encoder (SPEC §2 "Feature tokenizer", §4): loading a checkpoint
// (learned position embeddings of converted models included), the centre-crop features against a
// hand-written reference (extract_patches + encoder_forward + pooling), the feature tokenizer
// TCAS measures, the probe's training crops, and the report's inputs and summary table.
#define BOOST_TEST_MODULE eval_encoder
#include <boost/test/unit_test.hpp>

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "kmim/core/error.hpp"
#include "kmim/core/rng.hpp"
#include "kmim/dist/mpi.hpp"
#include "kmim/eval/encoder_probe.hpp"
#include "kmim/eval/feature_codebook_tokenizer.hpp"
#include "kmim/eval/frozen_encoder.hpp"
#include "kmim/eval/results_report.hpp"
#include "kmim/io/hdf5.hpp"
#include "kmim/io/shard_dataset.hpp"
#include "kmim/kmeans/assign.hpp"
#include "kmim/kmeans/codebook.hpp"
#include "kmim/kmeans/patches.hpp"
#include "kmim/model/encoder_features.hpp"
#include "kmim/train/checkpoint.hpp"

using namespace kmim;
using namespace kmim::eval;
namespace fs = std::filesystem;

namespace {

struct MpiFixture {
  dist::MpiSession session;
};

bool throws_with(const std::function<void()>& f, const std::string& text) {
  try {
    f();
  } catch (const Error& e) {
    if (std::string(e.what()).find(text) != std::string::npos) return true;
    BOOST_TEST_MESSAGE("unexpected message: " << e.what());
    return false;
  }
  return false;
}

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("kmim_test_encoder_eval_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

/// A small model: 16×16 images, 4×4 patches (L = 16), width 32, 2 blocks.
model::ModelConfig small_config() {
  model::ModelConfig c;
  c.name = "test_small";
  c.img_size = 16;
  c.patch_size = 4;
  c.embed_dim = 32;
  c.depth = 2;
  c.num_heads = 4;
  c.decoder_embed_dim = 16;
  c.decoder_depth = 1;
  c.decoder_num_heads = 2;
  c.out_dim = 8;
  return c;
}

/// Writes a checkpoint of small_config() with seeded initial parameters.
fs::path write_small_checkpoint(const fs::path& dir, std::uint64_t seed) {
  train::Checkpoint ck(small_config());
  model::init_parameters(ck.params, seed);
  ck.exp_avg.assign(ck.params.size(), 0.0f);
  ck.exp_avg_sq.assign(ck.params.size(), 0.0f);
  ck.tokenizer_kind = "pixel";
  ck.run_identity = "kind = pixel\ncentroids_crc32 = 0badc0de\n";
  const fs::path file = dir / ("ckpt" + std::to_string(seed) + ".h5");
  train::write_checkpoint(file, ck, "test", "");
  return file;
}

std::vector<std::uint8_t> random_images(std::size_t n, int side, std::uint64_t seed) {
  RandomStream rng(seed, 7);
  std::vector<std::uint8_t> pixels(n * static_cast<std::size_t>(side * side * 3));
  for (auto& p : pixels) p = static_cast<std::uint8_t>(rng.below(256));
  return pixels;
}

/// The reference: centre crop + ImageNet normalisation + patchify, encoder_forward over all
/// images at once, with an optional position table.
std::vector<float> reference_tokens(const model::Parameters& params, const std::uint8_t* images,
                                    std::size_t n, int side, const std::vector<float>& pos = {}) {
  const model::ModelConfig& c = params.config();
  const std::size_t l = static_cast<std::size_t>(c.num_patches()), pd = static_cast<std::size_t>(c.patch_dim());
  std::vector<float> patches(n * l * pd);
  for (std::size_t i = 0; i < n; ++i)
    kmeans::extract_patches(images + i * static_cast<std::size_t>(side * side * 3), side, side,
                            {c.img_size, c.patch_size, 3}, kmeans::PixelNormalization::imagenet(), {},
                            patches.data() + i * l * pd);
  model::EncoderWorkspace<float> ws(c, static_cast<int>(n));
  if (!pos.empty()) ws.pos_embed = pos;
  std::vector<float> tokens(n * (l + 1) * static_cast<std::size_t>(c.embed_dim));
  model::encoder_forward(params, patches.data(), static_cast<int>(n), ws, tokens.data());
  return tokens;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(static_cast<double>(a[i]) - b[i]));
  return a.size() == b.size() ? m : 1e300;
}

}  // namespace

BOOST_TEST_GLOBAL_FIXTURE(MpiFixture);

BOOST_AUTO_TEST_CASE(pooling_takes_cls_mean_or_every_patch) {
  // tokens [2 images, 1 + 3, 2]: value = 100·image + 10·row + column.
  std::vector<float> tokens;
  for (int i = 0; i < 2; ++i)
    for (int r = 0; r < 4; ++r)
      for (int c = 0; c < 2; ++c) tokens.push_back(static_cast<float>(100 * i + 10 * r + c));
  std::vector<float> cls(4), mean(4), patches(12);
  pool_tokens(tokens.data(), 2, 3, 2, FeaturePool::cls, cls.data());
  pool_tokens(tokens.data(), 2, 3, 2, FeaturePool::mean, mean.data());
  pool_tokens(tokens.data(), 2, 3, 2, FeaturePool::patches, patches.data());
  BOOST_TEST(cls == (std::vector<float>{0, 1, 100, 101}), boost::test_tools::per_element());
  BOOST_TEST(mean == (std::vector<float>{20, 21, 120, 121}), boost::test_tools::per_element());
  BOOST_TEST(patches[0] == 10.0f);
  BOOST_TEST(patches[11] == 131.0f);
  BOOST_TEST(feature_pool_name(feature_pool_from_name("mean")) == "mean");
  BOOST_TEST(throws_with([] { feature_pool_from_name("max"); }, "option --pool=max: must be cls, mean or patches"));
}

BOOST_AUTO_TEST_CASE(centre_crop_features_equal_the_direct_encoder_forward) {
  TempDir tmp;
  const fs::path file = write_small_checkpoint(tmp.path, 3);
  const FrozenEncoder enc = load_frozen_encoder(file);
  BOOST_TEST(enc.position_embedding.empty());
  BOOST_TEST(enc.tokenizer_kind == "pixel");
  BOOST_TEST(enc.centroids_crc32 == "0badc0de");
  BOOST_TEST(enc.fingerprint.size() == 8u);
  // Stored 20×20 images: the encoder sees their centred 16×16 crops.
  const std::size_t n = 5;
  const auto images = random_images(n, 20, 11);
  const auto ref = reference_tokens(enc.params, images.data(), n, 20);
  const std::size_t l = 16, d = 32;
  for (const int batch : {1, 2, 5}) {
    EncoderRunner runner(enc, batch);
    std::vector<float> tokens(n * (l + 1) * d), cls(n * d), patches(n * l * d), mean(n * d);
    runner.center_crop_tokens(images.data(), n, 20, tokens.data());
    runner.center_crop_features(images.data(), n, 20, FeaturePool::cls, cls.data());
    runner.center_crop_features(images.data(), n, 20, FeaturePool::patches, patches.data());
    runner.center_crop_features(images.data(), n, 20, FeaturePool::mean, mean.data());
    // Same images, same layers: equal up to the sgemm blocking of different batch sizes.
    BOOST_TEST(max_abs_diff(tokens, ref) < 1e-5);
    std::vector<float> want(n * d);
    pool_tokens(ref.data(), n, l, d, FeaturePool::cls, want.data());
    BOOST_TEST(max_abs_diff(cls, want) < 1e-5);
    pool_tokens(ref.data(), n, l, d, FeaturePool::mean, want.data());
    BOOST_TEST(max_abs_diff(mean, want) < 1e-5);
    std::vector<float> want_patches(n * l * d);
    pool_tokens(ref.data(), n, l, d, FeaturePool::patches, want_patches.data());
    BOOST_TEST(max_abs_diff(patches, want_patches) < 1e-5);
  }
  // A batch of 5 run whole is the reference computation itself: bit for bit.
  EncoderRunner whole(enc, 5);
  std::vector<float> tokens(n * (l + 1) * d);
  whole.center_crop_tokens(images.data(), n, 20, tokens.data());
  BOOST_TEST(max_abs_diff(tokens, ref) == 0.0);
  // Smaller stored images than the model's input: refused, naming the checkpoint.
  BOOST_TEST(throws_with([&] { check_encoder_fits_images(enc, 12, "val.h5"); },
                         "model img_size 16 is larger than the stored images (12x12) of 'val.h5'"));
}

BOOST_AUTO_TEST_CASE(a_stored_learned_position_embedding_replaces_the_sincos_table) {
  TempDir tmp;
  const fs::path file = write_small_checkpoint(tmp.path, 5);
  const FrozenEncoder plain = load_frozen_encoder(file);
  std::vector<float> table(17 * 32);
  RandomStream rng(1, 2);
  for (float& v : table) v = static_cast<float>(rng.normal() * 0.5);
  {
    const io::H5Object f = io::open_file(file, io::FileMode::read_write);
    const io::H5Object m = f.group("model");
    const auto d = m.write_dataset<float>("pos_embed", table, {1, 17, 32});
    io::shard_format::Checksum crc;
    crc.add(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(table.data()),
                                          table.size() * sizeof(float)));
    d.set_attribute<std::uint32_t>("crc32", crc.value());
  }
  const FrozenEncoder learned = load_frozen_encoder(file);
  BOOST_TEST(learned.position_embedding == table, boost::test_tools::per_element());
  BOOST_TEST(learned.fingerprint != plain.fingerprint);
  BOOST_TEST(learned.description().find("learned position embedding") != std::string::npos);
  const auto images = random_images(3, 16, 4);
  EncoderRunner runner(learned, 3);
  std::vector<float> ours(3 * 17 * 32);
  runner.center_crop_tokens(images.data(), 3, 16, ours.data());
  BOOST_TEST(max_abs_diff(ours, reference_tokens(learned.params, images.data(), 3, 16, table)) == 0.0);
  BOOST_TEST(max_abs_diff(ours, reference_tokens(learned.params, images.data(), 3, 16)) > 1e-3);

  // A damaged table (checksum) and a table of the wrong shape are refused.
  {
    const io::H5Object f = io::open_file(file, io::FileMode::read_write);
    f.group("model").dataset("pos_embed").set_attribute<std::uint32_t>("crc32", 12345u);
  }
  BOOST_TEST(throws_with([&] { load_frozen_encoder(file); }, "/model/pos_embed checksum mismatch"));
  const fs::path other = write_small_checkpoint(tmp.path, 6);
  {
    const io::H5Object f = io::open_file(other, io::FileMode::read_write);
    f.group("model").write_dataset<float>("pos_embed", std::vector<float>(16 * 32), {1, 16, 32});
  }
  BOOST_TEST(throws_with([&] { load_frozen_encoder(other); }, "/model/pos_embed must be float32 [1, 17, 32]"));
  BOOST_TEST(throws_with([&] { load_frozen_encoder(tmp.path / "missing.h5"); }, "does not exist"));
}

BOOST_AUTO_TEST_CASE(feature_tokenizer_gives_the_nearest_centroid_of_each_patch_token) {
  TempDir tmp;
  const fs::path ckpt = write_small_checkpoint(tmp.path, 8);
  FrozenEncoder enc = load_frozen_encoder(ckpt);
  const std::size_t n = 6, l = 16, d = 32, k = 7;
  const auto images = random_images(n, 20, 21);
  const auto tokens = reference_tokens(enc.params, images.data(), n, 20);
  // Centroids: patch tokens of the images (so some patches sit exactly on a centroid).
  kmeans::Codebook cb;
  cb.mode = "feature";
  cb.k = k;
  cb.d = d;
  cb.feature_dataset = "features";
  cb.algorithm = "given";
  cb.init = "given";
  for (std::size_t j = 0; j < k; ++j) {
    const float* t = tokens.data() + ((j % n) * (l + 1) + 1 + (j * 5) % l) * d;
    cb.centroids.insert(cb.centroids.end(), t, t + d);
  }
  cb.save(tmp.path / "fcb.h5", "test", "");
  FeatureCodebook fcb = load_feature_codebook(tmp.path / "fcb.h5");
  BOOST_TEST(fcb.k == k);
  BOOST_TEST(fcb.centroids_crc32.size() == 8u);
  auto cache = std::make_shared<EncoderTokenCache>(std::move(enc));
  FeatureCodebookTokenizer tokenizer(fcb, cache, 20, "feature_k7");
  BOOST_TEST(tokenizer.patches_per_image() == 16);
  BOOST_TEST(tokenizer.kind() == "feature");
  std::vector<std::uint64_t> indices(n);
  std::vector<std::int32_t> labels(n, 0);
  for (std::size_t i = 0; i < n; ++i) indices[i] = 100 + i;
  const ImageBatchView view{images, 20, indices, labels};
  std::vector<std::int32_t> got(n * l);
  tokenizer.tokenize(view, got);
  // Reference: exact (double) nearest centroid of every patch token (CLS dropped). The
  // tokenizer encodes one image at a time; the reference encodes all six at once: the tokens
  // agree to float rounding, which does not move a patch to another centroid here.
  std::vector<float> patch_tokens(n * l * d), dist2(n * l);
  pool_tokens(tokens.data(), n, l, d, FeaturePool::patches, patch_tokens.data());
  std::vector<std::int32_t> want(n * l);
  kmeans::assign_nearest_centroid_reference(patch_tokens.data(), n * l, d, fcb.centroids.data(), k,
                                            want.data(), dist2.data());
  std::size_t same = 0;
  for (std::size_t i = 0; i < n * l; ++i) same += got[i] == want[i] ? 1 : 0;
  BOOST_TEST(same == n * l);
  BOOST_TEST(got[(0 * l) + 0] >= 0);
  BOOST_TEST(got[1 * l + 5] == 1);  // the patch that IS centroid 1 (image 1, patch 5)

  // A codebook over features of another width, and a pixel codebook, are refused.
  FeatureCodebook wide = fcb;
  wide.d = 16;
  wide.centroids.resize(k * 16);
  BOOST_TEST(throws_with([&] { FeatureCodebookTokenizer(wide, cache, 20, "x"); },
                         "centroids have d = 16 values, but the encoder of"));
  BOOST_TEST(throws_with([&] { FeatureCodebookTokenizer(fcb, cache, 12, "x"); },
                         "model img_size 16 is larger than the stored images (12x12)"));
  kmeans::Codebook pixel;
  pixel.mode = "pixel";
  pixel.k = 2;
  pixel.d = 48;
  pixel.patch_size = 4;
  pixel.crop = 16;
  pixel.channels = 3;
  pixel.normalization = kmeans::PixelNormalization::imagenet();
  pixel.algorithm = "given";
  pixel.init = "given";
  pixel.centroids.assign(96, 0.5f);
  pixel.save(tmp.path / "pcb.h5", "test", "");
  BOOST_TEST(throws_with([&] { load_feature_codebook(tmp.path / "pcb.h5"); },
                         "is a pixel-mode codebook; the feature tokenizer needs a feature-mode codebook"));
}

BOOST_AUTO_TEST_CASE(probe_training_crops_are_keyed_by_seed_epoch_and_index) {
  const auto image = random_images(1, 40, 3);
  std::vector<std::uint8_t> a(16 * 16 * 3), b(a.size()), c(a.size()), e(a.size());
  const train::RandomResizedCropRange range{0.08, 1.0, 3.0 / 4.0, 4.0 / 3.0};
  probe_training_crop(image.data(), 40, 16, 1, 2, 9, range, a.data());
  probe_training_crop(image.data(), 40, 16, 1, 2, 9, range, b.data());
  probe_training_crop(image.data(), 40, 16, 1, 3, 9, range, c.data());
  probe_training_crop(image.data(), 40, 16, 1, 2, 10, range, e.data());
  BOOST_TEST(a == b);
  BOOST_TEST(a != c);
  BOOST_TEST(a != e);
  // The crop is the first draw of the keyed stream: its area lies in the scale range.
  int small = 0;
  for (std::uint64_t i = 0; i < 200; ++i) {
    RandomStream rng(1, stream_id({kProbeAugmentKey, 0, i}));
    const train::CropBox box = train::random_resized_crop_box(rng, 40, 40, range);
    const double area = static_cast<double>(box.width) * box.height / 1600.0;
    BOOST_TEST(area <= 1.0);
    BOOST_TEST(area >= 0.04);  // 0.08 up to rounding of tiny boxes
    small += area < 0.2 ? 1 : 0;
  }
  BOOST_TEST(small > 10);  // scale 0.08–1 (not pretraining's 0.2–1) reaches small crops
}

BOOST_AUTO_TEST_CASE(report_inputs_and_the_summary_table) {
  TempDir tmp;
  BOOST_TEST(parse_named_input("linprobe", "k50=a/lp.h5").first == "k50");
  BOOST_TEST(parse_named_input("linprobe", "a/lp_k50.h5").first == "lp_k50");
  BOOST_TEST(throws_with([] { parse_named_input("linprobe", "=x"); }, "option --linprobe==x: expected NAME=PATH"));
  {
    std::ofstream m(tmp.path / "metrics.jsonl");
    m << R"({"type":"step","step":1,"epoch":0,"epoch_progress":0.5,"loss":4.0,"masked_accuracy":0.1,"images_per_second":10})" "\n"
      << R"({"type":"epoch","step":2,"epoch":0,"loss":3.5,"masked_accuracy":0.2})" "\n"
      << R"({"type":"step","step":3,"epoch":1,"epo)" "\n";  // a line cut by a crash
  }
  const PretrainCurves c = read_pretrain_metrics("run", tmp.path);
  BOOST_TEST(c.step_loss.size() == 1u);
  BOOST_TEST(c.epoch == (std::vector<double>{1.0}), boost::test_tools::per_element());
  BOOST_TEST(std::abs(c.epoch_accuracy[0] - 20.0) < 1e-12);
  BOOST_TEST(c.skipped_lines == 1u);
  BOOST_TEST(throws_with([&] { read_pretrain_metrics("x", tmp.path / "none"); }, "does not exist"));

  ResultsReportInputs in;
  TcasEntry pixel{"t.h5", "codebook_k50", "codebook", "cb50.h5", 50, 0.8, 0.7, 0.9, 0.1, 40, "aaaa0001"};
  TcasEntry feature{"t.h5", "feature_k100", "feature", "f100.h5", 100, 0.4, 0.3, 0.9, 0.3, 90, "bbbb0002"};
  TcasEntry label{"t.h5", "label", "label", "", 10, 0.0, 0.0, 0.9, 1.0, 10, ""};
  in.tcas = {pixel, feature, label};
  LinprobeRun probe;
  probe.name = "kmim_pixel";
  probe.mode = "encoder";
  probe.best_top1 = 52.7;
  probe.last_top1 = 51.0;
  probe.tokenizer_kind = "pixel";
  probe.centroids_crc32 = "aaaa0001";
  probe.tokens = 50;
  LinprobeRun other = probe;
  other.name = "mystery";
  other.centroids_crc32 = "cccc0003";
  in.linprobe = {probe, other};
  const std::string md = results_summary_markdown(in, "study");
  BOOST_TEST_MESSAGE(md);
  BOOST_TEST(md.find("| codebook_k50 | K-MIM PIXEL | 50 | 0.8000 | 0.1000 | 40.0 | kmim_pixel | 52.70 | 51.00 |") != std::string::npos);
  BOOST_TEST(md.find("| feature_k100 | K-MIM feature | 100 | 0.4000 | 0.3000 | 90.0 | — | — | — |") != std::string::npos);
  BOOST_TEST(md.find("| label | label (reference) | 10 | 0.0000") != std::string::npos);
  BOOST_TEST(md.find("| mystery | 52.70 | 51.00 |") != std::string::npos);  // no TCAS row: listed alone
  BOOST_TEST(md.find("# study results") == 0u);
}
