// MAE's per-sample random masking and the two token re-orderings around it, with backward passes:
//   * random_masking: from caller-drawn uniform noise [B, L], which patches stay visible.
//   * gather_kept: the encoder's input rows, the visible patches in shuffle order.
//   * unshuffle_with_mask_tokens: the decoder's input, every patch back in image order, with a
//     learned mask token where the patch was removed (CLS row kept first).
// Index arrays are int32 [B, L]. The noise comes from the caller (its own RandomStream), so the
// masks of a run are reproducible independently of thread count and backend.
#pragma once

#include <cstdint>

namespace kmim::model {

/// Visible patches per image: len_keep = int(L * (1 - mask_ratio)), the truncation of MAE's
/// Python int(); the product is evaluated in double as Python does.
int masking_keep_count(int num_patches, double mask_ratio);

/// MAE random_masking for every sample b:
///   ids_shuffle[b] = argsort(noise[b]) ascending (stable: equal noise keeps patch order);
///   the first `keep` entries of ids_shuffle are the visible patches;
///   ids_restore[b] = argsort(ids_shuffle[b]), the inverse permutation;
///   mask[b, l] = 0 if patch l is visible, 1 if it is removed (exactly L - keep ones per sample).
template <typename T>
void random_masking(std::int32_t* ids_shuffle, std::int32_t* ids_restore, T* mask,
                    const float* noise, int batch, int num_patches, int keep);

/// out[b, i, :] = in[b, ids_shuffle[b, i], :] for i < keep.  in [B, L, C], out [B, keep, C].
template <typename T>
void gather_kept_forward(T* out, const T* in, const std::int32_t* ids_shuffle, int batch,
                         int num_patches, int keep, int channels);

/// Scatter back: d_in[b, ids_shuffle[b, i], :] = d_out[b, i, :], removed rows 0 (overwritten).
template <typename T>
void gather_kept_backward(T* d_in, const T* d_out, const std::int32_t* ids_shuffle, int batch,
                          int num_patches, int keep, int channels);

/// in [B, 1 + keep, C]: CLS row, then the visible tokens in shuffle order. out [B, 1 + L, C]:
///   out[b, 0] = in[b, 0]
///   out[b, 1 + l] = in[b, 1 + ids_restore[b, l]]   if ids_restore[b, l] < keep (visible)
///                 = mask_token                      otherwise (removed)
/// (MAE: cat([x[:, 1:], mask_tokens]) gathered with ids_restore, CLS re-prepended.)
template <typename T>
void unshuffle_with_mask_tokens_forward(T* out, const T* in, const T* mask_token,
                                        const std::int32_t* ids_restore, int batch, int num_patches,
                                        int keep, int channels);

/// d_in [B, 1 + keep, C] is overwritten with the rows of d_out that came from in;
/// d_mask_token [C] += the sum of d_out over every removed position (fixed order).
template <typename T>
void unshuffle_with_mask_tokens_backward(T* d_in, T* d_mask_token, const T* d_out,
                                         const std::int32_t* ids_restore, int batch,
                                         int num_patches, int keep, int channels);

}  // namespace kmim::model
