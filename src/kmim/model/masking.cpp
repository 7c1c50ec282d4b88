// Random masking and token re-ordering (see masking.hpp).
#include "kmim/model/masking.hpp"

#include <algorithm>
#include <cstddef>
#include <numeric>
#include <stdexcept>
#include <string>

#include "kmim/model/layers.hpp"

namespace kmim::model {
namespace {
using Index = std::ptrdiff_t;
}  // namespace

int masking_keep_count(int num_patches, double mask_ratio) {
  return static_cast<int>(static_cast<double>(num_patches) * (1.0 - mask_ratio));
}

template <typename T>
void random_masking(std::int32_t* ids_shuffle, std::int32_t* ids_restore, T* mask,
                    const float* noise, int batch, int num_patches, int keep) {
  if (keep < 0 || keep > num_patches) {
    throw std::invalid_argument("random_masking: keep = " + std::to_string(keep) +
                                " must lie in [0, " + std::to_string(num_patches) + "]");
  }
  const Index n = num_patches;
#pragma omp parallel for schedule(static) if (static_cast <Index>(batch) * n * 16 >= \
                                              kMinParallelValues)
  for (Index b = 0; b < batch; ++b) {
    std::int32_t* shuffle = ids_shuffle + b * n;
    std::int32_t* restore = ids_restore + b * n;
    const float* u = noise + b * n;
    std::iota(shuffle, shuffle + n, 0);
    std::stable_sort(shuffle, shuffle + n,
                     [u](std::int32_t i, std::int32_t j) { return u[i] < u[j]; });
    for (Index i = 0; i < n; ++i) restore[shuffle[i]] = static_cast<std::int32_t>(i);
    T* m = mask + b * n;
    for (Index l = 0; l < n; ++l) m[l] = restore[l] < keep ? T(0) : T(1);
  }
}

template <typename T>
void gather_kept_forward(T* out, const T* in, const std::int32_t* ids_shuffle, int batch,
                         int num_patches, int keep, int channels) {
#pragma omp parallel for schedule(static) if (static_cast <Index>(batch) * keep * channels >= \
                                              kMinParallelValues)
  for (Index bi = 0; bi < static_cast<Index>(batch) * keep; ++bi) {
    const Index b = bi / keep;
    const Index i = bi % keep;
    const Index src = ids_shuffle[b * num_patches + i];
    std::copy_n(in + (b * num_patches + src) * channels, channels, out + bi * channels);
  }
}

template <typename T>
void gather_kept_backward(T* d_in, const T* d_out, const std::int32_t* ids_shuffle, int batch,
                          int num_patches, int keep, int channels) {
#pragma omp parallel for schedule( \
    static) if (static_cast <Index>(batch) * num_patches * channels >= kMinParallelValues)
  for (Index b = 0; b < batch; ++b) {
    T* dst = d_in + b * num_patches * channels;
    std::fill_n(dst, static_cast<Index>(num_patches) * channels, T(0));
    for (Index i = 0; i < keep; ++i) {
      const Index l = ids_shuffle[b * num_patches + i];
      std::copy_n(d_out + (b * keep + i) * channels, channels, dst + l * channels);
    }
  }
}

template <typename T>
void unshuffle_with_mask_tokens_forward(T* out, const T* in, const T* mask_token,
                                        const std::int32_t* ids_restore, int batch, int num_patches,
                                        int keep, int channels) {
  const Index rows_in = 1 + keep;
  const Index rows_out = 1 + num_patches;
#pragma omp parallel for schedule(static) if (batch * rows_out * channels >= kMinParallelValues)
  for (Index b = 0; b < batch; ++b) {
    const T* src = in + b * rows_in * channels;
    T* dst = out + b * rows_out * channels;
    std::copy_n(src, channels, dst);  // CLS
    for (Index l = 0; l < num_patches; ++l) {
      const Index j = ids_restore[b * num_patches + l];
      const T* row = j < keep ? src + (1 + j) * channels : mask_token;
      std::copy_n(row, channels, dst + (1 + l) * channels);
    }
  }
}

template <typename T>
void unshuffle_with_mask_tokens_backward(T* d_in, T* d_mask_token, const T* d_out,
                                         const std::int32_t* ids_restore, int batch,
                                         int num_patches, int keep, int channels) {
  const Index rows_in = 1 + keep;
  const Index rows_out = 1 + num_patches;
#pragma omp parallel for schedule(static) if (batch * rows_out * channels >= kMinParallelValues)
  for (Index b = 0; b < batch; ++b) {
    T* dst = d_in + b * rows_in * channels;
    const T* src = d_out + b * rows_out * channels;
    std::copy_n(src, channels, dst);  // CLS
    for (Index l = 0; l < num_patches; ++l) {
      const Index j = ids_restore[b * num_patches + l];
      if (j < keep) std::copy_n(src + (1 + l) * channels, channels, dst + (1 + j) * channels);
    }
  }
  // The mask token is shared by every removed position: sum their gradients in a fixed order.
  for (Index b = 0; b < batch; ++b) {
    for (Index l = 0; l < num_patches; ++l) {
      if (ids_restore[b * num_patches + l] < keep) continue;
      const T* row = d_out + (b * rows_out + 1 + l) * channels;
      for (Index c = 0; c < channels; ++c) d_mask_token[c] += row[c];
    }
  }
}

#define KMIM_MODEL_INSTANTIATE_MASKING(T)                                                          \
  template void random_masking<T>(std::int32_t*, std::int32_t*, T*, const float*, int, int, int);  \
  template void gather_kept_forward<T>(T*, const T*, const std::int32_t*, int, int, int, int);     \
  template void gather_kept_backward<T>(T*, const T*, const std::int32_t*, int, int, int, int);    \
  template void unshuffle_with_mask_tokens_forward<T>(T*, const T*, const T*, const std::int32_t*, \
                                                      int, int, int, int);                         \
  template void unshuffle_with_mask_tokens_backward<T>(T*, T*, const T*, const std::int32_t*, int, \
                                                       int, int, int);

KMIM_MODEL_INSTANTIATE_MASKING(float)
KMIM_MODEL_INSTANTIATE_MASKING(double)

#undef KMIM_MODEL_INSTANTIATE_MASKING

}  // namespace kmim::model
