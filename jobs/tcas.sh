#!/usr/bin/env bash
# Stage 4a: TCAS, the token-class alignment score of the codebook on the un-augmented
# validation set (kmim_tcas, SPEC §3). CPU only; needs only the codebook, so it runs beside
# pretraining.
#   sbatch jobs/tcas.sh
#
# Environment (common ones in jobs/common.sh: KMIM_RUN_DIR, KMIM_BIN_DIR, KMIM_SITE_SETUP, ...):
#   KMIM_TCAS_MANIFEST  evaluation manifest (default $KMIM_DATA_DIR/val.h5)
#   KMIM_CODEBOOK       tokenizer codebook (default $KMIM_RUN_DIR/codebook.h5): a pixel codebook,
#                       or a feature codebook (K-MIM DINO/DeiT/MAE) with KMIM_TOKENIZER_CHECKPOINT
#   KMIM_TOKENIZER_CHECKPOINT  the frozen encoder of a feature codebook (kmim checkpoint, e.g.
#                       converted with tools/convert_timm_vit.py); unset for pixel codebooks
#   KMIM_TCAS_OUT       report (default $KMIM_RUN_DIR/tcas.h5)
#   KMIM_TCAS_ARGS      more kmim_tcas options
# Preemption: USR1 is forwarded to kmim_tcas (checkpoint + exit 75 → requeue, --resume auto when
# kmim_tcas --help lists --resume; otherwise the requeued run starts over).
#SBATCH --job-name=kmim-tcas
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=8
#SBATCH --cpus-per-task=4
#SBATCH --time=02:00:00
#SBATCH --output=%x-%j.out
#SBATCH --open-mode=append
#SBATCH --requeue
#SBATCH --signal=B:USR1@120
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

kmim_stage_begin tcas
manifest="${KMIM_TCAS_MANIFEST:-$KMIM_DATA_DIR/val.h5}"
out="${KMIM_TCAS_OUT:-$KMIM_RUN_DIR/tcas.h5}"
kmim_skip_if_done "$out"
kmim_need_program kmim_tcas
kmim_need_input "$manifest" shard KMIM_TCAS_MANIFEST
kmim_need_input "$KMIM_CODEBOOK" kmeans KMIM_CODEBOOK

args=(--manifest "$manifest" --codebook "$KMIM_CODEBOOK" --out "$out")
if [ -n "${KMIM_TOKENIZER_CHECKPOINT:-}" ]; then
  kmim_need_input "$KMIM_TOKENIZER_CHECKPOINT" pretrain KMIM_TOKENIZER_CHECKPOINT
  args+=(--tokenizer-checkpoint "$KMIM_TOKENIZER_CHECKPOINT")
fi
read -r -a resume <<<"$(kmim_resume_args)"
read -r -a extra <<<"${KMIM_TCAS_ARGS:-}"
kmim_run_preemptible checkpoint "${KMIM_LAUNCH[@]}" "$KMIM_PROGRAM" "${args[@]}" "${resume[@]}" "${extra[@]}"
