#!/usr/bin/env bash
# kmim_pretrain end to end on real images (Fashion-MNIST → JPEG tree → shards → pixel codebook):
#   - K-MIM with a pixel codebook learns: the masked-token loss falls well below log K;
#   - resume is bit-identical: --max-steps then --resume auto, and SIGUSR1 (exit 75) then
#     --resume auto, both end with byte-identical parameters and moments, and the same
#     metrics.jsonl, as an uninterrupted run;
#   - -np 2 gives the losses of -np 1 (fp32 tolerance);
#   - a truncated newest checkpoint is skipped with a warning naming it;
#   - clear errors: codebooks that do not fit the model, a checkpoint of other settings, an
#     out-dir that already holds a run, a batch not divisible by the ranks;
#   - an absurd learning rate stops with exit 3 and a diagnostic, the previous checkpoint intact;
#   - the label, random, feature tokenizers and the MAE pixel loss run.
set -euo pipefail
T=${KMIM_TEST_TMP:?}; BIN=${KMIM_BIN_DIR:?}; TESTS=${KMIM_BUILD_DIR:?}/tests
rm -rf "$T"; mkdir -p "$T"; cd "$T"
fail() { echo "FAIL: $*" >&2; exit 1; }
step() { echo "--- $*"; }
[ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] ||
  [ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte ] ||
  { echo "SKIP: dataset-fashion-mnist is not installed"; exit 77; }
PY=python3
command -v python3 >/dev/null || PY=/usr/bin/python3

step "data: 500 training images (50 per class), 40x40 RGB shards, a K=16 pixel codebook (crop 32, patch 4)"
"$BIN/kmim_idx2folder" --out fm --size 40 --rgb --per-class-train 50 --per-class-val 10 > data.log 2>&1 ||
  { cat data.log; fail "kmim_idx2folder"; }
"$BIN/kmim_shard" --root fm --out sh --size 40 >> data.log 2>&1 || { cat data.log; fail "kmim_shard"; }
"$BIN/kmim_kmeans" --manifest sh/train.h5 --out cb16.h5 --k 16 --crop 32 --patch 4 --iters 5 >> data.log 2>&1 ||
  { cat data.log; fail "kmim_kmeans"; }

# 10 steps per epoch (batch 50 of 500 images), 4 epochs.
COMMON=(--manifest sh/train.h5 --model vit_tiny_demo --epochs 4 --batch-size 50 --warmup-epochs 1
        --log-every 1)
LR=(--blr 2e-3)
pretrain() {  # pretrain <log> <expected exit> [options...]: runs kmim_pretrain on one rank
  local log=$1 want=$2; shift 2
  local rc=0
  "$BIN/kmim_pretrain" "${COMMON[@]}" "${LR[@]}" --threads 2 "$@" > "$log" 2>&1 || rc=$?
  [ "$rc" = "$want" ] || { cat "$log"; fail "kmim_pretrain $* exited $rc, expected $want"; }
}
same_state() {  # same_state <a.h5> <b.h5>: parameters and AdamW moments byte for byte
  h5diff "$1" "$2" /model > /dev/null || fail "parameters differ: $1 vs $2"
  h5diff "$1" "$2" /optimizer > /dev/null || fail "optimizer moments differ: $1 vs $2"
}
step_losses() { grep '"type":"step"' "$1" | sed 's/.*"loss":\([^,]*\),.*/\1/'; }

grep -q -e "--resume arg" <("$BIN/kmim_pretrain" --help) || fail "--help does not list --resume arg (jobs/common.sh needs it)"

step "A: 40 uninterrupted steps with the pixel codebook"
pretrain A.log 0 --codebook cb16.h5 --out-dir A
[ -f A/checkpoint-00000040.h5 ] || fail "no final checkpoint"
[ "$(ls A/checkpoint-*.h5 | wc -l)" = 3 ] || fail "--keep-checkpoints 3 should leave 3 checkpoints: $(ls A)"
$PY - A/metrics.jsonl <<'PY' || fail "loss/metrics check"
import json, math, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
steps = [r for r in recs if r["type"] == "step"]
epochs = [r for r in recs if r["type"] == "epoch"]
assert [r["step"] for r in steps] == list(range(1, 41)), [r["step"] for r in steps]
assert [r["epoch"] for r in epochs] == [0, 1, 2, 3]
for r in steps:
    for key in ("loss", "masked_accuracy", "lr", "grad_norm", "images_seen", "images_per_second",
                "elapsed_seconds", "eta_seconds", "epoch_progress", "step_seconds"):
        assert key in r and r[key] is not None, (key, r)
logk = math.log(16)
first, last = epochs[0]["loss"], epochs[-1]["loss"]
print(f"epoch mean losses {[round(e['loss'], 4) for e in epochs]}, log K = {logk:.4f}, "
      f"accuracy {epochs[0]['masked_accuracy']:.3f} -> {epochs[-1]['masked_accuracy']:.3f}")
assert steps[0]["loss"] > 0.95 * logk, "the first loss should be near log K (uniform predictions)"
assert last < 0.8 * logk, f"final epoch loss {last} is not well below log K = {logk}"
assert last < first - 0.3
assert epochs[-1]["masked_accuracy"] > 2.0 / 16
PY

step "B: --max-steps 13, then --resume auto: bit-identical to A"
pretrain B1.log 0 --codebook cb16.h5 --out-dir B --max-steps 13
[ -f B/checkpoint-00000013.h5 ] || fail "--max-steps did not leave a checkpoint at step 13"
pretrain B2.log 0 --codebook cb16.h5 --out-dir B --resume auto
grep -q "resumed from 'B/checkpoint-00000013.h5' at step 13" B2.log || { cat B2.log; fail "B did not resume at 13"; }
same_state A/checkpoint-00000040.h5 B/checkpoint-00000040.h5
cmp <(step_losses A/metrics.jsonl) <(step_losses B/metrics.jsonl) || fail "metrics.jsonl losses differ A vs B"

step "S: SIGUSR1 mid-run → checkpoint, exit 75; --resume auto → bit-identical to A"
rc=0
"$BIN/kmim_pretrain" "${COMMON[@]}" "${LR[@]}" --threads 2 --codebook cb16.h5 --out-dir S > S1.log 2>&1 & pid=$!
for _ in $(seq 500); do grep -qs "step 2/" S1.log && break; sleep 0.02; done
kill -USR1 "$pid"
wait "$pid" || rc=$?
[ "$rc" = 75 ] || { cat S1.log; fail "SIGUSR1: exit $rc, expected 75"; }
grep -q "stopped on request" S1.log || fail "no stop message"
ls S/checkpoint-*.h5 > /dev/null || fail "no checkpoint after SIGUSR1"
pretrain S2.log 0 --codebook cb16.h5 --out-dir S --resume auto
same_state A/checkpoint-00000040.h5 S/checkpoint-00000040.h5
cmp <(step_losses A/metrics.jsonl) <(step_losses S/metrics.jsonl) || fail "metrics.jsonl losses differ A vs S"

step "S: SIGTERM (Slurm's cancel/preemption without warning) is handled the same way"
rc=0
"$BIN/kmim_pretrain" "${COMMON[@]}" "${LR[@]}" --threads 2 --codebook cb16.h5 --out-dir ST > ST.log 2>&1 & pid=$!
for _ in $(seq 500); do grep -qs "step 2/" ST.log && break; sleep 0.02; done
kill -TERM "$pid"
wait "$pid" || rc=$?
[ "$rc" = 75 ] && ls ST/checkpoint-*.h5 > /dev/null || { cat ST.log; fail "SIGTERM: exit $rc, expected 75 and a checkpoint"; }

step "P: -np 2 gives the losses of -np 1"
mpirun -np 2 --oversubscribe "$BIN/kmim_pretrain" "${COMMON[@]}" "${LR[@]}" --threads 1 --codebook cb16.h5 \
  --out-dir P --max-steps 10 > P.log 2>&1 || { cat P.log; fail "-np 2 run"; }
$PY - A/metrics.jsonl P/metrics.jsonl <<'PY' || fail "-np 1 vs -np 2 losses"
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
p = [json.loads(l) for l in open(sys.argv[2])]
la = [r["loss"] for r in a if r["type"] == "step"][:10]
lp = [r["loss"] for r in p if r["type"] == "step"]
assert len(lp) == 10
worst = max(abs(x - y) / abs(x) for x, y in zip(la, lp))
print(f"largest relative loss difference over 10 steps: {worst:.2e}")
assert worst < 1e-4, worst
PY

step "D: a truncated newest checkpoint is skipped; the run continues from the one before"
pretrain D1.log 0 --codebook cb16.h5 --out-dir D --max-steps 25 --checkpoint-every 5
truncate -s 5000 D/checkpoint-00000025.h5
pretrain D2.log 0 --codebook cb16.h5 --out-dir D --resume auto
grep -q "skipping a damaged checkpoint: file 'D/checkpoint-00000025.h5'" D2.log || { cat D2.log; fail "no warning naming the damaged checkpoint"; }
grep -q "resumed from 'D/checkpoint-00000020.h5' at step 20" D2.log || { cat D2.log; fail "D did not resume at 20"; }
same_state A/checkpoint-00000040.h5 D/checkpoint-00000040.h5

step "E: clear errors"
"$BIN/kmim_kmeans" --manifest sh/train.h5 --out cb_p8.h5 --k 8 --crop 32 --patch 8 --iters 2 > /dev/null 2>&1
"$BIN/kmim_kmeans" --manifest sh/train.h5 --out cb_c24.h5 --k 8 --crop 24 --patch 4 --iters 2 > /dev/null 2>&1
"$BIN/kmim_kmeans" --manifest sh/train.h5 --out cb16b.h5 --k 16 --crop 32 --patch 4 --iters 5 --seed 1 > /dev/null 2>&1
expect_error() {  # expect_error <log> <text> [options...]
  local log=$1 text=$2; shift 2
  pretrain "$log" 1 "$@"
  grep -qF -- "$text" "$log" || { cat "$log"; fail "expected '$text'"; }
  [ "$(grep -c 'error' "$log")" = 1 ] || { cat "$log"; fail "expected exactly one error line"; }
}
expect_error E1.log "codebook patch size 8 does not match the model's patch size 4" --codebook cb_p8.h5 --out-dir E1
expect_error E2.log "codebook crop 24 does not match the model's img_size 32" --codebook cb_c24.h5 --out-dir E2
expect_error E3.log "refusing to resume it (model.mask_ratio: checkpoint has '0.75', this run '0.5')" \
  --codebook cb16.h5 --out-dir A --resume auto --mask-ratio 0.5
expect_error E4.log "refusing to resume it (tokenizer.centroids_crc32: checkpoint has" --codebook cb16b.h5 \
  --out-dir A --resume auto
expect_error E5.log "already holds checkpoints" --codebook cb16.h5 --out-dir A
expect_error E6.log "option --codebook: is required by --tokenizer pixel" --out-dir E6
rc=0
mpirun -np 2 --oversubscribe "$BIN/kmim_pretrain" "${COMMON[@]}" --accum-iter 3 --codebook cb16.h5 \
  --out-dir E7 > E7.log 2>&1 || rc=$?
[ "$rc" = 1 ] && grep -q "must be divisible by ranks x accum-iter" E7.log || { cat E7.log; fail "batch divisibility"; }

step "N: an absurd learning rate (--blr 1e6) → exit 3 with a diagnostic; the checkpoint before stays valid"
LR=(--blr 1e6)
pretrain N.log 3 --codebook cb16.h5 --out-dir N --checkpoint-every 1
grep -q "non-finite .* at step" N.log || { cat N.log; fail "no diagnostic"; }
last=$(ls N/checkpoint-*.h5 | tail -1)
[ -n "$last" ] || fail "no checkpoint before the divergence"
pretrain N2.log 0 --codebook cb16.h5 --out-dir N --resume "$last" --max-steps 1
grep -q "nothing to do" N2.log || { cat N2.log; fail "the last checkpoint before divergence does not read back"; }
LR=(--blr 2e-3)

step "T: label, random and feature tokenizers, MAE pixel loss"
pretrain T1.log 0 --tokenizer label --out-dir T1 --max-steps 10
grep -q "label tokenizer (token = class, K=10)" T1.log || fail "label tokenizer"
pretrain T2.log 0 --tokenizer random --random-k 20 --out-dir T2 --max-steps 10
pretrain T3.log 0 --loss mae --out-dir T3 --max-steps 10
grep -q '"masked_accuracy":null' T3/metrics.jsonl || fail "mae records should have masked_accuracy null"
"$TESTS/kmim_test_feature_codebook" A/checkpoint-00000040.h5 sh/train.h5 fcb.h5 20
"$TESTS/kmim_test_feature_codebook" A/checkpoint-00000040.h5 sh/train.h5 fcb_d32.h5 20 32
pretrain T4.log 0 --tokenizer feature --codebook fcb.h5 --tokenizer-checkpoint A/checkpoint-00000040.h5 \
  --out-dir T4 --max-steps 10
grep -q "feature codebook 'fcb.h5' (K=20, d=64)" T4.log || fail "feature tokenizer"
expect_error T5.log "codebook vectors have d = 32 values, but the frozen model" --tokenizer feature \
  --codebook fcb_d32.h5 --tokenizer-checkpoint A/checkpoint-00000040.h5 --out-dir T5
for d in T1 T2 T3 T4; do
  $PY -c "import json,math,sys; r=[json.loads(l) for l in open('$d/metrics.jsonl')]; assert all(math.isfinite(x['loss']) for x in r)" ||
    fail "$d: non-finite loss"
done
echo "test_pretrain_program: all checks passed"
