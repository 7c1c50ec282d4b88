// kmim_pretrain: K-MIM (or MAE) pretraining of a ViT on a shard split (SPEC §2; docs/pretrain.md).
//
//   mpirun -np 8 kmim_pretrain --manifest shards/train.h5 --codebook codebook_k50.h5
//       --model vit_small --epochs 200 --batch-size 4096 --blr 1.5e-4 --warmup-epochs 40
//       --out-dir runs/kmim_pixel --resume auto
//
// Exit codes: 0 finished (or --max-steps reached), 1 error, 3 non-finite loss/gradient,
// 75 checkpointed on SIGUSR1/SIGTERM (requeue and rerun with --resume auto).
#include "kmim/core/options.hpp"
#include "kmim/dist/program.hpp"
#include "kmim/train/pretrain.hpp"

using namespace kmim;

namespace {

int run(dist::Communicator& comm, int argc, char** argv) {
  train::PretrainParams p;
  OptionSet opts("kmim_pretrain",
                 "K-MIM pretraining (SPEC section 2): a masked ViT predicts, for every masked\n"
                 "patch, the K-means token of that patch of the augmented crop (or, with --loss\n"
                 "mae, its normalised pixels). Data-parallel over MPI ranks; checkpoints and\n"
                 "metrics.jsonl in --out-dir. Exit codes: 0 done, 1 error, 3 non-finite loss,\n"
                 "75 checkpointed on SIGUSR1/SIGTERM (rerun with --resume auto).");
  opts.add_required("manifest", p.manifest, "training split manifest (kmim_shard <out>/train.h5)")
      .add_required("out-dir", p.out_dir, "folder for checkpoints and metrics.jsonl")
      .add("model", p.model, "model preset: vit_tiny_demo, vit_tiny, vit_small, vit_base")
      .add("img-size", p.img_size, "input side in pixels (0: the preset's)")
      .add("patch-size", p.patch_size, "patch side in pixels (0: the preset's)")
      .add("loss", p.loss, "kmim (token cross-entropy on masked patches) or mae (pixel regression)")
      .add("tokenizer", p.tokenizer, "kmim targets: pixel, feature, label or random")
      .add("codebook", p.codebook,
           "pixel or feature codebook from kmim_kmeans (--tokenizer pixel/feature)")
      .add(
          "tokenizer-checkpoint", p.tokenizer_checkpoint,
          "--tokenizer feature: kmim checkpoint of the frozen ViT whose patch tokens are clustered")
      .add("random-k", p.random_k, "--tokenizer random: number of tokens K")
      .add("norm-pix-loss", p.norm_pix_loss,
           "--loss mae: normalise each target patch (MAE's norm_pix_loss)")
      .add("mask-ratio", p.mask_ratio, "fraction of patches masked per image")
      .add("epochs", p.epochs, "training epochs")
      .add("batch-size", p.batch_size, "GLOBAL batch: images per optimizer step over all ranks")
      .add("accum-iter", p.accum_iter, "micro-batches per optimizer step (gradient accumulation)")
      .add("blr", p.blr, "base learning rate: lr = blr * batch-size / 256")
      .add("lr", p.lr, "absolute learning rate (0: from --blr)")
      .add("min-lr", p.min_lr, "lower bound of the cosine schedule")
      .add("warmup-epochs", p.warmup_epochs, "epochs of linear warmup (per iteration)")
      .add("weight-decay", p.weight_decay,
           "AdamW weight decay (not on biases and LayerNorm parameters)")
      .add("clip-grad", p.clip_grad, "clip the global gradient norm to this value (0: off)")
      .add("seed", p.seed,
           "seed of the initialisation, data order, crops, flips, masks, random tokens")
      .add("threads", p.threads,
           "OpenMP threads per rank (0: OMP_NUM_THREADS, the CPU binding, or cores / ranks)")
      .add("max-steps", p.max_steps,
           "stop (with a checkpoint) after this many steps in total (0: all epochs)")
      .add("checkpoint-every", p.checkpoint_every,
           "steps between checkpoints (0: only at epoch ends)")
      .add("keep-checkpoints", p.keep_checkpoints, "newest checkpoints kept in --out-dir (0: all)")
      .add("resume", p.resume,
           "auto: continue from the newest valid checkpoint in --out-dir (fresh start "
           "if none); FILE: from that checkpoint; empty: fresh start")
      .add("log-every", p.log_every, "steps between log lines and metrics.jsonl records")
      .add("prefetch", p.prefetch, "micro-batches read ahead on a background thread");
  if (!opts.parse(argc, argv)) return 0;
  return train::run_pretraining(comm, p, opts.effective_ini());
}

}  // namespace

int main(int argc, char** argv) { return dist::run_program("kmim_pretrain", argc, argv, run); }
