// The layers of the CPU ViT masked-image model, each a forward/backward pair of plain functions
// over explicit, caller-owned buffers (the style of karpathy/llm.c's train_gpt2.c: no autograd,
// no allocation inside a call, the math written out in the comments).
//
// Every function is a template on the scalar type T and is instantiated for float (the product)
// and double (the gradient checks in tests/model run the same code in double precision).
//
// Conventions shared by all layers
//   * Tensors are row-major; "[rows, C]" means rows consecutive vectors of C values.
//   * Linear weights use PyTorch's nn.Linear layout [out_features, in_features], so checkpoints
//     and the later CUDA backend can compare tensors one to one with the reference code.
//   * Gradients of parameters (dW, db, LayerNorm gamma/beta) are ACCUMULATED (+=), so one zeroed
//     gradient buffer can collect several micro-batches.
//   * Gradients of activations are OVERWRITTEN, except layernorm_backward and residual_backward,
//     which ADD into d_in: their input is the transformer's residual stream, whose gradient already
//     holds the skip connection's share when they run (see vit_mae.cpp's block backward).
//   * Matrix products go through OpenBLAS (cblas_sgemm / cblas_dgemm); loops over rows use OpenMP.
//     All parallelism is OpenMP's: OpenBLAS is called single-threaded (its own thread pool is
//     switched to one thread for the duration of each call and restored after), large GEMMs are
//     split into panels over the OpenMP threads (see gemm in layers.cpp for why).
//   * Reductions over rows (bias and LayerNorm parameter gradients, losses) are summed in a fixed
//     order and every GEMM output element is one single-threaded full-K dot product: a rerun
//     with the same thread count gives the same bits, and other thread counts agree to rounding
//     (OpenBLAS rounds differently at the edges of the per-thread panels).
//   * float uses vectorizable polynomial exp and erf (relative error of exp < 1e-7, absolute
//     error of the GELU's Gaussian CDF <= 1.5e-7); double uses libm. The hot float loops are
//     compiled for AVX-512, AVX2 and baseline x86-64, the best chosen at load time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace kmim::model {

/// LayerNorm epsilon used by MAE's ViT blocks (partial(nn.LayerNorm, eps=1e-6)).
inline constexpr double kLayerNormEps = 1e-6;

/// Loops over fewer values than this run on the calling thread: starting an OpenMP parallel
/// region costs microseconds (much more when the machine is oversubscribed and threads wait for
/// a descheduled peer), more than such a loop itself. Used by every layer and by vit_mae.cpp.
inline constexpr std::ptrdiff_t kMinParallelValues = std::ptrdiff_t{1} << 15;

/// The BLAS behind gemm, for logs next to throughput and MFU figures: OpenBLAS's build
/// configuration and the kernel family it runs, e.g. "OpenBLAS 0.3.21 DYNAMIC_ARCH ... (kernels:
/// Haswell)". The kernel family sets the attainable FLOP rate: on AVX-512 CPUs OpenBLAS's
/// SkylakeX/Cooperlake sgemm kernels run about twice as fast as its AVX2 Haswell ones, which
/// OPENBLAS_CORETYPE=Haswell in the environment forces.
std::string blas_description();

// ---------------------------------------------------------------------------------------------
// General matrix product (row-major), C[m, n] = alpha * op(A)[m, k] · op(B)[k, n] + beta * C,
// op(X) = X or X^T. lda/ldb/ldc are the row strides of A, B, C as stored. Dispatches to
// cblas_sgemm (float) or cblas_dgemm (double).
template <typename T>
void gemm(bool transpose_a, bool transpose_b, int m, int n, int k, T alpha, const T* a, int lda,
          const T* b, int ldb, T beta, T* c, int ldc);

// ---------------------------------------------------------------------------------------------
// Linear: out[r, o] = sum_i in[r, i] * weight[o, i] + bias[o]   (out = in · W^T + b)
//   in [rows, in_features], weight [out_features, in_features], bias [out_features] or nullptr,
//   out [rows, out_features].
template <typename T>
void linear_forward(T* out, const T* in, const T* weight, const T* bias, int rows, int in_features,
                    int out_features);

// Backward of linear_forward, given d_out = dL/d(out):
//   d_in    = d_out · W            (overwritten; skipped when d_in is nullptr, e.g. for the
//                                   patch embedding whose input is data)
//   d_weight += d_out^T · in
//   d_bias   += sum over rows of d_out   (skipped when d_bias is nullptr)
template <typename T>
void linear_backward(T* d_in, T* d_weight, T* d_bias, const T* d_out, const T* in, const T* weight,
                     int rows, int in_features, int out_features);

// ---------------------------------------------------------------------------------------------
// LayerNorm over the last dimension with affine parameters (eps = kLayerNormEps):
//   mean = (1/C) sum_c x_c,  var = (1/C) sum_c (x_c - mean)^2   (biased, as torch)
//   rstd = 1 / sqrt(var + eps),  xhat_c = (x_c - mean) * rstd,  out_c = xhat_c * weight_c + bias_c
// mean and rstd ([rows]) are saved for the backward pass.
template <typename T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* in, const T* weight, const T* bias,
                       int rows, int channels);

// Backward of layernorm_forward. With g_c = d_out_c * weight_c:
//   d_in_c   += rstd * (g_c - mean_c'(g) - xhat_c * mean_c'(g * xhat))      (ADDED into d_in)
//   d_weight += sum over rows of d_out * xhat,   d_bias += sum over rows of d_out
template <typename T>
void layernorm_backward(T* d_in, T* d_weight, T* d_bias, const T* d_out, const T* in,
                        const T* weight, const T* mean, const T* rstd, int rows, int channels);

// ---------------------------------------------------------------------------------------------
// Exact GELU (nn.GELU() default): gelu(x) = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)).
template <typename T>
void gelu_forward(T* out, const T* in, std::size_t n);

// d_in = d_out * (Phi(x) + x * phi(x)), phi(x) = exp(-x^2/2) / sqrt(2 pi). Overwrites d_in;
// d_in may alias d_out.
template <typename T>
void gelu_backward(T* d_in, const T* in, const T* d_out, std::size_t n);

// ---------------------------------------------------------------------------------------------
// Multi-head self-attention core (everything between the fused qkv linear and the output
// projection, as in timm's Attention):
//   qkv [B, N, 3C] holds, for token n, [q | k | v] with each part split into H heads of
//   hd = C/H channels: q of head h = qkv[b, n, h*hd : (h+1)*hd], k at offset C, v at offset 2C.
//   S_bh = (q_bh · k_bh^T) / sqrt(hd)              [N, N]
//   P_bh = softmax over the last axis of S_bh       (saved in probs [B, H, N, N] for backward)
//   out[b, n, h*hd + d] = (P_bh · v_bh)[n, d]       out [B, N, C] (heads concatenated)
template <typename T>
void attention_forward(T* out, T* probs, const T* qkv, int batch, int tokens, int channels,
                       int heads);

// Backward of attention_forward, given d_out [B, N, C]:
//   dV = P^T · dO,  dP = dO · V^T,  dS = P ∘ (dP - rowsum(dP ∘ P)),
//   dQ = dS · K / sqrt(hd),  dK = dS^T · Q / sqrt(hd)
// d_qkv [B, N, 3C] is overwritten. scratch must hold B*H*N*N values (the dP/dS matrices).
template <typename T>
void attention_backward(T* d_qkv, T* scratch, const T* d_out, const T* qkv, const T* probs,
                        int batch, int tokens, int channels, int heads);

// ---------------------------------------------------------------------------------------------
// Residual connection: out = a + b (out may alias a or b).
template <typename T>
void residual_forward(T* out, const T* a, const T* b, std::size_t n);

// Backward: both branches receive the output gradient; ADDED into d_a and d_b.
template <typename T>
void residual_backward(T* d_a, T* d_b, const T* d_out, std::size_t n);

// ---------------------------------------------------------------------------------------------
// Losses over selected rows. Each row r carries a weight w_r (the MAE mask: 1 for a masked patch,
// 0 for a visible one) and the loss is the weighted mean  L = sum_r w_r l_r / sum_r w_r.
// When every weight is zero the loss is 0 and its gradient is 0.
struct MaskedLossSum {
  double loss = 0.0;          ///< the weighted mean L
  double weight_sum = 0.0;    ///< sum_r w_r (the number of masked patches for a 0/1 mask)
  std::int64_t correct = 0;   ///< rows with w_r != 0 whose argmax equals the target (CE only)
  std::int64_t selected = 0;  ///< rows with w_r != 0
};

// Softmax cross-entropy: l_r = logsumexp(logits_r) - logits_r[target_r].
//   logits [rows, classes], targets [rows] in 0..classes-1 (checked on selected rows; throws
//   std::out_of_range before any work), row_weight [rows].
//   row_logsumexp [rows] is saved for the backward pass, row_loss [rows] receives l_r (0 for
//   unselected rows). correct counts argmax == target with ties going to the lowest index.
template <typename T>
MaskedLossSum softmax_cross_entropy_forward(T* row_logsumexp, T* row_loss, const T* logits,
                                            const std::int32_t* targets, const T* row_weight,
                                            int rows, int classes);

// d_logits[r, c] = d_loss * w_r / sum w * (softmax(logits_r)_c - [c == target_r]); overwritten
// (zero rows where w_r == 0).
template <typename T>
void softmax_cross_entropy_backward(T* d_logits, const T* logits, const T* row_logsumexp,
                                    const std::int32_t* targets, const T* row_weight, int rows,
                                    int classes, double d_loss);

// MAE pixel-reconstruction loss with norm_pix_loss: per row (patch) the target is
//   t = (x - mean(x)) / sqrt(var(x) + 1e-6)   when normalize_target, else t = x,
// where var is the UNBIASED variance (divisor dim - 1): MAE computes target.var(dim=-1), and
// torch.var defaults to unbiased=True. l_r = (1/dim) sum_d (pred_rd - t_rd)^2.
//   pred, patches, target_out [rows, dim]; target_out keeps t for the backward pass.
template <typename T>
MaskedLossSum normalized_patch_mse_forward(T* target_out, T* row_loss, const T* pred,
                                           const T* patches, const T* row_weight, int rows, int dim,
                                           bool normalize_target);

// d_pred[r, d] = d_loss * w_r / sum w * 2 (pred_rd - t_rd) / dim; overwritten.
template <typename T>
void normalized_patch_mse_backward(T* d_pred, const T* pred, const T* target, const T* row_weight,
                                   int rows, int dim, double d_loss);

}  // namespace kmim::model
