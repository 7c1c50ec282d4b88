// Online K-MIM targets (kmim/tokenize) and the encoder-only forward they use (kmim/model/
// encoder_features.hpp): the pixel tokenizer against kmeans::extract_patches +
// assign_nearest_centroid on the crop, batch-composition independence, the feature tokenizer
// against encoder_forward + assignment, the label and random tokenizers (the latter against
// kmim_tcas's), and the clear errors for codebooks that do not fit the model.
#define BOOST_TEST_MODULE tokenize
#include <algorithm>
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <cstdint>
#include <functional>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include "kmim/core/error.hpp"
#include "kmim/core/rng.hpp"
#include "kmim/eval/tcas_tokenizers.hpp"
#include "kmim/kmeans/assign.hpp"
#include "kmim/kmeans/codebook.hpp"
#include "kmim/kmeans/patches.hpp"
#include "kmim/model/encoder_features.hpp"
#include "kmim/model/vit_mae.hpp"
#include "kmim/tokenize/target_tokenizer.hpp"

using namespace kmim;
namespace km = kmim::model;

namespace {

bool throws_with(const std::function<void()>& f, const std::string& text) {
  try {
    f();
  } catch (const Error& e) {
    BOOST_TEST_MESSAGE("message: " << e.what());
    return std::string(e.what()).find(text) != std::string::npos;
  }
  return false;
}

km::ModelConfig demo_config(int out_dim = 16) {
  km::ModelConfig c = km::model_preset("vit_tiny_demo");
  c.out_dim = out_dim;
  c.validate();
  return c;
}

/// Random uint8 crops [n, s, s, 3] with some structure (so nearest centroids differ per patch).
std::vector<std::uint8_t> random_crops(int n, int s, std::uint64_t seed) {
  RandomStream rng(seed, 7);
  std::vector<std::uint8_t> v(static_cast<std::size_t>(n) * s * s * 3);
  for (auto& x : v) x = static_cast<std::uint8_t>(rng.below(256));
  return v;
}

/// The model input of crops: extract_patches with the ImageNet normalisation.
std::vector<float> model_input(const std::vector<std::uint8_t>& crops, int n,
                               const km::ModelConfig& c) {
  const int s = c.img_size;
  std::vector<float> out(static_cast<std::size_t>(n) * c.num_patches() * c.patch_dim());
  for (int i = 0; i < n; ++i)
    kmeans::extract_patches(
        crops.data() + static_cast<std::size_t>(i) * s * s * 3, s, s, {s, c.patch_size, 3},
        kmeans::PixelNormalization::imagenet(), {},
        out.data() + static_cast<std::size_t>(i) * c.num_patches() * c.patch_dim());
  return out;
}

kmeans::Codebook pixel_codebook(int k, int patch, int crop, kmeans::PixelNormalization norm,
                                std::uint64_t seed) {
  kmeans::Codebook cb;
  cb.mode = "pixel";
  cb.k = static_cast<std::size_t>(k);
  cb.d = static_cast<std::size_t>(patch * patch * 3);
  cb.patch_size = patch;
  cb.crop = crop;
  cb.channels = 3;
  cb.normalization = norm;
  // Centroids: patch vectors of random images, so every centroid is near some patches.
  const auto imgs = random_crops(1, crop, seed);
  std::vector<float> all(static_cast<std::size_t>((crop / patch) * (crop / patch)) * cb.d);
  kmeans::extract_patches(imgs.data(), crop, crop, {crop, patch, 3}, norm, {}, all.data());
  cb.centroids.assign(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(cb.k * cb.d));
  return cb;
}

tokenize::TargetInput input_of(const std::vector<std::uint8_t>& crops,
                               const std::vector<float>& patches,
                               const std::vector<std::int32_t>& labels,
                               const std::vector<std::uint64_t>& indices, int n, int s) {
  tokenize::TargetInput in;
  in.batch = n;
  in.crop_size = s;
  in.crops = crops.data();
  in.model_patches = patches.data();
  in.labels = labels.data();
  in.indices = indices.data();
  return in;
}

}  // namespace

// ----------------------------------------------------------------------- encoder_forward

BOOST_AUTO_TEST_CASE(encoder_forward_equals_masked_forward_with_mask_ratio_zero) {
  km::ModelConfig c = demo_config();
  c.mask_ratio = 0.0;
  c.validate();
  BOOST_TEST(c.keep_count() == c.num_patches());
  const int b = 3;
  km::Parameters params(c);
  km::init_parameters(params, 11);
  // Non-trivial LayerNorm and token parameters, so every tensor matters.
  RandomStream rng(5, 1);
  for (float& v : params.values()) v += static_cast<float>(rng.uniform(-0.05, 0.05));
  const auto crops = random_crops(b, c.img_size, 3);
  const auto patches = model_input(crops, b, c);
  const int l = c.num_patches();
  const int d = c.embed_dim;

  km::EncoderWorkspace<float> ws(c, b);
  std::vector<float> out(static_cast<std::size_t>(b) * (l + 1) * d);
  km::encoder_forward(params, patches.data(), b, ws, out.data());

  // Increasing noise: MAE's argsort keeps the image order, so the masked model's encoder sees
  // exactly our input and must give the same bits.
  std::vector<float> noise(static_cast<std::size_t>(b) * l);
  for (int i = 0; i < b; ++i)
    for (int p = 0; p < l; ++p)
      noise[static_cast<std::size_t>(i) * l + p] = static_cast<float>(p) / l;
  std::vector<std::int32_t> targets(static_cast<std::size_t>(b) * l, 0);
  km::Activations<float> acts(c, b);
  km::vit_mae_forward(params, km::Batch<float>{b, patches.data(), noise.data(), targets.data()},
                      acts);
  BOOST_TEST(acts.encoder_norm_out.size() >= out.size());
  BOOST_TEST(std::equal(out.begin(), out.end(), acts.encoder_norm_out.begin()));

  // Shuffled noise: row 1 + i of the masked encoder is patch ids_shuffle[i]; attention is
  // permutation-equivariant, so the tokens agree up to summation order.
  for (auto& u : noise) u = rng.uniform();
  km::vit_mae_forward(params, km::Batch<float>{b, patches.data(), noise.data(), targets.data()},
                      acts);
  double worst = 0.0;
  for (int i = 0; i < b; ++i) {
    for (int k = 0; k < d; ++k)
      worst = std::max(
          worst, std::abs(static_cast<double>(out[static_cast<std::size_t>(i) * (l + 1) * d + k]) -
                          acts.encoder_norm_out[static_cast<std::size_t>(i) * (l + 1) * d + k]));
    for (int r = 0; r < l; ++r) {
      const int patch = acts.ids_shuffle[static_cast<std::size_t>(i) * l + r];
      for (int k = 0; k < d; ++k) {
        const double a = out[(static_cast<std::size_t>(i) * (l + 1) + 1 + patch) * d + k];
        const double m =
            acts.encoder_norm_out[(static_cast<std::size_t>(i) * (l + 1) + 1 + r) * d + k];
        worst = std::max(worst, std::abs(a - m));
      }
    }
  }
  BOOST_TEST(worst < 1e-4);
}

BOOST_AUTO_TEST_CASE(encoder_forward_float_matches_double_and_batch_rows_are_independent) {
  km::ModelConfig c = demo_config();
  const int b = 2;
  km::ParameterBuffer<float> pf(c);
  km::ParameterBuffer<double> pd(c);
  km::init_parameters(pf, 4);
  km::init_parameters(pd, 4);
  const auto crops = random_crops(b, c.img_size, 9);
  const auto patches = model_input(crops, b, c);
  const std::vector<double> patches_d(patches.begin(), patches.end());
  const std::size_t per = static_cast<std::size_t>(c.num_patches() + 1) * c.embed_dim;
  km::EncoderWorkspace<float> wf(c, b);
  km::EncoderWorkspace<double> wd(c, b);
  std::vector<float> of(b * per);
  std::vector<double> od(b * per);
  km::encoder_forward(pf, patches.data(), b, wf, of.data());
  km::encoder_forward(pd, patches_d.data(), b, wd, od.data());
  double worst = 0.0;
  for (std::size_t i = 0; i < of.size(); ++i) worst = std::max(worst, std::abs(of[i] - od[i]));
  BOOST_TEST(worst < 1e-4);
  // Image 1 alone gives what it gave inside the batch (up to GEMM panel rounding).
  std::vector<float> one(per);
  km::encoder_forward(pf,
                      patches.data() + static_cast<std::size_t>(c.num_patches()) * c.patch_dim(), 1,
                      wf, one.data());
  worst = 0.0;
  for (std::size_t i = 0; i < per; ++i)
    worst = std::max(worst, std::abs(static_cast<double>(one[i]) - of[per + i]));
  BOOST_TEST(worst < 1e-5);
  // Errors: a batch larger than the workspace, another model's parameters.
  BOOST_CHECK_THROW(km::encoder_forward(pf, patches.data(), b + 1, wf, of.data()),
                    std::invalid_argument);
  km::ModelConfig other = c;
  other.depth = 2;
  km::Parameters po(other);
  BOOST_CHECK_THROW(km::encoder_forward(po, patches.data(), 1, wf, of.data()),
                    std::invalid_argument);
}

// ----------------------------------------------------------------------- pixel tokenizer

BOOST_AUTO_TEST_CASE(pixel_tokenizer_equals_assign_on_extract_patches_of_the_crop) {
  const km::ModelConfig c = demo_config();
  const int n = 5, s = c.img_size, l = c.num_patches();
  const auto crops = random_crops(n, s, 21);
  const auto patches = model_input(crops, n, c);
  std::vector<std::int32_t> labels(n, 0);
  std::vector<std::uint64_t> indices(n);
  std::iota(indices.begin(), indices.end(), 100);
  for (const auto& norm :
       {kmeans::PixelNormalization::none(), kmeans::PixelNormalization::imagenet()}) {
    const kmeans::Codebook cb = pixel_codebook(16, c.patch_size, s, norm, 33);
    tokenize::PixelCodebookTargets tok(cb, "cb.h5", c);
    BOOST_TEST(tok.num_tokens() == 16u);
    std::vector<std::int32_t> got(static_cast<std::size_t>(n) * l);
    tok.tokenize(input_of(crops, patches, labels, indices, n, s), got);
    // Expected: the codebook's own vectors of the crop (its normalisation), nearest centroid.
    std::vector<float> x(static_cast<std::size_t>(n) * l * cb.d);
    for (int i = 0; i < n; ++i)
      kmeans::extract_patches(crops.data() + static_cast<std::size_t>(i) * s * s * 3, s, s,
                              cb.geometry(), cb.normalization, {},
                              x.data() + static_cast<std::size_t>(i) * l * cb.d);
    std::vector<std::int32_t> want(got.size());
    std::vector<float> dist2(got.size());
    for (int i = 0; i < n; ++i)
      kmeans::assign_nearest_centroid(x.data() + static_cast<std::size_t>(i) * l * cb.d, l, cb.d,
                                      cb.centroids.data(), cb.k,
                                      want.data() + static_cast<std::size_t>(i) * l,
                                      dist2.data() + static_cast<std::size_t>(i) * l);
    BOOST_TEST(got == want, boost::test_tools::per_element());
    std::set<std::int32_t> used(got.begin(), got.end());
    BOOST_TEST(used.size() > 3u);  // not a constant answer
    // The double-precision reference agrees except at float near-ties (none expected here).
    std::vector<std::int32_t> ref(got.size());
    kmeans::assign_nearest_centroid_reference(x.data(), got.size(), cb.d, cb.centroids.data(), cb.k,
                                              ref.data(), dist2.data());
    BOOST_TEST(got == ref, boost::test_tools::per_element());
    // A patch's token does not depend on its batch: image 3 alone.
    std::vector<std::int32_t> alone(static_cast<std::size_t>(l));
    std::vector<std::uint8_t> crop3(crops.begin() + 3 * s * s * 3, crops.begin() + 4 * s * s * 3);
    std::vector<float> patches3(
        patches.begin() + static_cast<std::ptrdiff_t>(3 * l * c.patch_dim()),
        patches.begin() + static_cast<std::ptrdiff_t>(4 * l * c.patch_dim()));
    tok.tokenize(input_of(crop3, patches3, labels, indices, 1, s), alone);
    BOOST_TEST(std::equal(alone.begin(), alone.end(), got.begin() + 3 * l));
  }
}

BOOST_AUTO_TEST_CASE(pixel_tokenizer_refuses_codebooks_that_do_not_fit_the_model) {
  const km::ModelConfig c = demo_config();  // img 32, patch 4
  const auto none = kmeans::PixelNormalization::none();
  BOOST_TEST(throws_with(
      [&] { tokenize::PixelCodebookTargets(pixel_codebook(8, 8, 32, none, 1), "p8.h5", c); },
      "codebook patch size 8 does not match the model's patch size 4"));
  BOOST_TEST(throws_with(
      [&] { tokenize::PixelCodebookTargets(pixel_codebook(8, 4, 24, none, 1), "c24.h5", c); },
      "codebook crop 24 does not match the model's img_size 32"));
  kmeans::Codebook bad_d = pixel_codebook(8, 4, 32, none, 1);
  bad_d.d = 47;
  bad_d.centroids.resize(8 * 47);
  BOOST_TEST(throws_with([&] { tokenize::PixelCodebookTargets(bad_d, "d47.h5", c); }, "d = 47"));
  kmeans::Codebook feature = pixel_codebook(8, 4, 32, none, 1);
  feature.mode = "feature";
  BOOST_TEST(throws_with([&] { tokenize::PixelCodebookTargets(feature, "f.h5", c); },
                         "feature-mode codebook"));
  // The file is named in the message.
  BOOST_TEST(throws_with(
      [&] { tokenize::PixelCodebookTargets(pixel_codebook(8, 8, 32, none, 1), "p8.h5", c); },
      "p8.h5"));
}

// --------------------------------------------------------------------- feature tokenizer

BOOST_AUTO_TEST_CASE(feature_tokenizer_is_nearest_centroid_of_the_frozen_patch_tokens) {
  const km::ModelConfig student = demo_config();
  km::ModelConfig frozen_config = km::model_preset("vit_tiny_demo");
  frozen_config.depth = 2;  // another architecture with the same patch grid
  frozen_config.embed_dim = 48;
  frozen_config.num_heads = 3;
  frozen_config.validate();
  km::Parameters frozen(frozen_config);
  km::init_parameters(frozen, 77);
  const int n = 4, s = student.img_size, l = student.num_patches(), d = frozen_config.embed_dim;
  const auto crops = random_crops(n, s, 5);
  const auto patches = model_input(crops, n, student);
  // Centroids: some of the frozen model's own patch tokens.
  km::EncoderWorkspace<float> ws(frozen_config, n);
  std::vector<float> tokens(static_cast<std::size_t>(n) * (l + 1) * d);
  km::encoder_forward(frozen, patches.data(), n, ws, tokens.data());
  kmeans::Codebook cb;
  cb.mode = "feature";
  cb.k = 10;
  cb.d = static_cast<std::size_t>(d);
  for (std::size_t j = 0; j < cb.k; ++j) {
    const std::size_t row = (j % n) * (l + 1) + 1 + (j * 7) % l;
    cb.centroids.insert(cb.centroids.end(), tokens.begin() + static_cast<std::ptrdiff_t>(row * d),
                        tokens.begin() + static_cast<std::ptrdiff_t>((row + 1) * d));
  }
  // A workspace smaller than the batch: the tokenizer runs the frozen encoder in chunks.
  tokenize::FeatureCodebookTargets tok(cb, "fcb.h5", frozen, "frozen.h5", student, 3);
  std::vector<std::int32_t> labels(n, 0);
  std::vector<std::uint64_t> indices = {0, 1, 2, 3};
  std::vector<std::int32_t> got(static_cast<std::size_t>(n) * l);
  tok.tokenize(input_of(crops, patches, labels, indices, n, s), got);
  std::vector<std::int32_t> want(got.size());
  std::vector<float> dist2(static_cast<std::size_t>(l));
  for (int i = 0; i < n; ++i)
    kmeans::assign_nearest_centroid(tokens.data() + (static_cast<std::size_t>(i) * (l + 1) + 1) * d,
                                    l, cb.d, cb.centroids.data(), cb.k,
                                    want.data() + static_cast<std::size_t>(i) * l, dist2.data());
  std::size_t same = 0;
  for (std::size_t i = 0; i < got.size(); ++i) same += got[i] == want[i];
  // Chunked vs whole-batch encoder runs may round differently at a near-tie; nearly all agree.
  BOOST_TEST(same >= got.size() - 2);
  // The patches chosen as centroids map to themselves.
  for (std::size_t j = 0; j < cb.k; ++j) {
    const std::size_t img = j % n, patch = (j * 7) % l;
    BOOST_TEST(got[img * l + patch] == static_cast<std::int32_t>(j));
  }

  // A learned position table (a converted DINO/DeiT encoder) replaces the sin-cos one: the
  // tokens are those of the encoder run with that table, not with sin-cos.
  km::EncoderWorkspace<float> learned_ws(frozen_config, n);
  std::vector<float> learned(learned_ws.pos_embed.size());
  RandomStream table_rng(99, 1);
  for (float& v : learned) v = static_cast<float>(table_rng.normal());
  learned_ws.pos_embed = learned;
  std::vector<float> learned_tokens(tokens.size());
  km::encoder_forward(frozen, patches.data(), n, learned_ws, learned_tokens.data());
  tokenize::FeatureCodebookTargets learned_tok(cb, "fcb.h5", frozen, "converted.h5", student, n,
                                               learned);
  std::vector<std::int32_t> got_learned(got.size()), want_learned(got.size());
  learned_tok.tokenize(input_of(crops, patches, labels, indices, n, s), got_learned);
  for (int i = 0; i < n; ++i)
    kmeans::assign_nearest_centroid(
        learned_tokens.data() + (static_cast<std::size_t>(i) * (l + 1) + 1) * d, l, cb.d,
        cb.centroids.data(), cb.k, want_learned.data() + static_cast<std::size_t>(i) * l,
        dist2.data());
  BOOST_TEST((got_learned == want_learned));
  BOOST_TEST((got_learned != got));  // the table matters
  BOOST_TEST(learned_tok.identity() != tok.identity());
  BOOST_TEST(throws_with(
      [&] {
        tokenize::FeatureCodebookTargets(cb, "fcb.h5", frozen, "converted.h5", student, n,
                                         std::vector<float>(7, 0.0f));
      },
      "learned position embedding has 7 values"));

  // Errors: codebook d ≠ frozen D; a frozen model with another patch grid.
  kmeans::Codebook wrong_d = cb;
  wrong_d.d = 64;
  wrong_d.centroids.resize(cb.k * 64);
  BOOST_TEST(throws_with(
      [&] { tokenize::FeatureCodebookTargets(wrong_d, "fcb.h5", frozen, "frozen.h5", student, 2); },
      "has embed_dim 48"));
  km::ModelConfig other_grid = frozen_config;
  other_grid.patch_size = 8;
  other_grid.validate();
  km::Parameters other(other_grid);
  BOOST_TEST(throws_with(
      [&] { tokenize::FeatureCodebookTargets(cb, "fcb.h5", other, "frozen8.h5", student, 2); },
      "must see the student's patches"));
}

// ------------------------------------------------------------------ label and random

BOOST_AUTO_TEST_CASE(label_tokenizer_gives_every_patch_its_class) {
  const int l = 64;
  tokenize::LabelTargets tok(10, l);
  BOOST_TEST(tok.num_tokens() == 10u);
  std::vector<std::int32_t> labels = {3, 9, 0};
  std::vector<std::uint64_t> indices = {5, 6, 7};
  tokenize::TargetInput in;
  in.batch = 3;
  in.crop_size = 32;
  in.labels = labels.data();
  in.indices = indices.data();
  std::vector<std::int32_t> got(3 * l);
  tok.tokenize(in, got);
  for (int i = 0; i < 3; ++i)
    for (int p = 0; p < l; ++p)
      BOOST_TEST(got[static_cast<std::size_t>(i * l + p)] == labels[static_cast<std::size_t>(i)]);
  labels[1] = 10;
  BOOST_TEST(throws_with([&] { tok.tokenize(in, got); }, "label 10 outside [0, 10)"));
  BOOST_TEST(throws_with([&] { tokenize::LabelTargets(1, l); }, "at least 2 classes"));
}

BOOST_AUTO_TEST_CASE(random_tokenizer_matches_the_tcas_random_tokenizer) {
  const int l = 64;
  const std::size_t k = 50;
  tokenize::RandomTargets tok(k, l, 123);
  std::vector<std::uint64_t> indices = {0, 17, 4096, 17};
  std::vector<std::int32_t> labels(indices.size(), 0);
  tokenize::TargetInput in;
  in.batch = static_cast<int>(indices.size());
  in.crop_size = 32;
  in.labels = labels.data();
  in.indices = indices.data();
  std::vector<std::int32_t> got(indices.size() * l);
  tok.tokenize(in, got);
  // kmim_tcas's random tokenizer, same seed: the same token for every (image, patch).
  static_assert(tokenize::kRandomTokenKey == eval::kRandomTokenKey);
  eval::RandomTokenizer tcas(k, l, 123);
  std::vector<std::int32_t> want(got.size());
  eval::ImageBatchView view;
  view.indices = indices;
  view.labels = labels;
  tcas.tokenize(view, want);
  BOOST_TEST(got == want, boost::test_tools::per_element());
  for (const auto t : got) BOOST_TEST((t >= 0 && t < static_cast<std::int32_t>(k)));
  // Same image → same tokens; different images → different token sequences; spread over K.
  BOOST_TEST(std::equal(got.begin() + l, got.begin() + 2 * l, got.begin() + 3 * l));
  BOOST_TEST(!std::equal(got.begin(), got.begin() + l, got.begin() + l));
  std::set<std::int32_t> used(got.begin(), got.end());
  BOOST_TEST(used.size() > 30u);
  // Another seed, other tokens.
  tokenize::RandomTargets other(k, l, 124);
  std::vector<std::int32_t> got2(got.size());
  other.tokenize(in, got2);
  BOOST_TEST(got2 != got);
  BOOST_TEST(throws_with([&] { tokenize::RandomTargets(1, l, 0); }, "K >= 2"));
}

BOOST_AUTO_TEST_CASE(identities_name_what_determines_the_tokens) {
  const km::ModelConfig c = demo_config();
  const auto none = kmeans::PixelNormalization::none();
  tokenize::PixelCodebookTargets a(pixel_codebook(8, 4, 32, none, 1), "a.h5", c);
  tokenize::PixelCodebookTargets b(pixel_codebook(8, 4, 32, none, 2), "a.h5", c);
  tokenize::PixelCodebookTargets a2(pixel_codebook(8, 4, 32, none, 1), "elsewhere.h5", c);
  BOOST_TEST(a.identity() != b.identity());   // other centroids
  BOOST_TEST(a.identity() == a2.identity());  // same content, other path
  BOOST_TEST(a.identity().find("kind = pixel") != std::string::npos);
  BOOST_TEST(tokenize::RandomTargets(5, 64, 1).identity() !=
             tokenize::RandomTargets(5, 64, 2).identity());
}
