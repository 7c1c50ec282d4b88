#!/usr/bin/env bash
# Stage 4b: linear probe of the pretrained encoder (kmim_linprobe, SPEC §4: frozen encoder,
# BatchNorm + linear head, LARS, 90 epochs). GPUs: one rank per GPU.
#   sbatch jobs/linprobe.sh
#
# Environment (common ones in jobs/common.sh: KMIM_RUN_DIR, KMIM_BIN_DIR, KMIM_SITE_SETUP, ...):
#   KMIM_CHECKPOINT        pretrained encoder checkpoint (default: the newest *.h5 in $KMIM_PRETRAIN_DIR)
#   KMIM_LINPROBE_TRAIN    training manifest (default $KMIM_DATA_DIR/train.h5)
#   KMIM_LINPROBE_VAL      validation manifest (default $KMIM_DATA_DIR/val.h5)
#   KMIM_LINPROBE_EPOCHS   epochs (default 90)
#   KMIM_LINPROBE_BATCH_SIZE  global batch (default: kmim_linprobe's, 1024; at most the training images)
#   KMIM_LINPROBE_OUT      accuracy report (default $KMIM_RUN_DIR/linprobe.h5); the probe's own
#                          checkpoint is <report>.probe.h5 (kmim_linprobe --probe-checkpoint)
#   KMIM_LINPROBE_ARGS     more kmim_linprobe options
# Preemption: USR1 is forwarded to kmim_linprobe (probe checkpoint at the next step + exit 75 →
# requeue; the rerun passes --resume and continues bit-identically).
#SBATCH --job-name=kmim-linprobe
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=8
#SBATCH --mem=0
#SBATCH --time=24:00:00
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

kmim_stage_begin linprobe
kmim_gpu_environment
train="${KMIM_LINPROBE_TRAIN:-$KMIM_DATA_DIR/train.h5}"
val="${KMIM_LINPROBE_VAL:-$KMIM_DATA_DIR/val.h5}"
out="${KMIM_LINPROBE_OUT:-$KMIM_RUN_DIR/linprobe.h5}"
kmim_skip_if_done "$out"
kmim_need_program kmim_linprobe
checkpoint="${KMIM_CHECKPOINT:-$({ ls -t "$KMIM_PRETRAIN_DIR"/*.h5 2>/dev/null || true; } | sed -n 1p)}"
kmim_need_input "${checkpoint:-$KMIM_PRETRAIN_DIR/*.h5}" pretrain KMIM_CHECKPOINT
kmim_need_input "$train" shard KMIM_LINPROBE_TRAIN
kmim_need_input "$val" shard KMIM_LINPROBE_VAL

args=(--checkpoint "$checkpoint" --train "$train" --val "$val"
      --epochs "${KMIM_LINPROBE_EPOCHS:-90}" --out "$out")
if [ -n "${KMIM_LINPROBE_BATCH_SIZE:-}" ]; then args+=(--batch-size "$KMIM_LINPROBE_BATCH_SIZE"); fi
read -r -a resume <<<"$(kmim_resume_args)"
read -r -a extra <<<"${KMIM_LINPROBE_ARGS:-}"
kmim_run_preemptible checkpoint "${KMIM_LAUNCH[@]}" "$KMIM_PROGRAM" "${args[@]}" "${resume[@]}" "${extra[@]}"
