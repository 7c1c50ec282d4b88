// Fixed (untrained) sine-cosine position embeddings, value for value those of MAE's
// util/pos_embed.py (get_2d_sincos_pos_embed with cls_token=True), computed in double.
//
// 1-D, for an embedding of E dims (E even) and positions p:
//   omega_k = 1 / 10000^(k / (E/2)),  k = 0 .. E/2-1
//   emb(p) = [sin(p*omega_0) .. sin(p*omega_{E/2-1}), cos(p*omega_0) .. cos(p*omega_{E/2-1})]
// 2-D, for D dims (D divisible by 4) on a G x G grid of patches, patch index i = row*G + col
// (the row-major patch order of MAE's patchify):
//   emb(i) = [emb_1d(D/2, col), emb_1d(D/2, row)]
// The first half encodes the COLUMN (w) index: MAE builds grid = np.meshgrid(grid_w, grid_h),
// whose grid[0] holds the w coordinate, and uses grid[0] for the first half ("emb_h").
// With a CLS token, row 0 of the table is all zeros and patch i sits at row 1 + i.
#pragma once

#include <cstddef>
#include <vector>

namespace kmim::model {

/// 1-D table [positions.size(), embed_dim]; throws std::invalid_argument if embed_dim is odd or
/// not positive.
std::vector<double> sincos_1d_position_embedding(int embed_dim,
                                                 const std::vector<double>& positions);

/// 2-D table [(with_cls_token ? 1 : 0) + grid_size^2, embed_dim]; throws std::invalid_argument
/// unless embed_dim is a positive multiple of 4 and grid_size is positive.
std::vector<double> sincos_2d_position_embedding(int embed_dim, int grid_size, bool with_cls_token);

}  // namespace kmim::model
