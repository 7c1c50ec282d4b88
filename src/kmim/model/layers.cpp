// Forward/backward implementations of the ViT layers declared in layers.hpp, instantiated for
// float and double. See layers.hpp for the math and the buffer conventions.
#include "kmim/model/layers.hpp"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <numbers>
#include <stdexcept>
#include <string>

namespace kmim::model {
namespace {

using Index = std::ptrdiff_t;

// Column-block width for reductions over rows: 16 floats = one 64-byte cache line per row.
constexpr int kColumnBlock = 16;

void blas_gemm(bool ta, bool tb, int m, int n, int k, float alpha, const float* a, int lda,
               const float* b, int ldb, float beta, float* c, int ldc) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n,
              k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void blas_gemm(bool ta, bool tb, int m, int n, int k, double alpha, const double* a, int lda,
               const double* b, int ldb, double beta, double* c, int ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n,
              k, alpha, a, lda, b, ldb, beta, c, ldc);
}

// While alive, OpenBLAS runs every call on the calling thread.
//
// Threading model: all parallelism comes from OpenMP; OpenBLAS is always called single-threaded.
// Debian's libopenblas0-pthread has its own thread pool, and two pools on the same cores fight:
// OpenMP workers spin-wait between parallel regions while OpenBLAS's workers run a GEMM, and
// OpenBLAS's workers spin (sched_yield) while OpenMP runs the elementwise loops. Measured on
// 2 cores, vit_tiny spent ~60% of its time spinning that way. Large GEMMs are therefore split
// into row or column panels over the OpenMP threads (gemm below), and the many small attention
// GEMMs run one (sample, head) per OpenMP iteration. The previous OpenBLAS thread count is
// restored on exit, so other users of OpenBLAS in the process are unaffected.
class SingleThreadedBlasScope {
 public:
  SingleThreadedBlasScope() : previous_threads_(openblas_get_num_threads()) {
    if (previous_threads_ != 1) openblas_set_num_threads(1);
  }
  ~SingleThreadedBlasScope() {
    if (previous_threads_ != 1) openblas_set_num_threads(previous_threads_);
  }
  SingleThreadedBlasScope(const SingleThreadedBlasScope&) = delete;
  SingleThreadedBlasScope& operator=(const SingleThreadedBlasScope&) = delete;

 private:
  int previous_threads_;
};

// Panels handed to one thread are multiples of this many rows/columns of C (the sgemm
// micro-kernels work on blocks of 4 to 16).
constexpr int kGemmPanelAlign = 16;
// Below this many multiply-adds a GEMM is one call on the calling thread.
constexpr double kParallelGemmMinWork = 64.0 * 64.0 * 64.0;

// ---- Elementwise math. The double versions call libm (they serve the gradient checks); the
// float versions are branch-free polynomials so the loops over them vectorize (libm's expf and
// erff are scalar calls, which took ~20% of a training step).

// e^x for x <= 0 (the only arguments used here: x - max in softmax, -z^2 in the GELU).
// x = n ln2 + r with n = round(x / ln2) and |r| <= ln2 / 2 (Cody-Waite: ln2 split into a
// 9-bit head, so n * head is exact, and a tail); e^r by its degree-7 Taylor polynomial, whose
// truncation error r^8 / 8! < 6e-9 is below float rounding (measured: relative error < 1e-7 on
// [-87, 0]); 2^n written into the exponent bits. Results below float's normal range (x < -87.3)
// are 0, e^-inf = 0, and NaN stays NaN. Every step is branch-free integer or float arithmetic:
// GCC will not vectorize a loop once a float comparison (a clamp) sits in it, so the clamp and
// the NaN select work on the bit patterns.
inline float exp_of_nonpositive(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Head = 0.693359375f;              // 355 / 512
  constexpr float kLn2Tail = -2.12194440054690583e-4f;  // ln2 - kLn2Head
  constexpr float kRoundShift = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
  const std::uint32_t x_bits = std::bit_cast<std::uint32_t>(x);
  // Clamp to [-104, 0]: for negative floats a larger bit pattern is a larger magnitude.
  const float xc = std::bit_cast<float>(std::min(x_bits, std::bit_cast<std::uint32_t>(-104.0f)));
  const float shifted = xc * kLog2e + kRoundShift;
  const float n = shifted - kRoundShift;
  const float r = (xc - n * kLn2Head) - n * kLn2Tail;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  // n as an integer from the low mantissa bits of shifted; a biased exponent <= 0 flushes to 0.
  const std::int32_t n_int =
      std::bit_cast<std::int32_t>(shifted) - std::bit_cast<std::int32_t>(kRoundShift);
  const std::int32_t biased_exponent = std::max(n_int + 127, 0);
  const float value = p * std::bit_cast<float>(biased_exponent << 23);
  const std::uint32_t nan_mask =
      0u - static_cast<std::uint32_t>((x_bits & 0x7FFFFFFFu) > 0x7F800000u);  // ones if NaN
  return std::bit_cast<float>((x_bits & nan_mask) |
                              (std::bit_cast<std::uint32_t>(value) & ~nan_mask));
}

inline double exp_of_nonpositive(double x) { return std::exp(x); }

// Standard normal CDF Phi(x) = 0.5 * (1 + erf(x / sqrt 2)).
// float: with z = |x| / sqrt 2, the upper tail P(X > |x|) = 0.5 erfc(z) is evaluated with
// Abramowitz & Stegun 7.1.26, erfc(z) ~= t (a1 + t (a2 + t (a3 + t (a4 + t a5)))) e^{-z^2},
// t = 1 / (1 + p z), absolute error <= 1.5e-7 (float's own rounding of 1 + erf near 1 is 6e-8).
inline float gaussian_cdf(float x) {
  const float z = std::abs(x) * static_cast<float>(std::numbers::sqrt2 / 2);
  const float t = 1.0f / (1.0f + 0.3275911f * z);
  const float poly =
      t * (0.254829592f +
           t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
  const float upper_tail = 0.5f * poly * exp_of_nonpositive(-z * z);
  // x < 0: upper_tail; x >= 0: 1 - upper_tail (written branch-free)
  return 0.5f + std::copysign(0.5f - upper_tail, x);
}

inline double gaussian_cdf(double x) {
  return 0.5 * (1.0 + std::erf(x * (std::numbers::sqrt2 / 2)));
}

// ---- Row and element kernels of the hot loops. Each is written once as a template (the *_impl
// functions) and exposed as two overloads: double, plain, and float, compiled three times
// (x86-64-v4 = AVX-512, x86-64-v3 = AVX2, and baseline x86-64 = SSE2) with the loader picking
// the best one the CPU runs (GCC/Clang function multi-versioning). The binary stays portable
// while the loops vectorize 16 or 8 floats wide; at SSE2 width these loops were ~20% of a
// training step. Elementwise results are identical across the three (no FMA contraction in
// ISO C++ mode); vectorized sums may differ in the last bit.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define KMIM_MODEL_X86_CLONES [[gnu::target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")]]
#else
#define KMIM_MODEL_X86_CLONES
#endif

template <typename T>
[[gnu::always_inline]] inline void gelu_forward_impl(T* out, const T* in, Index n) {
#pragma omp simd
  for (Index i = 0; i < n; ++i) out[i] = in[i] * gaussian_cdf(in[i]);
}

template <typename T>
[[gnu::always_inline]] inline void gelu_backward_impl(T* d_in, const T* in, const T* d_out,
                                                      Index n) {
  const T inv_sqrt_2pi = T(std::numbers::inv_sqrtpi / std::numbers::sqrt2);
#pragma omp simd
  for (Index i = 0; i < n; ++i) {
    const T x = in[i];
    const T pdf = inv_sqrt_2pi * exp_of_nonpositive(T(-0.5) * x * x);
    d_in[i] = d_out[i] * (gaussian_cdf(x) + x * pdf);
  }
}

// count rows of length n, each turned in place into p_j = e^{x_j - max} / sum_j' e^{x_j' - max}
template <typename T>
[[gnu::always_inline]] inline void softmax_rows_impl(T* rows, Index count, Index n) {
  for (Index i = 0; i < count; ++i) {
    T* row = rows + i * n;
    T row_max = row[0];
#pragma omp simd reduction(max : row_max)
    for (Index j = 0; j < n; ++j) row_max = row[j] > row_max ? row[j] : row_max;
    T sum = 0;
#pragma omp simd reduction(+ : sum)
    for (Index j = 0; j < n; ++j) {
      row[j] = exp_of_nonpositive(row[j] - row_max);
      sum += row[j];
    }
    const T inv_sum = T(1) / sum;
#pragma omp simd
    for (Index j = 0; j < n; ++j) row[j] *= inv_sum;
  }
}

// softmax backward for count rows of length n, in place: g holds dL/dP on entry and
// dL/dS_ij = P_ij (g_ij - sum_j' P_ij' g_ij') on exit.
template <typename T>
[[gnu::always_inline]] inline void softmax_backward_rows_impl(T* g, const T* probs, Index count,
                                                              Index n) {
  for (Index i = 0; i < count; ++i) {
    const T* p = probs + i * n;
    T* row = g + i * n;
    T dot = 0;
#pragma omp simd reduction(+ : dot)
    for (Index j = 0; j < n; ++j) dot += p[j] * row[j];
#pragma omp simd
    for (Index j = 0; j < n; ++j) row[j] = p[j] * (row[j] - dot);
  }
}

template <typename T>
[[gnu::always_inline]] inline void layernorm_forward_rows_impl(T* out, T* mean, T* rstd,
                                                               const T* in, const T* weight,
                                                               const T* bias, Index count,
                                                               int channels) {
  const T inv_c = T(1) / static_cast<T>(channels);
  for (Index r = 0; r < count; ++r) {
    const T* x = in + r * channels;
    T* y = out + r * channels;
    T m = 0;
#pragma omp simd reduction(+ : m)
    for (int c = 0; c < channels; ++c) m += x[c];
    m *= inv_c;
    T v = 0;  // two-pass variance: sum of squared deviations from the mean
#pragma omp simd reduction(+ : v)
    for (int c = 0; c < channels; ++c) v += (x[c] - m) * (x[c] - m);
    v *= inv_c;
    const T s = T(1) / std::sqrt(v + static_cast<T>(kLayerNormEps));
#pragma omp simd
    for (int c = 0; c < channels; ++c) y[c] = (x[c] - m) * s * weight[c] + bias[c];
    mean[r] = m;
    rstd[r] = s;
  }
}

template <typename T>
[[gnu::always_inline]] inline void layernorm_backward_rows_impl(T* d_in, const T* d_out,
                                                                const T* in, const T* weight,
                                                                const T* mean, const T* rstd,
                                                                Index count, int channels) {
  const T inv_c = T(1) / static_cast<T>(channels);
  for (Index r = 0; r < count; ++r) {
    const T* x = in + r * channels;
    const T* dy = d_out + r * channels;
    T* dx = d_in + r * channels;
    const T m = mean[r];
    const T s = rstd[r];
    // means over channels of g = dy * weight and of g * xhat
    T g_mean = 0;
    T gx_mean = 0;
#pragma omp simd reduction(+ : g_mean, gx_mean)
    for (int c = 0; c < channels; ++c) {
      const T g = dy[c] * weight[c];
      g_mean += g;
      gx_mean += g * (x[c] - m) * s;
    }
    g_mean *= inv_c;
    gx_mean *= inv_c;
#pragma omp simd
    for (int c = 0; c < channels; ++c) {
      const T xhat = (x[c] - m) * s;
      dx[c] += s * (dy[c] * weight[c] - g_mean - xhat * gx_mean);
    }
  }
}

// Column sums over rows of a block of width <= kColumnBlock columns starting at values[0]
// (row stride ld): sums[c] += sum_r values[r * ld + c], rows in order.
template <typename T>
[[gnu::always_inline]] inline void column_block_sums_impl(T* sums, const T* values, Index rows,
                                                          int ld, int width) {
  T acc[kColumnBlock] = {};
  for (Index r = 0; r < rows; ++r) {
    const T* row = values + r * ld;
#pragma omp simd
    for (int c = 0; c < width; ++c) acc[c] += row[c];
  }
  for (int c = 0; c < width; ++c) sums[c] += acc[c];
}

// LayerNorm parameter gradients of a block of columns: d_weight[c] += sum_r dy * xhat,
// d_bias[c] += sum_r dy, rows in order.
template <typename T>
[[gnu::always_inline]] inline void layernorm_parameter_block_impl(T* d_weight, T* d_bias,
                                                                  const T* d_out, const T* in,
                                                                  const T* mean, const T* rstd,
                                                                  Index rows, int ld, int width) {
  T acc_w[kColumnBlock] = {};
  T acc_b[kColumnBlock] = {};
  for (Index r = 0; r < rows; ++r) {
    const T* x = in + r * ld;
    const T* dy = d_out + r * ld;
    const T m = mean[r];
    const T s = rstd[r];
#pragma omp simd
    for (int c = 0; c < width; ++c) {
      acc_w[c] += dy[c] * (x[c] - m) * s;
      acc_b[c] += dy[c];
    }
  }
  for (int c = 0; c < width; ++c) {
    d_weight[c] += acc_w[c];
    d_bias[c] += acc_b[c];
  }
}

// One logits row: log-sum-exp, and the argmax with ties to the lowest index.
template <typename T>
[[gnu::always_inline]] inline T logsumexp_argmax_impl(const T* z, int classes, int& argmax) {
  T z_max = z[0];
#pragma omp simd reduction(max : z_max)
  for (int c = 0; c < classes; ++c) z_max = z[c] > z_max ? z[c] : z_max;
  argmax = 0;
  while (argmax < classes - 1 && !(z[argmax] == z_max)) ++argmax;
  T sum = 0;
#pragma omp simd reduction(+ : sum)
  for (int c = 0; c < classes; ++c) sum += exp_of_nonpositive(z[c] - z_max);
  return z_max + std::log(sum);
}

// dz[c] = coef * softmax(z)_c = coef * e^{z_c - lse}
template <typename T>
[[gnu::always_inline]] inline void scaled_softmax_impl(T* dz, const T* z, T lse, T coef,
                                                       int classes) {
#pragma omp simd
  for (int c = 0; c < classes; ++c) dz[c] = coef * exp_of_nonpositive(z[c] - lse);
}

KMIM_MODEL_X86_CLONES void gelu_forward_kernel(float* out, const float* in, Index n) {
  gelu_forward_impl(out, in, n);
}
void gelu_forward_kernel(double* out, const double* in, Index n) { gelu_forward_impl(out, in, n); }

KMIM_MODEL_X86_CLONES void gelu_backward_kernel(float* d_in, const float* in, const float* d_out,
                                                Index n) {
  gelu_backward_impl(d_in, in, d_out, n);
}
void gelu_backward_kernel(double* d_in, const double* in, const double* d_out, Index n) {
  gelu_backward_impl(d_in, in, d_out, n);
}

KMIM_MODEL_X86_CLONES void softmax_rows_kernel(float* rows, Index count, Index n) {
  softmax_rows_impl(rows, count, n);
}
void softmax_rows_kernel(double* rows, Index count, Index n) { softmax_rows_impl(rows, count, n); }

KMIM_MODEL_X86_CLONES void softmax_backward_rows_kernel(float* g, const float* probs, Index count,
                                                        Index n) {
  softmax_backward_rows_impl(g, probs, count, n);
}
void softmax_backward_rows_kernel(double* g, const double* probs, Index count, Index n) {
  softmax_backward_rows_impl(g, probs, count, n);
}

KMIM_MODEL_X86_CLONES void layernorm_forward_rows_kernel(float* out, float* mean, float* rstd,
                                                         const float* in, const float* weight,
                                                         const float* bias, Index count,
                                                         int channels) {
  layernorm_forward_rows_impl(out, mean, rstd, in, weight, bias, count, channels);
}
void layernorm_forward_rows_kernel(double* out, double* mean, double* rstd, const double* in,
                                   const double* weight, const double* bias, Index count,
                                   int channels) {
  layernorm_forward_rows_impl(out, mean, rstd, in, weight, bias, count, channels);
}

KMIM_MODEL_X86_CLONES void layernorm_backward_rows_kernel(float* d_in, const float* d_out,
                                                          const float* in, const float* weight,
                                                          const float* mean, const float* rstd,
                                                          Index count, int channels) {
  layernorm_backward_rows_impl(d_in, d_out, in, weight, mean, rstd, count, channels);
}
void layernorm_backward_rows_kernel(double* d_in, const double* d_out, const double* in,
                                    const double* weight, const double* mean, const double* rstd,
                                    Index count, int channels) {
  layernorm_backward_rows_impl(d_in, d_out, in, weight, mean, rstd, count, channels);
}

KMIM_MODEL_X86_CLONES void column_block_sums_kernel(float* sums, const float* values, Index rows,
                                                    int ld, int width) {
  column_block_sums_impl(sums, values, rows, ld, width);
}
void column_block_sums_kernel(double* sums, const double* values, Index rows, int ld, int width) {
  column_block_sums_impl(sums, values, rows, ld, width);
}

KMIM_MODEL_X86_CLONES void layernorm_parameter_block_kernel(float* d_weight, float* d_bias,
                                                            const float* d_out, const float* in,
                                                            const float* mean, const float* rstd,
                                                            Index rows, int ld, int width) {
  layernorm_parameter_block_impl(d_weight, d_bias, d_out, in, mean, rstd, rows, ld, width);
}
void layernorm_parameter_block_kernel(double* d_weight, double* d_bias, const double* d_out,
                                      const double* in, const double* mean, const double* rstd,
                                      Index rows, int ld, int width) {
  layernorm_parameter_block_impl(d_weight, d_bias, d_out, in, mean, rstd, rows, ld, width);
}

KMIM_MODEL_X86_CLONES float logsumexp_argmax_kernel(const float* z, int classes, int& argmax) {
  return logsumexp_argmax_impl(z, classes, argmax);
}
double logsumexp_argmax_kernel(const double* z, int classes, int& argmax) {
  return logsumexp_argmax_impl(z, classes, argmax);
}

KMIM_MODEL_X86_CLONES void scaled_softmax_kernel(float* dz, const float* z, float lse, float coef,
                                                 int classes) {
  scaled_softmax_impl(dz, z, lse, coef, classes);
}
void scaled_softmax_kernel(double* dz, const double* z, double lse, double coef, int classes) {
  scaled_softmax_impl(dz, z, lse, coef, classes);
}

#undef KMIM_MODEL_X86_CLONES

// Rows per OpenMP work item for the row kernels (a fixed split: results do not depend on the
// thread count), and elements per work item for the elementwise kernels.
constexpr Index kRowsPerTask = 16;
constexpr Index kElementsPerTask = 4096;

// sums[c] += sum_r values[r * cols + c]. Parallel over blocks of columns, each summed over the
// rows in order, so the result does not depend on the thread count.
template <typename T>
void accumulate_column_sums(T* sums, const T* values, int rows, int cols) {
  const Index blocks = (cols + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static) if (static_cast <Index>(rows) * cols >= \
                                              kMinParallelValues)
  for (Index blk = 0; blk < blocks; ++blk) {
    const int c0 = static_cast<int>(blk) * kColumnBlock;
    column_block_sums_kernel(sums + c0, values + c0, rows, cols, std::min(kColumnBlock, cols - c0));
  }
}

}  // namespace

// ----------------------------------------------------------------------------------- gemm ----

std::string blas_description() {
  return std::string(openblas_get_config()) + " (kernels: " + openblas_get_corename() + ")";
}

template <typename T>
void gemm(bool transpose_a, bool transpose_b, int m, int n, int k, T alpha, const T* a, int lda,
          const T* b, int ldb, T beta, T* c, int ldc) {
  SingleThreadedBlasScope single_threaded_blas;
  const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  const double work = static_cast<double>(m) * n * k;
  if (threads == 1 || work < kParallelGemmMinWork) {
    blas_gemm(transpose_a, transpose_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  // One panel per thread along the longer side of C; every element of C is computed by one
  // single-threaded call over the full K. (OpenBLAS's kernels round differently at the edge of
  // a call, so the last bits of a result depend on the panel cut and hence on the thread count;
  // cuts fixed by the shape alone made vit_tiny 8% slower, measured, so we do not pay for that.)
  const bool split_rows = m >= n;
  const int extent = split_rows ? m : n;
  const int aligned_blocks = (extent + kGemmPanelAlign - 1) / kGemmPanelAlign;
  const int panels = std::min(threads, aligned_blocks);
  const int per_panel = ((aligned_blocks + panels - 1) / panels) * kGemmPanelAlign;
#pragma omp parallel for num_threads(panels) schedule(static, 1)
  for (int panel = 0; panel < panels; ++panel) {
    const int begin = panel * per_panel;
    const int count = std::min(extent, begin + per_panel) - begin;
    if (count <= 0) continue;
    if (split_rows) {
      // rows [begin, begin + count) of op(A) and of C
      const T* a_panel = transpose_a ? a + begin : a + static_cast<Index>(begin) * lda;
      blas_gemm(transpose_a, transpose_b, count, n, k, alpha, a_panel, lda, b, ldb, beta,
                c + static_cast<Index>(begin) * ldc, ldc);
    } else {
      // columns [begin, begin + count) of op(B) and of C
      const T* b_panel = transpose_b ? b + static_cast<Index>(begin) * ldb : b + begin;
      blas_gemm(transpose_a, transpose_b, m, count, k, alpha, a, lda, b_panel, ldb, beta, c + begin,
                ldc);
    }
  }
}

// --------------------------------------------------------------------------------- linear ----

template <typename T>
void linear_forward(T* out, const T* in, const T* weight, const T* bias, int rows, int in_features,
                    int out_features) {
  // Start from the bias (or zero) in every row, then add in · W^T with one GEMM (beta = 1).
  if (bias != nullptr) {
#pragma omp parallel for schedule(static) if (static_cast <Index>(rows) * out_features >= \
                                              kMinParallelValues)
    for (Index r = 0; r < rows; ++r) std::copy_n(bias, out_features, out + r * out_features);
  }
  gemm<T>(false, true, rows, out_features, in_features, T(1), in, in_features, weight, in_features,
          bias != nullptr ? T(1) : T(0), out, out_features);
}

template <typename T>
void linear_backward(T* d_in, T* d_weight, T* d_bias, const T* d_out, const T* in, const T* weight,
                     int rows, int in_features, int out_features) {
  // d_in [rows, in] = d_out [rows, out] · W [out, in]
  if (d_in != nullptr) {
    gemm<T>(false, false, rows, in_features, out_features, T(1), d_out, out_features, weight,
            in_features, T(0), d_in, in_features);
  }
  // d_weight [out, in] += d_out^T [out, rows] · in [rows, in]
  gemm<T>(true, false, out_features, in_features, rows, T(1), d_out, out_features, in, in_features,
          T(1), d_weight, in_features);
  if (d_bias != nullptr) accumulate_column_sums(d_bias, d_out, rows, out_features);
}

// ------------------------------------------------------------------------------ layernorm ----

template <typename T>
void layernorm_forward(T* out, T* mean, T* rstd, const T* in, const T* weight, const T* bias,
                       int rows, int channels) {
  const Index tasks = (rows + kRowsPerTask - 1) / kRowsPerTask;
#pragma omp parallel for schedule(static) if (static_cast <Index>(rows) * channels >= \
                                              kMinParallelValues)
  for (Index task = 0; task < tasks; ++task) {
    const Index r0 = task * kRowsPerTask;
    const Index offset = r0 * channels;
    layernorm_forward_rows_kernel(out + offset, mean + r0, rstd + r0, in + offset, weight, bias,
                                  std::min(kRowsPerTask, rows - r0), channels);
  }
}

template <typename T>
void layernorm_backward(T* d_in, T* d_weight, T* d_bias, const T* d_out, const T* in,
                        const T* weight, const T* mean, const T* rstd, int rows, int channels) {
  const Index tasks = (rows + kRowsPerTask - 1) / kRowsPerTask;
#pragma omp parallel for schedule(static) if (static_cast <Index>(rows) * channels >= \
                                              kMinParallelValues)
  for (Index task = 0; task < tasks; ++task) {
    const Index r0 = task * kRowsPerTask;
    const Index offset = r0 * channels;
    layernorm_backward_rows_kernel(d_in + offset, d_out + offset, in + offset, weight, mean + r0,
                                   rstd + r0, std::min(kRowsPerTask, rows - r0), channels);
  }
  // Parameter gradients: column sums of dy * xhat and dy, column blocks in parallel.
  const Index blocks = (channels + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static) if (static_cast <Index>(rows) * channels >= \
                                              kMinParallelValues)
  for (Index blk = 0; blk < blocks; ++blk) {
    const int c0 = static_cast<int>(blk) * kColumnBlock;
    layernorm_parameter_block_kernel(d_weight + c0, d_bias + c0, d_out + c0, in + c0, mean, rstd,
                                     rows, channels, std::min(kColumnBlock, channels - c0));
  }
}

// ----------------------------------------------------------------------------------- gelu ----

template <typename T>
void gelu_forward(T* out, const T* in, std::size_t n) {
  const Index count = static_cast<Index>(n);
  const Index tasks = (count + kElementsPerTask - 1) / kElementsPerTask;
#pragma omp parallel for schedule(static) if (count >= kMinParallelValues)
  for (Index task = 0; task < tasks; ++task) {
    const Index i0 = task * kElementsPerTask;
    gelu_forward_kernel(out + i0, in + i0, std::min(kElementsPerTask, count - i0));
  }
}

template <typename T>
void gelu_backward(T* d_in, const T* in, const T* d_out, std::size_t n) {
  const Index count = static_cast<Index>(n);
  const Index tasks = (count + kElementsPerTask - 1) / kElementsPerTask;
#pragma omp parallel for schedule(static) if (count >= kMinParallelValues)
  for (Index task = 0; task < tasks; ++task) {
    const Index i0 = task * kElementsPerTask;
    gelu_backward_kernel(d_in + i0, in + i0, d_out + i0, std::min(kElementsPerTask, count - i0));
  }
}

// ------------------------------------------------------------------------------ attention ----
//
// Why one small GEMM per (sample, head) in an OpenMP loop rather than a few big GEMMs: q, k and
// v of one head are strided views into qkv (row stride 3C), and the output of one head is a
// strided view into out (row stride C), so cblas takes them in place with lda = 3C / ldc = C and
// no transposing copies are needed. B*H products are independent, which gives enough parallel
// work (B*H >= threads for any real batch) while each GEMM stays cache-resident (N x N with
// N <= 197 for the presets) and the softmax runs right after its S block, while it is hot.
// Each of these GEMMs is one single-threaded OpenBLAS call inside the OpenMP loop.

template <typename T>
void attention_forward(T* out, T* probs, const T* qkv, int batch, int tokens, int channels,
                       int heads) {
  const int hd = channels / heads;
  const int ld_qkv = 3 * channels;
  const T scale = T(1) / std::sqrt(static_cast<T>(hd));
  const Index n_tok = tokens;
  SingleThreadedBlasScope single_threaded_blas;
#pragma omp parallel for schedule( \
    static) if (static_cast <Index>(batch) * heads * n_tok * n_tok >= kMinParallelValues)
  for (Index bh = 0; bh < static_cast<Index>(batch) * heads; ++bh) {
    const Index b = bh / heads;
    const Index h = bh % heads;
    const T* q = qkv + b * n_tok * ld_qkv + h * hd;
    const T* k = q + channels;
    const T* v = q + 2 * channels;
    T* p = probs + bh * n_tok * n_tok;
    // S = scale * Q K^T, written into P and turned into probabilities row by row.
    blas_gemm(false, true, tokens, tokens, hd, scale, q, ld_qkv, k, ld_qkv, T(0), p, tokens);
    softmax_rows_kernel(p, n_tok, n_tok);
    // O_h = P V, written into the head's channel slice of out.
    blas_gemm(false, false, tokens, hd, tokens, T(1), p, tokens, v, ld_qkv, T(0),
              out + b * n_tok * channels + h * hd, channels);
  }
}

template <typename T>
void attention_backward(T* d_qkv, T* scratch, const T* d_out, const T* qkv, const T* probs,
                        int batch, int tokens, int channels, int heads) {
  const int hd = channels / heads;
  const int ld_qkv = 3 * channels;
  const T scale = T(1) / std::sqrt(static_cast<T>(hd));
  const Index n_tok = tokens;
  SingleThreadedBlasScope single_threaded_blas;
#pragma omp parallel for schedule( \
    static) if (static_cast <Index>(batch) * heads * n_tok * n_tok >= kMinParallelValues)
  for (Index bh = 0; bh < static_cast<Index>(batch) * heads; ++bh) {
    const Index b = bh / heads;
    const Index h = bh % heads;
    const Index qkv_offset = b * n_tok * ld_qkv + h * hd;
    const T* q = qkv + qkv_offset;
    const T* k = q + channels;
    const T* v = q + 2 * channels;
    T* dq = d_qkv + qkv_offset;
    T* dk = dq + channels;
    T* dv = dq + 2 * channels;
    const T* p = probs + bh * n_tok * n_tok;
    T* ds = scratch + bh * n_tok * n_tok;
    const T* d_o = d_out + b * n_tok * channels + h * hd;
    // dV = P^T dO
    blas_gemm(true, false, tokens, hd, tokens, T(1), p, tokens, d_o, channels, T(0), dv, ld_qkv);
    // dP = dO V^T
    blas_gemm(false, true, tokens, tokens, hd, T(1), d_o, channels, v, ld_qkv, T(0), ds, tokens);
    // softmax backward, row i: dS_ij = P_ij (dP_ij - sum_j' P_ij' dP_ij')
    softmax_backward_rows_kernel(ds, p, n_tok, n_tok);
    // dQ = scale * dS K,  dK = scale * dS^T Q
    blas_gemm(false, false, tokens, hd, tokens, scale, ds, tokens, k, ld_qkv, T(0), dq, ld_qkv);
    blas_gemm(true, false, tokens, hd, tokens, scale, ds, tokens, q, ld_qkv, T(0), dk, ld_qkv);
  }
}

// ------------------------------------------------------------------------------- residual ----

template <typename T>
void residual_forward(T* out, const T* a, const T* b, std::size_t n) {
#pragma omp parallel for schedule(static) if (static_cast <Index>(n) >= kMinParallelValues)
  for (Index i = 0; i < static_cast<Index>(n); ++i) out[i] = a[i] + b[i];
}

template <typename T>
void residual_backward(T* d_a, T* d_b, const T* d_out, std::size_t n) {
#pragma omp parallel for schedule(static) if (static_cast <Index>(n) >= kMinParallelValues)
  for (Index i = 0; i < static_cast<Index>(n); ++i) {
    d_a[i] += d_out[i];
    d_b[i] += d_out[i];
  }
}

// --------------------------------------------------------------------------------- losses ----

template <typename T>
MaskedLossSum softmax_cross_entropy_forward(T* row_logsumexp, T* row_loss, const T* logits,
                                            const std::int32_t* targets, const T* row_weight,
                                            int rows, int classes) {
  for (int r = 0; r < rows; ++r) {
    if (row_weight[r] != T(0) && (targets[r] < 0 || targets[r] >= classes)) {
      throw std::out_of_range("softmax_cross_entropy_forward: target " +
                              std::to_string(targets[r]) + " of row " + std::to_string(r) +
                              " is outside [0, " + std::to_string(classes) + ")");
    }
  }
  MaskedLossSum result;
  std::int64_t correct = 0;
#pragma omp parallel for schedule(static) reduction(+ : correct) if (static_cast<Index>(rows) * classes >= kMinParallelValues)
  for (Index r = 0; r < rows; ++r) {
    if (row_weight[r] == T(0)) {
      row_loss[r] = 0;
      row_logsumexp[r] = 0;
      continue;
    }
    const T* z = logits + r * classes;
    int best = 0;  // argmax, ties to the lowest index
    const T lse = logsumexp_argmax_kernel(z, classes, best);
    row_logsumexp[r] = lse;
    row_loss[r] = lse - z[targets[r]];
    if (best == targets[r]) ++correct;
  }
  double weighted = 0.0;  // fixed-order sums: independent of the thread count
  for (int r = 0; r < rows; ++r) {
    if (row_weight[r] == T(0)) continue;
    weighted += static_cast<double>(row_weight[r]) * static_cast<double>(row_loss[r]);
    result.weight_sum += static_cast<double>(row_weight[r]);
    ++result.selected;
  }
  result.correct = correct;
  result.loss = result.weight_sum != 0.0 ? weighted / result.weight_sum : 0.0;
  return result;
}

template <typename T>
void softmax_cross_entropy_backward(T* d_logits, const T* logits, const T* row_logsumexp,
                                    const std::int32_t* targets, const T* row_weight, int rows,
                                    int classes, double d_loss) {
  double weight_sum = 0.0;
  for (int r = 0; r < rows; ++r) weight_sum += static_cast<double>(row_weight[r]);
#pragma omp parallel for schedule(static) if (static_cast <Index>(rows) * classes >= \
                                              kMinParallelValues)
  for (Index r = 0; r < rows; ++r) {
    T* dz = d_logits + r * classes;
    if (row_weight[r] == T(0) || weight_sum == 0.0) {
      std::fill_n(dz, classes, T(0));
      continue;
    }
    const T coef = static_cast<T>(d_loss * static_cast<double>(row_weight[r]) / weight_sum);
    const T* z = logits + r * classes;
    const T lse = row_logsumexp[r];
    scaled_softmax_kernel(dz, z, lse, coef, classes);
    dz[targets[r]] -= coef;
  }
}

template <typename T>
MaskedLossSum normalized_patch_mse_forward(T* target_out, T* row_loss, const T* pred,
                                           const T* patches, const T* row_weight, int rows, int dim,
                                           bool normalize_target) {
#pragma omp parallel for schedule(static) if (static_cast <Index>(rows) * dim >= kMinParallelValues)
  for (Index r = 0; r < rows; ++r) {
    const T* x = patches + r * dim;
    T* t = target_out + r * dim;
    if (normalize_target) {
      T m = 0;
      for (int d = 0; d < dim; ++d) m += x[d];
      m /= static_cast<T>(dim);
      T v = 0;
      for (int d = 0; d < dim; ++d) v += (x[d] - m) * (x[d] - m);
      // Unbiased variance (divisor dim - 1) like torch's Tensor.var default used by MAE.
      v /= static_cast<T>(dim - 1);
      const T inv_std = T(1) / std::sqrt(v + T(1e-6));
      for (int d = 0; d < dim; ++d) t[d] = (x[d] - m) * inv_std;
    } else {
      std::copy_n(x, dim, t);
    }
    const T* y = pred + r * dim;
    T sq = 0;
    for (int d = 0; d < dim; ++d) sq += (y[d] - t[d]) * (y[d] - t[d]);
    row_loss[r] = sq / static_cast<T>(dim);
  }
  MaskedLossSum result;
  double weighted = 0.0;
  for (int r = 0; r < rows; ++r) {
    if (row_weight[r] == T(0)) continue;
    weighted += static_cast<double>(row_weight[r]) * static_cast<double>(row_loss[r]);
    result.weight_sum += static_cast<double>(row_weight[r]);
    ++result.selected;
  }
  result.loss = result.weight_sum != 0.0 ? weighted / result.weight_sum : 0.0;
  return result;
}

template <typename T>
void normalized_patch_mse_backward(T* d_pred, const T* pred, const T* target, const T* row_weight,
                                   int rows, int dim, double d_loss) {
  double weight_sum = 0.0;
  for (int r = 0; r < rows; ++r) weight_sum += static_cast<double>(row_weight[r]);
#pragma omp parallel for schedule(static) if (static_cast <Index>(rows) * dim >= kMinParallelValues)
  for (Index r = 0; r < rows; ++r) {
    T* dy = d_pred + r * dim;
    if (row_weight[r] == T(0) || weight_sum == 0.0) {
      std::fill_n(dy, dim, T(0));
      continue;
    }
    const T coef =
        static_cast<T>(d_loss * static_cast<double>(row_weight[r]) / weight_sum * 2.0 / dim);
    const T* y = pred + r * dim;
    const T* t = target + r * dim;
    for (int d = 0; d < dim; ++d) dy[d] = coef * (y[d] - t[d]);
  }
}

// --------------------------------------------------------------------------- instantiation ----

#define KMIM_MODEL_INSTANTIATE_LAYERS(T)                                                         \
  template void gemm<T>(bool, bool, int, int, int, T, const T*, int, const T*, int, T, T*, int); \
  template void linear_forward<T>(T*, const T*, const T*, const T*, int, int, int);              \
  template void linear_backward<T>(T*, T*, T*, const T*, const T*, const T*, int, int, int);     \
  template void layernorm_forward<T>(T*, T*, T*, const T*, const T*, const T*, int, int);        \
  template void layernorm_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*,        \
                                      const T*, int, int);                                       \
  template void gelu_forward<T>(T*, const T*, std::size_t);                                      \
  template void gelu_backward<T>(T*, const T*, const T*, std::size_t);                           \
  template void attention_forward<T>(T*, T*, const T*, int, int, int, int);                      \
  template void attention_backward<T>(T*, T*, const T*, const T*, const T*, int, int, int, int); \
  template void residual_forward<T>(T*, const T*, const T*, std::size_t);                        \
  template void residual_backward<T>(T*, T*, const T*, std::size_t);                             \
  template MaskedLossSum softmax_cross_entropy_forward<T>(T*, T*, const T*, const std::int32_t*, \
                                                          const T*, int, int);                   \
  template void softmax_cross_entropy_backward<T>(T*, const T*, const T*, const std::int32_t*,   \
                                                  const T*, int, int, double);                   \
  template MaskedLossSum normalized_patch_mse_forward<T>(T*, T*, const T*, const T*, const T*,   \
                                                         int, int, bool);                        \
  template void normalized_patch_mse_backward<T>(T*, const T*, const T*, const T*, int, int,     \
                                                 double);

KMIM_MODEL_INSTANTIATE_LAYERS(float)
KMIM_MODEL_INSTANTIATE_LAYERS(double)

#undef KMIM_MODEL_INSTANTIATE_LAYERS

}  // namespace kmim::model
