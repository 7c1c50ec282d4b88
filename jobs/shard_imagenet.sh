#!/usr/bin/env bash
# Stage 1: ImageNet folder tree -> HDF5 shards + manifests (kmim_shard, SPEC §1). CPU only.
#   sbatch jobs/shard_imagenet.sh          (or jobs/pipeline.sh, which chains every stage)
#
# Environment (common ones in jobs/common.sh: KMIM_RUN_DIR, KMIM_BIN_DIR, KMIM_SITE_SETUP, ...):
#   KMIM_IMAGENET_ROOT  dataset root holding train/ and val/ (required)
#   KMIM_DATA_DIR       output folder: train.h5, val.h5 + shard folders (default $KMIM_RUN_DIR/data)
#   KMIM_CLASSES        class list file, one wnid per line (e.g. data/imagenet100.txt for
#                       ImageNet-100); empty: every class folder of train/
#   KMIM_SHARD_SPLITS   splits to convert (default train,val)
#   KMIM_SHARD_IMAGE_SIZE  stored image side: short-side resize + centre crop (default 256)
#   KMIM_SHARD_IMAGES   images per shard file (default 1024)
#   KMIM_SHARD_ARGS     more kmim_shard options (e.g. "--shuffle --compression 1")
# Preemption: on USR1 the job requeues at once; the rerun reuses every complete shard.
#SBATCH --job-name=kmim-shard
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=8
#SBATCH --cpus-per-task=4
#SBATCH --time=12:00:00
#SBATCH --output=%x-%j.out
#SBATCH --open-mode=append
#SBATCH --requeue
#SBATCH --signal=B:USR1@300
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

kmim_stage_begin shard
[ -n "${KMIM_IMAGENET_ROOT:-}" ] || kmim_die "stage shard FAILED: set KMIM_IMAGENET_ROOT to the dataset root (the folder holding train/ and val/)"
splits="${KMIM_SHARD_SPLITS:-train,val}"
outputs=()
IFS=, read -r -a split_list <<<"$splits"
for s in "${split_list[@]}"; do outputs+=("$KMIM_DATA_DIR/$s.h5"); done
kmim_skip_if_done "${outputs[@]}"
kmim_need_program kmim_shard

args=(--root "$KMIM_IMAGENET_ROOT" --out "$KMIM_DATA_DIR" --splits "$splits"
      --size "${KMIM_SHARD_IMAGE_SIZE:-256}" --shard-size "${KMIM_SHARD_IMAGES:-1024}")
[ -n "${KMIM_CLASSES:-}" ] && args+=(--classes "$KMIM_CLASSES")
read -r -a extra <<<"${KMIM_SHARD_ARGS:-}"
kmim_run_preemptible restart "${KMIM_LAUNCH[@]}" "$KMIM_PROGRAM" "${args[@]}" "${extra[@]}"
