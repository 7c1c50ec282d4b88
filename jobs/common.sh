# shellcheck shell=bash
# jobs/common.sh: what every kmim job script shares. Sourced, never run. docs/cluster.md has the
# whole story; this header lists the environment every stage reads.
#
# Where things are
#   KMIM_HOME         kmim install prefix or source checkout (optional; see KMIM_BIN_DIR)
#   KMIM_JOBS_DIR     folder holding these scripts (set by jobs/pipeline.sh; needed only when a
#                     script is submitted from elsewhere by hand: inside a job, $0 is Slurm's copy)
#   KMIM_BIN_DIR      folder with the kmim_* programs (when set, the only place looked at).
#                     Default: $KMIM_HOME/bin, else the build tree next to these scripts
#                     (../build/bin), else the install prefix around them (<prefix>/bin for
#                     <prefix>/share/kmim/jobs), else $PATH
#   KMIM_RUN_DIR      the run's folder (default: <submit dir>/kmim-run); every default below
#                     lives in it
#   KMIM_DATA_DIR     shards: <dir>/train.h5, <dir>/val.h5 (default $KMIM_RUN_DIR/data)
#   KMIM_CODEBOOK     K-means codebook (default $KMIM_RUN_DIR/codebook.h5)
#   KMIM_PRETRAIN_DIR pretraining outputs and checkpoints (default $KMIM_RUN_DIR/pretrain)
# Site and launch
#   KMIM_SITE_SETUP   a bash file sourced first in every job: module loads, conda, NCCL
#                     interface settings... (the scripts themselves name no modules)
#   KMIM_LAUNCHER     srun | mpirun | none (default: srun inside Slurm, none outside)
#   KMIM_SRUN_ARGS    extra srun options (e.g. "--mpi=pmix" where MpiDefault is not pmix)
#   KMIM_MPIRUN_ARGS  extra mpirun options (e.g. "-np 4" outside Slurm)
# Preemption and reruns
#   KMIM_PREEMPT_SIGNAL  signal forwarded to the program when the batch shell gets USR1
#                     (default USR1; the program checkpoints at its next step boundary and exits 75)
#   KMIM_MAX_REQUEUES stop requeueing after this many restarts (default 100)
#   KMIM_RERUN=1      redo a stage whose outputs already exist (default: such a stage is skipped)

# Exit code of a program that checkpointed on request: "requeue me" (docs/cluster.md).
KMIM_EXIT_CHECKPOINTED=75

kmim_say() { echo "[kmim ${KMIM_STAGE:-job} $(date '+%F %T')] $*"; }
kmim_die() { echo "[kmim ${KMIM_STAGE:-job} $(date '+%F %T')] error: $*" >&2; exit 1; }

KMIM_JOBS_DIR="${KMIM_JOBS_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}"
export KMIM_JOBS_DIR

# The folder holding the kmim programs: KMIM_BIN_DIR as given, else the first that exists of
# $KMIM_HOME/bin, the build tree next to these scripts, the install prefix around them; empty
# when only $PATH is left.
kmim_bin_dir() {
  if [ -n "${KMIM_BIN_DIR:-}" ]; then echo "$KMIM_BIN_DIR"; return 0; fi
  local d installed=""
  # An install keeps these scripts in <prefix>/share/kmim/jobs and the programs in <prefix>/bin.
  case "$KMIM_JOBS_DIR" in */share/kmim/jobs) installed="$KMIM_JOBS_DIR/../../../bin" ;; esac
  for d in "${KMIM_HOME:+$KMIM_HOME/bin}" "$KMIM_JOBS_DIR/../build/bin" "$installed"; do
    if [ -n "$d" ] && [ -d "$d" ]; then (cd "$d" && pwd); return 0; fi
  done
}

# kmim_program_path NAME: prints the program's path; fails when it is not built/installed.
# With KMIM_BIN_DIR set only that folder counts, so tests and users get what they named.
kmim_program_path() {
  local dir
  dir="$(kmim_bin_dir)"
  if [ -n "$dir" ]; then
    [ -x "$dir/$1" ] || return 1
    echo "$dir/$1"
  elif ! command -v "$1"; then
    return 1
  fi
}

# Where kmim_program_path looks, in words (for messages).
kmim_program_places() {
  local dir
  dir="$(kmim_bin_dir)"
  echo "${dir:-\$PATH}"
}

# Run-folder defaults shared by every stage (see the header).
kmim_default_paths() {
  KMIM_RUN_DIR="${KMIM_RUN_DIR:-${SLURM_SUBMIT_DIR:-$PWD}/kmim-run}"
  KMIM_DATA_DIR="${KMIM_DATA_DIR:-$KMIM_RUN_DIR/data}"
  KMIM_CODEBOOK="${KMIM_CODEBOOK:-$KMIM_RUN_DIR/codebook.h5}"
  KMIM_PRETRAIN_DIR="${KMIM_PRETRAIN_DIR:-$KMIM_RUN_DIR/pretrain}"
  export KMIM_RUN_DIR KMIM_DATA_DIR KMIM_CODEBOOK KMIM_PRETRAIN_DIR
}

# kmim_stage_begin NAME: site hook, environment, a header naming the job; call first.
kmim_stage_begin() {
  KMIM_STAGE="$1"
  if [ -n "${KMIM_SITE_SETUP:-}" ]; then
    [ -r "$KMIM_SITE_SETUP" ] || kmim_die "KMIM_SITE_SETUP='$KMIM_SITE_SETUP' is not a readable file"
    # shellcheck disable=SC1090
    source "$KMIM_SITE_SETUP"
  fi
  kmim_default_paths
  mkdir -p "$KMIM_RUN_DIR" || kmim_die "cannot create the run folder KMIM_RUN_DIR='$KMIM_RUN_DIR'"
  rm -f "$KMIM_RUN_DIR/skipped/$KMIM_STAGE"
  # Parallel HDF5 on shared file systems (Lustre, GPFS, NFS) often cannot lock files.
  export HDF5_USE_FILE_LOCKING="${HDF5_USE_FILE_LOCKING:-FALSE}"
  if [ "$(id -u)" = 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  fi
  if [ -n "${SLURM_CPUS_PER_TASK:-}" ]; then
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$SLURM_CPUS_PER_TASK}"
    # Since Slurm 22.05 srun no longer inherits --cpus-per-task from the batch allocation.
    export SRUN_CPUS_PER_TASK="${SRUN_CPUS_PER_TASK:-$SLURM_CPUS_PER_TASK}"
  fi
  KMIM_LAUNCHER="${KMIM_LAUNCHER:-$([ -n "${SLURM_JOB_ID:-}" ] && echo srun || echo none)}"
  case "$KMIM_LAUNCHER" in
    srun) read -r -a KMIM_LAUNCH <<<"srun ${KMIM_SRUN_ARGS:-}" ;;
    mpirun) read -r -a KMIM_LAUNCH <<<"mpirun ${KMIM_MPIRUN_ARGS:-}" ;;
    none) KMIM_LAUNCH=() ;;
    *) kmim_die "KMIM_LAUNCHER='$KMIM_LAUNCHER': use srun, mpirun or none" ;;
  esac
  if [ -n "${SLURM_JOB_ID:-}" ]; then
    kmim_say "stage $KMIM_STAGE: job ${SLURM_JOB_ID} (${SLURM_JOB_NAME:-}), restart ${SLURM_RESTART_COUNT:-0}," \
             "${SLURM_JOB_NUM_NODES:-1} node(s) ${SLURM_JOB_NODELIST:-}, ${SLURM_NTASKS:-1} task(s), run folder $KMIM_RUN_DIR"
  else
    kmim_say "stage $KMIM_STAGE: outside Slurm (launcher: $KMIM_LAUNCHER), run folder $KMIM_RUN_DIR"
  fi
}

# NCCL defaults for GPU stages; a site overrides any of them in KMIM_SITE_SETUP (e.g.
# NCCL_SOCKET_IFNAME, NCCL_IB_HCA), which runs before this.
kmim_gpu_environment() {
  export NCCL_DEBUG="${NCCL_DEBUG:-WARN}"
  # One rank per GPU: each rank picks its device from SLURM_LOCALID / OMPI_COMM_WORLD_LOCAL_RANK,
  # so every rank must see all of the node's GPUs (no per-task binding by default).
}

# kmim_skip_stage REASON: records the skip for the stages downstream and ends the job successfully.
kmim_skip_stage() {
  mkdir -p "$KMIM_RUN_DIR/skipped"
  echo "$1" >"$KMIM_RUN_DIR/skipped/$KMIM_STAGE"
  kmim_say "stage $KMIM_STAGE: $1, skipped"
  exit 0
}

# kmim_need_program NAME: sets KMIM_PROGRAM, or skips the stage while the program does not exist.
kmim_need_program() {
  KMIM_PROGRAM="$(kmim_program_path "$1")" \
    || kmim_skip_stage "program $1 not built yet (looked in $(kmim_program_places))"
  kmim_say "program: $KMIM_PROGRAM"
}

# kmim_need_input PATH PRODUCER_STAGE [VARIABLE]: the stage's input must exist. If it is missing
# because its producer stage was skipped, this stage is skipped too; otherwise it fails, naming
# the variable that sets the path.
kmim_need_input() {
  local path=$1 producer=$2 variable=${3:-}
  [ -e "$path" ] && return 0
  if [ -f "$KMIM_RUN_DIR/skipped/$producer" ]; then
    kmim_skip_stage "input $path missing because stage $producer was skipped ($(cat "$KMIM_RUN_DIR/skipped/$producer"))"
  fi
  kmim_die "stage $KMIM_STAGE FAILED: input '$path' does not exist (made by stage $producer${variable:+; set $variable to use another})"
}

# kmim_skip_if_done OUTPUT...: a stage whose outputs all exist is not run again (KMIM_RERUN=1 redoes it).
kmim_skip_if_done() {
  [ "${KMIM_RERUN:-0}" = 1 ] && return 0
  local f
  for f in "$@"; do [ -e "$f" ] || return 0; done
  kmim_say "stage $KMIM_STAGE: outputs exist ($*), nothing to do (KMIM_RERUN=1 redoes the stage)"
  exit 0
}

# kmim_program_option OPTION: how KMIM_PROGRAM's --help lists --OPTION: "value" (takes an
# argument), "flag", or "" (not an option of this program).
kmim_program_option() {
  local help
  help="$("$KMIM_PROGRAM" --help 2>/dev/null)" || true
  if grep -q -e "--$1 arg" <<<"$help"; then echo value
  elif grep -q -e "--$1\b" <<<"$help"; then echo flag
  fi
}

# kmim_resume_args: the arguments that make KMIM_PROGRAM continue from its checkpoint:
# "--resume auto" (the pretraining contract) or the flag "--resume"; none, with a note on
# stderr, for a program that cannot resume.
kmim_resume_args() {
  case "$(kmim_program_option resume)" in
    value) echo "--resume auto" ;;
    flag) echo "--resume" ;;
    *) kmim_say "note: $(basename "$KMIM_PROGRAM") has no --resume option; a requeued run starts over" >&2 ;;
  esac
}

kmim_on_preempt_signal() {
  _kmim_wait_interrupted=1
  _kmim_preempted=1
  if [ "$_kmim_preempt_mode" = restart ]; then
    kmim_say "got USR1 (time limit near or preemption): requeueing now; the rerun reuses finished outputs"
    kmim_requeue_self
  elif [ -n "$_kmim_child" ]; then
    kmim_forward_preempt_signal
  fi
}

kmim_forward_preempt_signal() {
  kmim_say "got USR1 (time limit near or preemption): sending ${KMIM_PREEMPT_SIGNAL:-USR1} to the program (pid $_kmim_child) so it checkpoints"
  kill -s "${KMIM_PREEMPT_SIGNAL:-USR1}" "$_kmim_child" 2>/dev/null || true
}

# Requeues this job (it restarts from the top of the script, resuming from checkpoints). Outside
# Slurm, or when the job may not be requeued, it stops with code 75 and says how to resume.
kmim_requeue_self() {
  if [ -n "${SLURM_JOB_ID:-}" ]; then
    if [ "${SLURM_RESTART_COUNT:-0}" -ge "${KMIM_MAX_REQUEUES:-100}" ]; then
      kmim_die "stage $KMIM_STAGE: already restarted ${SLURM_RESTART_COUNT} times (KMIM_MAX_REQUEUES=${KMIM_MAX_REQUEUES:-100}); not requeueing. Resubmit the stage to continue from its checkpoint"
    fi
    kmim_say "requeueing job $SLURM_JOB_ID (restart $((${SLURM_RESTART_COUNT:-0} + 1))); it resumes from the checkpoint"
    # Slurm ends this script right after the requeue; should it not, a non-zero exit keeps
    # the dependent stages from starting on unfinished work.
    if scontrol requeue "$SLURM_JOB_ID"; then sleep 30; exit "$KMIM_EXIT_CHECKPOINTED"; fi
    kmim_say "error: 'scontrol requeue $SLURM_JOB_ID' failed (was the job submitted with --no-requeue?)"
  fi
  kmim_say "stage $KMIM_STAGE: checkpointed; run the same command again to resume"
  exit "$KMIM_EXIT_CHECKPOINTED"
}

# kmim_run_preemptible MODE COMMAND...: runs COMMAND (launcher + program) in the background and
# handles preemption. The batch shell receives USR1 (#SBATCH --signal=B:USR1@N):
#   MODE checkpoint: the signal is forwarded to COMMAND (srun and mpirun pass it on to every
#     rank); the program checkpoints at its next step boundary and exits 75; the job is requeued
#     and the rerun continues with --resume auto;
#   MODE restart: the job is requeued at once; for stages that reuse finished outputs on a rerun
#     (kmim_shard keeps complete, verified shards).
# A program exiting 75 on its own is requeued the same way. Any other failure ends the stage
# with a message; Slurm then cancels the stages that depend on it (afterok).
kmim_run_preemptible() {
  _kmim_preempt_mode=$1; shift
  case "$_kmim_preempt_mode" in checkpoint|restart) ;; *) kmim_die "kmim_run_preemptible: mode '$_kmim_preempt_mode'?" ;; esac
  _kmim_preempted=0
  _kmim_wait_interrupted=0
  _kmim_child=""
  trap kmim_on_preempt_signal USR1
  kmim_say "running: $*"
  "$@" &
  _kmim_child=$!
  # A signal that came while the program was being started is passed on now.
  [ "$_kmim_preempted" = 1 ] && [ "$_kmim_preempt_mode" = checkpoint ] && kmim_forward_preempt_signal
  local rc
  while :; do
    wait "$_kmim_child" && rc=0 || rc=$?
    # A trapped signal cuts 'wait' short while the program still runs: wait again. Bash keeps
    # the exit status of a finished background job, so waiting twice is harmless.
    if [ "$_kmim_wait_interrupted" = 1 ]; then _kmim_wait_interrupted=0; continue; fi
    break
  done
  trap - USR1
  if [ "$rc" = 0 ]; then
    kmim_say "stage $KMIM_STAGE: finished"
    return 0
  fi
  if [ "$rc" = "$KMIM_EXIT_CHECKPOINTED" ]; then
    kmim_say "program checkpointed (exit $rc)"
    kmim_requeue_self
  fi
  if [ "$_kmim_preempted" = 1 ]; then
    kmim_say "warning: the program exited with $rc after the preemption signal instead of $KMIM_EXIT_CHECKPOINTED; requeueing so it resumes from its last checkpoint"
    kmim_requeue_self
  fi
  echo "[kmim $KMIM_STAGE $(date '+%F %T')] stage $KMIM_STAGE FAILED: exit code $rc from: $*" >&2
  echo "[kmim $KMIM_STAGE] the stages that depend on it are cancelled (afterok); fix the cause and resubmit with jobs/pipeline.sh --from $KMIM_STAGE" >&2
  exit "$rc"
}

# kmim_job_field ID FIELD: one field of 'scontrol show job' (e.g. JobState, Reason, ExitCode).
kmim_job_field() {
  local line
  line="$(scontrol -o show job "$1" 2>/dev/null)" || return 0
  awk -v key="$2=" '{ for (i = 1; i <= NF; i++) if (index($i, key) == 1 && !found) { print substr($i, length(key) + 1); found = 1 } }' <<<"$line"
}

# kmim_wait_jobs TIMEOUT_S ID...: polls 'scontrol show job' until every job has ended (TIMEOUT_S
# 0: no limit), prints one line per job, and succeeds only if all COMPLETED. (No sacct needed;
# finished jobs stay visible for MinJobAge seconds.)
kmim_wait_jobs() {
  local limit=$1; shift
  local deadline=$((SECONDS + limit)) id state pending all_ok=0
  while :; do
    pending=0
    for id in "$@"; do
      state="$(kmim_job_field "$id" JobState)"
      case "$state" in
        COMPLETED|FAILED|CANCELLED|TIMEOUT|NODE_FAIL|OUT_OF_MEMORY|BOOT_FAIL|DEADLINE|"") ;;
        *) pending=1 ;;
      esac
    done
    [ "$pending" = 0 ] && break
    if [ "$limit" -gt 0 ] && [ "$SECONDS" -ge "$deadline" ]; then
      echo "kmim_wait_jobs: gave up after ${limit}s; still not finished:" >&2
      for id in "$@"; do echo "  job $id $(kmim_job_field "$id" JobState) $(kmim_job_field "$id" Reason)" >&2; done
      return 2
    fi
    sleep 1
  done
  for id in "$@"; do
    state="$(kmim_job_field "$id" JobState)"
    echo "job $id $(kmim_job_field "$id" JobName): ${state:-unknown (no longer listed)} exit=$(kmim_job_field "$id" ExitCode) reason=$(kmim_job_field "$id" Reason) restarts=$(kmim_job_field "$id" Restarts)"
    [ "$state" = COMPLETED ] || all_ok=1
  done
  return "$all_ok"
}

# The pretraining stage (jobs/pretrain_*.sh set the recipe's defaults, then call this):
#   KMIM_PRETRAIN_MANIFEST  training manifest (default $KMIM_DATA_DIR/train.h5)
#   KMIM_CODEBOOK           tokenizer codebook: K-MIM PIXEL targets (default $KMIM_RUN_DIR/codebook.h5)
#   KMIM_PRETRAIN_DIR       --out-dir: checkpoints and logs (default $KMIM_RUN_DIR/pretrain)
#   KMIM_MODEL KMIM_EPOCHS KMIM_BATCH_SIZE (global batch over all ranks) KMIM_BLR KMIM_WARMUP_EPOCHS
#   KMIM_MASK_RATIO         the recipe's model, schedule and masking
#   KMIM_PRETRAIN_ARGS      more kmim_pretrain options
kmim_pretrain_stage() {
  local manifest="${KMIM_PRETRAIN_MANIFEST:-$KMIM_DATA_DIR/train.h5}"
  kmim_need_program kmim_pretrain
  kmim_need_input "$manifest" shard KMIM_PRETRAIN_MANIFEST
  kmim_need_input "$KMIM_CODEBOOK" kmeans KMIM_CODEBOOK
  mkdir -p "$KMIM_PRETRAIN_DIR"
  local args=(--manifest "$manifest" --codebook "$KMIM_CODEBOOK" --model "$KMIM_MODEL"
              --epochs "$KMIM_EPOCHS" --batch-size "$KMIM_BATCH_SIZE" --blr "$KMIM_BLR"
              --warmup-epochs "$KMIM_WARMUP_EPOCHS" --mask-ratio "$KMIM_MASK_RATIO"
              --out-dir "$KMIM_PRETRAIN_DIR")
  local resume extra
  read -r -a resume <<<"$(kmim_resume_args)"
  read -r -a extra <<<"${KMIM_PRETRAIN_ARGS:-}"
  kmim_run_preemptible checkpoint "${KMIM_LAUNCH[@]}" "$KMIM_PROGRAM" "${args[@]}" "${resume[@]}" "${extra[@]}"
}
