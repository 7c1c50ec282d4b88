// The ViT encoder alone, over ALL patches of an image (no masking), for inference: the feature
// tokenizer's frozen model (SPEC §2, "Feature tokenizer": patch tokens after the final
// LayerNorm, CLS dropped), feature extraction and the linear probe.
//
//   patches [B, L, P*P*C]  (patchified images, the same input as vit_mae_forward)
//     │ patch_embed (Linear P*P*C → D) + pos_embed[1 + l]   (patch l in image order)
//     │ prepend CLS (cls_token + pos_embed[0])
//     │ depth × Block(D, heads), final LayerNorm
//     ▼
//   tokens [B, 1 + L, D]   row 0 = CLS, row 1 + l = patch l (row-major patch order)
//
// This is MAE's forward_encoder with mask_ratio 0 and the identity shuffle: the same layers in
// the same order as vit_mae_forward's encoder, so the masked model with mask ratio 0 and
// increasing noise gives the same numbers. The decoder's parameters are not touched. Nothing is
// saved for a backward pass: one block's buffers are reused by every block.
#pragma once

#include <vector>

#include "kmim/model/vit_mae.hpp"

namespace kmim::model {

/// Workspace of encoder_forward for up to max_batch images (allocated once).
template <typename T>
struct EncoderWorkspace {
  EncoderWorkspace(const ModelConfig& config, int max_batch);

  ModelConfig config;
  int max_batch = 0;
  std::vector<T> pos_embed;             ///< [1 + L, D] fixed sin-cos table, row 0 = CLS (zeros)
  std::vector<T> patch_embed_out;       ///< [B, L, D]
  std::vector<T> stream_a, stream_b;    ///< [B, 1 + L, D] the residual stream, ping-pong
  BlockActivations<T> block;            ///< one block's intermediate buffers, reused by every block
  std::vector<T> norm_mean, norm_rstd;  ///< [B * (1 + L)] of the final LayerNorm

  /// Bytes held by all buffers.
  std::size_t bytes() const;
};

/// Runs the encoder on `batch` images (1 <= batch <= ws.max_batch) of patches
/// [batch, L, P*P*C] and writes the final-LayerNorm tokens to out [batch, 1 + L, D] (CLS first,
/// then the patches in image order). Throws std::invalid_argument when params and ws were built
/// for different configs or the batch does not fit.
template <typename T>
void encoder_forward(const ParameterBuffer<T>& params, const T* patches, int batch,
                     EncoderWorkspace<T>& ws, T* out);

}  // namespace kmim::model
