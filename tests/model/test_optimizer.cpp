// Tests of kmim/model/optimizer.hpp: AdamW against hand-computed steps (torch.optim.AdamW
// semantics), MAE's learning-rate schedule at its landmarks, and gradient clipping.
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "kmim/model/optimizer.hpp"
#include "kmim/model/vit_mae.hpp"

namespace km = kmim::model;

BOOST_AUTO_TEST_SUITE(optimizer)

BOOST_AUTO_TEST_CASE(adamw_matches_hand_computed_steps) {
  // lr 0.1, betas (0.9, 0.95), eps 1e-8, wd 0.05; element 0 decays, element 1 does not.
  // Step 1, g = 0.5:  m = 0.05, v = 0.0125, m_hat = 0.5, v_hat = 0.25, update 0.1 * 0.5 / 0.5
  //   decayed:     1 * (1 - 0.1 * 0.05) - 0.1 = 0.895      not decayed: 1 - 0.1 = 0.9
  // Step 2, g = -1:   m = -0.055, v = 0.061875, bias corrections 0.19 and 0.0975,
  //   update = 0.1 * (-0.055 / 0.19) / sqrt(0.061875 / 0.0975) = -0.0363373966
  //   decayed:     0.895 * 0.995 + 0.0363373966 = 0.9268623966
  //   not decayed: 0.9 + 0.0363373966 = 0.9363373966
  km::AdamW adamw(std::vector<std::uint8_t>{1, 0});
  std::vector<float> p = {1.0f, 1.0f};
  std::vector<float> g = {0.5f, 0.5f};
  adamw.step(p, g, 0.1);
  BOOST_CHECK_CLOSE(p[0], 0.895, 1e-4);
  BOOST_CHECK_CLOSE(p[1], 0.9, 1e-4);
  g = {-1.0f, -1.0f};
  adamw.step(p, g, 0.1);
  BOOST_CHECK_CLOSE(p[0], 0.9268623966, 1e-4);
  BOOST_CHECK_CLOSE(p[1], 0.9363373966, 1e-4);
  BOOST_CHECK_EQUAL(adamw.step_count(), 2);
  BOOST_CHECK_CLOSE(adamw.first_moment()[0], -0.055, 1e-4);
  BOOST_CHECK_CLOSE(adamw.second_moment()[0], 0.061875, 1e-4);

  std::vector<float> wrong_size(3, 0.0f);
  BOOST_CHECK_THROW(adamw.step(wrong_size, wrong_size, 0.1), std::invalid_argument);
}

BOOST_AUTO_TEST_CASE(adamw_from_a_layout_decays_only_weight_matrices) {
  const km::ModelConfig c = km::model_preset("vit_tiny_demo");
  const km::ParameterLayout layout = km::parameter_layout(c);
  const std::vector<std::uint8_t> mask = km::weight_decay_mask(layout);
  BOOST_REQUIRE_EQUAL(mask.size(), layout.total);
  for (const km::TensorInfo& t : layout.tensors) {
    BOOST_CHECK_EQUAL(mask[t.offset], t.no_weight_decay ? 0 : 1);
    BOOST_CHECK_EQUAL(mask[t.offset + t.numel - 1], t.no_weight_decay ? 0 : 1);
  }
  BOOST_CHECK_EQUAL(mask[layout.offsets.cls_token], 1);  // decayed, as in MAE
  BOOST_CHECK_EQUAL(mask[layout.offsets.norm_weight], 0);
  BOOST_CHECK_EQUAL(mask[layout.offsets.blocks[0].qkv_weight], 1);
  BOOST_CHECK_EQUAL(mask[layout.offsets.blocks[0].qkv_bias], 0);
  // zero gradient: only decayed elements move, by the factor (1 - lr * wd)
  km::AdamW adamw(layout);
  std::vector<float> p(layout.total, 2.0f), g(layout.total, 0.0f);
  adamw.step(p, g, 0.01);
  const float decayed = static_cast<float>(2.0 * (1 - 0.01 * 0.05));
  std::size_t wrong = 0;
  for (std::size_t i = 0; i < p.size(); ++i) wrong += p[i] != (mask[i] != 0 ? decayed : 2.0f);
  BOOST_CHECK_EQUAL(wrong, 0u);
  BOOST_CHECK_EQUAL(p[layout.offsets.blocks[0].qkv_bias], 2.0f);
}

BOOST_AUTO_TEST_CASE(lr_schedule_warms_up_linearly_then_follows_half_cosine) {
  // base 1e-3, min 1e-6, 2 warmup epochs of 10, 100 iterations per epoch
  auto lr = [](std::int64_t step) { return km::lr_at(step, 100, 2.0, 10.0, 1e-3, 1e-6); };
  BOOST_CHECK_EQUAL(lr(0), 0.0);                                 // warmup start
  BOOST_CHECK_CLOSE(lr(50), 0.25e-3, 1e-9);                      // epoch 0.5 of 2
  BOOST_CHECK_CLOSE(lr(199), 0.995e-3, 1e-9);                    // last warmup iteration
  BOOST_CHECK_CLOSE(lr(200), 1e-3, 1e-9);                        // warmup end: cosine at its top
  BOOST_CHECK_CLOSE(lr(600), 1e-6 + 0.5 * (1e-3 - 1e-6), 1e-9);  // half way through cosine
  BOOST_CHECK_CLOSE(lr(999), 1.0038514539554572e-06, 1e-7);      // final iteration
  BOOST_CHECK_CLOSE(lr(1000), 1e-6, 1e-9);
  BOOST_CHECK_THROW(km::lr_at(0, 0, 2.0, 10.0, 1e-3, 0.0), std::invalid_argument);
  BOOST_CHECK_THROW(km::lr_at(0, 100, 10.0, 10.0, 1e-3, 0.0), std::invalid_argument);
  BOOST_CHECK_CLOSE(km::lr_at(0, 100, 0.0, 10.0, 1e-3, 0.0), 1e-3, 1e-9);  // no warmup
}

BOOST_AUTO_TEST_CASE(gradient_clipping_scales_to_the_max_norm) {
  std::vector<float> g = {3.0f, 4.0f};
  BOOST_CHECK_CLOSE(km::global_grad_norm(g), 5.0, 1e-9);
  BOOST_CHECK_CLOSE(km::clip_grad_norm(g, 10.0), 5.0, 1e-9);
  BOOST_CHECK_EQUAL(g[0], 3.0f);  // below the max: untouched
  BOOST_CHECK_CLOSE(km::clip_grad_norm(g, 1.0), 5.0, 1e-9);
  BOOST_CHECK_CLOSE(g[0], 3.0 / (5.0 + 1e-6), 1e-4);
  BOOST_CHECK_CLOSE(g[1], 4.0 / (5.0 + 1e-6), 1e-4);
  BOOST_CHECK_CLOSE(km::global_grad_norm(g), 1.0, 1e-4);
}

BOOST_AUTO_TEST_SUITE_END()
