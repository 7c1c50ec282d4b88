// Counting n[t][c] (SPEC §3) for several tokenizers in one pass over an evaluation set.
//
// The evaluation set is a list of image indices (all images of a split, or a seeded per-class
// sample). Ranks take contiguous blocks of that list (dist::block_range), read each batch of
// images once for all tokenizers, count locally in int64 and sum the matrices with one
// MPI_Allreduce at the end, so the counts are identical for any rank count.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "kmim/dist/mpi.hpp"
#include "kmim/eval/tcas_tokenizers.hpp"

namespace kmim::io {
class ShardDataset;
}

namespace kmim::eval {

/// Stream-id purpose tag of select_evaluation_images.
inline constexpr std::uint64_t kEvalSampleKey = 0x6576616c73616dull;  // "evalsam"

/// The evaluation images, ascending: every index when max_per_class is 0; otherwise, for each
/// class with more than max_per_class images, max_per_class of them chosen by
/// random_permutation(n_c, seed, stream_id({kEvalSampleKey, c})) (a pure function of the labels,
/// seed and class), all images of smaller classes. Labels must lie in [0, num_classes).
std::vector<std::uint64_t> select_evaluation_images(std::span<const std::int32_t> labels,
                                                    std::size_t num_classes,
                                                    std::uint64_t max_per_class,
                                                    std::uint64_t seed);

/// Fills `pixels` (indices.size() × image_size² × 3 bytes) with the images at `indices`.
using ImageReader =
    std::function<void(std::span<const std::uint64_t> indices, std::span<std::uint8_t> pixels)>;

struct CountOptions {
  std::size_t batch_images = 64;   ///< images read and tokenized together
  std::string progress_label = "tcas";
};

/// One count matrix [tokens × classes] (row-major) per tokenizer, summed over all ranks.
/// `labels` is indexed by dataset index (labels[images[i]] is the class of image images[i]).
/// `read_pixels` is called only when a tokenizer needs pixels. Collective over comm.
std::vector<std::vector<std::int64_t>> count_token_classes(
    std::span<const std::uint64_t> images, std::span<const std::int32_t> labels,
    std::size_t num_classes, int image_size, const ImageReader& read_pixels,
    std::span<const PatchTokenizer* const> tokenizers, const dist::Communicator& comm,
    const CountOptions& options = {});

/// The same over the images of a shard split.
std::vector<std::vector<std::int64_t>> count_token_classes(
    const io::ShardDataset& data, std::span<const std::uint64_t> images,
    std::span<const PatchTokenizer* const> tokenizers, const dist::Communicator& comm,
    const CountOptions& options = {});

}  // namespace kmim::eval
