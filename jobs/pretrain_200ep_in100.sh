#!/usr/bin/env bash
# Stage 3 (ImageNet-100 recipe): K-MIM PIXEL pretraining of ViT-S/16 for 200 epochs on
# ImageNet-100 with the K = 50 pixel codebook of jobs/kmeans.sh (SPEC §2, §5: the paper's
# linear-probe 52.7 / fine-tune 86.4 row). One node, one rank per GPU.
#   sbatch jobs/pretrain_200ep_in100.sh
#
# Environment (common ones in jobs/common.sh; the stage's own in kmim_pretrain_stage there):
#   KMIM_MODEL          vit_small            KMIM_EPOCHS         200
#   KMIM_BATCH_SIZE     4096 (global)        KMIM_BLR            1.5e-4 (lr = blr x batch / 256)
#   KMIM_WARMUP_EPOCHS  40                   KMIM_MASK_RATIO     0.75
# Preemption: USR1 (300 s before the time limit) is forwarded to kmim_pretrain, which saves a
# checkpoint at the next step and exits 75; the job requeues itself and resumes (--resume auto),
# so a run longer than the site's time limit continues job after job to the same result.
#SBATCH --job-name=kmim-pretrain-in100
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

: "${KMIM_MODEL:=vit_small}" "${KMIM_EPOCHS:=200}" "${KMIM_BATCH_SIZE:=4096}" "${KMIM_BLR:=1.5e-4}"
: "${KMIM_WARMUP_EPOCHS:=40}" "${KMIM_MASK_RATIO:=0.75}"
kmim_stage_begin pretrain
kmim_gpu_environment
kmim_pretrain_stage
