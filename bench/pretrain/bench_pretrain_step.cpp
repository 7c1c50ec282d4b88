// kmim's CPU pretraining step, timed (not a test; bench/pretrain/run_bench.sh runs it beside the
// PyTorch peer in bench/pretrain/torch_mae.py).
//
//   bench_pretrain_step PRESET BATCH THREADS STEPS WARMUP [OUT_DIM]
//
// One step = what kmim_pretrain does per optimizer step on one rank, minus data loading and
// augmentation: zero the gradients, vit_mae_forward (masking, encoder on the visible patches,
// decoder, token cross-entropy on the masked patches), vit_mae_backward, AdamW at a fixed lr.
// Inputs (normalised patches, masking noise, targets) are random and fixed. Prints one JSON
// line: images/s over the timed steps, the first/last loss, peak RSS, the BLAS in use.
#include <omp.h>
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "kmim/core/rng.hpp"
#include "kmim/model/layers.hpp"
#include "kmim/model/optimizer.hpp"
#include "kmim/model/vit_mae.hpp"

namespace km = kmim::model;

int main(int argc, char** argv) {
  if (argc < 6) {
    std::fprintf(stderr, "usage: %s PRESET BATCH THREADS STEPS WARMUP [OUT_DIM]\n", argv[0]);
    return 2;
  }
  km::ModelConfig c = km::model_preset(argv[1]);
  const int batch = std::atoi(argv[2]);
  const int threads = std::atoi(argv[3]);
  const int steps = std::atoi(argv[4]);
  const int warmup = std::atoi(argv[5]);
  if (argc > 6) c.out_dim = std::atoi(argv[6]);
  c.validate();
  omp_set_num_threads(threads);

  km::Parameters params(c);
  km::init_parameters(params, 0);
  km::Gradients grads(c);
  km::AdamW adam(params.layout());
  km::Activations<float> acts(c, batch);
  const std::size_t l = static_cast<std::size_t>(c.num_patches());
  std::vector<float> patches(batch * l * c.patch_dim()), noise(batch * l);
  std::vector<std::int32_t> targets(batch * l);
  kmim::RandomStream rng(1, 2);
  for (auto& x : patches) x = static_cast<float>(rng.normal());
  for (auto& u : noise) u = rng.uniform();
  for (auto& t : targets)
    t = static_cast<std::int32_t>(rng.below(static_cast<std::uint64_t>(c.out_dim)));
  const km::Batch<float> b{batch, patches.data(), noise.data(), targets.data()};

  double first_loss = 0, last_loss = 0;
  auto step = [&] {
    grads.zero();
    const km::LossResult r = km::vit_mae_forward(params, b, acts);
    km::vit_mae_backward(params, acts, grads, 1.0);
    adam.step(params.values(), grads.values(), 1e-4);
    return r.loss;
  };
  for (int i = 0; i < warmup; ++i) first_loss = step();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < steps; ++i) last_loss = step();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  const double ips = steps * batch / seconds;
  std::printf(
      "{\"impl\": \"kmim\", \"model\": \"%s\", \"batch\": %d, \"threads\": %d, \"steps\": %d, "
      "\"images_per_second\": %.2f, \"step_ms\": %.3f, \"gflops_per_second\": %.2f, "
      "\"first_loss\": %.5f, \"last_loss\": %.5f, \"peak_rss_mb\": %.1f, \"blas\": \"%s\"}\n",
      argv[1], batch, threads, steps, ips, 1e3 * seconds / steps,
      ips * km::flops_per_image(c).training / 1e9, first_loss, last_loss, ru.ru_maxrss / 1024.0,
      km::blas_description().c_str());
  return 0;
}
