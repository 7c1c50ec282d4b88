#!/usr/bin/env bash
# Preemption through a real Slurm job, with the contract every long kmim program keeps
# (docs/cluster.md), exercised by tests/slurm/preemption_probe.cpp until kmim_pretrain exists:
#   1. a batch job (2 ranks under srun) runs the probe through kmim_run_preemptible (jobs/common.sh);
#   2. mid-run the batch shell alone gets USR1 (scancel --batch, what #SBATCH --signal=B:USR1@N
#      does near the time limit); it forwards the signal, the probe checkpoints at its next step
#      and exits 75, the job requeues itself;
#   3. the requeued run resumes (--resume auto) from that step and finishes;
#   4. the result is bit-identical to an uninterrupted run's, and no step ran twice or was lost.
source "$(dirname "${BASH_SOURCE[0]}")/slurm_test_lib.sh"
require_cluster
fresh_tmp
tmp="$KMIM_TEST_TMP"
probe="$KMIM_BUILD_DIR/tests/kmim_preemption_probe"
[ -x "$probe" ] || fail "$probe is not built"
steps=50

# The uninterrupted reference (the sleep per step does not change the numbers).
mpirun -np 2 "$probe" --steps "$steps" --step-ms 0 --out "$tmp/reference.h5" \
  --checkpoint "$tmp/reference_ckpt.h5" >/dev/null || fail "reference run failed"

cat >"$tmp/probe_job.sh" <<JOB
#!/usr/bin/env bash
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --signal=B:USR1@60
set -euo pipefail
source "$KMIM_SOURCE_DIR/jobs/common.sh"
export KMIM_RUN_DIR="$tmp/run"
kmim_stage_begin probe
kmim_run_preemptible checkpoint "\${KMIM_LAUNCH[@]}" "$probe" --steps $steps --step-ms 150 \
  --out "$tmp/result.h5" --checkpoint "$tmp/checkpoint.h5" --resume auto
JOB
log="$tmp/probe.out"
id="$(sbatch --parsable --job-name=kmim-probe --ntasks=2 --cpus-per-task=1 --time=5 \
       --output="$log" "$tmp/probe_job.sh")" || fail "sbatch failed"

deadline=$((SECONDS + 60))
until grep -q "completed step 3$" "$log" 2>/dev/null; do
  [ "$SECONDS" -lt "$deadline" ] || { cat "$log" 2>/dev/null; fail "the probe job did not reach step 3 in 60 s"; }
  sleep 0.2
done
scancel --batch --signal=USR1 "$id" || fail "scancel --batch --signal=USR1 $id failed"
kmim_wait_jobs 120 "$id" || { cat "$log"; fail "the preempted job did not end COMPLETED"; }
cat "$log"

[ "$(kmim_job_field "$id" Restarts)" = 1 ] || fail "job restarted $(kmim_job_field "$id" Restarts) times, expected 1"
grep -q "got USR1" "$log" || fail "the batch shell did not report the USR1"
k="$(sed -n 's/^preemption_probe: checkpointed at step \([0-9]*\),.*/\1/p' "$log")"
[ -n "$k" ] && [ "$k" -ge 3 ] && [ "$k" -lt "$steps" ] || fail "no checkpoint in the middle of the run (step '$k')"
grep -q "requeueing job $id" "$log" || fail "the job did not requeue itself"
grep -q "restart 1," "$log" || fail "no second run of the job"
grep -q "^preemption_probe: resumed from step $k$" "$log" || fail "the second run did not resume from step $k"
# Every step ran exactly once across the two runs.
seq 1 "$steps" >"$tmp/expected_steps"
sed -n 's/^preemption_probe: completed step \([0-9]*\)$/\1/p' "$log" >"$tmp/steps_run"
cmp -s "$tmp/expected_steps" "$tmp/steps_run" || fail "steps lost or repeated: $(tr '\n' ' ' <"$tmp/steps_run")"

"$PYTHON" - "$tmp/reference.h5" "$tmp/result.h5" <<'PY' || fail "the resumed result differs from the uninterrupted run"
import sys, h5py
a = h5py.File(sys.argv[1], "r")["state"][:]
b = h5py.File(sys.argv[2], "r")["state"][:]
if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
    sys.exit(f"state differs: {a.dtype}{a.shape} vs {b.dtype}{b.shape}")
PY
echo "PASS: USR1 at step $k -> checkpoint, exit 75, requeue, resume from step $k, bit-identical result"
