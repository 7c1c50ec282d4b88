#!/usr/bin/env bash
# Stage 2: the K-MIM PIXEL tokenizer: K-means over the patch vectors of the training shards
# (kmim_kmeans, SPEC §2: Resize(256)+CenterCrop(224), 16x16x3 patches, K = 50 on ImageNet-100).
#   sbatch jobs/kmeans.sh
#
# Environment (common ones in jobs/common.sh: KMIM_RUN_DIR, KMIM_BIN_DIR, KMIM_SITE_SETUP, ...):
#   KMIM_KMEANS_MANIFEST  training manifest (default $KMIM_DATA_DIR/train.h5)
#   KMIM_CODEBOOK         output codebook (default $KMIM_RUN_DIR/codebook.h5)
#   KMIM_K                number of centroids (default 50)
#   KMIM_KMEANS_CROP      centre crop side in pixels (default 224)
#   KMIM_KMEANS_PATCH     patch side in pixels (default 16)
#   KMIM_KMEANS_ALGORITHM minibatch (default: the reference recipe, SPEC §2) or lloyd
#   KMIM_KMEANS_PASSES    mini-batch passes over the data (default 100)
#   KMIM_KMEANS_BATCH_IMAGES  mini-batch size in images (default 256, x 196 patches each)
#   KMIM_KMEANS_ITERS     Lloyd iterations (default 50)
#   KMIM_KMEANS_CHECKPOINT_EVERY  checkpoint every N passes/iterations (default 1)
#   KMIM_KMEANS_ARGS      more kmim_kmeans options (e.g. "--seed 1 --max-images 20000")
# Preemption: USR1 is forwarded to kmim_kmeans; the job requeues itself and the rerun continues
# from the last checkpoint (--resume). kmim_kmeans checkpoints at the next iteration/pass
# boundary and exits 75 on USR1 (or SIGTERM).
#SBATCH --job-name=kmim-kmeans
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --mem=0
#SBATCH --time=24:00:00
#SBATCH --output=%x-%j.out
#SBATCH --open-mode=append
#SBATCH --requeue
#SBATCH --signal=B:USR1@600
set -euo pipefail
# Find jobs/common.sh: inside a job $0 is Slurm's copy of this script in its spool folder.
for kmim_d in "${KMIM_JOBS_DIR:-}" "$(dirname "${BASH_SOURCE[0]}")" \
    "${SLURM_JOB_ID:+$(scontrol -o show job "$SLURM_JOB_ID" 2>/dev/null | sed -n 's|.* Command=\([^ ]*\)/[^/ ]* .*|\1|p')}" \
    "${SLURM_SUBMIT_DIR:-.}/jobs" "${KMIM_HOME:-/nonexistent}/share/kmim/jobs" "${KMIM_HOME:-/nonexistent}/jobs"; do
  [ -n "$kmim_d" ] && [ -f "$kmim_d/common.sh" ] && break
done
[ -f "$kmim_d/common.sh" ] || { echo "kmim: cannot find jobs/common.sh; set KMIM_JOBS_DIR or KMIM_HOME" >&2; exit 1; }
KMIM_JOBS_DIR="$(cd "$kmim_d" && pwd)"
source "$KMIM_JOBS_DIR/common.sh"

kmim_stage_begin kmeans
manifest="${KMIM_KMEANS_MANIFEST:-$KMIM_DATA_DIR/train.h5}"
kmim_skip_if_done "$KMIM_CODEBOOK"
kmim_need_program kmim_kmeans
kmim_need_input "$manifest" shard KMIM_KMEANS_MANIFEST

args=(--manifest "$manifest" --out "$KMIM_CODEBOOK" --k "${KMIM_K:-50}"
      --crop "${KMIM_KMEANS_CROP:-224}" --patch "${KMIM_KMEANS_PATCH:-16}"
      --algorithm "${KMIM_KMEANS_ALGORITHM:-minibatch}" --passes "${KMIM_KMEANS_PASSES:-100}"
      --batch-images "${KMIM_KMEANS_BATCH_IMAGES:-256}" --iters "${KMIM_KMEANS_ITERS:-50}")
read -r -a resume <<<"$(kmim_resume_args)"
# A checkpoint after every iteration: a preempted job loses at most one iteration.
if [ "$(kmim_program_option checkpoint-every)" = value ]; then
  args+=(--checkpoint-every "${KMIM_KMEANS_CHECKPOINT_EVERY:-1}")
fi
read -r -a extra <<<"${KMIM_KMEANS_ARGS:-}"
kmim_run_preemptible checkpoint "${KMIM_LAUNCH[@]}" "$KMIM_PROGRAM" "${args[@]}" "${resume[@]}" "${extra[@]}"
