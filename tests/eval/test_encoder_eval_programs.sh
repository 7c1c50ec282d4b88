#!/usr/bin/env bash
# The evaluation programs around a frozen encoder, end to end on real images (Fashion-MNIST →
# 32×32 RGB JPEG tree → shards; a tiny K-MIM PIXEL pretraining run as the encoder):
#   kmim_extract   -np 1 = -np 2 bit for bit; --stop-after-chunks + rerun = uninterrupted run;
#                  a work file of other settings refused, --restart; patch tokens for K-means
#   kmim_tcas      feature codebook over the encoder's patch tokens: counts -np 1 = -np 2
#   kmim_linprobe  --mode encoder: runs, --stop-after + --resume and SIGUSR1 (exit 75) + --resume
#                  are bit-identical to an uninterrupted run, -np 2 close to -np 1
#   kmim_report    PNG plots and a summary.md with the expected rows
#   clear errors   model img_size larger than the stored images, a codebook of another width,
#                  a pixel codebook as a feature codebook, ambiguous / incomplete probe options
set -u
T=${KMIM_TEST_TMP:?}; BIN=${KMIM_BIN_DIR:?}; TESTS=${KMIM_BUILD_DIR:?}/tests
rm -rf "$T"; mkdir -p "$T"; cd "$T"
fail() { echo "FAIL: $*" >&2; exit 1; }
step() { echo "--- $*"; }
export OPENBLAS_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
D=/usr/share/datasets/fashion-mnist
[ -f "$D/train-images-idx3-ubyte.gz" ] || { echo "SKIP: $D missing (dataset-fashion-mnist)"; exit 77; }
for prog in kmim_idx2folder kmim_shard kmim_kmeans kmim_pretrain kmim_extract kmim_tcas kmim_linprobe kmim_report; do
  [ -x "$BIN/$prog" ] || { echo "SKIP: $BIN/$prog not built"; exit 77; }
done
run() {  # run <log> <expected exit> program args...: one program, its output in <log>
  local log=$1 want=$2; shift 2
  local rc=0
  "$@" > "$log" 2>&1 || rc=$?
  [ "$rc" = "$want" ] || { cat "$log"; fail "$* exited $rc, expected $want"; }
}
check_error() {  # check_error <expected text> program args...: exit 1 with one line naming it
  local want="$1"; shift
  local out rc=0
  out=$("$@" 2>&1) || rc=$?
  [ $rc -eq 1 ] || fail "expected exit 1 for '$want', got $rc: $out"
  grep -qF -- "$want" <<<"$out" || fail "expected '$want' in: $out"
  [ "$(wc -l <<<"$out")" = 1 ] || fail "expected one line, got: $out"
}

step "data: 200 training / 50 validation images, 32x32; a 24x24 val split; K=16 pixel codebook"
"$BIN/kmim_idx2folder" --out fm --size 32 --rgb --per-class-train 20 --per-class-val 5 > data.log 2>&1 \
  || { cat data.log; fail "kmim_idx2folder"; }
run shard.log 0 "$BIN/kmim_shard" --root fm --out sh --size 32 --threads 1
run shard24.log 0 "$BIN/kmim_shard" --root fm --out sh24 --size 24 --splits val --threads 1
run kmeans.log 0 "$BIN/kmim_kmeans" --manifest sh/train.h5 --out cb16.h5 --k 16 --crop 32 --patch 8 --iters 3
step "encoder: 10 steps of K-MIM PIXEL pretraining (vit_tiny_demo, patch 8)"
run pretrain.log 0 "$BIN/kmim_pretrain" --manifest sh/train.h5 --codebook cb16.h5 --model vit_tiny_demo \
  --patch-size 8 --epochs 1 --batch-size 20 --warmup-epochs 0 --blr 1e-3 --log-every 2 --threads 1 --out-dir pt
CK=pt/checkpoint-00000010.h5
[ -f "$CK" ] || fail "no pretraining checkpoint $CK: $(ls pt)"

step "kmim_extract: -np 1 = -np 2, resume after --stop-after-chunks"
X=(--manifest sh/train.h5 --checkpoint "$CK" --chunk-images 30 --batch-images 8 --threads 1)
run x1.log 0 "$BIN/kmim_extract" "${X[@]}" --out cls1.h5
grep -q "images/s" x1.log || fail "no progress line with a rate"
run x2.log 0 mpirun -np 2 --oversubscribe "$BIN/kmim_extract" "${X[@]}" --out cls2.h5
h5diff cls1.h5 cls2.h5 /features >/dev/null || fail "-np 2 features differ from -np 1"
h5diff cls1.h5 cls2.h5 /labels >/dev/null || fail "-np 2 labels differ"
run x3.log 0 "$BIN/kmim_extract" "${X[@]}" --out cls3.h5 --stop-after-chunks 3
[ ! -e cls3.h5 ] && [ -f cls3.h5.progress.h5 ] || fail "after --stop-after-chunks: $(ls)"
check_error "work file has 'pool = cls', this run has 'pool = mean'); remove it or pass --restart" \
  "$BIN/kmim_extract" "${X[@]}" --out cls3.h5 --pool mean
run x4.log 0 mpirun -np 2 --oversubscribe "$BIN/kmim_extract" "${X[@]}" --out cls3.h5
grep -q "continuing 'cls3.h5.progress.h5': 3 of 7 chunks done (90 of 200 images)" x4.log \
  || { cat x4.log; fail "the rerun did not continue the recorded chunks"; }
[ ! -e cls3.h5.progress.h5 ] || fail "the work file remained after completion"
h5diff cls1.h5 cls3.h5 /features >/dev/null || fail "resumed extraction differs from the uninterrupted one"
run x5.log 0 "$BIN/kmim_extract" "${X[@]}" --out mean.h5 --pool mean --stop-after-chunks 1
run x6.log 0 "$BIN/kmim_extract" "${X[@]}" --out mean.h5 --pool mean --restart
grep -q "continuing" x6.log && fail "--restart continued the old work file"
run x7.log 0 "$BIN/kmim_extract" --manifest sh/train.h5 --checkpoint "$CK" --pool patches --threads 1 \
  --max-per-class 5 --out patches.h5
h5dump -H patches.h5 | grep -q 'DATASPACE  SIMPLE { ( 800, 64 )' || fail "patches: expected 50 images x 16 tokens of 64"

step "kmim_tcas: feature codebook over the encoder's patch tokens"
run km.log 0 "$BIN/kmim_kmeans" --features patches.h5 --out fcb12.h5 --k 12 --iters 5
TC=(--manifest sh/val.h5 --codebook cb16.h5 --feature-codebook fcb12.h5 --tokenizer-checkpoint "$CK" --label-tokenizer --threads 1)
run t1.log 0 "$BIN/kmim_tcas" "${TC[@]}" --out tcas1.h5
run t2.log 0 mpirun -np 2 --oversubscribe "$BIN/kmim_tcas" "${TC[@]}" --batch-images 7 --out tcas2.h5
grep -q "^feature_k12  *feature  *12 " t1.log || { cat t1.log; fail "no feature_k12 row"; }
for g in feature_k12 codebook_k16 label; do
  h5diff tcas1.h5 tcas2.h5 "/$g/counts" >/dev/null || fail "-np 2 counts of $g differ from -np 1"
done
h5dump -a /feature_k12/encoder tcas1.h5 | grep -q "$CK" || fail "the report does not name the encoder"

step "kmim_linprobe --mode encoder: resume and SIGUSR1 are bit-identical, -np 2 is close"
LP=(--checkpoint "$CK" --train sh/train.h5 --val sh/val.h5 --epochs 12 --warmup-epochs 2 --batch-size 20
    --base-lr 2 --threads 1 --encoder-batch 8)
run lpA.log 0 "$BIN/kmim_linprobe" "${LP[@]}" --out A.h5
grep -q "^kmim_linprobe: top-1 best .* (12 epochs, report A.h5)" lpA.log || fail "no summary line"
run lpB1.log 0 "$BIN/kmim_linprobe" "${LP[@]}" --out B.h5 --stop-after 5
[ ! -e B.h5 ] && [ -f B.h5.probe.h5 ] || fail "--stop-after: expected only the probe checkpoint"
check_error "B.h5.probe.h5': already exists (an earlier run); pass --resume" "$BIN/kmim_linprobe" "${LP[@]}" --out B.h5
run lpB2.log 0 "$BIN/kmim_linprobe" "${LP[@]}" --out B.h5 --resume
grep -q "resuming from 'B.h5.probe.h5' after epoch 5" lpB2.log || fail "B did not resume"
same_probe() {
  for obj in /head/weight /head/bias /head/bn_running_mean /train_loss /val_top1 /val_top5 /lr; do
    h5diff "$1" "$2" "$obj" >/dev/null || fail "$obj differs: $1 vs $2"
  done
}
same_probe A.h5 B.h5
"$BIN/kmim_linprobe" "${LP[@]}" --out S.h5 > lpS1.log 2>&1 & pid=$!
for _ in $(seq 1000); do grep -qs "epoch 2/12" lpS1.log && break; sleep 0.01; done
kill -USR1 "$pid"; rc=0; wait "$pid" || rc=$?
[ "$rc" = 75 ] || { cat lpS1.log; fail "SIGUSR1: exit $rc, expected 75"; }
grep -q "stopped on request (signal 10)" lpS1.log || fail "no stop message"
run lpS2.log 0 "$BIN/kmim_linprobe" "${LP[@]}" --out S.h5 --resume
same_probe A.h5 S.h5
run lpP.log 0 mpirun -np 2 --oversubscribe "$BIN/kmim_linprobe" "${LP[@]}" --out P.h5
h5diff -p 1e-3 A.h5 P.h5 /train_loss >/dev/null || fail "-np 2 training losses differ from -np 1 by more than 0.1%"

step "clear errors"
check_error "model img_size 32 is larger than the stored images (24x24) of 'sh24/val.h5'" \
  "$BIN/kmim_extract" --manifest sh24/val.h5 --checkpoint "$CK" --out e.h5
check_error "model img_size 32 is larger than the stored images (24x24) of 'sh24/val.h5'" \
  "$BIN/kmim_tcas" --manifest sh24/val.h5 --feature-codebook fcb12.h5 --tokenizer-checkpoint "$CK" --out e.h5
check_error "model img_size 32 is larger than the stored images (24x24) of 'sh24/val.h5'" \
  "$BIN/kmim_linprobe" --checkpoint "$CK" --train sh/train.h5 --val sh24/val.h5 --batch-size 20 --out e.h5
"$TESTS/kmim_test_idx_features" --images "$D/t10k-images-idx3-ubyte.gz" --labels "$D/t10k-labels-idx1-ubyte.gz" \
  --count 100 --out pix784.h5 > /dev/null || fail "kmim_test_idx_features"
run km784.log 0 "$BIN/kmim_kmeans" --features pix784.h5 --out fcb784.h5 --k 4 --iters 2
check_error "fcb784.h5': centroids have d = 784 values, but the encoder of '$CK'" \
  "$BIN/kmim_tcas" --manifest sh/val.h5 --feature-codebook fcb784.h5 --tokenizer-checkpoint "$CK" --out e.h5
check_error "cb16.h5': is a pixel-mode codebook; the feature tokenizer needs a feature-mode codebook" \
  "$BIN/kmim_tcas" --manifest sh/val.h5 --feature-codebook cb16.h5 --tokenizer-checkpoint "$CK" --out e.h5
check_error "fcb12.h5': is a feature-mode codebook; give --tokenizer-checkpoint" \
  "$BIN/kmim_tcas" --manifest sh/val.h5 --codebook fcb12.h5 --out e.h5
check_error "option --mode=auto: is ambiguous" \
  "$BIN/kmim_linprobe" --checkpoint "$CK" --train-features cls1.h5 --val-features cls1.h5 --out e.h5
check_error "option --val: is required with --mode encoder" \
  "$BIN/kmim_linprobe" --checkpoint "$CK" --train sh/train.h5 --out e.h5
check_error "option --batch-size=1000: is larger than the 200 training images of 'sh/train.h5'" \
  "$BIN/kmim_linprobe" --checkpoint "$CK" --train sh/train.h5 --val sh/val.h5 --batch-size 1000 --out e.h5
[ ! -e e.h5 ] || fail "an output was left behind by a failed run"

step "features mode on the extracted features; kmim_report"
run xv.log 0 "$BIN/kmim_extract" --manifest sh/val.h5 --checkpoint "$CK" --threads 1 --out cls_val.h5
run lpF.log 0 "$BIN/kmim_linprobe" --train-features cls1.h5 --val-features cls_val.h5 --epochs 5 \
  --warmup-epochs 1 --batch-size 20 --base-lr 2 --out F.h5
run rep.log 0 "$BIN/kmim_report" --pretrain-run pixel_k16=pt --tcas tcas1.h5 --linprobe pixel_k16=A.h5 \
  --linprobe features=F.h5 --out report --title test
for png in pretrain_loss pretrain_masked_accuracy tcas_vs_k linprobe_accuracy; do
  [ -s "report/$png.png" ] || fail "no report/$png.png"
  [ "$(head -c 4 "report/$png.png" | tail -c 3)" = PNG ] || fail "report/$png.png is not a PNG"
done
grep -q "^| codebook_k16 | K-MIM PIXEL | 16 | 0\.[0-9]* | .* | pixel_k16 | [0-9.]* | [0-9.]* |$" report/summary.md \
  || { cat report/summary.md; fail "summary.md: no joined codebook_k16 row"; }
grep -q "^| feature_k12 | K-MIM feature | 12 | " report/summary.md || fail "summary.md: no feature_k12 row"
grep -q "^| label | label (reference) | 10 | 0.0000 |" report/summary.md || fail "summary.md: no label row"
grep -q "^| pixel_k16 | 1 | 10 | " report/summary.md || fail "summary.md: no pretraining row"
grep -q "^| features | features | " report/summary.md || fail "summary.md: no features-mode probe row"
check_error "file 'A.h5': is not a kmim_tcas report" "$BIN/kmim_report" --tcas A.h5 --out report2
echo "PASS: kmim_extract, kmim_tcas feature tokenizer, kmim_linprobe --mode encoder, kmim_report"
