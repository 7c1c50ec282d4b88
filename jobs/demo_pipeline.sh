#!/usr/bin/env bash
# The kmim pipeline in miniature on one CPU node: the same job scripts and chain as
# jobs/pipeline.sh, with tiny data and configs, so a laptop, a CI box or a login-node test
# partition runs it in a minute or two. Needs a running Slurm (scripts/slurm_local_up.sh starts a
# local one) and a build of kmim.
#
#   jobs/demo_pipeline.sh [--wait] [--dry-run] [other jobs/pipeline.sh options]
#
# Data: Fashion-MNIST (Debian package dataset-fashion-mnist) converted by kmim_idx2folder into an
# ImageNet-style JPEG tree of 32x32 RGB images, 20 training and 5 validation images per class.
# Environment (besides those of jobs/pipeline.sh and jobs/common.sh):
#   KMIM_RUN_DIR        run folder (default ./kmim-demo)
#   KMIM_IMAGENET_ROOT  use this image tree instead of making the Fashion-MNIST one
#   KMIM_DEMO_RANKS     MPI ranks per stage (default 2)
#   KMIM_DEMO_SBATCH_ARGS  sbatch options replacing the demo's resources (default: one node,
#                       KMIM_DEMO_RANKS tasks x 1 CPU, no GPU, 1 GB, 15 minutes)
# Stages whose programs are not built yet report "not built yet, skipped" and succeed.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export KMIM_JOBS_DIR="$here"
source "$here/common.sh"

KMIM_RUN_DIR="$(realpath -m "${KMIM_RUN_DIR:-$PWD/kmim-demo}")"
export KMIM_RUN_DIR
ranks="${KMIM_DEMO_RANKS:-2}"
dry_run=0
for arg in "$@"; do [ "$arg" = --dry-run ] && dry_run=1; done

if [ -z "${KMIM_IMAGENET_ROOT:-}" ]; then
  export KMIM_IMAGENET_ROOT="$KMIM_RUN_DIR/images"
  if [ "$dry_run" = 0 ] && [ ! -d "$KMIM_IMAGENET_ROOT/val" ]; then
    idx2folder="$(kmim_program_path kmim_idx2folder)" \
      || { echo "demo_pipeline.sh: kmim_idx2folder not found: build kmim (scripts/build.sh) or set KMIM_BIN_DIR" >&2; exit 1; }
    echo "demo_pipeline.sh: making the demo images in $KMIM_IMAGENET_ROOT"
    log="$(HDF5_USE_FILE_LOCKING=FALSE "$idx2folder" --out "$KMIM_IMAGENET_ROOT" --size 32 --rgb \
             --per-class-train 20 --per-class-val 5 2>&1)" \
      || { echo "$log" >&2; echo "demo_pipeline.sh: kmim_idx2folder failed (above)" >&2; exit 1; }
  fi
fi

# Tiny configs: 32-pixel images, one shard per split, K = 10 over 4x4 patches (mini-batch
# K-means, 10 passes of 50 images), the vit_tiny_demo model (img 32, patch 4) for a few epochs.
export KMIM_CLASSES="${KMIM_CLASSES-}"
export KMIM_SHARD_IMAGE_SIZE="${KMIM_SHARD_IMAGE_SIZE:-32}" KMIM_SHARD_IMAGES="${KMIM_SHARD_IMAGES:-256}"
export KMIM_K="${KMIM_K:-10}" KMIM_KMEANS_CROP="${KMIM_KMEANS_CROP:-32}" KMIM_KMEANS_PATCH="${KMIM_KMEANS_PATCH:-4}"
export KMIM_KMEANS_PASSES="${KMIM_KMEANS_PASSES:-10}" KMIM_KMEANS_BATCH_IMAGES="${KMIM_KMEANS_BATCH_IMAGES:-50}"
export KMIM_MODEL="${KMIM_MODEL:-vit_tiny_demo}" KMIM_EPOCHS="${KMIM_EPOCHS:-2}" KMIM_BATCH_SIZE="${KMIM_BATCH_SIZE:-32}"
export KMIM_WARMUP_EPOCHS="${KMIM_WARMUP_EPOCHS:-1}" KMIM_LINPROBE_EPOCHS="${KMIM_LINPROBE_EPOCHS:-2}"
export KMIM_SBATCH_ARGS="${KMIM_DEMO_SBATCH_ARGS:---nodes=1 --ntasks-per-node=$ranks --cpus-per-task=1 --gpus-per-node=0 --mem=1G --time=15} ${KMIM_SBATCH_ARGS:-}"
exec "$here/pipeline.sh" --recipe in100 "$@"
