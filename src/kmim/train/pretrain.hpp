// K-MIM / MAE pretraining on CPU with MPI data parallelism (SPEC §2, §6; docs/pretrain.md).
//
// One optimizer step:
//   the global batch (--batch-size images, the same images for any rank count: the epoch's
//   order is a pure function of (seed, epoch)) is cut into --accum-iter micro-batches, and each
//   micro-batch into one contiguous block per rank; every rank builds its inputs (crop, flip,
//   normalise, patchify, targets, masking noise: pretrain_inputs.hpp), runs forward/backward and
//   ADDS its gradient scaled by 1/accum_iter; then ONE MPI_Allreduce sums the contiguous gradient
//   buffer and it is scaled by 1/ranks, so every rank holds the gradient of the global batch's
//   loss (the mean over its masked patches: every image has the same number of masked
//   patches); optional clipping; AdamW at the step's learning rate (lr_at: per-iteration warmup
//   then cosine). Every rank applies the same update to the same parameters.
//
// Checkpoints (checkpoint.hpp) at every --checkpoint-every steps, each epoch end, --max-steps,
// the end, and on SIGUSR1/SIGTERM (then exit 75); a resumed run continues bit-identically.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "kmim/dist/mpi.hpp"
#include "kmim/io/shard_dataset.hpp"
#include "kmim/model/vit_mae.hpp"
#include "kmim/tokenize/target_tokenizer.hpp"

namespace kmim::train {

/// Exit code of a run stopped because the loss or the gradient became non-finite (NaN/Inf).
inline constexpr int kExitNonFinite = 3;

/// kmim_pretrain's parameters; the member initialisers are the documented defaults
/// (docs/pretrain.md, "Options").
struct PretrainParams {
  std::string manifest;               ///< training split manifest (kmim_shard), required
  std::string out_dir;                ///< checkpoints and metrics.jsonl, required
  std::string model = "vit_small";    ///< preset: vit_tiny_demo, vit_tiny, vit_small, vit_base
  int img_size = 0;                   ///< 0: the preset's
  int patch_size = 0;                 ///< 0: the preset's
  std::string loss = "kmim";          ///< kmim (token cross-entropy) or mae (pixel MSE)
  std::string tokenizer = "pixel";    ///< pixel, feature, label or random (--loss kmim)
  std::string codebook;               ///< pixel/feature codebook (kmim_kmeans)
  std::string tokenizer_checkpoint;   ///< feature tokenizer: the frozen ViT (a kmim checkpoint)
  std::int64_t random_k = 0;          ///< random tokenizer: K
  bool norm_pix_loss = true;          ///< mae: normalise each target patch (MAE's flag)
  double mask_ratio = 0.75;           ///< fraction of patches masked (SPEC §2)
  int epochs = 200;                   ///< training epochs (the cosine schedule's length)
  std::int64_t batch_size = 4096;     ///< GLOBAL batch: images per optimizer step, all ranks
  int accum_iter = 1;                 ///< micro-batches per step (gradient accumulation)
  double blr = 1.5e-4;                ///< base lr: lr = blr * batch_size / 256 (SPEC §2)
  double lr = 0.0;                    ///< absolute lr (0: from blr)
  double min_lr = 0.0;                ///< cosine floor
  double warmup_epochs = 40;          ///< linear warmup, per iteration
  double weight_decay = 0.05;         ///< AdamW decoupled weight decay (not on no-decay tensors)
  double clip_grad = 0.0;             ///< max global gradient norm (0: no clipping)
  std::uint64_t seed = 0;             ///< init, data order, crops, flips, masks, random tokens
  int threads = 0;                    ///< OpenMP threads per rank (0: automatic)
  std::int64_t max_steps = 0;         ///< stop after this many steps in total (0: run all)
  std::int64_t checkpoint_every = 0;  ///< steps between checkpoints (0: epoch ends only)
  int keep_checkpoints = 3;           ///< newest checkpoints kept (0: all)
  std::string resume;                 ///< "" (fresh), "auto" (newest valid in out_dir) or a file
  int log_every = 20;                 ///< steps between log lines / metrics records
  int prefetch = 2;                   ///< micro-batches read ahead
};

/// Validates p (UsageError naming the option), then trains. Returns the exit code: 0 done
/// (all epochs or --max-steps), kExitCheckpointed (75) after a checkpoint on SIGUSR1/SIGTERM,
/// kExitNonFinite (3) on a non-finite loss or gradient. Errors are thrown (kmim::Error).
/// config_ini is stored in every checkpoint as provenance.
int run_pretraining(dist::Communicator& comm, const PretrainParams& p,
                    const std::string& config_ini);

/// The model config of a run: the preset, the overrides, and the objective (out_dim = K of the
/// tokenizer for kmim, P*P*C for mae). Throws UsageError naming the option at fault.
model::ModelConfig pretrain_model_config(const PretrainParams& p, std::size_t num_tokens);

/// The tokenizer of a run (null for --loss mae), checked against the model config (clear
/// FileError/UsageError on any mismatch). `model` needs only the geometry fields;
/// max_micro_batch sizes the feature tokenizer's workspace.
std::unique_ptr<tokenize::TargetTokenizer> make_target_tokenizer(const PretrainParams& p,
                                                                 const model::ModelConfig& model,
                                                                 const io::ShardDataset& data,
                                                                 int max_micro_batch);

}  // namespace kmim::train
