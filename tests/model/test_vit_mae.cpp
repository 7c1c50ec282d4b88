// Tests of kmim/model/vit_mae.hpp: config validation and presets, the parameter layout and its
// initialization, whole-model gradient checks (double, both losses) on a few coordinates of
// every tensor, float-vs-double agreement, masking semantics inside the model, batching and
// gradient accumulation, and the FLOP count.
#include <omp.h>

#include <algorithm>
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <cstdint>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "finite_difference.hpp"
#include "kmim/core/rng.hpp"
#include "kmim/model/pos_embed.hpp"
#include "kmim/model/vit_mae.hpp"

namespace km = kmim::model;

namespace {

bool message_contains(const std::exception& e, const std::string& needle) {
  return std::string(e.what()).find(needle) != std::string::npos;
}

// Expects validate() to throw std::invalid_argument whose message names `field`.
void check_invalid(const km::ModelConfig& c, const std::string& field) {
  BOOST_CHECK_EXCEPTION(c.validate(), std::invalid_argument, [&](const std::invalid_argument& e) {
    BOOST_TEST_MESSAGE(e.what());
    return message_contains(e, field);
  });
}

/// A model small enough for finite differences on every tensor (L = 16, 4 visible patches).
km::ModelConfig gradcheck_config(km::LossKind loss) {
  km::ModelConfig c;
  c.name = "gradcheck";
  c.img_size = 16;
  c.patch_size = 4;
  c.embed_dim = 16;
  c.depth = 2;
  c.num_heads = 2;
  c.decoder_embed_dim = 8;
  c.decoder_depth = 2;
  c.decoder_num_heads = 2;
  c.mlp_ratio = 2;
  c.out_dim = 7;
  if (loss == km::LossKind::pixel_mse) c.use_pixel_mse_loss();
  c.validate();
  return c;
}

/// Random inputs for a batch: patches in [-1, 1), noise in [0, 1), targets in [0, out_dim).
struct BatchData {
  std::vector<double> patches;
  std::vector<float> noise;
  std::vector<std::int32_t> targets;

  BatchData(const km::ModelConfig& c, int batch, std::uint64_t seed) {
    kmim::RandomStream rng(seed, 1);
    const std::size_t l = static_cast<std::size_t>(c.num_patches());
    patches.resize(batch * l * c.patch_dim());
    for (double& x : patches) x = rng.uniform(-1.0, 1.0);
    noise.resize(batch * l);
    for (float& u : noise) u = rng.uniform();
    targets.resize(batch * l);
    for (std::int32_t& t : targets) {
      t = static_cast<std::int32_t>(rng.below(static_cast<std::uint64_t>(c.out_dim)));
    }
  }

  template <typename T>
  km::Batch<T> view(int batch, const std::vector<T>& patches_t) const {
    return km::Batch<T>{batch, patches_t.data(), noise.data(), targets.data()};
  }
};

/// MAE init plus a random perturbation of every value, so that LayerNorm weights differ from 1
/// and biases from 0 (a generic point for the gradient check).
template <typename T>
void init_perturbed(km::ParameterBuffer<T>& params, std::uint64_t seed) {
  km::init_parameters(params, seed);
  kmim::RandomStream rng(seed, 99);
  for (T& v : params.values()) v += static_cast<T>(rng.uniform(-0.2, 0.2));
}

void gradient_check_model(km::LossKind loss) {
  const km::ModelConfig c = gradcheck_config(loss);
  const int batch = 2;
  km::ParameterBuffer<double> params(c), grads(c);
  init_perturbed(params, 5);
  const BatchData data(c, batch, 17);
  km::Activations<double> acts(c, batch);
  const km::Batch<double> b = data.view(batch, data.patches);

  const km::LossResult first = km::vit_mae_forward(params, b, acts);
  BOOST_TEST_MESSAGE("gradcheck " << km::loss_kind_name(loss) << " loss " << first.loss);
  BOOST_CHECK_EQUAL(first.masked_patches, batch * (c.num_patches() - c.keep_count()));
  km::vit_mae_backward(params, acts, grads);

  auto objective = [&] { return km::vit_mae_forward(params, b, acts).loss; };
  kmim::RandomStream pick(3, 4);
  int checked = 0, failures = 0;
  for (const km::TensorInfo& t : params.tensors()) {
    // first, last and two random coordinates of every tensor
    std::set<std::size_t> coords = {t.offset, t.offset + t.numel - 1};
    for (int k = 0; k < 2; ++k) coords.insert(t.offset + pick.below(t.numel));
    const std::vector<std::size_t> list(coords.begin(), coords.end());
    failures += km::testing::check_gradient(t.name, grads.data(), params.data(), list, objective,
                                            1e-8, 1e-5);
    checked += static_cast<int>(list.size());
  }
  BOOST_TEST_MESSAGE("checked " << checked << " coordinates");
  BOOST_CHECK_EQUAL(failures, 0);
  // The gradient must not be trivially zero.
  double norm = 0;
  for (double g : grads.values()) norm += g * g;
  BOOST_CHECK_GT(norm, 1e-6);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(model_config)

BOOST_AUTO_TEST_CASE(presets_have_the_documented_shapes) {
  BOOST_CHECK((km::model_preset_names() ==
               std::vector<std::string>{"vit_tiny_demo", "vit_tiny", "vit_small", "vit_base"}));
  const km::ModelConfig base = km::model_preset("vit_base");
  BOOST_CHECK_EQUAL(base.img_size, 224);
  BOOST_CHECK_EQUAL(base.patch_size, 16);
  BOOST_CHECK_EQUAL(base.embed_dim, 768);
  BOOST_CHECK_EQUAL(base.depth, 12);
  BOOST_CHECK_EQUAL(base.num_heads, 12);
  BOOST_CHECK_EQUAL(base.decoder_embed_dim, 512);
  BOOST_CHECK_EQUAL(base.decoder_depth, 8);
  BOOST_CHECK_EQUAL(base.decoder_num_heads, 16);
  BOOST_CHECK_EQUAL(base.num_patches(), 196);
  BOOST_CHECK_EQUAL(base.keep_count(), 49);
  const km::ModelConfig small = km::model_preset("vit_small");
  BOOST_CHECK_EQUAL(small.embed_dim, 384);
  BOOST_CHECK_EQUAL(small.num_heads, 6);
  BOOST_CHECK_EQUAL(small.decoder_embed_dim, 256);
  const km::ModelConfig tiny = km::model_preset("vit_tiny");
  BOOST_CHECK_EQUAL(tiny.embed_dim, 192);
  BOOST_CHECK_EQUAL(tiny.num_heads, 3);
  BOOST_CHECK_EQUAL(tiny.decoder_embed_dim, 128);
  BOOST_CHECK_EQUAL(tiny.decoder_depth, 4);
  const km::ModelConfig demo = km::model_preset("vit_tiny_demo");
  BOOST_CHECK_EQUAL(demo.img_size, 32);
  BOOST_CHECK_EQUAL(demo.num_patches(), 64);
  BOOST_CHECK(demo == km::ModelConfig{});  // the struct's defaults are the demo preset
}

BOOST_AUTO_TEST_CASE(unknown_preset_lists_the_valid_names) {
  BOOST_CHECK_EXCEPTION(
      km::model_preset("vit_huge"), std::invalid_argument, [](const std::invalid_argument& e) {
        return message_contains(e, "vit_huge") && message_contains(e, "vit_tiny_demo") &&
               message_contains(e, "vit_base");
      });
}

BOOST_AUTO_TEST_CASE(validation_names_the_offending_field) {
  const km::ModelConfig ok = km::model_preset("vit_tiny_demo");
  BOOST_CHECK_NO_THROW(ok.validate());
  km::ModelConfig c = ok;
  c.img_size = 30;  // not divisible by 4
  check_invalid(c, "img_size");
  c = ok;
  c.patch_size = 0;
  check_invalid(c, "patch_size");
  c = ok;
  c.channels = 0;
  check_invalid(c, "channels");
  c = ok;
  c.num_heads = 3;  // 64 % 3 != 0
  check_invalid(c, "embed_dim");
  c = ok;
  c.embed_dim = 66;
  c.num_heads = 2;  // divisible by heads but not by 4
  check_invalid(c, "embed_dim");
  c = ok;
  c.decoder_num_heads = 5;
  check_invalid(c, "decoder_embed_dim");
  c = ok;
  c.depth = 0;
  check_invalid(c, "depth");
  c = ok;
  c.mask_ratio = 1.0;
  check_invalid(c, "mask_ratio");
  c = ok;
  c.mask_ratio = 0.99;  // int(64 * 0.01) = 0 visible patches
  check_invalid(c, "mask_ratio");
  c = ok;
  c.loss = km::LossKind::pixel_mse;  // out_dim still 256, patch_dim 48
  check_invalid(c, "out_dim");
  c.use_pixel_mse_loss();
  BOOST_CHECK_NO_THROW(c.validate());
  BOOST_CHECK_EQUAL(c.out_dim, 48);
  c = ok;
  c.out_dim = 1;
  check_invalid(c, "out_dim");
  BOOST_CHECK_THROW(km::loss_kind_from_name("l2"), std::invalid_argument);
  BOOST_CHECK(km::loss_kind_from_name("pixel_mse") == km::LossKind::pixel_mse);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(model_parameters)

BOOST_AUTO_TEST_CASE(layout_is_contiguous_in_mae_order_with_decay_flags) {
  const km::ModelConfig c = km::model_preset("vit_tiny_demo");
  const km::ParameterLayout layout = km::parameter_layout(c);
  BOOST_REQUIRE_GE(layout.tensors.size(), 6u);
  BOOST_CHECK_EQUAL(layout.tensors[0].name, "cls_token");
  BOOST_CHECK_EQUAL(layout.tensors[1].name, "mask_token");
  BOOST_CHECK_EQUAL(layout.tensors[2].name, "patch_embed.proj.weight");
  BOOST_CHECK_EQUAL(layout.tensors[4].name, "blocks.0.norm1.weight");
  BOOST_CHECK_EQUAL(layout.tensors.back().name, "decoder_pred.bias");
  // 4 + 2 * 12 per block + 2 (norm) + 2 (decoder_embed) + 2 (decoder_norm) + 2 (pred)
  BOOST_CHECK_EQUAL(layout.tensors.size(), 4u + 12u * 6u + 8u);
  std::size_t offset = 0;
  for (const km::TensorInfo& t : layout.tensors) {
    BOOST_CHECK_EQUAL(t.offset, offset);
    offset += t.numel;
    // MAE (timm add_weight_decay): no decay for 1-D tensors and biases; the 3-D cls/mask
    // tokens and every weight matrix are decayed.
    const bool decayed = t.shape.size() > 1;
    BOOST_CHECK_MESSAGE(t.no_weight_decay == !decayed, t.name);
    for (const char* name : {"pos_embed", "decoder_pos_embed"}) BOOST_CHECK_NE(t.name, name);
  }
  BOOST_CHECK_EQUAL(offset, layout.total);
  const km::ParameterBuffer<float> p(c);
  BOOST_CHECK_EQUAL(p.size(), layout.total);
  BOOST_CHECK_EQUAL(p.tensor("blocks.1.attn.qkv.weight").size(), 3u * 64u * 64u);
  BOOST_CHECK_EQUAL(p.tensor_info("decoder_pred.weight").shape[0], 256);
  BOOST_CHECK_THROW(p.tensor("blocks.9.attn.qkv.weight"), std::out_of_range);
}

BOOST_AUTO_TEST_CASE(vit_base_parameter_count_matches_mae) {
  // MAE's mae_vit_base_patch16 (pixel head) has 111,907,840 parameters including the fixed
  // position embeddings (197 * 768 + 197 * 512 = 252,160), which are buffers here.
  km::ModelConfig c = km::model_preset("vit_base");
  c.use_pixel_mse_loss();
  BOOST_CHECK_EQUAL(km::parameter_count(c), 111907840u - 252160u);
  // The K-MIM head with K = 1024 instead of 768 pixel outputs.
  BOOST_CHECK_EQUAL(km::parameter_count(km::model_preset("vit_base")),
                    111907840u - 252160u - (512u * 768u + 768u) + (512u * 1024u + 1024u));
}

BOOST_AUTO_TEST_CASE(initialization_follows_mae_and_is_deterministic) {
  const km::ModelConfig c = km::model_preset("vit_tiny_demo");
  km::Parameters a(c), b(c), other(c);
  km::init_parameters(a, 42);
  km::init_parameters(b, 42);
  km::init_parameters(other, 43);
  BOOST_CHECK(std::equal(a.values().begin(), a.values().end(), b.values().begin()));
  BOOST_CHECK(!std::equal(a.values().begin(), a.values().end(), other.values().begin()));
  for (const km::TensorInfo& t : a.tensors()) {
    const std::span<const float> v = std::as_const(a).tensor(t.name);
    switch (t.init) {
      case km::TensorInit::ones:
        for (float x : v) BOOST_REQUIRE_EQUAL(x, 1.0f);
        break;
      case km::TensorInit::zeros:
        for (float x : v) BOOST_REQUIRE_EQUAL(x, 0.0f);
        break;
      case km::TensorInit::xavier_uniform: {
        const double bound = std::sqrt(6.0 / static_cast<double>(t.shape[0] + t.shape[1]));
        double sq = 0;
        for (float x : v) {
          BOOST_REQUIRE_LE(std::abs(x), bound);
          sq += static_cast<double>(x) * x;
        }
        // variance of U(-a, a) is a^2 / 3
        BOOST_CHECK_CLOSE(sq / static_cast<double>(v.size()), bound * bound / 3.0, 15.0);
        break;
      }
      case km::TensorInit::normal_002: {
        double sq = 0;
        for (float x : v) sq += static_cast<double>(x) * x;
        BOOST_CHECK_CLOSE(std::sqrt(sq / static_cast<double>(v.size())), 0.02, 40.0);
        break;
      }
    }
  }
  BOOST_CHECK(a.tensor_info("cls_token").init == km::TensorInit::normal_002);
  BOOST_CHECK(a.tensor_info("blocks.0.mlp.fc1.weight").init == km::TensorInit::xavier_uniform);
  BOOST_CHECK(a.tensor_info("norm.weight").init == km::TensorInit::ones);
  // float and double buffers initialized with one seed agree
  km::ParameterBuffer<double> d(c);
  km::init_parameters(d, 42);
  for (std::size_t i = 0; i < d.size(); i += 97) {
    BOOST_CHECK_EQUAL(a.data()[i], static_cast<float>(d.data()[i]));
  }
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(model_passes)

BOOST_AUTO_TEST_CASE(token_loss_gradient_matches_finite_differences) {
  gradient_check_model(km::LossKind::token_cross_entropy);
}

BOOST_AUTO_TEST_CASE(pixel_loss_gradient_matches_finite_differences) {
  gradient_check_model(km::LossKind::pixel_mse);
}

BOOST_AUTO_TEST_CASE(float_model_agrees_with_double_model) {
  km::ModelConfig c = km::model_preset("vit_tiny_demo");
  const int batch = 3;
  km::ParameterBuffer<double> pd(c), gd(c);
  init_perturbed(pd, 8);
  km::Parameters pf(c), gf(c);
  for (std::size_t i = 0; i < pd.size(); ++i) pf.data()[i] = static_cast<float>(pd.data()[i]);
  const BatchData data(c, batch, 21);
  const std::vector<float> patches_f(data.patches.begin(), data.patches.end());
  const std::vector<double> patches_d(patches_f.begin(), patches_f.end());
  km::Activations<double> ad(c, batch);
  km::Activations<float> af(c, batch);
  const km::LossResult rd = km::vit_mae_forward(pd, data.view(batch, patches_d), ad);
  const km::LossResult rf = km::vit_mae_forward(pf, data.view(batch, patches_f), af);
  BOOST_CHECK_CLOSE(rf.loss, rd.loss, 1e-3);
  BOOST_REQUIRE(rd.masked_accuracy.has_value() && rf.masked_accuracy.has_value());
  km::vit_mae_backward(pd, ad, gd);
  km::vit_mae_backward(pf, af, gf);
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < gd.size(); ++i) {
    const double e = static_cast<double>(gf.data()[i]) - gd.data()[i];
    diff += e * e;
    norm += gd.data()[i] * gd.data()[i];
  }
  BOOST_TEST_MESSAGE("float vs double gradient relative error " << std::sqrt(diff / norm));
  BOOST_CHECK_LT(std::sqrt(diff / norm), 1e-4);
}

BOOST_AUTO_TEST_CASE(token_loss_ignores_pixels_of_masked_patches) {
  const km::ModelConfig c = km::model_preset("vit_tiny_demo");
  const int batch = 2;
  km::Parameters p(c);
  km::init_parameters(p, 1);
  const BatchData data(c, batch, 22);
  std::vector<float> patches(data.patches.begin(), data.patches.end());
  km::Activations<float> acts(c, batch);
  const double base = km::vit_mae_forward(p, data.view(batch, patches), acts).loss;
  // find one masked and one visible patch of sample 1
  int masked = -1, visible = -1;
  for (int l = 0; l < c.num_patches(); ++l) {
    if (acts.mask[c.num_patches() + l] == 1.0f && masked < 0) masked = l;
    if (acts.mask[c.num_patches() + l] == 0.0f && visible < 0) visible = l;
  }
  BOOST_REQUIRE(masked >= 0 && visible >= 0);
  const std::size_t pd = static_cast<std::size_t>(c.patch_dim());
  std::vector<float> changed = patches;
  for (std::size_t k = 0; k < pd; ++k) changed[(c.num_patches() + masked) * pd + k] += 3.0f;
  BOOST_CHECK_EQUAL(km::vit_mae_forward(p, data.view(batch, changed), acts).loss, base);
  changed = patches;
  for (std::size_t k = 0; k < pd; ++k) changed[(c.num_patches() + visible) * pd + k] += 3.0f;
  BOOST_CHECK_NE(km::vit_mae_forward(p, data.view(batch, changed), acts).loss, base);

  // the pixel loss, in contrast, reads the masked patch as its target
  km::ModelConfig pc = c;
  pc.use_pixel_mse_loss();
  km::Parameters pp(pc);
  km::init_parameters(pp, 1);
  km::Activations<float> pacts(pc, batch);
  const double pbase = km::vit_mae_forward(pp, data.view(batch, patches), pacts).loss;
  changed = patches;
  for (std::size_t k = 0; k < pd; ++k) {
    changed[(c.num_patches() + masked) * pd + k] *= (k % 2 == 0 ? 2.0f : -1.0f);
  }
  BOOST_CHECK_NE(km::vit_mae_forward(pp, data.view(batch, changed), pacts).loss, pbase);
}

BOOST_AUTO_TEST_CASE(samples_are_independent_of_the_batch_they_are_in) {
  const km::ModelConfig c = km::model_preset("vit_tiny_demo");
  km::Parameters p(c);
  km::init_parameters(p, 2);
  const BatchData data(c, 3, 23);
  const std::vector<float> patches(data.patches.begin(), data.patches.end());
  km::Activations<float> acts3(c, 4), acts1(c, 4);
  km::vit_mae_forward(p, data.view(3, patches), acts3);
  km::vit_mae_forward(p, data.view(1, patches), acts1);
  BOOST_CHECK_EQUAL(acts1.batch, 1);
  const std::size_t n = static_cast<std::size_t>(c.num_patches()) * c.out_dim;
  for (std::size_t i = 0; i < n; ++i) BOOST_REQUIRE_SMALL(acts1.logits[i] - acts3.logits[i], 1e-4f);
}

BOOST_AUTO_TEST_CASE(results_repeat_exactly_and_agree_across_thread_counts) {
  // Same thread count: bit-identical reruns. Other thread counts: equal up to float rounding
  // (OpenBLAS rounds the edges of each thread's GEMM panel differently).
  const km::ModelConfig c = km::model_preset("vit_tiny_demo");
  const int batch = 3;
  km::Parameters p(c);
  km::init_parameters(p, 4);
  const BatchData data(c, batch, 26);
  const std::vector<float> patches(data.patches.begin(), data.patches.end());
  const int saved_threads = omp_get_max_threads();
  auto run = [&](int threads, std::vector<float>& grads) {
    omp_set_num_threads(threads);
    km::Activations<float> acts(c, batch);
    km::Parameters g(c);
    const double loss = km::vit_mae_forward(p, data.view(batch, patches), acts).loss;
    km::vit_mae_backward(p, acts, g);
    grads.assign(g.values().begin(), g.values().end());
    return loss;
  };
  std::vector<float> reference, again, other;
  const double reference_loss = run(2, reference);
  BOOST_CHECK_EQUAL(run(2, again), reference_loss);
  BOOST_CHECK(again == reference);
  for (int threads : {1, 3}) {
    BOOST_CHECK_CLOSE(run(threads, other), reference_loss, 1e-4);
    double diff = 0, norm = 0;
    for (std::size_t i = 0; i < other.size(); ++i) {
      diff += (static_cast<double>(other[i]) - reference[i]) * (other[i] - reference[i]);
      norm += static_cast<double>(reference[i]) * reference[i];
    }
    BOOST_CHECK_LT(std::sqrt(diff / norm), 1e-5);
  }
  omp_set_num_threads(saved_threads);
}

BOOST_AUTO_TEST_CASE(backward_accumulates_and_scales_with_d_loss) {
  const km::ModelConfig c = gradcheck_config(km::LossKind::token_cross_entropy);
  km::Parameters p(c), once(c), twice(c), half(c);
  km::init_parameters(p, 3);
  const BatchData data(c, 2, 24);
  const std::vector<float> patches(data.patches.begin(), data.patches.end());
  km::Activations<float> acts(c, 2);
  km::vit_mae_forward(p, data.view(2, patches), acts);
  km::vit_mae_backward(p, acts, once);
  km::vit_mae_backward(p, acts, twice);
  km::vit_mae_backward(p, acts, twice);
  km::vit_mae_backward(p, acts, half, 0.5);
  for (std::size_t i = 0; i < p.size(); ++i) {
    BOOST_REQUIRE_SMALL(twice.data()[i] - 2.0f * once.data()[i], 1e-6f);
    BOOST_REQUIRE_SMALL(half.data()[i] - 0.5f * once.data()[i], 1e-6f);
  }
}

BOOST_AUTO_TEST_CASE(forward_rejects_inputs_that_do_not_fit) {
  const km::ModelConfig c = gradcheck_config(km::LossKind::token_cross_entropy);
  km::Parameters p(c);
  const BatchData data(c, 2, 25);
  const std::vector<float> patches(data.patches.begin(), data.patches.end());
  km::Activations<float> acts(c, 1);
  BOOST_CHECK_THROW(km::vit_mae_forward(p, data.view(2, patches), acts), std::invalid_argument);
  km::Batch<float> no_targets = data.view(1, patches);
  no_targets.token_targets = nullptr;
  BOOST_CHECK_THROW(km::vit_mae_forward(p, no_targets, acts), std::invalid_argument);
  km::ModelConfig other = c;
  other.depth = 1;
  km::Parameters q(other);
  BOOST_CHECK_THROW(km::vit_mae_forward(q, data.view(1, patches), acts), std::invalid_argument);
  std::vector<std::int32_t> bad = data.targets;
  for (auto& t : bad) t = c.out_dim;  // out of range everywhere
  km::Batch<float> bad_targets = data.view(1, patches);
  bad_targets.token_targets = bad.data();
  BOOST_CHECK_THROW(km::vit_mae_forward(p, bad_targets, acts), std::out_of_range);
  km::Parameters g(c);
  BOOST_CHECK_THROW(km::vit_mae_backward(p, acts, g), std::invalid_argument);  // failed forward
}

BOOST_AUTO_TEST_CASE(flop_count_matches_a_hand_count) {
  // img 8 / patch 4: L = 4, 1 visible patch; D 8 (2 heads), Dd 4 (1 head), mlp 4, out 10.
  km::ModelConfig c;
  c.img_size = 8;
  c.patch_size = 4;
  c.embed_dim = 8;
  c.depth = 1;
  c.num_heads = 2;
  c.decoder_embed_dim = 4;
  c.decoder_depth = 1;
  c.decoder_num_heads = 1;
  c.out_dim = 10;
  // multiply-adds: patch embed 1*48*8 = 384; encoder block (2 tokens) qkv 2*8*24 = 384,
  // proj 2*8*8 = 128, fc1 + fc2 2 * 2*8*32 = 1024, QK^T + PV 2 * 2*2*8 = 64;
  // decoder_embed 2*8*4 = 64; decoder block (5 tokens) qkv 5*4*12 = 240, proj 80, mlp 640,
  // QK^T + PV 2 * 5*5*4 = 200; pred 4*4*10 = 160. Total 3368 multiply-adds.
  const km::FlopCount f = km::flops_per_image(c);
  BOOST_CHECK_EQUAL(f.forward, 2.0 * 3368);
  BOOST_CHECK_EQUAL(f.training, 3.0 * 2.0 * 3368);
}

BOOST_AUTO_TEST_SUITE_END()

// ------------------------------------------------------------------------------------------
// An independent, deliberately naive double-precision forward pass written from MAE's PyTorch
// code, in its order of operations: embed EVERY patch and add positions, then keep the visible
// ones; cat(visible, mask tokens) gathered with ids_restore; plain loops, no BLAS, one sample at
// a time. vit_mae_forward must reproduce its logits and loss.

namespace {

using Rows = std::vector<std::vector<double>>;  // a list of token vectors

Rows naive_linear(const Rows& x, const double* w, const double* b, int out) {
  Rows y(x.size(), std::vector<double>(out));
  const std::size_t in = x.empty() ? 0 : x[0].size();
  for (std::size_t r = 0; r < x.size(); ++r) {
    for (int o = 0; o < out; ++o) {
      double s = b[o];
      for (std::size_t i = 0; i < in; ++i) s += w[o * in + i] * x[r][i];
      y[r][o] = s;
    }
  }
  return y;
}

Rows naive_layernorm(const Rows& x, const double* w, const double* b) {
  Rows y = x;
  for (std::vector<double>& row : y) {
    const double n = static_cast<double>(row.size());
    double mean = 0, var = 0;
    for (double v : row) mean += v / n;
    for (double v : row) var += (v - mean) * (v - mean) / n;
    for (std::size_t i = 0; i < row.size(); ++i) {
      row[i] = (row[i] - mean) / std::sqrt(var + 1e-6) * w[i] + b[i];
    }
  }
  return y;
}

Rows naive_block(Rows x, const km::ParameterBuffer<double>& p, const std::string& prefix,
                 int heads) {
  auto t = [&](const std::string& name) { return p.tensor(prefix + name).data(); };
  const int dim = static_cast<int>(x[0].size());
  const int hd = dim / heads;
  const Rows h = naive_layernorm(x, t(".norm1.weight"), t(".norm1.bias"));
  const Rows qkv = naive_linear(h, t(".attn.qkv.weight"), t(".attn.qkv.bias"), 3 * dim);
  Rows attn(x.size(), std::vector<double>(dim, 0.0));
  for (int head = 0; head < heads; ++head) {
    for (std::size_t i = 0; i < x.size(); ++i) {
      std::vector<double> w(x.size());
      double z = 0, mx = -1e300;
      for (std::size_t j = 0; j < x.size(); ++j) {
        double s = 0;
        for (int d = 0; d < hd; ++d) s += qkv[i][head * hd + d] * qkv[j][dim + head * hd + d];
        w[j] = s / std::sqrt(static_cast<double>(hd));
        mx = std::max(mx, w[j]);
      }
      for (double& v : w) z += (v = std::exp(v - mx));
      for (std::size_t j = 0; j < x.size(); ++j) {
        for (int d = 0; d < hd; ++d)
          attn[i][head * hd + d] += w[j] / z * qkv[j][2 * dim + head * hd + d];
      }
    }
  }
  const Rows proj = naive_linear(attn, t(".attn.proj.weight"), t(".attn.proj.bias"), dim);
  for (std::size_t r = 0; r < x.size(); ++r) {
    for (int i = 0; i < dim; ++i) x[r][i] += proj[r][i];
  }
  const Rows h2 = naive_layernorm(x, t(".norm2.weight"), t(".norm2.bias"));
  const int hidden = static_cast<int>(p.tensor_info(prefix + ".mlp.fc1.weight").shape[0]);
  Rows m = naive_linear(h2, t(".mlp.fc1.weight"), t(".mlp.fc1.bias"), hidden);
  for (std::vector<double>& row : m) {
    for (double& v : row) v = 0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0)));
  }
  const Rows m2 = naive_linear(m, t(".mlp.fc2.weight"), t(".mlp.fc2.bias"), dim);
  for (std::size_t r = 0; r < x.size(); ++r) {
    for (int i = 0; i < dim; ++i) x[r][i] += m2[r][i];
  }
  return x;
}

struct NaiveResult {
  std::vector<double> logits;  // [B, L, out]
  double loss = 0;
};

NaiveResult naive_forward(const km::ParameterBuffer<double>& p, const BatchData& data, int batch) {
  const km::ModelConfig& c = p.config();
  const int l = c.num_patches(), keep = c.keep_count(), d = c.embed_dim, dd = c.decoder_embed_dim,
            pd = c.patch_dim();
  const std::vector<double> pos = km::sincos_2d_position_embedding(d, c.grid_size(), true);
  const std::vector<double> dpos = km::sincos_2d_position_embedding(dd, c.grid_size(), true);
  NaiveResult result;
  double loss_sum = 0;
  int masked = 0;
  for (int b = 0; b < batch; ++b) {
    // masking: sort (noise, index) pairs ascending
    std::vector<std::pair<float, int>> order;
    for (int i = 0; i < l; ++i) order.emplace_back(data.noise[b * l + i], i);
    std::sort(order.begin(), order.end());
    std::vector<int> ids_restore(l);
    for (int i = 0; i < l; ++i) ids_restore[order[i].second] = i;
    // encoder
    Rows patches(l);
    for (int i = 0; i < l; ++i) {
      patches[i].assign(data.patches.begin() + (b * l + i) * pd,
                        data.patches.begin() + (b * l + i + 1) * pd);
    }
    Rows x = naive_linear(patches, p.tensor("patch_embed.proj.weight").data(),
                          p.tensor("patch_embed.proj.bias").data(), d);
    for (int i = 0; i < l; ++i) {
      for (int k = 0; k < d; ++k) x[i][k] += pos[(1 + i) * d + k];
    }
    Rows tokens;
    std::vector<double> cls(d);
    for (int k = 0; k < d; ++k) cls[k] = p.tensor("cls_token")[k] + pos[k];
    tokens.push_back(cls);
    for (int i = 0; i < keep; ++i) tokens.push_back(x[order[i].second]);
    for (int blk = 0; blk < c.depth; ++blk) {
      tokens = naive_block(tokens, p, "blocks." + std::to_string(blk), c.num_heads);
    }
    tokens = naive_layernorm(tokens, p.tensor("norm.weight").data(), p.tensor("norm.bias").data());
    // decoder
    Rows y = naive_linear(tokens, p.tensor("decoder_embed.weight").data(),
                          p.tensor("decoder_embed.bias").data(), dd);
    Rows shuffled(y.begin() + 1, y.end());
    const std::vector<double> mask_token(p.tensor("mask_token").begin(),
                                         p.tensor("mask_token").end());
    for (int i = keep; i < l; ++i) shuffled.push_back(mask_token);
    Rows dec = {y[0]};
    for (int i = 0; i < l; ++i) dec.push_back(shuffled[ids_restore[i]]);
    for (int i = 0; i <= l; ++i) {
      for (int k = 0; k < dd; ++k) dec[i][k] += dpos[i * dd + k];
    }
    for (int blk = 0; blk < c.decoder_depth; ++blk) {
      dec = naive_block(dec, p, "decoder_blocks." + std::to_string(blk), c.decoder_num_heads);
    }
    dec = naive_layernorm(dec, p.tensor("decoder_norm.weight").data(),
                          p.tensor("decoder_norm.bias").data());
    const Rows pred = naive_linear(dec, p.tensor("decoder_pred.weight").data(),
                                   p.tensor("decoder_pred.bias").data(), c.out_dim);
    for (int i = 0; i < l; ++i) {
      const std::vector<double>& z = pred[1 + i];  // drop CLS
      result.logits.insert(result.logits.end(), z.begin(), z.end());
      if (ids_restore[i] < keep) continue;  // visible: not in the loss
      ++masked;
      if (c.loss == km::LossKind::token_cross_entropy) {
        double mx = *std::max_element(z.begin(), z.end()), s = 0;
        for (double v : z) s += std::exp(v - mx);
        loss_sum += mx + std::log(s) - z[data.targets[b * l + i]];
      } else {
        const std::vector<double>& t = patches[i];
        double mean = 0, var = 0, se = 0;
        for (double v : t) mean += v / pd;
        for (double v : t) var += (v - mean) * (v - mean) / (pd - 1);  // unbiased, as torch.var
        for (int k = 0; k < pd; ++k) {
          const double target = (t[k] - mean) / std::sqrt(var + 1e-6);
          se += (z[k] - target) * (z[k] - target);
        }
        loss_sum += se / pd;
      }
    }
  }
  result.loss = loss_sum / masked;
  return result;
}

void check_against_naive_forward(km::LossKind loss) {
  km::ModelConfig c = gradcheck_config(loss);
  c.num_heads = 4;
  c.validate();
  const int batch = 3;
  km::ParameterBuffer<double> params(c);
  init_perturbed(params, 11);
  const BatchData data(c, batch, 31);
  km::Activations<double> acts(c, batch);
  const km::LossResult r = km::vit_mae_forward(params, data.view(batch, data.patches), acts);
  const NaiveResult naive = naive_forward(params, data, batch);
  BOOST_REQUIRE_EQUAL(naive.logits.size(),
                      static_cast<std::size_t>(batch) * c.num_patches() * c.out_dim);
  double max_diff = 0;
  for (std::size_t i = 0; i < naive.logits.size(); ++i) {
    max_diff = std::max(max_diff, std::abs(naive.logits[i] - acts.logits[i]));
  }
  BOOST_TEST_MESSAGE("naive forward max |logit difference| " << max_diff);
  BOOST_CHECK_SMALL(max_diff, 1e-10);
  BOOST_CHECK_CLOSE(r.loss, naive.loss, 1e-9);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(model_reference)

BOOST_AUTO_TEST_CASE(token_model_matches_a_naive_mae_forward) {
  check_against_naive_forward(km::LossKind::token_cross_entropy);
}

BOOST_AUTO_TEST_CASE(pixel_model_matches_a_naive_mae_forward) {
  check_against_naive_forward(km::LossKind::pixel_mse);
}

BOOST_AUTO_TEST_SUITE_END()
