#!/usr/bin/env bash
# A stage that fails stops the chain: the shard stage gets a dataset root without train/ and
# val/, kmim_shard exits 1, the job ends FAILED with a "stage shard FAILED" message, and every
# stage downstream is CANCELLED by Slurm (reason DependencyNeverSatisfied), never run, never left
# pending. And a stage that sbatch refuses (pretrain's 8 GPUs on this GPU-less node, with
# EnforcePartLimits=ALL) makes pipeline.sh cancel the stages it had already submitted.
source "$(dirname "${BASH_SOURCE[0]}")/slurm_test_lib.sh"
require_cluster
fresh_tmp
run="$KMIM_TEST_TMP/run"
mkdir -p "$KMIM_TEST_TMP/not_a_dataset"

out="$(KMIM_RUN_DIR="$run" KMIM_IMAGENET_ROOT="$KMIM_TEST_TMP/not_a_dataset" \
       "$KMIM_SOURCE_DIR/jobs/demo_pipeline.sh" 2>&1)" || { echo "$out"; fail "demo_pipeline.sh failed to submit"; }
echo "$out"
declare -A id=()
while read -r stage job; do id[$stage]=$job; done < <(job_ids_of "$out")
all=("${id[shard]}" "${id[kmeans]}" "${id[pretrain]}" "${id[tcas]}" "${id[linprobe]}")
rc=0
kmim_wait_jobs 90 "${all[@]}" || rc=$?
[ "$rc" != 2 ] || fail "jobs still pending or running after 90 s"
[ "$rc" != 0 ] || fail "every job COMPLETED although the shard stage had no dataset"

[ "$(kmim_job_field "${id[shard]}" JobState)" = FAILED ] || fail "shard job is $(kmim_job_field "${id[shard]}" JobState), not FAILED"
log="$run/logs/kmim-shard-${id[shard]}.out"
grep -q "stage shard FAILED" "$log" || { cat "$log"; fail "the shard log does not say the stage FAILED"; }
grep -q "kmim_shard: error:" "$log" || { cat "$log"; fail "the shard log lacks kmim_shard's error line"; }
for s in kmeans pretrain tcas linprobe; do
  state="$(kmim_job_field "${id[$s]}" JobState)" reason="$(kmim_job_field "${id[$s]}" Reason)"
  [ "$state" = CANCELLED ] || fail "stage $s is $state, not CANCELLED"
  [ "$reason" = DependencyNeverSatisfied ] || fail "stage $s: reason $reason, not DependencyNeverSatisfied"
  [ ! -f "$run/logs/kmim-$s-${id[$s]}.out" ] || fail "stage $s ran (it has a log) although its dependency failed"
done

run2="$KMIM_TEST_TMP/run2"
small="--nodes=1 --ntasks-per-node=1 --cpus-per-task=1 --mem=500M --time=5"
rc=0
out="$(KMIM_RUN_DIR="$run2" KMIM_IMAGENET_ROOT="$KMIM_TEST_TMP/not_a_dataset" KMIM_CLASSES="" \
       KMIM_SBATCH_ARGS_SHARD="$small" KMIM_SBATCH_ARGS_KMEANS="$small" \
       "$KMIM_SOURCE_DIR/jobs/pipeline.sh" 2>&1)" || rc=$?
echo "$out"
[ "$rc" = 1 ] || fail "pipeline.sh exited $rc although sbatch refused the pretrain stage"
grep -q "sbatch failed for stage pretrain" <<<"$out" || fail "no message naming the refused stage"
declare -A id2=()
while read -r stage job; do id2[$stage]=$job; done < <(job_ids_of "$out")
[ -n "${id2[shard]:-}" ] && [ -n "${id2[kmeans]:-}" ] && [ -z "${id2[pretrain]:-}" ] \
  || fail "expected shard and kmeans submitted, pretrain refused"
grep -q "cancelled the stages already submitted (jobs ${id2[shard]} ${id2[kmeans]})" <<<"$out" \
  || fail "pipeline.sh did not cancel the stages it had submitted"
kmim_wait_jobs 30 "${id2[shard]}" "${id2[kmeans]}" >/dev/null || true
[ "$(kmim_job_field "${id2[kmeans]}" JobState)" = CANCELLED ] || fail "kmeans is $(kmim_job_field "${id2[kmeans]}" JobState), not CANCELLED"
echo "PASS: the failed shard stage cancelled kmeans, pretrain, tcas and linprobe; a refused submission cancelled the chain"
