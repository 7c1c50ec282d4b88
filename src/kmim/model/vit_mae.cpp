// The MAE ViT encoder/decoder: configuration, parameter layout and initialization, workspace,
// and the forward/backward passes composed from layers.hpp and masking.hpp.
#include "kmim/model/vit_mae.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <stdexcept>
#include <string>
#include <utility>

#include "kmim/core/rng.hpp"
#include "kmim/model/layers.hpp"
#include "kmim/model/masking.hpp"
#include "kmim/model/pos_embed.hpp"

namespace kmim::model {
namespace {

using Index = std::ptrdiff_t;

[[noreturn]] void invalid_field(const std::string& field, const std::string& value,
                                const std::string& requirement) {
  throw std::invalid_argument("ModelConfig: " + field + " = " + value + " " + requirement);
}

void require_positive(const char* field, int value) {
  if (value <= 0) invalid_field(field, std::to_string(value), "must be positive");
}

struct PresetEntry {
  const char* name;
  int img, patch, dim, depth, heads, dec_dim, dec_depth, dec_heads, out_dim;
};

// vit_tiny_demo is sized for CPU tests and demos: 32x32 images in 4x4 patches give 64 patches
// (16 visible), so a forward/backward of a batch takes milliseconds on one core.
constexpr std::array<PresetEntry, 4> kPresets = {{
    {"vit_tiny_demo", 32, 4, 64, 4, 4, 32, 2, 2, 256},
    {"vit_tiny", 224, 16, 192, 12, 3, 128, 4, 4, 1024},
    {"vit_small", 224, 16, 384, 12, 6, 256, 8, 8, 1024},
    {"vit_base", 224, 16, 768, 12, 12, 512, 8, 16, 1024},
}};

}  // namespace

// ==================================================================================== config

std::string_view loss_kind_name(LossKind kind) {
  return kind == LossKind::token_cross_entropy ? "token_cross_entropy" : "pixel_mse";
}

LossKind loss_kind_from_name(std::string_view name) {
  if (name == "token_cross_entropy") return LossKind::token_cross_entropy;
  if (name == "pixel_mse") return LossKind::pixel_mse;
  throw std::invalid_argument("unknown loss '" + std::string(name) +
                              "'; valid losses: token_cross_entropy, pixel_mse");
}

int ModelConfig::keep_count() const { return masking_keep_count(num_patches(), mask_ratio); }

void ModelConfig::use_pixel_mse_loss() {
  loss = LossKind::pixel_mse;
  out_dim = patch_dim();
}

void ModelConfig::validate() const {
  require_positive("img_size", img_size);
  require_positive("patch_size", patch_size);
  if (img_size % patch_size != 0) {
    invalid_field("img_size", std::to_string(img_size),
                  "must be divisible by patch_size = " + std::to_string(patch_size));
  }
  require_positive("channels", channels);
  require_positive("embed_dim", embed_dim);
  require_positive("depth", depth);
  require_positive("num_heads", num_heads);
  require_positive("decoder_embed_dim", decoder_embed_dim);
  require_positive("decoder_depth", decoder_depth);
  require_positive("decoder_num_heads", decoder_num_heads);
  require_positive("mlp_ratio", mlp_ratio);
  require_positive("out_dim", out_dim);
  if (embed_dim % num_heads != 0) {
    invalid_field("embed_dim", std::to_string(embed_dim),
                  "must be divisible by num_heads = " + std::to_string(num_heads));
  }
  if (decoder_embed_dim % decoder_num_heads != 0) {
    invalid_field("decoder_embed_dim", std::to_string(decoder_embed_dim),
                  "must be divisible by decoder_num_heads = " + std::to_string(decoder_num_heads));
  }
  if (embed_dim % 4 != 0) {
    invalid_field("embed_dim", std::to_string(embed_dim),
                  "must be a multiple of 4 (2-D sin-cos position embedding)");
  }
  if (decoder_embed_dim % 4 != 0) {
    invalid_field("decoder_embed_dim", std::to_string(decoder_embed_dim),
                  "must be a multiple of 4 (2-D sin-cos position embedding)");
  }
  if (!(mask_ratio >= 0.0 && mask_ratio < 1.0)) {
    invalid_field("mask_ratio", std::to_string(mask_ratio), "must lie in [0, 1)");
  }
  if (keep_count() < 1) {
    invalid_field("mask_ratio", std::to_string(mask_ratio),
                  "leaves no visible patch of " + std::to_string(num_patches()) +
                      " (int(L * (1 - mask_ratio)) must be at least 1)");
  }
  if (loss == LossKind::token_cross_entropy && out_dim < 2) {
    invalid_field("out_dim", std::to_string(out_dim),
                  "must be at least 2 tokens for loss token_cross_entropy");
  }
  if (loss == LossKind::pixel_mse) {
    if (out_dim != patch_dim()) {
      invalid_field("out_dim", std::to_string(out_dim),
                    "must equal patch_size^2 * channels = " + std::to_string(patch_dim()) +
                        " for loss pixel_mse (see use_pixel_mse_loss())");
    }
    if (norm_pix_loss && patch_dim() < 2) {
      invalid_field("patch_size", std::to_string(patch_size),
                    "gives 1-value patches; norm_pix_loss needs at least 2");
    }
  }
}

std::vector<std::string> model_preset_names() {
  std::vector<std::string> names;
  for (const PresetEntry& p : kPresets) names.emplace_back(p.name);
  return names;
}

ModelConfig model_preset(std::string_view name) {
  for (const PresetEntry& p : kPresets) {
    if (name != p.name) continue;
    ModelConfig c;
    c.name = p.name;
    c.img_size = p.img;
    c.patch_size = p.patch;
    c.channels = 3;
    c.embed_dim = p.dim;
    c.depth = p.depth;
    c.num_heads = p.heads;
    c.decoder_embed_dim = p.dec_dim;
    c.decoder_depth = p.dec_depth;
    c.decoder_num_heads = p.dec_heads;
    c.mlp_ratio = 4;
    c.out_dim = p.out_dim;
    c.loss = LossKind::token_cross_entropy;
    c.mask_ratio = 0.75;
    c.validate();
    return c;
  }
  std::string valid;
  for (const PresetEntry& p : kPresets) valid += (valid.empty() ? "" : ", ") + std::string(p.name);
  throw std::invalid_argument("unknown model preset '" + std::string(name) +
                              "'; valid presets: " + valid);
}

// ================================================================================ parameters

ParameterLayout parameter_layout(const ModelConfig& config) {
  config.validate();
  ParameterLayout layout;
  auto add = [&layout](std::string name, std::vector<std::int64_t> shape, TensorInit init,
                       bool no_weight_decay) {
    TensorInfo t;
    t.name = std::move(name);
    t.numel = 1;
    for (std::int64_t s : shape) t.numel *= static_cast<std::size_t>(s);
    t.shape = std::move(shape);
    t.offset = layout.total;
    t.no_weight_decay = no_weight_decay;
    t.init = init;
    layout.total += t.numel;
    layout.tensors.push_back(std::move(t));
    return layout.tensors.back().offset;
  };
  auto linear = [&add](const std::string& prefix, std::int64_t out, std::int64_t in,
                       std::size_t& weight, std::size_t& bias) {
    weight = add(prefix + ".weight", {out, in}, TensorInit::xavier_uniform, false);
    bias = add(prefix + ".bias", {out}, TensorInit::zeros, true);
  };
  auto norm = [&add](const std::string& prefix, std::int64_t dim, std::size_t& weight,
                     std::size_t& bias) {
    weight = add(prefix + ".weight", {dim}, TensorInit::ones, true);
    bias = add(prefix + ".bias", {dim}, TensorInit::zeros, true);
  };
  auto block = [&](const std::string& prefix, std::int64_t dim) {
    BlockOffsets b{};
    const std::int64_t hidden = dim * config.mlp_ratio;
    norm(prefix + ".norm1", dim, b.norm1_weight, b.norm1_bias);
    linear(prefix + ".attn.qkv", 3 * dim, dim, b.qkv_weight, b.qkv_bias);
    linear(prefix + ".attn.proj", dim, dim, b.proj_weight, b.proj_bias);
    norm(prefix + ".norm2", dim, b.norm2_weight, b.norm2_bias);
    linear(prefix + ".mlp.fc1", hidden, dim, b.fc1_weight, b.fc1_bias);
    linear(prefix + ".mlp.fc2", dim, hidden, b.fc2_weight, b.fc2_bias);
    return b;
  };

  const std::int64_t d = config.embed_dim;
  const std::int64_t dd = config.decoder_embed_dim;
  ParameterOffsets& o = layout.offsets;
  // Weight decay as MAE's timm add_weight_decay: none on 1-D tensors (norms) and biases; the
  // 3-D cls_token and mask_token ARE decayed in the reference code, so they are here too.
  o.cls_token = add("cls_token", {1, 1, d}, TensorInit::normal_002, false);
  o.mask_token = add("mask_token", {1, 1, dd}, TensorInit::normal_002, false);
  linear("patch_embed.proj", d, config.patch_dim(), o.patch_embed_weight, o.patch_embed_bias);
  for (int i = 0; i < config.depth; ++i)
    o.blocks.push_back(block("blocks." + std::to_string(i), d));
  norm("norm", d, o.norm_weight, o.norm_bias);
  linear("decoder_embed", dd, d, o.decoder_embed_weight, o.decoder_embed_bias);
  for (int i = 0; i < config.decoder_depth; ++i) {
    o.decoder_blocks.push_back(block("decoder_blocks." + std::to_string(i), dd));
  }
  norm("decoder_norm", dd, o.decoder_norm_weight, o.decoder_norm_bias);
  linear("decoder_pred", config.out_dim, dd, o.decoder_pred_weight, o.decoder_pred_bias);
  return layout;
}

std::size_t parameter_count(const ModelConfig& config) { return parameter_layout(config).total; }

template <typename T>
ParameterBuffer<T>::ParameterBuffer(const ModelConfig& config)
    : config_(config),
      layout_(std::make_shared<const ParameterLayout>(parameter_layout(config))),
      values_(layout_->total, T(0)) {}

template <typename T>
const TensorInfo& ParameterBuffer<T>::tensor_info(std::string_view name) const {
  for (const TensorInfo& t : layout_->tensors) {
    if (t.name == name) return t;
  }
  throw std::out_of_range("no parameter tensor named '" + std::string(name) + "'");
}

template <typename T>
std::span<T> ParameterBuffer<T>::tensor(std::string_view name) {
  const TensorInfo& t = tensor_info(name);
  return std::span<T>(values_).subspan(t.offset, t.numel);
}

template <typename T>
std::span<const T> ParameterBuffer<T>::tensor(std::string_view name) const {
  const TensorInfo& t = tensor_info(name);
  return std::span<const T>(values_).subspan(t.offset, t.numel);
}

template <typename T>
void ParameterBuffer<T>::zero() {
  std::fill(values_.begin(), values_.end(), T(0));
}

template <typename T>
void init_parameters(ParameterBuffer<T>& params, std::uint64_t seed) {
  const std::vector<TensorInfo>& tensors = params.tensors();
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const TensorInfo& t = tensors[i];
    T* values = params.data() + t.offset;
    RandomStream stream(seed, stream_id({kParameterInitStreamTag, i}));
    switch (t.init) {
      case TensorInit::zeros:
        std::fill_n(values, t.numel, T(0));
        break;
      case TensorInit::ones:
        std::fill_n(values, t.numel, T(1));
        break;
      case TensorInit::normal_002:
        for (std::size_t j = 0; j < t.numel; ++j)
          values[j] = static_cast<T>(0.02 * stream.normal());
        break;
      case TensorInit::xavier_uniform: {
        // torch.nn.init.xavier_uniform_ on a 2-D [out, in] tensor: fan_in = in, fan_out = out.
        const double fan_out = static_cast<double>(t.shape.at(0));
        const double fan_in = static_cast<double>(t.shape.at(1));
        const double bound = std::sqrt(6.0 / (fan_in + fan_out));
        for (std::size_t j = 0; j < t.numel; ++j) {
          values[j] = static_cast<T>(stream.uniform(-bound, bound));
        }
        break;
      }
    }
  }
}

// =============================================================================== activations

namespace {

template <typename T>
std::size_t block_bytes(const BlockActivations<T>& a) {
  const std::size_t n = a.ln1_out.size() + a.ln1_mean.size() + a.ln1_rstd.size() + a.qkv.size() +
                        a.attn_probs.size() + a.attn_out.size() + a.mid.size() + a.ln2_out.size() +
                        a.ln2_mean.size() + a.ln2_rstd.size() + a.fc1_out.size() +
                        a.gelu_out.size() + a.out.size();
  return n * sizeof(T);
}

template <typename T>
std::vector<T> to_scalar(const std::vector<double>& values) {
  return std::vector<T>(values.begin(), values.end());
}

}  // namespace

template <typename T>
Activations<T>::Activations(const ModelConfig& model_config, int max_batch_size)
    : config(model_config), max_batch(max_batch_size) {
  config.validate();
  if (max_batch <= 0) {
    throw std::invalid_argument("Activations: max_batch = " + std::to_string(max_batch) +
                                " must be positive");
  }
  const std::size_t b = static_cast<std::size_t>(max_batch);
  const std::size_t l = static_cast<std::size_t>(config.num_patches());
  const std::size_t keep = static_cast<std::size_t>(config.keep_count());
  const std::size_t ne = keep + 1;
  const std::size_t nd = l + 1;
  const std::size_t d = static_cast<std::size_t>(config.embed_dim);
  const std::size_t dd = static_cast<std::size_t>(config.decoder_embed_dim);
  const std::size_t heads = static_cast<std::size_t>(config.num_heads);
  const std::size_t decoder_heads = static_cast<std::size_t>(config.decoder_num_heads);
  const std::size_t ratio = static_cast<std::size_t>(config.mlp_ratio);
  const std::size_t pdim = static_cast<std::size_t>(config.patch_dim());
  const std::size_t out = static_cast<std::size_t>(config.out_dim);

  pos_embed =
      to_scalar<T>(sincos_2d_position_embedding(config.embed_dim, config.grid_size(), true));
  decoder_pos_embed = to_scalar<T>(
      sincos_2d_position_embedding(config.decoder_embed_dim, config.grid_size(), true));

  ids_shuffle.assign(b * l, 0);
  ids_restore.assign(b * l, 0);
  targets.assign(b * l, 0);
  mask.assign(b * l, T(0));

  kept_patches.assign(b * keep * pdim, T(0));
  patch_embed_out.assign(b * keep * d, T(0));
  encoder_input.assign(b * ne * d, T(0));
  encoder_blocks.resize(static_cast<std::size_t>(config.depth));
  for (auto& blk : encoder_blocks) blk.allocate(b, ne, d, heads, ratio * d);
  encoder_norm_out.assign(b * ne * d, T(0));
  encoder_norm_mean.assign(b * ne, T(0));
  encoder_norm_rstd.assign(b * ne, T(0));

  decoder_embed_out.assign(b * ne * dd, T(0));
  decoder_input.assign(b * nd * dd, T(0));
  decoder_blocks.resize(static_cast<std::size_t>(config.decoder_depth));
  for (auto& blk : decoder_blocks) blk.allocate(b, nd, dd, decoder_heads, ratio * dd);
  decoder_norm_out.assign(b * nd * dd, T(0));
  decoder_norm_mean.assign(b * nd, T(0));
  decoder_norm_rstd.assign(b * nd, T(0));
  head_input.assign(b * l * dd, T(0));
  logits.assign(b * l * out, T(0));

  row_loss.assign(b * l, T(0));
  row_logsumexp.assign(config.loss == LossKind::token_cross_entropy ? b * l : 0, T(0));
  pixel_target.assign(config.loss == LossKind::pixel_mse ? b * l * pdim : 0, T(0));

  const std::size_t stream_values = std::max(b * ne * d, b * nd * dd);
  d_logits.assign(b * l * out, T(0));
  d_head_input.assign(b * l * dd, T(0));
  d_decoder_embed_out.assign(b * ne * dd, T(0));
  d_patch_embed_out.assign(b * keep * d, T(0));
  d_residual.assign(stream_values, T(0));
  d_normed.assign(stream_values, T(0));
  d_attn_out.assign(stream_values, T(0));
  d_qkv.assign(3 * stream_values, T(0));
  d_hidden.assign(ratio * stream_values, T(0));
  d_attn_scratch.assign(std::max(b * heads * ne * ne, b * decoder_heads * nd * nd), T(0));
}

template <typename T>
std::size_t Activations<T>::bytes() const {
  std::size_t n = 0;
  for (const std::vector<T>* v : {&pos_embed,
                                  &decoder_pos_embed,
                                  &mask,
                                  &kept_patches,
                                  &patch_embed_out,
                                  &encoder_input,
                                  &encoder_norm_out,
                                  &encoder_norm_mean,
                                  &encoder_norm_rstd,
                                  &decoder_embed_out,
                                  &decoder_input,
                                  &decoder_norm_out,
                                  &decoder_norm_mean,
                                  &decoder_norm_rstd,
                                  &head_input,
                                  &logits,
                                  &row_loss,
                                  &row_logsumexp,
                                  &pixel_target,
                                  &d_logits,
                                  &d_head_input,
                                  &d_decoder_embed_out,
                                  &d_patch_embed_out,
                                  &d_residual,
                                  &d_normed,
                                  &d_attn_out,
                                  &d_qkv,
                                  &d_hidden,
                                  &d_attn_scratch}) {
    n += v->size() * sizeof(T);
  }
  n += (ids_shuffle.size() + ids_restore.size() + targets.size()) * sizeof(std::int32_t);
  for (const auto& blk : encoder_blocks) n += block_bytes(blk);
  for (const auto& blk : decoder_blocks) n += block_bytes(blk);
  return n;
}

// ============================================================================ forward/backward

namespace {

/// Shape of one transformer stage (encoder or decoder) for the current batch.
struct StageShape {
  int batch, tokens, dim, heads, hidden;
  int rows() const { return batch * tokens; }
  std::size_t values() const { return static_cast<std::size_t>(rows()) * dim; }
};

// Pre-norm block: mid = x + proj(attn(LN1(x))); out = mid + fc2(gelu(fc1(LN2(mid)))).
template <typename T>
void block_forward(BlockActivations<T>& a, const T* x, const T* params, const BlockOffsets& o,
                   const StageShape& s) {
  const int rows = s.rows();
  layernorm_forward(a.ln1_out.data(), a.ln1_mean.data(), a.ln1_rstd.data(), x,
                    params + o.norm1_weight, params + o.norm1_bias, rows, s.dim);
  linear_forward(a.qkv.data(), a.ln1_out.data(), params + o.qkv_weight, params + o.qkv_bias, rows,
                 s.dim, 3 * s.dim);
  attention_forward(a.attn_out.data(), a.attn_probs.data(), a.qkv.data(), s.batch, s.tokens, s.dim,
                    s.heads);
  linear_forward(a.mid.data(), a.attn_out.data(), params + o.proj_weight, params + o.proj_bias,
                 rows, s.dim, s.dim);
  residual_forward(a.mid.data(), a.mid.data(), x, s.values());
  layernorm_forward(a.ln2_out.data(), a.ln2_mean.data(), a.ln2_rstd.data(), a.mid.data(),
                    params + o.norm2_weight, params + o.norm2_bias, rows, s.dim);
  linear_forward(a.fc1_out.data(), a.ln2_out.data(), params + o.fc1_weight, params + o.fc1_bias,
                 rows, s.dim, s.hidden);
  gelu_forward(a.gelu_out.data(), a.fc1_out.data(), static_cast<std::size_t>(rows) * s.hidden);
  linear_forward(a.out.data(), a.gelu_out.data(), params + o.fc2_weight, params + o.fc2_bias, rows,
                 s.hidden, s.dim);
  residual_forward(a.out.data(), a.out.data(), a.mid.data(), s.values());
}

// Backward of block_forward. On entry acts.d_residual holds dL/d(out); on exit dL/d(x).
// The residual connections need no work of their own: the skip path passes the gradient
// through unchanged, so d_residual keeps it and layernorm_backward ADDS each branch's share
// (mid = x + ... gives d(x) = d(mid) + branch; out = mid + ... likewise).
template <typename T>
void block_backward(Activations<T>& acts, const BlockActivations<T>& a, const T* x, const T* params,
                    T* grads, const BlockOffsets& o, const StageShape& s) {
  const int rows = s.rows();
  T* d_res = acts.d_residual.data();
  T* d_normed = acts.d_normed.data();
  T* d_hidden = acts.d_hidden.data();
  // MLP branch.
  linear_backward(d_hidden, grads + o.fc2_weight, grads + o.fc2_bias, d_res, a.gelu_out.data(),
                  params + o.fc2_weight, rows, s.hidden, s.dim);
  gelu_backward(d_hidden, a.fc1_out.data(), d_hidden, static_cast<std::size_t>(rows) * s.hidden);
  linear_backward(d_normed, grads + o.fc1_weight, grads + o.fc1_bias, d_hidden, a.ln2_out.data(),
                  params + o.fc1_weight, rows, s.dim, s.hidden);
  layernorm_backward(d_res, grads + o.norm2_weight, grads + o.norm2_bias, d_normed, a.mid.data(),
                     params + o.norm2_weight, a.ln2_mean.data(), a.ln2_rstd.data(), rows, s.dim);
  // Attention branch (d_res now holds dL/d(mid)).
  linear_backward(acts.d_attn_out.data(), grads + o.proj_weight, grads + o.proj_bias, d_res,
                  a.attn_out.data(), params + o.proj_weight, rows, s.dim, s.dim);
  attention_backward(acts.d_qkv.data(), acts.d_attn_scratch.data(), acts.d_attn_out.data(),
                     a.qkv.data(), a.attn_probs.data(), s.batch, s.tokens, s.dim, s.heads);
  linear_backward(d_normed, grads + o.qkv_weight, grads + o.qkv_bias, acts.d_qkv.data(),
                  a.ln1_out.data(), params + o.qkv_weight, rows, s.dim, 3 * s.dim);
  layernorm_backward(d_res, grads + o.norm1_weight, grads + o.norm1_bias, d_normed, x,
                     params + o.norm1_weight, a.ln1_mean.data(), a.ln1_rstd.data(), rows, s.dim);
}

// Throws std::invalid_argument; the message is only built on failure (forward and backward
// allocate nothing on the normal path).
template <typename Message>
void require(bool ok, Message&& message) {
  if (!ok) throw std::invalid_argument(message());
}

}  // namespace

template <typename T>
LossResult vit_mae_forward(const ParameterBuffer<T>& params, const Batch<T>& batch,
                           Activations<T>& acts) {
  const ModelConfig& c = acts.config;
  require(params.config() == c, [&] {
    return "vit_mae_forward: parameters and activations were built for different model configs "
           "('" +
           params.config().name + "' vs '" + c.name + "')";
  });
  require(batch.size >= 1 && batch.size <= acts.max_batch, [&] {
    return "vit_mae_forward: batch size " + std::to_string(batch.size) + " outside [1, " +
           std::to_string(acts.max_batch) + "]";
  });
  require(batch.patches != nullptr, [] { return "vit_mae_forward: batch.patches is null"; });
  require(batch.noise != nullptr, [] { return "vit_mae_forward: batch.noise is null"; });
  const bool token_loss = c.loss == LossKind::token_cross_entropy;
  require(!token_loss || batch.token_targets != nullptr, [] {
    return "vit_mae_forward: batch.token_targets is null (needed by token_cross_entropy)";
  });

  const int b = batch.size;
  const int l = c.num_patches();
  const int keep = c.keep_count();
  const int ne = keep + 1;
  const int nd = l + 1;
  const int d = c.embed_dim;
  const int dd = c.decoder_embed_dim;
  const int pdim = c.patch_dim();
  const T* p = params.data();
  const ParameterOffsets& o = params.offsets();
  acts.batch = 0;  // set on success only: backward refuses a failed or partial forward

  // Masking and the encoder's input tokens.
  random_masking(acts.ids_shuffle.data(), acts.ids_restore.data(), acts.mask.data(), batch.noise, b,
                 l, keep);
  if (token_loss) {
    std::copy_n(batch.token_targets, static_cast<std::size_t>(b) * l, acts.targets.data());
  }
  // Embedding only the visible patches equals MAE's embed-all-then-gather (the linear map acts
  // row by row) at a quarter of the cost.
  gather_kept_forward(acts.kept_patches.data(), batch.patches, acts.ids_shuffle.data(), b, l, keep,
                      pdim);
  linear_forward(acts.patch_embed_out.data(), acts.kept_patches.data(), p + o.patch_embed_weight,
                 p + o.patch_embed_bias, b * keep, pdim, d);
  {
    const T* pos = acts.pos_embed.data();
    const T* cls = p + o.cls_token;
    T* x = acts.encoder_input.data();
#pragma omp parallel for schedule(static) if (static_cast <Index>(b) * ne * d >= kMinParallelValues)
    for (Index bi = 0; bi < static_cast<Index>(b) * ne; ++bi) {
      const Index s = bi / ne;
      const Index i = bi % ne;
      T* row = x + bi * d;
      if (i == 0) {
        for (int k = 0; k < d; ++k) row[k] = cls[k] + pos[k];  // pos[0] is zero, as in MAE
      } else {
        const T* e = acts.patch_embed_out.data() + (s * keep + i - 1) * d;
        const T* pe = pos + (1 + static_cast<Index>(acts.ids_shuffle[s * l + i - 1])) * d;
        for (int k = 0; k < d; ++k) row[k] = e[k] + pe[k];
      }
    }
  }

  // Encoder.
  const StageShape enc{b, ne, d, c.num_heads, c.mlp_ratio * d};
  const T* x = acts.encoder_input.data();
  for (std::size_t i = 0; i < acts.encoder_blocks.size(); ++i) {
    block_forward(acts.encoder_blocks[i], x, p, o.blocks[i], enc);
    x = acts.encoder_blocks[i].out.data();
  }
  layernorm_forward(acts.encoder_norm_out.data(), acts.encoder_norm_mean.data(),
                    acts.encoder_norm_rstd.data(), x, p + o.norm_weight, p + o.norm_bias,
                    enc.rows(), d);

  // Decoder input: embed, unshuffle with mask tokens, add positions.
  linear_forward(acts.decoder_embed_out.data(), acts.encoder_norm_out.data(),
                 p + o.decoder_embed_weight, p + o.decoder_embed_bias, enc.rows(), d, dd);
  unshuffle_with_mask_tokens_forward(acts.decoder_input.data(), acts.decoder_embed_out.data(),
                                     p + o.mask_token, acts.ids_restore.data(), b, l, keep, dd);
  {
    const T* pos = acts.decoder_pos_embed.data();
    T* y = acts.decoder_input.data();
#pragma omp parallel for schedule(static) if (static_cast <Index>(b) * nd * dd >= \
                                              kMinParallelValues)
    for (Index bn = 0; bn < static_cast<Index>(b) * nd; ++bn) {
      const T* pe = pos + (bn % nd) * dd;
      T* row = y + bn * dd;
      for (int k = 0; k < dd; ++k) row[k] += pe[k];
    }
  }

  // Decoder.
  const StageShape dec{b, nd, dd, c.decoder_num_heads, c.mlp_ratio * dd};
  const T* y = acts.decoder_input.data();
  for (std::size_t i = 0; i < acts.decoder_blocks.size(); ++i) {
    block_forward(acts.decoder_blocks[i], y, p, o.decoder_blocks[i], dec);
    y = acts.decoder_blocks[i].out.data();
  }
  layernorm_forward(acts.decoder_norm_out.data(), acts.decoder_norm_mean.data(),
                    acts.decoder_norm_rstd.data(), y, p + o.decoder_norm_weight,
                    p + o.decoder_norm_bias, dec.rows(), dd);
  // Drop the CLS row of every sample, then predict.
#pragma omp parallel for schedule(static) if (static_cast <Index>(b) * nd * dd >= \
                                              kMinParallelValues)
  for (Index s = 0; s < b; ++s) {
    std::copy_n(acts.decoder_norm_out.data() + (s * nd + 1) * dd, static_cast<Index>(l) * dd,
                acts.head_input.data() + s * l * dd);
  }
  linear_forward(acts.logits.data(), acts.head_input.data(), p + o.decoder_pred_weight,
                 p + o.decoder_pred_bias, b * l, dd, c.out_dim);

  // Loss over masked patches.
  LossResult result;
  if (token_loss) {
    const MaskedLossSum s = softmax_cross_entropy_forward(
        acts.row_logsumexp.data(), acts.row_loss.data(), acts.logits.data(), acts.targets.data(),
        acts.mask.data(), b * l, c.out_dim);
    result.loss = s.loss;
    result.masked_patches = s.selected;
    if (s.selected > 0) {
      result.masked_accuracy = static_cast<double>(s.correct) / static_cast<double>(s.selected);
    }
  } else {
    const MaskedLossSum s = normalized_patch_mse_forward(
        acts.pixel_target.data(), acts.row_loss.data(), acts.logits.data(), batch.patches,
        acts.mask.data(), b * l, pdim, c.norm_pix_loss);
    result.loss = s.loss;
    result.masked_patches = s.selected;
  }
  acts.batch = b;
  return result;
}

template <typename T>
void vit_mae_backward(const ParameterBuffer<T>& params, Activations<T>& acts,
                      ParameterBuffer<T>& grads, double d_loss) {
  const ModelConfig& c = acts.config;
  require(params.config() == c && grads.config() == c, [] {
    return "vit_mae_backward: parameters, gradients and activations must share one model config";
  });
  require(acts.batch >= 1,
          [] { return "vit_mae_backward: no forward pass has been run on these activations"; });
  const int b = acts.batch;
  const int l = c.num_patches();
  const int keep = c.keep_count();
  const int ne = keep + 1;
  const int nd = l + 1;
  const int d = c.embed_dim;
  const int dd = c.decoder_embed_dim;
  const int pdim = c.patch_dim();
  const T* p = params.data();
  T* g = grads.data();
  const ParameterOffsets& o = params.offsets();

  // Loss → logits → head.
  if (c.loss == LossKind::token_cross_entropy) {
    softmax_cross_entropy_backward(acts.d_logits.data(), acts.logits.data(),
                                   acts.row_logsumexp.data(), acts.targets.data(), acts.mask.data(),
                                   b * l, c.out_dim, d_loss);
  } else {
    normalized_patch_mse_backward(acts.d_logits.data(), acts.logits.data(),
                                  acts.pixel_target.data(), acts.mask.data(), b * l, pdim, d_loss);
  }
  linear_backward(acts.d_head_input.data(), g + o.decoder_pred_weight, g + o.decoder_pred_bias,
                  acts.d_logits.data(), acts.head_input.data(), p + o.decoder_pred_weight, b * l,
                  dd, c.out_dim);
  // Undo the CLS drop: the CLS row received no gradient.
  T* d_norm_out = acts.d_normed.data();
#pragma omp parallel for schedule(static) if (static_cast <Index>(b) * nd * dd >= \
                                              kMinParallelValues)
  for (Index s = 0; s < b; ++s) {
    std::fill_n(d_norm_out + s * nd * dd, dd, T(0));
    std::copy_n(acts.d_head_input.data() + s * l * dd, static_cast<Index>(l) * dd,
                d_norm_out + (s * nd + 1) * dd);
  }

  // Decoder.
  const StageShape dec{b, nd, dd, c.decoder_num_heads, c.mlp_ratio * dd};
  std::fill_n(acts.d_residual.data(), dec.values(), T(0));
  layernorm_backward(acts.d_residual.data(), g + o.decoder_norm_weight, g + o.decoder_norm_bias,
                     d_norm_out, acts.decoder_blocks.back().out.data(), p + o.decoder_norm_weight,
                     acts.decoder_norm_mean.data(), acts.decoder_norm_rstd.data(), dec.rows(), dd);
  for (std::size_t i = acts.decoder_blocks.size(); i-- > 0;) {
    const T* in = i == 0 ? acts.decoder_input.data() : acts.decoder_blocks[i - 1].out.data();
    block_backward(acts, acts.decoder_blocks[i], in, p, g, o.decoder_blocks[i], dec);
  }
  // The decoder position embedding is a constant: d(decoder_input) passes through unchanged.
  unshuffle_with_mask_tokens_backward(acts.d_decoder_embed_out.data(), g + o.mask_token,
                                      acts.d_residual.data(), acts.ids_restore.data(), b, l, keep,
                                      dd);

  // Encoder.
  const StageShape enc{b, ne, d, c.num_heads, c.mlp_ratio * d};
  T* d_latent = acts.d_normed.data();
  linear_backward(d_latent, g + o.decoder_embed_weight, g + o.decoder_embed_bias,
                  acts.d_decoder_embed_out.data(), acts.encoder_norm_out.data(),
                  p + o.decoder_embed_weight, enc.rows(), d, dd);
  std::fill_n(acts.d_residual.data(), enc.values(), T(0));
  layernorm_backward(acts.d_residual.data(), g + o.norm_weight, g + o.norm_bias, d_latent,
                     acts.encoder_blocks.back().out.data(), p + o.norm_weight,
                     acts.encoder_norm_mean.data(), acts.encoder_norm_rstd.data(), enc.rows(), d);
  for (std::size_t i = acts.encoder_blocks.size(); i-- > 0;) {
    const T* in = i == 0 ? acts.encoder_input.data() : acts.encoder_blocks[i - 1].out.data();
    block_backward(acts, acts.encoder_blocks[i], in, p, g, o.blocks[i], enc);
  }

  // Encoder input = [cls + pos0, patch_embed(kept) + pos]: split the gradient.
  const T* d_in = acts.d_residual.data();
  T* d_cls = g + o.cls_token;
  for (Index s = 0; s < b; ++s) {  // fixed order: independent of the thread count
    for (int k = 0; k < d; ++k) d_cls[k] += d_in[s * ne * d + k];
  }
#pragma omp parallel for schedule(static) if (static_cast <Index>(b) * ne * d >= kMinParallelValues)
  for (Index s = 0; s < b; ++s) {
    std::copy_n(d_in + (s * ne + 1) * d, static_cast<Index>(keep) * d,
                acts.d_patch_embed_out.data() + s * keep * d);
  }
  linear_backward<T>(nullptr, g + o.patch_embed_weight, g + o.patch_embed_bias,
                     acts.d_patch_embed_out.data(), acts.kept_patches.data(),
                     p + o.patch_embed_weight, b * keep, pdim, d);
}

// ===================================================================================== FLOPs

FlopCount flops_per_image(const ModelConfig& config) {
  config.validate();
  const double l = config.num_patches();
  const double keep = config.keep_count();
  const double ne = keep + 1;
  const double nd = l + 1;
  const double d = config.embed_dim;
  const double dd = config.decoder_embed_dim;
  const double r = config.mlp_ratio;
  // One block of width C over N tokens: qkv 3C^2, proj C^2, fc1 + fc2 2rC^2 multiply-adds per
  // token, plus Q K^T and P V with N*N*C multiply-adds each.
  auto block = [r](double n, double c) {
    return 2.0 * (n * (4.0 + 2.0 * r) * c * c + 2.0 * n * n * c);
  };
  double f = 2.0 * keep * config.patch_dim() * d;  // patch embedding of the visible patches
  f += config.depth * block(ne, d);
  f += 2.0 * ne * d * dd;  // decoder_embed
  f += config.decoder_depth * block(nd, dd);
  f += 2.0 * l * dd * config.out_dim;  // decoder_pred on the L patch rows
  return FlopCount{f, 3.0 * f};
}

// ============================================================================ instantiation

template class ParameterBuffer<float>;
template class ParameterBuffer<double>;
template struct Activations<float>;
template struct Activations<double>;
template void init_parameters<float>(ParameterBuffer<float>&, std::uint64_t);
template void init_parameters<double>(ParameterBuffer<double>&, std::uint64_t);
template LossResult vit_mae_forward<float>(const ParameterBuffer<float>&, const Batch<float>&,
                                           Activations<float>&);
template LossResult vit_mae_forward<double>(const ParameterBuffer<double>&, const Batch<double>&,
                                            Activations<double>&);
template void vit_mae_backward<float>(const ParameterBuffer<float>&, Activations<float>&,
                                      ParameterBuffer<float>&, double);
template void vit_mae_backward<double>(const ParameterBuffer<double>&, Activations<double>&,
                                       ParameterBuffer<double>&, double);

}  // namespace kmim::model
