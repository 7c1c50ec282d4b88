#include "kmim/model/encoder_features.hpp"

#include <algorithm>
#include <cstddef>
#include <stdexcept>
#include <string>

#include "kmim/model/layers.hpp"
#include "kmim/model/pos_embed.hpp"

namespace kmim::model {
namespace {

using Index = std::ptrdiff_t;

// One pre-norm block, as vit_mae.cpp's block_forward: mid = x + proj(attn(LN1(x)));
// out = mid + fc2(gelu(fc1(LN2(mid)))). The layer calls and their order are the same, so the
// results are the same bits for the same batch shape.
template <typename T>
void block_inference(BlockActivations<T>& a, const T* x, T* out, const T* p, const BlockOffsets& o,
                     int batch, int tokens, int dim, int heads, int hidden) {
  const int rows = batch * tokens;
  const std::size_t values = static_cast<std::size_t>(rows) * dim;
  layernorm_forward(a.ln1_out.data(), a.ln1_mean.data(), a.ln1_rstd.data(), x, p + o.norm1_weight,
                    p + o.norm1_bias, rows, dim);
  linear_forward(a.qkv.data(), a.ln1_out.data(), p + o.qkv_weight, p + o.qkv_bias, rows, dim,
                 3 * dim);
  attention_forward(a.attn_out.data(), a.attn_probs.data(), a.qkv.data(), batch, tokens, dim,
                    heads);
  linear_forward(a.mid.data(), a.attn_out.data(), p + o.proj_weight, p + o.proj_bias, rows, dim,
                 dim);
  residual_forward(a.mid.data(), a.mid.data(), x, values);
  layernorm_forward(a.ln2_out.data(), a.ln2_mean.data(), a.ln2_rstd.data(), a.mid.data(),
                    p + o.norm2_weight, p + o.norm2_bias, rows, dim);
  linear_forward(a.fc1_out.data(), a.ln2_out.data(), p + o.fc1_weight, p + o.fc1_bias, rows, dim,
                 hidden);
  gelu_forward(a.gelu_out.data(), a.fc1_out.data(), static_cast<std::size_t>(rows) * hidden);
  linear_forward(out, a.gelu_out.data(), p + o.fc2_weight, p + o.fc2_bias, rows, hidden, dim);
  residual_forward(out, out, a.mid.data(), values);
}

}  // namespace

template <typename T>
EncoderWorkspace<T>::EncoderWorkspace(const ModelConfig& model_config, int max_batch_size)
    : config(model_config), max_batch(max_batch_size) {
  config.validate();
  if (max_batch <= 0) {
    throw std::invalid_argument("EncoderWorkspace: max_batch = " + std::to_string(max_batch) +
                                " must be positive");
  }
  const std::size_t b = static_cast<std::size_t>(max_batch);
  const std::size_t l = static_cast<std::size_t>(config.num_patches());
  const std::size_t n = l + 1;
  const std::size_t d = static_cast<std::size_t>(config.embed_dim);
  const std::vector<double> table =
      sincos_2d_position_embedding(config.embed_dim, config.grid_size(), true);
  pos_embed.assign(table.begin(), table.end());
  patch_embed_out.assign(b * l * d, T(0));
  stream_a.assign(b * n * d, T(0));
  stream_b.assign(b * n * d, T(0));
  // The block writes its output into the workspace's other stream buffer: no `out`.
  block.allocate(b, n, d, static_cast<std::size_t>(config.num_heads),
                 static_cast<std::size_t>(config.mlp_ratio) * d, /*with_output=*/false);
  norm_mean.assign(b * n, T(0));
  norm_rstd.assign(b * n, T(0));
}

template <typename T>
std::size_t EncoderWorkspace<T>::bytes() const {
  std::size_t n = pos_embed.size() + patch_embed_out.size() + stream_a.size() + stream_b.size() +
                  norm_mean.size() + norm_rstd.size();
  for (const std::vector<T>* v :
       {&block.ln1_out, &block.ln1_mean, &block.ln1_rstd, &block.qkv, &block.attn_probs,
        &block.attn_out, &block.mid, &block.ln2_out, &block.ln2_mean, &block.ln2_rstd,
        &block.fc1_out, &block.gelu_out}) {
    n += v->size();
  }
  return n * sizeof(T);
}

template <typename T>
void encoder_forward(const ParameterBuffer<T>& params, const T* patches, int batch,
                     EncoderWorkspace<T>& ws, T* out) {
  const ModelConfig& c = ws.config;
  if (!(params.config() == c)) {
    throw std::invalid_argument(
        "encoder_forward: parameters and workspace were built for different model configs ('" +
        params.config().name + "' vs '" + c.name + "')");
  }
  if (batch < 1 || batch > ws.max_batch) {
    throw std::invalid_argument("encoder_forward: batch size " + std::to_string(batch) +
                                " outside [1, " + std::to_string(ws.max_batch) + "]");
  }
  if (patches == nullptr || out == nullptr) {
    throw std::invalid_argument("encoder_forward: patches and out must not be null");
  }
  const int l = c.num_patches();
  const int n = l + 1;
  const int d = c.embed_dim;
  const T* p = params.data();
  const ParameterOffsets& o = params.offsets();

  // Patch embedding of every patch, then CLS + positions (patch l sits at table row 1 + l).
  linear_forward(ws.patch_embed_out.data(), patches, p + o.patch_embed_weight,
                 p + o.patch_embed_bias, batch * l, c.patch_dim(), d);
  {
    const T* pos = ws.pos_embed.data();
    const T* cls = p + o.cls_token;
    T* x = ws.stream_a.data();
#pragma omp parallel for schedule(static) if (static_cast <Index>(batch) * n * d >= \
                                              kMinParallelValues)
    for (Index bi = 0; bi < static_cast<Index>(batch) * n; ++bi) {
      const Index s = bi / n;
      const Index i = bi % n;
      T* row = x + bi * d;
      const T* pe = pos + i * d;
      if (i == 0) {
        for (int k = 0; k < d; ++k) row[k] = cls[k] + pe[k];
      } else {
        const T* e = ws.patch_embed_out.data() + (s * l + i - 1) * d;
        for (int k = 0; k < d; ++k) row[k] = e[k] + pe[k];
      }
    }
  }

  T* x = ws.stream_a.data();
  T* y = ws.stream_b.data();
  for (const BlockOffsets& bo : o.blocks) {
    block_inference(ws.block, x, y, p, bo, batch, n, d, c.num_heads, c.mlp_ratio * d);
    std::swap(x, y);
  }
  layernorm_forward(out, ws.norm_mean.data(), ws.norm_rstd.data(), x, p + o.norm_weight,
                    p + o.norm_bias, batch * n, d);
}

template struct EncoderWorkspace<float>;
template struct EncoderWorkspace<double>;
template void encoder_forward<float>(const ParameterBuffer<float>&, const float*, int,
                                     EncoderWorkspace<float>&, float*);
template void encoder_forward<double>(const ParameterBuffer<double>&, const double*, int,
                                      EncoderWorkspace<double>&, double*);

}  // namespace kmim::model
