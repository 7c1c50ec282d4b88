#!/usr/bin/env bash
# Submits the kmim pipeline as a chain of Slurm jobs and prints their ids:
#
#   shard ──> kmeans ──> pretrain ──> linprobe
#                   └──> tcas
#
# Each arrow is --dependency=afterok (with --kill-on-invalid-dep=yes): a stage starts only when
# the one before it COMPLETED, and when a stage fails, Slurm cancels everything downstream
# instead of leaving it pending forever.
#
#   jobs/pipeline.sh [--recipe in100|in1k] [--from STAGE | --stages a,b,...] [--dry-run] [--wait]
#
#   --recipe in100   ImageNet-100, ViT-S/16, 200 epochs (jobs/pretrain_200ep_in100.sh; default)
#   --recipe in1k    ImageNet-1k, ViT-B/16, 800 epochs, multi-node (jobs/pretrain_800ep.sh)
#   --from STAGE     submit STAGE and the stages after it (their inputs must already exist)
#   --stages LIST    submit only these stages (shard,kmeans,pretrain,tcas,linprobe)
#   --dry-run        print the sbatch commands instead of running them (no Slurm needed)
#   --wait           wait for the chain to end, print every job's final state, exit 0 only if
#                    all COMPLETED (KMIM_WAIT_TIMEOUT seconds at most; default 0 = no limit)
#
# Environment: every stage's variables (see each jobs/*.sh and jobs/common.sh) are passed to the
# jobs (sbatch --export=ALL); the ones needed here:
#   KMIM_IMAGENET_ROOT   dataset root (train/, val/) for the shard stage
#   KMIM_RUN_DIR         run folder (default ./kmim-run); logs go to $KMIM_RUN_DIR/logs/%x-%j.out
#   KMIM_CLASSES         class list; the in100 recipe defaults to data/imagenet100.txt of this
#                        checkout / install; set it empty to use every class folder
#   KMIM_SBATCH_ARGS     sbatch options for every stage (e.g. "--partition=gpu --account=abc")
#   KMIM_SBATCH_ARGS_SHARD, _KMEANS, _PRETRAIN, _TCAS, _LINPROBE: sbatch options for one stage
# A stage whose program is not built yet is still submitted; it reports
# "stage X: program kmim_X not built yet, skipped" and succeeds, and so do the stages that need
# its outputs, so the chain runs end to end today and lights up as programs land.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export KMIM_JOBS_DIR="$here"
source "$here/common.sh"

recipe="${KMIM_RECIPE:-in100}"
dry_run=0; wait_jobs=0; from=""; only=""
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --recipe) recipe="${2:?--recipe needs in100 or in1k}"; shift ;;
    --recipe=*) recipe="${1#*=}" ;;
    --from) from="${2:?--from needs a stage}"; shift ;;
    --from=*) from="${1#*=}" ;;
    --stages) only="${2:?--stages needs a list}"; shift ;;
    --stages=*) only="${1#*=}" ;;
    --dry-run) dry_run=1 ;;
    --wait) wait_jobs=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "pipeline.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done

all_stages=(shard kmeans pretrain tcas linprobe)
declare -A script=([shard]=shard_imagenet.sh [kmeans]=kmeans.sh [tcas]=tcas.sh [linprobe]=linprobe.sh)
declare -A program=([shard]=kmim_shard [kmeans]=kmim_kmeans [pretrain]=kmim_pretrain [tcas]=kmim_tcas [linprobe]=kmim_linprobe)
declare -A after=([kmeans]=shard [pretrain]=kmeans [tcas]=kmeans [linprobe]=pretrain)
case "$recipe" in
  in100) script[pretrain]=pretrain_200ep_in100.sh ;;
  in1k) script[pretrain]=pretrain_800ep.sh ;;
  *) echo "pipeline.sh: --recipe '$recipe': use in100 or in1k" >&2; exit 2 ;;
esac

declare -A selected=()
if [ -n "$only" ]; then
  IFS=, read -r -a list <<<"$only"
  for s in "${list[@]}"; do
    [ -n "${program[$s]:-}" ] || { echo "pipeline.sh: --stages: unknown stage '$s' (${all_stages[*]})" >&2; exit 2; }
    selected[$s]=1
  done
else
  on=$([ -z "$from" ] && echo 1 || echo 0)
  for s in "${all_stages[@]}"; do
    [ "$s" = "$from" ] && on=1
    [ "$on" = 1 ] && selected[$s]=1
  done
  [ "${#selected[@]}" -gt 0 ] || { echo "pipeline.sh: --from: unknown stage '$from' (${all_stages[*]})" >&2; exit 2; }
fi

KMIM_RUN_DIR="$(realpath -m "${KMIM_RUN_DIR:-$PWD/kmim-run}")"
export KMIM_RUN_DIR
bin="$(kmim_bin_dir)"
if [ -n "$bin" ]; then
  KMIM_BIN_DIR="$(realpath -m "$bin")"
  export KMIM_BIN_DIR
fi
if [ -n "${selected[shard]:-}" ]; then
  [ -n "${KMIM_IMAGENET_ROOT:-}" ] || { echo "pipeline.sh: set KMIM_IMAGENET_ROOT to the dataset root (train/, val/)" >&2; exit 2; }
  if [ "$recipe" = in100 ] && [ -z "${KMIM_CLASSES+set}" ]; then
    KMIM_CLASSES="$here/../data/imagenet100.txt"
    [ -f "$KMIM_CLASSES" ] || { echo "pipeline.sh: recipe in100 needs the ImageNet-100 class list: set KMIM_CLASSES (not found at $KMIM_CLASSES)" >&2; exit 2; }
    KMIM_CLASSES="$(realpath "$KMIM_CLASSES")"
    export KMIM_CLASSES
  fi
fi
[ "$dry_run" = 1 ] || mkdir -p "$KMIM_RUN_DIR/logs"

# In a dry run every line that is not a command is a shell comment, so the output runs as a script.
note=""
[ "$dry_run" = 1 ] && note="# "
echo "${note}kmim pipeline: recipe $recipe, run folder $KMIM_RUN_DIR, logs in $KMIM_RUN_DIR/logs, programs in ${KMIM_BIN_DIR:-\$PATH}"
if [ "$dry_run" = 1 ]; then
  # The dry run prints a script: the environment the jobs get (sbatch --export=ALL), then sbatch.
  while IFS='=' read -r name _; do
    printf 'export %s=%q\n' "$name" "${!name}"
  done < <(env | grep -E '^(KMIM|SBATCH|SLURM)_[A-Z0-9_]*=' | sort)
  echo "mkdir -p $(printf '%q' "$KMIM_RUN_DIR/logs")"
fi
declare -A job=()
ids=()
for s in "${all_stages[@]}"; do
  [ -n "${selected[$s]:-}" ] || continue
  kmim_program_path "${program[$s]}" >/dev/null \
    || echo "${note}note: ${program[$s]} is not built yet: stage $s will report it and skip"
  var="KMIM_SBATCH_ARGS_${s^^}"
  read -r -a common_args <<<"${KMIM_SBATCH_ARGS:-}"
  read -r -a stage_args <<<"${!var:-}"
  cmd=(sbatch --parsable --export=ALL --job-name="kmim-$s" --output="$KMIM_RUN_DIR/logs/%x-%j.out")
  dep="${after[$s]:-}"
  if [ -n "$dep" ] && [ -n "${selected[$dep]:-}" ]; then
    cmd+=(--dependency="afterok:${job[$dep]}" --kill-on-invalid-dep=yes)
  else
    dep=""  # its input is expected to exist already
  fi
  cmd+=("${common_args[@]}" "${stage_args[@]}" "$here/${script[$s]}")
  if [ "$dry_run" = 1 ]; then
    job[$s]="\$JOB_${s^^}"
    printf 'JOB_%s=$(' "${s^^}"; printf '%q ' "${cmd[@]}" | sed 's/ $//; s/\\\$JOB_\([A-Z]*\)/$JOB_\1/g'; echo ')'
    continue
  fi
  if ! out="$("${cmd[@]}")"; then
    echo "pipeline.sh: sbatch failed for stage $s (above)" >&2
    if [ "${#ids[@]}" -gt 0 ]; then
      # A chain without its tail is not what was asked for: take back what was submitted.
      scancel "${ids[@]}" && echo "pipeline.sh: cancelled the stages already submitted (jobs ${ids[*]})" >&2
    fi
    exit 1
  fi
  job[$s]="${out%%;*}"
  ids+=("${job[$s]}")
  printf 'submitted %-9s job %-8s %s%s\n' "$s" "${job[$s]}" "jobs/${script[$s]}" "${dep:+ (afterok: $dep)}"
done
[ "$dry_run" = 1 ] && exit 0
echo "job ids: ${ids[*]}"
echo "monitor: squeue -j $(IFS=,; echo "${ids[*]}"); scontrol show job ID; tail -f $KMIM_RUN_DIR/logs/*.out"
if [ "$wait_jobs" = 1 ]; then
  kmim_wait_jobs "${KMIM_WAIT_TIMEOUT:-0}" "${ids[@]}"
fi
