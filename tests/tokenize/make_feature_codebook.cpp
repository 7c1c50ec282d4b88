// Test helper for the feature tokenizer end to end (there is no feature-extraction program
// yet): writes a feature-mode codebook whose K centroids are patch tokens of a frozen kmim
// checkpoint's encoder (final LayerNorm, CLS dropped) on the centre crops of the first images
// of a shard split.
//
//   kmim_test_feature_codebook CHECKPOINT MANIFEST OUT K [D_OVERRIDE]
// D_OVERRIDE writes centroids of another dimension (for the mismatch error test).
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "kmim/core/error.hpp"
#include "kmim/dist/mpi.hpp"
#include "kmim/io/shard_dataset.hpp"
#include "kmim/kmeans/codebook.hpp"
#include "kmim/kmeans/patches.hpp"
#include "kmim/model/encoder_features.hpp"
#include "kmim/train/checkpoint.hpp"

int main(int argc, char** argv) {
  kmim::dist::MpiSession mpi(argc, argv);
  if (argc < 5) {
    std::fprintf(stderr, "usage: %s CHECKPOINT MANIFEST OUT K [D_OVERRIDE]\n", argv[0]);
    return 2;
  }
  try {
    const kmim::model::Parameters frozen = kmim::train::load_model_parameters(argv[1]);
    const kmim::model::ModelConfig& c = frozen.config();
    const kmim::io::ShardDataset data(argv[2]);
    const std::size_t k = std::stoul(argv[4]);
    const int images = 8;
    const int s = data.image_size();
    std::vector<std::uint8_t> pixels(static_cast<std::size_t>(images) * data.image_bytes());
    data.read_range(0, images, pixels);
    const int l = c.num_patches();
    std::vector<float> patches(static_cast<std::size_t>(images) * l * c.patch_dim());
    for (int i = 0; i < images; ++i)
      kmim::kmeans::extract_patches(
          pixels.data() + static_cast<std::size_t>(i) * data.image_bytes(), s, s,
          {c.img_size, c.patch_size, 3}, kmim::kmeans::PixelNormalization::imagenet(), {},
          patches.data() + static_cast<std::size_t>(i) * l * c.patch_dim());
    kmim::model::EncoderWorkspace<float> ws(c, images);
    const std::size_t d = static_cast<std::size_t>(c.embed_dim);
    std::vector<float> tokens(static_cast<std::size_t>(images) * (l + 1) * d);
    kmim::model::encoder_forward(frozen, patches.data(), images, ws, tokens.data());
    kmim::kmeans::Codebook cb;
    cb.mode = "feature";
    cb.k = k;
    cb.d = argc > 5 ? std::stoul(argv[5]) : d;
    cb.feature_dataset = "test_patch_tokens";
    cb.algorithm = "sampled";
    cb.init = "given";
    for (std::size_t j = 0; j < k; ++j) {
      const std::size_t image = j % images, patch = (j * 13) % static_cast<std::size_t>(l);
      const float* t = tokens.data() + (image * (l + 1) + 1 + patch) * d;
      for (std::size_t x = 0; x < cb.d; ++x) cb.centroids.push_back(t[x % d]);
    }
    cb.save(argv[3], "kmim_test_feature_codebook", "");
  } catch (const kmim::Error& e) {
    std::fprintf(stderr, "kmim_test_feature_codebook: %s\n", e.what());
    return 1;
  }
  return 0;
}
