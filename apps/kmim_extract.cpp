// kmim_extract: features of a frozen encoder over a shard split (SPEC §2 "Feature tokenizer",
// §4; docs/eval.md, "kmim_extract").
//
//   mpirun -np 8 kmim_extract --manifest shards/val.h5 --checkpoint ckpt.h5 --pool cls --out val_feats.h5
//   kmim_extract --manifest shards/train.h5 --checkpoint dino_vits16.h5 --pool patches
//                --max-per-class 50 --out patch_tokens.h5      (then kmim_kmeans --features)
//
// Centre crop of the stored images to the model's img_size, ImageNet normalisation, the
// encoder's final-LayerNorm tokens pooled (CLS, mean of the patch tokens, or every patch token),
// written as a feature file (/features float32 [rows, D], /labels int32, /image_index int64) that
// kmim_linprobe --mode features and kmim_kmeans --features read. Resumable: progress is recorded
// per chunk in <out>.progress.h5 and a rerun continues; the final file appears atomically.
// Exit codes: 0 done (or stopped by --stop-after-chunks), 1 error, 75 stopped on
// SIGUSR1/SIGTERM after recording progress (rerun to continue).
#include <omp.h>

#include <fmt/format.h>

#include "kmim/core/log.hpp"
#include "kmim/core/options.hpp"
#include "kmim/core/stop_request.hpp"
#include "kmim/dist/program.hpp"
#include "kmim/eval/feature_extraction.hpp"

using namespace kmim;

namespace {

int run(dist::Communicator& comm, int argc, char** argv) {
  eval::FeatureExtractionParams p;
  int threads = 0;  // OpenMP threads per rank (0: default)
  OptionSet opts("kmim_extract",
                 "Runs a frozen ViT encoder (a kmim checkpoint, or a converted DINO/DeiT/timm\n"
                 "model) over the centre crops of a shard split and writes its features: the CLS\n"
                 "token, the mean of the patch tokens, or every patch token (for feature-\n"
                 "tokenizer K-means). Resumable; exit 75 after SIGUSR1/SIGTERM (rerun to continue).");
  opts.add_required("manifest", p.manifest, "shard split manifest (<shards>/<split>.h5)")
      .add_required("checkpoint", p.checkpoint, "kmim checkpoint of the frozen encoder (kmim_pretrain or tools/convert_timm_vit.py)")
      .add_required("out", p.out, "feature file to write (HDF5: /features [rows, D], /labels, /image_index)")
      .add("pool", p.pool, "cls (CLS token), mean (mean of the patch tokens) or patches (every patch token: L rows per image)")
      .add("chunk-images", p.chunk_images, "images per unit of work and of recorded progress")
      .add("batch-images", p.batch_images, "images per encoder forward pass")
      .add("max-per-class", p.max_per_class, "use at most this many images per class, a seeded sample (0: all)")
      .add("seed", p.seed, "seed of the per-class sample")
      .add_flag("restart", p.restart, "discard the progress of an earlier unfinished run (<out>.progress.h5)")
      .add("stop-after-chunks", p.stop_after_chunks, "stop after this many chunks in this run, keeping the progress (0: run to the end)")
      .add("threads", threads, "OpenMP threads per rank (0: default)");
  if (!opts.parse(argc, argv)) return 0;
  opts.require("threads", threads >= 0, "must be 0 (default) or positive");
  if (threads > 0) omp_set_num_threads(threads);
  const StopRequest stop;
  const eval::ExtractionStatus status = eval::extract_features(
      p, "kmim_extract", opts.effective_ini(), comm, [&stop] { return stop.requested(); });
  switch (status) {
    case eval::ExtractionStatus::complete:
      if (comm.is_root()) fmt::print("kmim_extract: wrote '{}'\n", p.out);
      return 0;
    case eval::ExtractionStatus::stopped_after_chunks:
      log().info("extract: stopped after {} chunk(s) as asked (--stop-after-chunks); progress in "
                 "'{}'; rerun to continue",
                 p.stop_after_chunks, eval::extraction_work_file(p.out).string());
      return 0;
    case eval::ExtractionStatus::stopped:
      log().info("extract: stopped on request (signal {}); progress in '{}'; exit code {} (rerun "
                 "to continue)",
                 stop.signal_number(), eval::extraction_work_file(p.out).string(),
                 kExitCheckpointed);
      return kExitCheckpointed;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) { return dist::run_program("kmim_extract", argc, argv, run); }
