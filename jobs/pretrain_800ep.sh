#!/usr/bin/env bash
# Stage 3 (ImageNet-1k recipe): K-MIM PIXEL pretraining of ViT-B/16 for 800 epochs on
# ImageNet-1k (SPEC §5: the paper's linear-probe 69.4 / fine-tune 83.6 row). Multi-node data
# parallel, one rank per GPU; gradients are all-reduced with NCCL, bootstrapped over MPI.
#   sbatch jobs/pretrain_800ep.sh            (sbatch --nodes=8 ... to use more nodes)
#
# Environment (common ones in jobs/common.sh; the stage's own in kmim_pretrain_stage there):
#   KMIM_MODEL          vit_base             KMIM_EPOCHS         800
#   KMIM_BATCH_SIZE     4096 (global)        KMIM_BLR            1.5e-4 (lr = blr x batch / 256)
#   KMIM_WARMUP_EPOCHS  40                   KMIM_MASK_RATIO     0.75
# Preemption: USR1 (300 s before the time limit) is forwarded to every rank, which checkpoint at
# the next step and exit 75; the job requeues itself and resumes (--resume auto). An 800-epoch
# run is many time-limit slices; KMIM_MAX_REQUEUES (default 100) bounds them.
#SBATCH --job-name=kmim-pretrain-in1k
#SBATCH --nodes=4
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

: "${KMIM_MODEL:=vit_base}" "${KMIM_EPOCHS:=800}" "${KMIM_BATCH_SIZE:=4096}" "${KMIM_BLR:=1.5e-4}"
: "${KMIM_WARMUP_EPOCHS:=40}" "${KMIM_MASK_RATIO:=0.75}"
kmim_stage_begin pretrain
kmim_gpu_environment
kmim_pretrain_stage
