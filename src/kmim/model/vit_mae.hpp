// The MAE asymmetric ViT encoder/decoder used for K-MIM pretraining, on the CPU.
//
//   patches [B, L, P*P*C]  (patchified images, patch vector in (row, col, channel) order)
//     │ random_masking(noise)          keep = int(L * (1 - mask_ratio)) patches per image
//     │ gather kept → patch_embed (Linear P*P*C → D) → + pos_embed[1 + patch index]
//     │ prepend CLS (cls_token + pos_embed[0])
//     │ depth × Block(D, heads)        Block: x += attn(LN1(x)); x += mlp(LN2(x))
//     │ LayerNorm                      → the encoder's latent [B, 1 + keep, D]
//     │ decoder_embed (Linear D → Dd)
//     │ unshuffle, mask_token at removed patches, + decoder_pos_embed
//     │ decoder_depth × Block(Dd, decoder_heads)
//     │ LayerNorm, drop CLS, decoder_pred (Linear Dd → out_dim)
//     ▼
//   logits [B, L, out_dim]
//     loss token_cross_entropy (K-MIM): CE against the K-means token of each patch, mean over
//                                       masked patches, plus masked-token accuracy;
//     loss pixel_mse (MAE baseline):    MSE against the per-patch normalized pixels, mean over
//                                       masked patches (out_dim = P*P*C).
//
// Everything is explicit: ParameterBuffer holds all trainable parameters in ONE contiguous
// buffer with named views (the gradient buffer has the same layout, so an allreduce or a
// checkpoint sees one array); Activations is a workspace allocated once for a maximum batch;
// vit_mae_forward / vit_mae_backward are plain functions over them (llm.c style). All of it is a
// template on the scalar type: float is the product, double serves the gradient checks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kmim::model {

// ===================================================================================== config

enum class LossKind {
  token_cross_entropy,  ///< K-MIM: cross-entropy against K-means token ids
  pixel_mse,            ///< MAE pixel baseline: MSE against (normalized) patch pixels
};

std::string_view loss_kind_name(LossKind kind);
/// "token_cross_entropy" or "pixel_mse"; throws std::invalid_argument otherwise.
LossKind loss_kind_from_name(std::string_view name);

/// Architecture and objective. The defaults are the vit_tiny_demo preset.
struct ModelConfig {
  std::string name = "vit_tiny_demo";
  int img_size = 32;           ///< square input images, img_size x img_size pixels
  int patch_size = 4;          ///< square patches; img_size must be divisible by it
  int channels = 3;            ///< image channels C
  int embed_dim = 64;          ///< encoder width D (multiple of 4 for the 2-D sin-cos embedding)
  int depth = 4;               ///< encoder blocks
  int num_heads = 4;           ///< encoder attention heads (D divisible by it)
  int decoder_embed_dim = 32;  ///< decoder width Dd (multiple of 4)
  int decoder_depth = 2;       ///< decoder blocks
  int decoder_num_heads = 2;   ///< decoder attention heads (Dd divisible by it)
  int mlp_ratio = 4;           ///< MLP hidden width = mlp_ratio * width
  int out_dim = 256;           ///< decoder_pred outputs: K tokens, or P*P*C for pixel_mse
  LossKind loss = LossKind::token_cross_entropy;
  bool norm_pix_loss = true;  ///< pixel_mse only: normalize each target patch (MAE's flag)
  double mask_ratio = 0.75;   ///< fraction of patches removed per image

  int grid_size() const { return img_size / patch_size; }               ///< patches per side
  int num_patches() const { return grid_size() * grid_size(); }         ///< L
  int patch_dim() const { return patch_size * patch_size * channels; }  ///< P*P*C
  int keep_count() const;                                               ///< int(L*(1-ratio))
  int encoder_tokens() const { return 1 + keep_count(); }               ///< CLS + visible
  int decoder_tokens() const { return 1 + num_patches(); }              ///< CLS + all patches

  /// Switches to the MAE pixel baseline: loss = pixel_mse and out_dim = patch_dim().
  void use_pixel_mse_loss();

  /// Throws std::invalid_argument naming the first offending field and its value.
  void validate() const;

  bool operator==(const ModelConfig&) const = default;
};

/// The preset names, in a stable order: vit_tiny_demo, vit_tiny, vit_small, vit_base.
std::vector<std::string> model_preset_names();

/// A preset (validated). Unknown names throw std::invalid_argument listing the valid ones.
///   name            img patch   D  depth heads   Dd  ddepth dheads  out_dim(K)
///   vit_tiny_demo    32    4    64    4     4    32     2      2       256
///   vit_tiny        224   16   192   12     3   128     4      4      1024
///   vit_small       224   16   384   12     6   256     8      8      1024
///   vit_base        224   16   768   12    12   512     8     16      1024
/// All: channels 3, mlp_ratio 4, mask_ratio 0.75, token_cross_entropy loss. img_size,
/// patch_size, channels, out_dim, mask_ratio and loss may be overridden by the caller (call
/// validate() afterwards).
ModelConfig model_preset(std::string_view name);

// ================================================================================ parameters

enum class TensorInit {
  xavier_uniform,  ///< U(-a, a), a = sqrt(6 / (fan_in + fan_out)) of the [out, in] weight
  zeros,
  ones,
  normal_002,  ///< N(0, 0.02^2) (MAE's cls_token and mask_token)
};

/// One named tensor inside the parameter (and gradient) buffer.
struct TensorInfo {
  std::string name;                 ///< MAE's state_dict name, e.g. "blocks.0.attn.qkv.weight"
  std::vector<std::int64_t> shape;  ///< MAE's shape (Linear weights [out, in])
  std::size_t offset = 0;           ///< first element in the buffer
  std::size_t numel = 0;
  bool no_weight_decay = false;  ///< biases and LayerNorm parameters (MAE: 1-D or .bias)
  TensorInit init = TensorInit::zeros;
};

/// Offsets (in elements) of one transformer block's tensors.
struct BlockOffsets {
  std::size_t norm1_weight, norm1_bias, qkv_weight, qkv_bias, proj_weight, proj_bias;
  std::size_t norm2_weight, norm2_bias, fc1_weight, fc1_bias, fc2_weight, fc2_bias;
};

/// Offsets of every tensor, for the forward/backward code.
struct ParameterOffsets {
  std::size_t cls_token = 0, mask_token = 0, patch_embed_weight = 0, patch_embed_bias = 0;
  std::vector<BlockOffsets> blocks;
  std::size_t norm_weight = 0, norm_bias = 0, decoder_embed_weight = 0, decoder_embed_bias = 0;
  std::vector<BlockOffsets> decoder_blocks;
  std::size_t decoder_norm_weight = 0, decoder_norm_bias = 0;
  std::size_t decoder_pred_weight = 0, decoder_pred_bias = 0;
};

struct ParameterLayout {
  std::vector<TensorInfo> tensors;  ///< stable order (below); offsets increase, no gaps
  ParameterOffsets offsets;
  std::size_t total = 0;  ///< sum of numel
};

/// The layout, tensors in MAE's named_parameters() order without the fixed position embeddings:
///   cls_token [1,1,D], mask_token [1,1,Dd], patch_embed.proj.weight [D, P*P*C],
///   patch_embed.proj.bias, blocks.{i}.{norm1.weight, norm1.bias, attn.qkv.weight [3D, D],
///   attn.qkv.bias, attn.proj.weight, attn.proj.bias, norm2.weight, norm2.bias,
///   mlp.fc1.weight [mlp_ratio*D, D], mlp.fc1.bias, mlp.fc2.weight, mlp.fc2.bias}, norm.weight,
///   norm.bias, decoder_embed.weight [Dd, D], decoder_embed.bias, decoder_blocks.{i}.{...},
///   decoder_norm.weight, decoder_norm.bias, decoder_pred.weight [out_dim, Dd],
///   decoder_pred.bias.
/// Note: MAE's patch_embed.proj.weight is a conv weight [D, C, P, P]; here its columns follow
/// the patch vector's (row, col, channel) order, so exchanging it with PyTorch needs a permute.
ParameterLayout parameter_layout(const ModelConfig& config);
std::size_t parameter_count(const ModelConfig& config);

/// All trainable parameters (or their gradients, or optimizer moments) in one contiguous
/// buffer, with named views. Copyable; a new buffer is all zeros.
template <typename T>
class ParameterBuffer {
 public:
  explicit ParameterBuffer(const ModelConfig& config);

  const ModelConfig& config() const { return config_; }
  const ParameterLayout& layout() const { return *layout_; }
  const std::vector<TensorInfo>& tensors() const { return layout_->tensors; }
  const ParameterOffsets& offsets() const { return layout_->offsets; }

  std::size_t size() const { return values_.size(); }
  T* data() { return values_.data(); }
  const T* data() const { return values_.data(); }
  std::span<T> values() { return values_; }
  std::span<const T> values() const { return values_; }

  /// The named tensor's values; throws std::out_of_range for an unknown name.
  std::span<T> tensor(std::string_view name);
  std::span<const T> tensor(std::string_view name) const;
  const TensorInfo& tensor_info(std::string_view name) const;

  void zero();

 private:
  ModelConfig config_;
  std::shared_ptr<const ParameterLayout> layout_;
  std::vector<T> values_;
};

using Parameters = ParameterBuffer<float>;
using Gradients = ParameterBuffer<float>;

/// MAE initialization, deterministic in seed: tensor i of the layout draws from
/// RandomStream(seed, stream_id({kParameterInitStreamTag, i})), values computed in double and
/// rounded to T (so float and double buffers initialized with one seed agree).
///   Linear weights (and the patch embedding's [D, P*P*C] view): xavier_uniform
///   biases: 0; LayerNorm: weight 1, bias 0; cls_token, mask_token: N(0, 0.02^2)
inline constexpr std::uint64_t kParameterInitStreamTag = 0x6b6d696d'696e6974ull;  // "kmiminit"
template <typename T>
void init_parameters(ParameterBuffer<T>& params, std::uint64_t seed);

// =============================================================================== activations

/// Saved activations of one transformer block for a batch (rows = B * N tokens, width C).
template <typename T>
struct BlockActivations {
  std::vector<T> ln1_out, ln1_mean, ln1_rstd;  ///< [rows, C], [rows], [rows]
  std::vector<T> qkv;                          ///< [rows, 3C]
  std::vector<T> attn_probs;                   ///< [B, H, N, N] softmax probabilities
  std::vector<T> attn_out;                     ///< [rows, C] heads concatenated, before proj
  std::vector<T> mid;                          ///< [rows, C] x + attn branch
  std::vector<T> ln2_out, ln2_mean, ln2_rstd;  ///< [rows, C], [rows], [rows]
  std::vector<T> fc1_out;                      ///< [rows, mlp_ratio*C] before GELU
  std::vector<T> gelu_out;                     ///< [rows, mlp_ratio*C]
  std::vector<T> out;                          ///< [rows, C] block output

  /// Sizes (and zeroes) every buffer for `batch` sequences of `tokens` tokens of width `dim`,
  /// `heads` attention heads and an MLP of width `hidden`. with_output false leaves `out` empty
  /// (the inference encoder writes block outputs into its own stream buffers).
  void allocate(std::size_t batch, std::size_t tokens, std::size_t dim, std::size_t heads,
                std::size_t hidden, bool with_output = true) {
    const std::size_t rows = batch * tokens;
    ln1_out.assign(rows * dim, T(0));
    ln1_mean.assign(rows, T(0));
    ln1_rstd.assign(rows, T(0));
    qkv.assign(rows * 3 * dim, T(0));
    attn_probs.assign(batch * heads * tokens * tokens, T(0));
    attn_out.assign(rows * dim, T(0));
    mid.assign(rows * dim, T(0));
    ln2_out.assign(rows * dim, T(0));
    ln2_mean.assign(rows, T(0));
    ln2_rstd.assign(rows, T(0));
    fc1_out.assign(rows * hidden, T(0));
    gelu_out.assign(rows * hidden, T(0));
    if (with_output) out.assign(rows * dim, T(0));
    else out.clear();
  }
};

/// Workspace for one forward/backward pass of up to max_batch images: the fixed position
/// embeddings, every activation the backward pass needs, and the backward pass's scratch.
/// Allocated once; forward and backward allocate nothing.
template <typename T>
struct Activations {
  Activations(const ModelConfig& config, int max_batch);

  ModelConfig config;
  int max_batch = 0;
  int batch = 0;  ///< batch size of the last successful forward (0: none)

  // Fixed buffers (MAE registers them as non-trainable): [1 + L, D] and [1 + L, Dd], row 0 = CLS.
  std::vector<T> pos_embed, decoder_pos_embed;

  // Masking: [B, L] each. mask is 1 for removed (predicted) patches, 0 for visible ones.
  std::vector<std::int32_t> ids_shuffle, ids_restore, targets;
  std::vector<T> mask;

  // Encoder.
  std::vector<T> kept_patches;     ///< [B, keep, P*P*C] visible patches in shuffle order
  std::vector<T> patch_embed_out;  ///< [B, keep, D]
  std::vector<T> encoder_input;    ///< [B, 1 + keep, D] CLS + embedded patches + positions
  std::vector<BlockActivations<T>> encoder_blocks;
  std::vector<T> encoder_norm_out, encoder_norm_mean, encoder_norm_rstd;  ///< latent [B,1+keep,D]

  // Decoder.
  std::vector<T> decoder_embed_out;  ///< [B, 1 + keep, Dd]
  std::vector<T> decoder_input;      ///< [B, 1 + L, Dd] unshuffled + mask tokens + positions
  std::vector<BlockActivations<T>> decoder_blocks;
  std::vector<T> decoder_norm_out, decoder_norm_mean, decoder_norm_rstd;  ///< [B, 1 + L, Dd]
  std::vector<T> head_input;  ///< [B, L, Dd] decoder_norm_out without the CLS row
  std::vector<T> logits;      ///< [B, L, out_dim]

  // Loss.
  std::vector<T> row_loss;       ///< [B, L] per-patch loss (0 at visible patches for CE)
  std::vector<T> row_logsumexp;  ///< [B, L] (token loss)
  std::vector<T> pixel_target;   ///< [B, L, P*P*C] (pixel loss)

  // Backward scratch, shared by the encoder and the decoder (sized for the larger).
  std::vector<T> d_logits, d_head_input, d_decoder_embed_out, d_patch_embed_out;
  std::vector<T> d_residual, d_normed, d_attn_out, d_qkv, d_hidden, d_attn_scratch;

  /// Bytes held by all buffers.
  std::size_t bytes() const;
};

// ============================================================================ forward/backward

/// One batch of inputs. Pointers are borrowed for the duration of vit_mae_forward only.
template <typename T>
struct Batch {
  int size = 0;                                 ///< B, 1 <= B <= Activations::max_batch
  const T* patches = nullptr;                   ///< [B, L, P*P*C]
  const float* noise = nullptr;                 ///< [B, L] uniform noise deciding the masks
  const std::int32_t* token_targets = nullptr;  ///< [B, L] in [0, K) (token loss only)
};

struct LossResult {
  double loss = 0.0;                      ///< mean loss over masked patches
  std::optional<double> masked_accuracy;  ///< token loss: argmax == target over masked patches
  std::int64_t masked_patches = 0;        ///< number of masked patches in the batch
};

/// Runs the model on a batch and returns the loss; stores in acts everything
/// vit_mae_backward needs. Throws std::invalid_argument for a batch that does not fit acts or
/// misses inputs, std::out_of_range for a token target outside [0, out_dim).
template <typename T>
LossResult vit_mae_forward(const ParameterBuffer<T>& params, const Batch<T>& batch,
                           Activations<T>& acts);

/// Backpropagates d_loss * d(loss)/d(parameters) of the last forward on acts and ADDS it into
/// grads (zero them first with grads.zero(); accumulating several batches, pass d_loss = 1/n).
template <typename T>
void vit_mae_backward(const ParameterBuffer<T>& params, Activations<T>& acts,
                      ParameterBuffer<T>& grads, double d_loss = 1.0);

// ===================================================================================== FLOPs

/// Matmul FLOPs per image (2 per multiply-add; elementwise work, softmax and LayerNorm are not
/// counted, as in the usual MFU accounting). training = 3 * forward: the backward pass does two
/// matmuls (input and weight gradient) per forward matmul.
struct FlopCount {
  double forward = 0.0;
  double training = 0.0;
};
FlopCount flops_per_image(const ModelConfig& config);

}  // namespace kmim::model
