#!/usr/bin/env bash
# The job scripts without a cluster: pipeline.sh --dry-run (the chain and its dependencies),
# option errors, the #SBATCH headers every stage must carry, and stages run outside Slurm with
# stub programs: skipping when a program is missing (and downstream), failing on a missing input,
# the resume arguments, the site hook, finding common.sh from a copy of the script (as Slurm
# runs it), and USR1 forwarding with the exit-75 contract.
set -euo pipefail
: "${KMIM_SOURCE_DIR:?}" "${KMIM_TEST_TMP:?}"
jobs="$KMIM_SOURCE_DIR/jobs"
tmp="$KMIM_TEST_TMP"
rm -rf "$tmp" && mkdir -p "$tmp"
fail() { echo "FAIL: $*" >&2; exit 1; }
expect() {  # expect TEXT WHERE: TEXT occurs in the last captured output
  grep -qF -e "$1" <<<"$out" || { echo "$out"; fail "$2: expected '$1'"; }
}
run() {  # run EXPECTED_RC COMMAND...: captures output in $out
  local want=$1 rc=0; shift
  out="$("$@" 2>&1)" || rc=$?
  [ "$rc" = "$want" ] || { echo "$out"; fail "'$*' exited $rc, expected $want"; }
}
unset KMIM_BIN_DIR KMIM_RUN_DIR SLURM_JOB_ID SLURM_SUBMIT_DIR KMIM_JOBS_DIR KMIM_HOME || true

# --- pipeline.sh --dry-run --------------------------------------------------------------------
cd "$tmp"
run 0 env KMIM_IMAGENET_ROOT=/data/in KMIM_RUN_DIR="$tmp/dry" "$jobs/pipeline.sh" --dry-run
[ ! -e "$tmp/dry" ] || fail "--dry-run created the run folder"
[ "$(grep -c '^JOB_[A-Z]*=$(sbatch ' <<<"$out")" = 5 ] || { echo "$out"; fail "dry run: expected 5 sbatch commands"; }
line() { grep "^JOB_$1=" <<<"$out"; }
line SHARD | grep -q -- "--dependency" && fail "shard has a dependency"
line KMEANS | grep -qF -- '--dependency=afterok:$JOB_SHARD --kill-on-invalid-dep=yes' || fail "kmeans not after shard"
line PRETRAIN | grep -qF -- '--dependency=afterok:$JOB_KMEANS' || fail "pretrain not after kmeans"
line PRETRAIN | grep -q "pretrain_200ep_in100.sh" || fail "in100 recipe does not use pretrain_200ep_in100.sh"
line TCAS | grep -qF -- '--dependency=afterok:$JOB_KMEANS' || fail "tcas not after kmeans"
line LINPROBE | grep -qF -- '--dependency=afterok:$JOB_PRETRAIN' || fail "linprobe not after pretrain"
line KMEANS | grep -qF -- "--output=$tmp/dry/logs/%x-%j.out" || fail "logs not in the run folder"
run 0 env KMIM_SBATCH_ARGS="--partition=gpu --account=abc" KMIM_SBATCH_ARGS_PRETRAIN="--qos=long" \
  "$jobs/pipeline.sh" --dry-run --recipe in1k --from pretrain
[ "$(grep -c '^JOB_' <<<"$out")" = 3 ] || { echo "$out"; fail "--from pretrain: expected pretrain, tcas, linprobe"; }
line PRETRAIN | grep -q "pretrain_800ep.sh" || fail "in1k recipe does not use pretrain_800ep.sh"
line PRETRAIN | grep -q -- "--dependency" && fail "--from pretrain: pretrain must not depend on an unsubmitted stage"
line PRETRAIN | grep -qF -- "--partition=gpu --account=abc --qos=long" || fail "sbatch arguments not passed"
line TCAS | grep -qF -- "--qos=long" && fail "per-stage sbatch arguments leaked into another stage"
line LINPROBE | grep -qF -- '--dependency=afterok:$JOB_PRETRAIN' || fail "linprobe not after pretrain"
run 0 env KMIM_IMAGENET_ROOT=/data/in "$jobs/pipeline.sh" --dry-run --stages shard,tcas
[ "$(grep -c '^JOB_' <<<"$out")" = 2 ] && ! grep -q -- "--dependency" <<<"$out" || { echo "$out"; fail "--stages shard,tcas"; }
run 2 "$jobs/pipeline.sh" --dry-run
expect "set KMIM_IMAGENET_ROOT" "pipeline without a dataset root"
run 2 "$jobs/pipeline.sh" --dry-run --stages shard,bogus
expect "unknown stage 'bogus'" "bad --stages"
run 2 "$jobs/pipeline.sh" --recipe in5k
expect "use in100 or in1k" "bad --recipe"
run 2 env KMIM_IMAGENET_ROOT=/x KMIM_CLASSES=/no/such/list "$jobs/demo_pipeline.sh" --dry-run --bogus
expect "unknown option '--bogus'" "bad option through demo_pipeline.sh"

# --- the #SBATCH headers every stage carries ------------------------------------------------
for s in shard_imagenet kmeans pretrain_200ep_in100 pretrain_800ep tcas linprobe; do
  f="$jobs/$s.sh"
  bash -n "$f" || fail "$f: syntax error"
  for h in "--nodes=" "--ntasks-per-node=" "--cpus-per-task=" "--time=" "--output=" "--open-mode=append" \
           "--requeue" "--signal=B:USR1@"; do
    grep -q -e "^#SBATCH $h" "$f" || fail "$f: no '#SBATCH $h' header"
  done
  grep -qiE "module (load|add)" "$f" && fail "$f names site modules"
  grep -q 'source "$KMIM_JOBS_DIR/common.sh"' "$f" || fail "$f does not source common.sh"
done
for s in pretrain_200ep_in100 pretrain_800ep linprobe; do
  grep -q "^#SBATCH --gpus-per-node=" "$jobs/$s.sh" || fail "$s.sh asks for no GPUs"
done
grep -q "^#SBATCH --nodes=1$" "$jobs/pretrain_800ep.sh" && fail "pretrain_800ep.sh must be multi-node"

# --- stages outside Slurm, with stub programs -------------------------------------------------
bin="$tmp/bin" && mkdir -p "$bin"
cat >"$bin/stub" <<'STUB'
#!/usr/bin/env bash
# --help lists --resume as STUB_RESUME ("value", "flag" or absent); otherwise prints its
# arguments and exits STUB_EXIT; with STUB_WAIT it waits for USR1 and then exits 75.
if [ "${1:-}" = --help ]; then
  case "${STUB_RESUME:-}" in value) echo "  --resume arg   resume" ;; flag) echo "  --resume       resume" ;; esac
  exit 0
fi
echo "stub $(basename "$0") args: $*"
if [ -n "${STUB_WAIT:-}" ]; then
  trap 'echo "stub got USR1, checkpointing"; exit 75' USR1
  touch "$STUB_WAIT"
  for _ in $(seq 1 100); do sleep 0.1; done
  exit 9
fi
exit "${STUB_EXIT:-0}"
STUB
chmod +x "$bin/stub"
run_dir="$tmp/run"
stage() { env KMIM_BIN_DIR="$bin" KMIM_RUN_DIR="$run_dir" "$@"; }

# A missing program: the stage says so, succeeds and leaves a marker for the stages downstream.
run 0 stage bash "$jobs/kmeans.sh"
expect "stage kmeans: program kmim_kmeans not built yet" "kmeans without kmim_kmeans"
[ -f "$run_dir/skipped/kmeans" ] || fail "no skip marker for kmeans"
ln -sf stub "$bin/kmim_tcas"
mkdir -p "$run_dir/data" && touch "$run_dir/data/val.h5"
run 0 stage bash "$jobs/tcas.sh"
expect "missing because stage kmeans was skipped" "tcas after a skipped kmeans"
expect "skipped" "tcas after a skipped kmeans"
# A missing input whose producer did not skip: a failure naming the variable.
rm -f "$run_dir/skipped/kmeans"
run 1 stage bash "$jobs/tcas.sh"
expect "stage tcas FAILED: input '$run_dir/codebook.h5' does not exist (made by stage kmeans; set KMIM_CODEBOOK" "tcas without a codebook"
# The program runs with the stage's arguments; --resume as the program spells it.
touch "$run_dir/codebook.h5"
run 0 stage bash "$jobs/tcas.sh"
expect "stub kmim_tcas args: --manifest $run_dir/data/val.h5 --codebook $run_dir/codebook.h5 --out $run_dir/tcas.h5" "tcas arguments"
expect "has no --resume option" "tcas without --resume"
run 0 stage STUB_RESUME=flag KMIM_RERUN=1 KMIM_TCAS_ARGS="--max-per-class 5" bash "$jobs/tcas.sh"
expect "--out $run_dir/tcas.h5 --resume --max-per-class 5" "flag --resume and extra arguments"
run 0 stage STUB_RESUME=value KMIM_RERUN=1 bash "$jobs/tcas.sh"
expect "--resume auto" "valued --resume"
# Outputs present: nothing to do.
touch "$run_dir/tcas.h5"
run 0 stage bash "$jobs/tcas.sh"
expect "outputs exist" "tcas with its output present"
rm -f "$run_dir/tcas.h5"
# A failing program: the stage fails with its exit code and says what happens next.
run 3 stage STUB_EXIT=3 bash "$jobs/tcas.sh"
expect "stage tcas FAILED: exit code 3" "failing program"
expect "jobs/pipeline.sh --from tcas" "failing program"
# Exit 75 outside Slurm: checkpointed, rerun to resume.
run 75 stage STUB_EXIT=75 bash "$jobs/tcas.sh"
expect "checkpointed; run the same command again to resume" "exit 75 outside Slurm"
# USR1 to the batch shell is forwarded to the program, which checkpoints and exits 75.
rm -f "$tmp/stub_started"
KMIM_BIN_DIR="$bin" KMIM_RUN_DIR="$run_dir" STUB_WAIT="$tmp/stub_started" bash "$jobs/tcas.sh" >"$tmp/usr1.out" 2>&1 &
shell=$!
for _ in $(seq 1 100); do [ -f "$tmp/stub_started" ] && break; sleep 0.1; done
[ -f "$tmp/stub_started" ] || fail "stub did not start"
kill -USR1 "$shell"
rc=0; wait "$shell" || rc=$?
out="$(cat "$tmp/usr1.out")"
[ "$rc" = 75 ] || { echo "$out"; fail "USR1: stage exited $rc, expected 75"; }
expect "got USR1" "USR1 forwarding"
expect "stub got USR1, checkpointing" "USR1 forwarding"
# The site hook runs first; a missing one is an error.
echo 'echo "site hook ran"; export KMIM_TCAS_ARGS="--from-site-hook"' >"$tmp/site.sh"
run 0 stage KMIM_SITE_SETUP="$tmp/site.sh" bash "$jobs/tcas.sh"
expect "site hook ran" "site hook"
expect "--from-site-hook" "site hook environment"
run 1 stage KMIM_SITE_SETUP="$tmp/no_such_file.sh" bash "$jobs/tcas.sh"
expect "KMIM_SITE_SETUP='$tmp/no_such_file.sh' is not a readable file" "missing site hook"
# Slurm runs a copy of the script from its spool folder: common.sh is found through
# SLURM_SUBMIT_DIR/jobs or KMIM_HOME, and a clear error names the variables otherwise.
mkdir -p "$tmp/spool" "$tmp/prefix/share/kmim"
cp "$jobs/tcas.sh" "$tmp/spool/slurm_script"
ln -sfn "$jobs" "$tmp/prefix/share/kmim/jobs"
run 0 stage SLURM_SUBMIT_DIR="$KMIM_SOURCE_DIR" bash "$tmp/spool/slurm_script"
expect "stub kmim_tcas args" "common.sh through SLURM_SUBMIT_DIR"
run 0 stage KMIM_HOME="$tmp/prefix" bash "$tmp/spool/slurm_script"
expect "stub kmim_tcas args" "common.sh through KMIM_HOME"
run 1 stage SLURM_SUBMIT_DIR="$tmp" bash "$tmp/spool/slurm_script"
expect "cannot find jobs/common.sh; set KMIM_JOBS_DIR or KMIM_HOME" "common.sh not found"
echo "PASS: job scripts"
