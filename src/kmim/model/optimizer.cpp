// AdamW, MAE's learning-rate schedule and gradient clipping (see optimizer.hpp).
#include "kmim/model/optimizer.hpp"

#include <cmath>
#include <numbers>
#include <stdexcept>
#include <string>

#include "kmim/model/layers.hpp"

namespace kmim::model {
namespace {
using Index = std::ptrdiff_t;
}  // namespace

std::vector<std::uint8_t> weight_decay_mask(const ParameterLayout& layout) {
  std::vector<std::uint8_t> mask(layout.total, 1);
  for (const TensorInfo& t : layout.tensors) {
    if (t.no_weight_decay) std::fill_n(mask.begin() + static_cast<Index>(t.offset), t.numel, 0);
  }
  return mask;
}

AdamW::AdamW(std::vector<std::uint8_t> decay_mask, AdamWConfig config)
    : config_(config),
      decay_mask_(std::move(decay_mask)),
      m_(decay_mask_.size(), 0.0f),
      v_(decay_mask_.size(), 0.0f) {}

AdamW::AdamW(const ParameterLayout& layout, AdamWConfig config)
    : AdamW(weight_decay_mask(layout), config) {}

void AdamW::step(std::span<float> params, std::span<const float> grads, double lr) {
  if (params.size() != decay_mask_.size() || grads.size() != decay_mask_.size()) {
    throw std::invalid_argument("AdamW::step: buffers of " + std::to_string(params.size()) +
                                " parameters and " + std::to_string(grads.size()) +
                                " gradients, optimizer built for " +
                                std::to_string(decay_mask_.size()));
  }
  ++step_count_;
  const double t = static_cast<double>(step_count_);
  const double bias_correction1 = 1.0 - std::pow(config_.beta1, t);
  const double bias_correction2 = 1.0 - std::pow(config_.beta2, t);
  const float step_size = static_cast<float>(lr / bias_correction1);
  const float inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bias_correction2));
  const float decay_factor = static_cast<float>(1.0 - lr * config_.weight_decay);
  const float b1 = static_cast<float>(config_.beta1);
  const float b2 = static_cast<float>(config_.beta2);
  const float eps = static_cast<float>(config_.eps);
  float* p = params.data();
  const float* g = grads.data();
  float* m = m_.data();
  float* v = v_.data();
  const std::uint8_t* decay = decay_mask_.data();
  const Index n = static_cast<Index>(params.size());
#pragma omp parallel for schedule(static) if (n >= kMinParallelValues)
  for (Index i = 0; i < n; ++i) {
    if (decay[i] != 0) p[i] *= decay_factor;
    m[i] = b1 * m[i] + (1.0f - b1) * g[i];
    v[i] = b2 * v[i] + (1.0f - b2) * g[i] * g[i];
    const float denom = std::sqrt(v[i]) * inv_sqrt_bc2 + eps;
    p[i] -= step_size * m[i] / denom;
  }
}

double lr_at(std::int64_t step, std::int64_t steps_per_epoch, double warmup_epochs,
             double total_epochs, double base_lr, double min_lr) {
  if (steps_per_epoch <= 0) {
    throw std::invalid_argument("lr_at: steps_per_epoch = " + std::to_string(steps_per_epoch) +
                                " must be positive");
  }
  if (!(warmup_epochs >= 0.0 && warmup_epochs < total_epochs)) {
    throw std::invalid_argument("lr_at: warmup_epochs = " + std::to_string(warmup_epochs) +
                                " must lie in [0, total_epochs = " + std::to_string(total_epochs) +
                                ")");
  }
  const double epoch = static_cast<double>(step) / static_cast<double>(steps_per_epoch);
  if (epoch < warmup_epochs) return base_lr * epoch / warmup_epochs;
  return min_lr + (base_lr - min_lr) * 0.5 *
                      (1.0 + std::cos(std::numbers::pi * (epoch - warmup_epochs) /
                                      (total_epochs - warmup_epochs)));
}

double global_grad_norm(std::span<const float> grads) {
  double sum = 0.0;  // sequential double sum: deterministic and accurate
  for (float g : grads) sum += static_cast<double>(g) * g;
  return std::sqrt(sum);
}

double clip_grad_norm(std::span<float> grads, double max_norm) {
  const double norm = global_grad_norm(grads);
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0) {
    const float scale = static_cast<float>(coef);
    const Index n = static_cast<Index>(grads.size());
    float* g = grads.data();
#pragma omp parallel for schedule(static) if (n >= kMinParallelValues)
    for (Index i = 0; i < n; ++i) g[i] *= scale;
  }
  return norm;
}

}  // namespace kmim::model
