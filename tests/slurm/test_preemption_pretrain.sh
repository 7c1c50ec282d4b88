#!/usr/bin/env bash
# Preemption of real pretraining through the real job script: jobs/pretrain_200ep_in100.sh,
# configured by environment and sbatch options alone for a tiny run (vit_tiny_demo, img 32,
# patch 4, 200 Fashion-MNIST images, a K = 16 pixel codebook, batch 8: 25 steps per epoch,
# 10 epochs = 250 steps, a checkpoint every 10 steps), 2 ranks under srun. Mid-run the batch shell
# alone gets USR1 (scancel --batch, what #SBATCH --signal=B:USR1@N does near the time limit); it
# forwards the signal, kmim_pretrain finishes its step, checkpoints and exits 75, the job requeues
# itself, and the rerun continues with --resume auto from that checkpoint. The job must end
# COMPLETED after one restart, and its final checkpoint must hold parameters, AdamW moments and
# training position byte-identical to an uninterrupted run of the same configuration (same 2
# ranks x 1 thread, under mpirun, without Slurm), with the same per-step losses.
source "$(dirname "${BASH_SOURCE[0]}")/slurm_test_lib.sh"
require_cluster
pretrain="$KMIM_BIN_DIR/kmim_pretrain"
[ -x "$pretrain" ] || fail "$pretrain is not built"
fresh_tmp
tmp="$KMIM_TEST_TMP"
demo_images "$tmp/images"
"$KMIM_BIN_DIR/kmim_shard" --root "$tmp/images" --out "$tmp/data" --splits train --size 32 \
  >"$tmp/data.log" 2>&1 || { cat "$tmp/data.log"; fail "kmim_shard failed"; }
"$KMIM_BIN_DIR/kmim_kmeans" --manifest "$tmp/data/train.h5" --out "$tmp/codebook.h5" --k 16 --crop 32 \
  --patch 4 --iters 5 --seed 0 >>"$tmp/data.log" 2>&1 || { cat "$tmp/data.log"; fail "kmim_kmeans failed"; }

# The recipe, as jobs/common.sh's kmim_pretrain_stage reads it. Bit-identity holds for the same
# rank and thread counts, so threads are pinned (the job also gets OMP_NUM_THREADS=1 from
# --cpus-per-task=1, but --threads wins over it).
steps=250
export KMIM_MODEL=vit_tiny_demo KMIM_EPOCHS=10 KMIM_BATCH_SIZE=8 KMIM_BLR=1.5e-3 KMIM_WARMUP_EPOCHS=1 \
  KMIM_MASK_RATIO=0.75
export KMIM_PRETRAIN_ARGS="--threads 1 --seed 0 --checkpoint-every 10 --log-every 10"
recipe=(--manifest "$tmp/data/train.h5" --codebook "$tmp/codebook.h5" --model "$KMIM_MODEL"
        --epochs "$KMIM_EPOCHS" --batch-size "$KMIM_BATCH_SIZE" --blr "$KMIM_BLR"
        --warmup-epochs "$KMIM_WARMUP_EPOCHS" --mask-ratio "$KMIM_MASK_RATIO")
read -r -a extra <<<"$KMIM_PRETRAIN_ARGS"

# The uninterrupted reference, without Slurm.
mpirun -np 2 "$pretrain" "${recipe[@]}" "${extra[@]}" --out-dir "$tmp/reference" \
  >"$tmp/reference.log" 2>&1 || { cat "$tmp/reference.log"; fail "the uninterrupted reference run failed"; }
final="checkpoint-$(printf '%08d' "$steps").h5"
[ -f "$tmp/reference/$final" ] || fail "the reference run left no $final"

# The real job script; the sbatch options replace its 8-GPU whole-node header for this node.
# The 15-minute limit keeps the header's --signal=B:USR1@300 from firing: the one signal is the
# test's.
log="$tmp/pretrain.out"
run="$tmp/run"
id="$(KMIM_RUN_DIR="$run" KMIM_DATA_DIR="$tmp/data" KMIM_CODEBOOK="$tmp/codebook.h5" \
      sbatch --parsable --nodes=1 --ntasks-per-node=2 --cpus-per-task=1 --gpus-per-node=0 --mem=1G \
        --time=15 --output="$log" "$KMIM_SOURCE_DIR/jobs/pretrain_200ep_in100.sh")" \
  || fail "sbatch jobs/pretrain_200ep_in100.sh failed"

# The signal goes in after step 20 of 250: the run is under way and far from its end (an idle
# 2-core machine runs about 100 steps/s; the signal arrives within 10-20 steps).
deadline=$((SECONDS + 90))
until grep -q " step 20/$steps " "$log" 2>/dev/null; do
  [ "$SECONDS" -lt "$deadline" ] || { cat "$log" 2>/dev/null; scancel "$id"; fail "kmim_pretrain did not reach step 20 in 90 s"; }
  sleep 0.1
done
scancel --batch --signal=USR1 "$id" || fail "scancel --batch --signal=USR1 $id failed"
kmim_wait_jobs 180 "$id" || { cat "$log"; fail "the preempted pretraining job did not end COMPLETED"; }
# The job's story without the per-step lines.
grep -v -E " step [0-9]+/$steps |pretrain: checkpoint .*\(periodic" "$log"

[ "$(kmim_job_field "$id" Restarts)" = 1 ] || fail "job restarted $(kmim_job_field "$id" Restarts) times, expected 1"
grep -q "got USR1" "$log" || fail "the batch shell did not report the USR1 (did the run finish first?)"
stopped="$(sed -n 's/.*pretrain: stopped on request (signal) at step \([0-9]*\);.*/\1/p' "$log" | sed -n 1p)"
[ -n "$stopped" ] && [ "$stopped" -ge 20 ] && [ "$stopped" -lt "$steps" ] \
  || { cat "$log"; fail "kmim_pretrain did not stop mid-run on the forwarded signal (step '$stopped')"; }
grep -q "program checkpointed (exit 75)" "$log" || fail "kmim_pretrain did not exit 75"
grep -q "requeueing job $id" "$log" || fail "the job did not requeue itself"
grep -q "stage pretrain: job $id (.*), restart 1," "$log" || fail "no second run of the job"
grep -q -- "--resume auto" "$log" || fail "the stage did not pass --resume auto"
# The rerun continues from the checkpoint the signal wrote, not from an older periodic one.
ckpt="$run/pretrain/checkpoint-$(printf '%08d' "$stopped").h5"
grep -qF "pretrain: resumed from '$ckpt' at step $stopped " "$log" \
  || fail "the requeued run did not resume from $ckpt at step $stopped"
grep -q "stage pretrain: finished" "$log" || fail "no 'stage pretrain: finished' line"
[ "$(grep -c "pretrain: finished at step $steps of $steps" "$log")" = 1 ] || fail "the run did not finish at step $steps exactly once"
[ -f "$run/pretrain/$final" ] || fail "the job left no $final"

# Byte-identical state: every parameter and AdamW moment (h5diff compares exactly, attributes
# included), the checksums over all of them, and the training position.
for group in /model /optimizer; do
  h5diff "$tmp/reference/$final" "$run/pretrain/$final" "$group" >/dev/null \
    || fail "$group differs from the uninterrupted run's (h5diff $tmp/reference/$final $run/pretrain/$final $group)"
done
"$PYTHON" - "$tmp/reference/$final" "$run/pretrain/$final" "$tmp/reference/metrics.jsonl" \
  "$run/pretrain/metrics.jsonl" "$steps" <<'PY' || fail "the resumed run differs from the uninterrupted run"
import json, sys
import h5py
ref, res = h5py.File(sys.argv[1], "r"), h5py.File(sys.argv[2], "r")
for a in ("checksum_crc32", "parameters_crc32"):
    if ref.attrs[a] != res.attrs[a]:
        sys.exit(f"root attribute {a}: {ref.attrs[a]} vs {res.attrs[a]}")
for a in ("step", "epoch", "step_in_epoch", "images_seen", "run_identity"):
    if ref["training"].attrs[a] != res["training"].attrs[a]:
        sys.exit(f"/training attribute {a}: {ref['training'].attrs[a]} vs {res['training'].attrs[a]}")
names = [n.decode() if isinstance(n, bytes) else n for n in ref["parameter_names"][()]]
for n in names:
    for path in (f"model/{n}", f"optimizer/exp_avg/{n}", f"optimizer/exp_avg_sq/{n}"):
        x, y = ref[path][()], res[path][()]
        if x.dtype != y.dtype or x.shape != y.shape or x.tobytes() != y.tobytes():
            sys.exit(f"{path} differs")
def losses(path):  # step -> loss of the step records
    return {r["step"]: r["loss"] for r in map(json.loads, open(path)) if r["type"] == "step"}
a, b = losses(sys.argv[3]), losses(sys.argv[4])
common = sorted(set(a) & set(b))
if len(common) < 20 or max(common) != int(sys.argv[5]):
    sys.exit(f"too few common metrics records: {common}")
bad = [s for s in common if a[s] != b[s]]
if bad:
    sys.exit(f"losses differ at steps {bad[:5]}: {[(a[s], b[s]) for s in bad[:5]]}")
print(f"{len(names)} tensors x 3 and {len(common)} logged losses identical")
PY
echo "PASS: pretraining preempted at step $stopped, requeued, resumed from its checkpoint, bit-identical to the uninterrupted run"
