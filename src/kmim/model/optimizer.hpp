// Optimization for pretraining, matching MAE's recipe: AdamW with decoupled weight decay
// (torch.optim.AdamW semantics), MAE's per-iteration learning-rate schedule (linear warmup, then
// half-cycle cosine to min_lr), and global-norm gradient clipping (torch.nn.utils
// .clip_grad_norm_). All operate on the single contiguous parameter/gradient buffer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "kmim/model/vit_mae.hpp"

namespace kmim::model {

struct AdamWConfig {
  double beta1 = 0.9;
  double beta2 = 0.95;  ///< MAE pretraining uses betas (0.9, 0.95)
  double eps = 1e-8;
  double weight_decay = 0.05;
};

/// AdamW over one flat buffer. Step t (1-based) for every element, with g the gradient:
///   p -= lr * wd * p                      (decoupled decay, only where decay is enabled)
///   m = beta1 m + (1 - beta1) g,  v = beta2 v + (1 - beta2) g^2
///   p -= (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
/// exactly the order and bias correction of torch.optim.AdamW (foreach=False, amsgrad=False).
class AdamW {
 public:
  /// decay_mask[i] != 0 where weight decay applies to element i.
  AdamW(std::vector<std::uint8_t> decay_mask, AdamWConfig config = {});
  /// Decay everywhere except tensors flagged no_weight_decay in the layout (MAE's param groups).
  AdamW(const ParameterLayout& layout, AdamWConfig config = {});

  /// One update of params with grads (same size as the mask) at learning rate lr.
  void step(std::span<float> params, std::span<const float> grads, double lr);

  const AdamWConfig& config() const { return config_; }
  std::int64_t step_count() const { return step_count_; }
  /// Optimizer state, exposed for checkpoints: first and second moments, and the step count.
  std::vector<float>& first_moment() { return m_; }
  std::vector<float>& second_moment() { return v_; }
  const std::vector<std::uint8_t>& decay_mask() const { return decay_mask_; }
  void set_step_count(std::int64_t steps) { step_count_ = steps; }

 private:
  AdamWConfig config_;
  std::vector<std::uint8_t> decay_mask_;
  std::vector<float> m_, v_;
  std::int64_t step_count_ = 0;
};

/// Per-element weight-decay flags for a layout: 1 unless the tensor is no_weight_decay.
std::vector<std::uint8_t> weight_decay_mask(const ParameterLayout& layout);

/// MAE's util/lr_sched.adjust_learning_rate evaluated at iteration `step` (0-based, counted over
/// the whole run), with epoch = step / steps_per_epoch as a real number:
///   epoch < warmup_epochs:  lr = base_lr * epoch / warmup_epochs
///   otherwise:              lr = min_lr + (base_lr - min_lr) * 0.5 *
///                                (1 + cos(pi * (epoch - warmup) / (total_epochs - warmup)))
/// Throws std::invalid_argument unless steps_per_epoch > 0, 0 <= warmup < total.
double lr_at(std::int64_t step, std::int64_t steps_per_epoch, double warmup_epochs,
             double total_epochs, double base_lr, double min_lr);

/// Global L2 norm of grads (accumulated in double).
double global_grad_norm(std::span<const float> grads);

/// torch.nn.utils.clip_grad_norm_: with n the global norm, scales grads by
/// max_norm / (n + 1e-6) when that factor is below 1. Returns n (before clipping).
double clip_grad_norm(std::span<float> grads, double max_norm);

}  // namespace kmim::model
