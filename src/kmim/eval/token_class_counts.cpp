#include "kmim/eval/token_class_counts.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "kmim/core/error.hpp"
#include "kmim/core/progress.hpp"
#include "kmim/core/rng.hpp"
#include "kmim/io/shard_dataset.hpp"

namespace kmim::eval {

std::vector<std::uint64_t> select_evaluation_images(std::span<const std::int32_t> labels,
                                                    std::size_t num_classes,
                                                    std::uint64_t max_per_class,
                                                    std::uint64_t seed) {
  std::vector<std::vector<std::uint64_t>> by_class(num_classes);
  for (std::size_t i = 0; i < labels.size(); ++i) {
    const std::int32_t c = labels[i];
    if (c < 0 || static_cast<std::size_t>(c) >= num_classes)
      throw Error(fmt::format("evaluation set: image {} has label {} outside [0, {})", i, c,
                              num_classes));
    by_class[static_cast<std::size_t>(c)].push_back(i);
  }
  std::vector<std::uint64_t> chosen;
  for (std::size_t c = 0; c < num_classes; ++c) {
    const auto& members = by_class[c];
    if (max_per_class == 0 || members.size() <= max_per_class) {
      chosen.insert(chosen.end(), members.begin(), members.end());
      continue;
    }
    const auto order = random_permutation(members.size(), seed, stream_id({kEvalSampleKey, c}));
    for (std::uint64_t j = 0; j < max_per_class; ++j) chosen.push_back(members[order[j]]);
  }
  std::sort(chosen.begin(), chosen.end());
  return chosen;
}

std::vector<std::vector<std::int64_t>> count_token_classes(
    std::span<const std::uint64_t> images, std::span<const std::int32_t> labels,
    std::size_t num_classes, int image_size, const ImageReader& read_pixels,
    std::span<const PatchTokenizer* const> tokenizers, const dist::Communicator& comm,
    const CountOptions& options) {
  if (tokenizers.empty()) throw Error("TCAS counting: no tokenizer given");
  const std::size_t batch_images = std::max<std::size_t>(options.batch_images, 1);
  bool need_pixels = false;
  std::vector<std::vector<std::int64_t>> counts;
  for (const PatchTokenizer* t : tokenizers) {
    need_pixels = need_pixels || t->needs_pixels();
    counts.emplace_back(t->num_tokens() * num_classes, 0);
  }
  const std::size_t image_bytes =
      static_cast<std::size_t>(image_size) * static_cast<std::size_t>(image_size) * 3;

  const auto [begin, end] = comm.block_range(images.size());
  Progress progress(options.progress_label, images.size(), "images");
  std::vector<std::uint8_t> pixels;
  std::vector<std::int32_t> batch_labels;
  std::vector<std::int32_t> tokens;
  for (std::uint64_t first = begin; first < end; first += batch_images) {
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(batch_images, end - first));
    const auto indices = images.subspan(first, n);
    batch_labels.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
      if (indices[i] >= labels.size())
        throw Error(fmt::format("TCAS counting: image index {} is out of range ({} labels)",
                                indices[i], labels.size()));
      batch_labels[i] = labels[indices[i]];
      if (batch_labels[i] < 0 || static_cast<std::size_t>(batch_labels[i]) >= num_classes)
        throw Error(fmt::format("TCAS counting: image {} has label {} outside [0, {})", indices[i],
                                batch_labels[i], num_classes));
    }
    if (need_pixels) {
      pixels.resize(n * image_bytes);
      read_pixels(indices, pixels);
    }
    ImageBatchView view{need_pixels ? std::span<const std::uint8_t>(pixels)
                                    : std::span<const std::uint8_t>(),
                        image_size, indices, batch_labels};
    for (std::size_t k = 0; k < tokenizers.size(); ++k) {
      const PatchTokenizer& tokenizer = *tokenizers[k];
      const auto per_image = static_cast<std::size_t>(tokenizer.patches_per_image());
      tokens.resize(n * per_image);
      tokenizer.tokenize(view, tokens);
      const std::size_t num_tokens = tokenizer.num_tokens();
      auto& matrix = counts[k];
      for (std::size_t i = 0; i < n; ++i) {
        const auto c = static_cast<std::size_t>(batch_labels[i]);
        for (std::size_t p = 0; p < per_image; ++p) {
          const std::int32_t t = tokens[i * per_image + p];
          if (t < 0 || static_cast<std::size_t>(t) >= num_tokens)
            throw Error(fmt::format("tokenizer {} produced token {} outside [0, {})",
                                    tokenizer.name(), t, num_tokens));
          ++matrix[static_cast<std::size_t>(t) * num_classes + c];
        }
      }
    }
    // Progress speaks for the job (rank 0 prints): ranks hold equal blocks and run at about the
    // same rate, so this rank's share scaled by the rank count estimates the global count
    // without a collective per batch.
    const std::uint64_t local_done = first + n - begin;
    progress.update(std::min<std::uint64_t>(images.size(), local_done * static_cast<std::uint64_t>(comm.size())));
  }
  for (auto& matrix : counts) comm.allreduce(std::span<std::int64_t>(matrix));
  progress.update(images.size());
  progress.finish();
  return counts;
}

std::vector<std::vector<std::int64_t>> count_token_classes(
    const io::ShardDataset& data, std::span<const std::uint64_t> images,
    std::span<const PatchTokenizer* const> tokenizers, const dist::Communicator& comm,
    const CountOptions& options) {
  const ImageReader reader = [&data](std::span<const std::uint64_t> indices,
                                     std::span<std::uint8_t> pixels) {
    data.read_indices(indices, pixels);
  };
  return count_token_classes(images, data.labels(), static_cast<std::size_t>(data.num_classes()),
                             data.image_size(), reader, tokenizers, comm, options);
}

}  // namespace kmim::eval
