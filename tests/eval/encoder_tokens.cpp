// Test helper for tests/eval/test_convert_timm_vit.sh: runs the encoder of a kmim checkpoint
// (eval::load_frozen_encoder: converted checkpoints use their learned position embedding) on
// already normalised images and writes its final-LayerNorm tokens.
//
//   kmim_test_encoder_tokens CHECKPOINT IN.h5 OUT.h5
// IN.h5: /images float32 [B, H, W, C] (H = W = the model's img_size, C = channels), NHWC.
// OUT.h5: /tokens float32 [B, 1 + L, D] (CLS first).
#include <cstdio>
#include <vector>

#include "kmim/core/error.hpp"
#include "kmim/dist/mpi.hpp"
#include "kmim/eval/frozen_encoder.hpp"
#include "kmim/io/hdf5.hpp"

int main(int argc, char** argv) {
  kmim::dist::MpiSession mpi(argc, argv);
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s CHECKPOINT IN.h5 OUT.h5\n", argv[0]);
    return 2;
  }
  try {
    const kmim::eval::FrozenEncoder encoder = kmim::eval::load_frozen_encoder(argv[1]);
    const kmim::model::ModelConfig& c = encoder.config();
    const kmim::io::H5Object in = kmim::io::open_file(argv[2]);
    const auto dims = in.dataset("images").dims();
    const std::vector<float> images = in.read_dataset<float>("images");
    const int s = c.img_size, p = c.patch_size, ch = c.channels, g = c.grid_size();
    if (dims.size() != 4 || dims[1] != static_cast<hsize_t>(s) || dims[2] != static_cast<hsize_t>(s) ||
        dims[3] != static_cast<hsize_t>(ch))
      throw kmim::FileError(argv[2], "/images must be [B, img_size, img_size, channels]");
    const std::size_t b = dims[0], l = static_cast<std::size_t>(c.num_patches());
    const std::size_t pd = static_cast<std::size_t>(c.patch_dim()), d = static_cast<std::size_t>(c.embed_dim);
    // Patchify: patch (ty, tx) row-major, vector in (row, col, channel) order.
    std::vector<float> patches(b * l * pd);
    for (std::size_t i = 0; i < b; ++i)
      for (int ty = 0; ty < g; ++ty)
        for (int tx = 0; tx < g; ++tx)
          for (int py = 0; py < p; ++py)
            for (int px = 0; px < p; ++px)
              for (int k = 0; k < ch; ++k)
                patches[((i * l + static_cast<std::size_t>(ty * g + tx)) * pd) +
                        static_cast<std::size_t>((py * p + px) * ch + k)] =
                    images[((i * s + static_cast<std::size_t>(ty * p + py)) * s +
                            static_cast<std::size_t>(tx * p + px)) * ch + static_cast<std::size_t>(k)];
    kmim::eval::EncoderRunner runner(encoder, 4);
    std::vector<float> tokens(b * (l + 1) * d);
    runner.tokens(patches.data(), b, tokens.data());
    const kmim::io::H5Object out = kmim::io::create_file(argv[3]);
    out.write_dataset<float>("tokens", tokens, {b, l + 1, d});
  } catch (const kmim::Error& e) {
    std::fprintf(stderr, "kmim_test_encoder_tokens: %s\n", e.what());
    return 1;
  }
  return 0;
}
