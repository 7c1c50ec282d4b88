#!/usr/bin/env bash
# Preemption of the real K-means stage: jobs/kmeans.sh (mini-batch K-means, checkpoint after
# every pass, --resume) gets USR1 in its batch shell mid-run (scancel --batch, as
# #SBATCH --signal=B:USR1@N does), forwards it to kmim_kmeans, requeues itself, and the requeued
# run resumes from the last checkpoint. The codebook must be bit-identical to an uninterrupted
# run's. kmim_kmeans checkpoints at the next pass boundary and exits 75 on the forwarded USR1.
# The time limit (15 min) keeps the header's
# --signal=B:USR1@600 from firing during the test: the one signal is the test's.
source "$(dirname "${BASH_SOURCE[0]}")/slurm_test_lib.sh"
require_cluster
kmeans="$KMIM_BIN_DIR/kmim_kmeans"
[ -x "$kmeans" ] || { echo "skipped: kmim_kmeans not built"; exit 77; }
help="$("$kmeans" --help)"
grep -q -e "--checkpoint-every" <<<"$help" && grep -q -e "--resume" <<<"$help" \
  || { echo "skipped: kmim_kmeans has no --checkpoint-every/--resume"; exit 77; }
fresh_tmp
tmp="$KMIM_TEST_TMP"
demo_images "$tmp/images"
"$KMIM_BIN_DIR/kmim_shard" --root "$tmp/images" --out "$tmp/data" --splits train --size 32 \
  >/dev/null 2>&1 || fail "kmim_shard failed"

# 300 passes: under a second of K-means, but the job writes a checkpoint after every pass
# (~15 ms each), so it runs for seconds after the signal is sent at pass 5.
passes=300
recipe=(--k 10 --crop 32 --patch 16 --algorithm minibatch --passes "$passes" --batch-images 20 --tol 0)
mpirun -np 2 "$kmeans" --manifest "$tmp/data/train.h5" --out "$tmp/reference.h5" "${recipe[@]}" \
  --checkpoint-every 0 >/dev/null 2>&1 || fail "the uninterrupted reference run failed"

log="$tmp/kmeans.out"
id="$(KMIM_RUN_DIR="$tmp/run" KMIM_DATA_DIR="$tmp/data" KMIM_CODEBOOK="$tmp/run/codebook.h5" \
      KMIM_K=10 KMIM_KMEANS_CROP=32 KMIM_KMEANS_PATCH=16 KMIM_KMEANS_ALGORITHM=minibatch \
      KMIM_KMEANS_PASSES="$passes" KMIM_KMEANS_BATCH_IMAGES=20 KMIM_KMEANS_ARGS="--tol 0" \
      sbatch --parsable --nodes=1 --ntasks-per-node=2 --cpus-per-task=1 --mem=1G --time=15 \
        --output="$log" "$KMIM_SOURCE_DIR/jobs/kmeans.sh")" || fail "sbatch jobs/kmeans.sh failed"

deadline=$((SECONDS + 60))
until grep -q "kmeans: pass 5/$passes" "$log" 2>/dev/null; do
  [ "$SECONDS" -lt "$deadline" ] || { cat "$log" 2>/dev/null; fail "kmim_kmeans did not reach pass 5 in 60 s"; }
  sleep 0.2
done
scancel --batch --signal=USR1 "$id" || fail "scancel --batch --signal=USR1 $id failed"
kmim_wait_jobs 150 "$id" || { cat "$log"; fail "the preempted kmeans job did not end COMPLETED"; }
grep -v " info  " "$log"

[ "$(kmim_job_field "$id" Restarts)" = 1 ] || fail "job restarted $(kmim_job_field "$id" Restarts) times, expected 1"
grep -q "got USR1" "$log" || fail "the batch shell did not report the USR1 (did kmim_kmeans finish first?)"
grep -q "requeueing job $id" "$log" || fail "the job did not requeue itself"
resumed="$(sed -n "s/.*kmeans: resuming from '.*' after \([0-9]*\) pass.*/\1/p" "$log" | sed -n 1p)"
[ -n "$resumed" ] && [ "$resumed" -ge 5 ] && [ "$resumed" -lt "$passes" ] \
  || fail "the requeued run did not resume mid-way (resumed after '${resumed}' passes)"

"$PYTHON" - "$tmp/reference.h5" "$tmp/run/codebook.h5" <<'PY' || fail "the resumed codebook differs from the uninterrupted run's"
import sys, h5py
a, b = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
names = sorted(k for k in a.keys() if isinstance(a[k], h5py.Dataset))
assert "centroids" in names, names
for n in names:
    x, y = a[n][()], b[n][()]
    if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
        sys.exit(f"dataset {n} differs")
PY
echo "PASS: kmeans preempted, requeued, resumed after pass $resumed, bit-identical codebook"
