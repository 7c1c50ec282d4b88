#!/bin/bash
# kmim_kmeans end to end: good runs, every bad input (exit code, one clear message, no codebook),
# resume equivalence, rank-count invariance, and pixel mode on real Fashion-MNIST shards.
set -u
BIN="$KMIM_BIN_DIR/kmim_kmeans"
TOOL="$KMIM_BUILD_DIR/tests/kmeans_test_tool"
T="$KMIM_TEST_TMP"
rm -rf "$T" && mkdir -p "$T" && cd "$T" || exit 1
export OMP_NUM_THREADS=1
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# expect_error NAME MESSAGE_PART ARGS... : non-zero exit, the message on stderr, no codebook.
expect_error() {
  local name=$1 message=$2
  shift 2
  rm -f out.h5
  "$BIN" --out out.h5 "$@" >"$name.out" 2>"$name.err"
  local rc=$?
  [ $rc -ne 0 ] || fail "$name: exit code 0"
  grep -qF -- "$message" "$name.err" || { fail "$name: stderr lacks '$message'"; cat "$name.err"; }
  [ "$(grep -c 'error' "$name.err")" -le 1 ] || { fail "$name: more than one error line"; cat "$name.err"; }
  [ ! -e out.h5 ] || fail "$name: a codebook was written"
  [ ! -e out.h5.partial ] || fail "$name: a partial codebook was left behind"
}

"$TOOL" features good.h5 3000 16 || exit 1
"$TOOL" features nan.h5 300 16 nan || exit 1
"$TOOL" features empty.h5 0 16 empty || exit 1
"$TOOL" features onedim.h5 300 16 onedim || exit 1
"$TOOL" features double.h5 300 16 float64 || exit 1
echo "not hdf5" > garbage.h5

# ---- good runs -------------------------------------------------------------------------------
"$BIN" --features good.h5 -k 5 --iters 20 --out good_cb.h5 > good.log 2>&1 || { fail "good run"; cat good.log; }
[ -f good_cb.h5 ] || fail "good run wrote no codebook"
h5dump -a kind good_cb.h5 | grep -q kmim_codebook || fail "codebook kind attribute"
h5dump -a mode good_cb.h5 | grep -q '"feature"' || fail "codebook mode attribute"
h5dump -a input_fingerprint good_cb.h5 > /dev/null || fail "fingerprint attribute"
h5dump -H -d centroids good_cb.h5 | grep -q "( 5, 16 )" || fail "centroids shape"
h5dump -H -d cluster_sizes good_cb.h5 | grep -q "( 5 )" || fail "cluster_sizes shape"
grep -q "iteration 1/20  inertia" good.log || fail "per-iteration log line"
grep -q "GFLOP/s" good.log || fail "GFLOP/s in the log"
grep -q "cached in memory" good.log || fail "cache decision logged"
"$BIN" --features good.h5 -k 5 --iters 3 --memory-limit 0 --out stream_cb.h5 > stream.log 2>&1 || fail "streaming run"
grep -q "streaming the vectors" stream.log || fail "streaming decision logged"
"$BIN" --features good.h5 --k=5 --algorithm minibatch --batch-images 100 --passes 3 --out mb_cb.h5 > mb.log 2>&1 \
  || { fail "minibatch run"; cat mb.log; }
grep -q "pass 3/3" mb.log || fail "minibatch passes logged"
"$BIN" --help | grep -q -- "--patches-per-image" || fail "--help lists the options"
# Starting from given centroids (here: the codebook of the first run).
"$BIN" --features good.h5 -k 5 --iters 2 --init-centroids good_cb.h5 --out given_cb.h5 > given.log 2>&1 \
  || { fail "--init-centroids run"; cat given.log; }
h5dump -a init given_cb.h5 | grep -q '"given"' || fail "--init-centroids recorded"

# ---- bad inputs ------------------------------------------------------------------------------
expect_error k_too_large "is larger than the number of input vectors (300" --features nan.h5 -k 301
expect_error nan_vector "is NaN" --features nan.h5 -k 3
expect_error empty_input "is empty" --features empty.h5 -k 3
expect_error dimension "expected 2 dimensions" --features onedim.h5 -k 3
expect_error float64 "expected float32" --features double.h5 -k 3
expect_error no_dataset "has no dataset 'vectors'" --features good.h5 --dataset vectors -k 3
expect_error missing_features "does not exist" --features nowhere.h5 -k 3
expect_error missing_manifest "does not exist" --manifest nowhere.h5 -k 3
expect_error garbage_manifest "garbage.h5" --manifest garbage.h5 -k 3
expect_error two_inputs "exactly one input" --manifest garbage.h5 --features good.h5
expect_error no_input "exactly one input" -k 3
expect_error bad_k "--k=0" --features good.h5 -k 0
expect_error bad_algorithm "must be 'lloyd' or 'minibatch'" --features good.h5 --algorithm elkan
expect_error bad_memory "--memory-limit=lots" --features good.h5 --memory-limit lots
expect_error init_shape "must be float32 [k=6, d=16]" --features good.h5 -k 6 --init-centroids good_cb.h5
expect_error bad_normalize "must be 'imagenet' or 'none'" --manifest garbage.h5 --normalize zscore

# ---- resume: an interrupted run continues to the same codebook ----------------------------------
for algo in lloyd minibatch; do
  common=(--features good.h5 -k 7 --tol 0 --algorithm "$algo" --batch-images 500)
  "$BIN" "${common[@]}" --seed 3 --iters 6 --passes 6 --out full_$algo.h5 > /dev/null 2>&1 || fail "$algo full run"
  "$BIN" "${common[@]}" --seed 3 --iters 3 --passes 3 --out part_$algo.h5 > /dev/null 2>&1 || fail "$algo first half"
  [ -f part_$algo.h5.ckpt.h5 ] || fail "$algo: no checkpoint"
  "$BIN" "${common[@]}" --seed 3 --iters 6 --passes 6 --resume --out part_$algo.h5 > resume_$algo.log 2>&1 || fail "$algo resume"
  grep -q "resuming from" resume_$algo.log || fail "$algo: resume not logged"
  "$TOOL" compare part_$algo.h5 full_$algo.h5 0 > /dev/null || fail "$algo: resumed codebook differs from the uninterrupted one"
  # A checkpoint of different settings is refused.
  cp part_$algo.h5.ckpt.h5 out.h5.ckpt.h5
  expect_error resume_mismatch_$algo "different settings" "${common[@]}" --seed 4 --resume --iters 9 --passes 9
  rm -f out.h5.ckpt.h5
done

# ---- preemption: SIGUSR1 → checkpoint at the next iteration, exit 75, resume to the same result --
"$TOOL" features big.h5 50000 16 || exit 1
pre=(--features big.h5 -k 32 --iters 1000 --tol 0 --seed 2 --checkpoint-every 0)
"$BIN" "${pre[@]}" --out pre.h5 > pre.log 2>&1 &
pid=$!
for _ in $(seq 1 400); do grep -q "iteration 3/" pre.log && break; sleep 0.05; done
kill -USR1 $pid
wait $pid
rc=$?
if [ $rc -eq 0 ] && ! grep -q "stopped on request" pre.log; then
  echo "note: the run finished before SIGUSR1 arrived; preemption not checked"
else
  [ $rc -eq 75 ] || { fail "SIGUSR1: exit code $rc, expected 75"; cat pre.log; }
  grep -q "stopped on request" pre.log || fail "SIGUSR1: not logged"
  [ ! -e pre.h5 ] || fail "SIGUSR1: a codebook was written"
  [ -f pre.h5.ckpt.h5 ] || fail "SIGUSR1: no checkpoint"
  "$BIN" "${pre[@]}" --resume --out pre.h5 > pre_resume.log 2>&1 || { fail "resume after SIGUSR1"; cat pre_resume.log; }
  "$BIN" "${pre[@]}" --out pre_full.h5 > /dev/null 2>&1 || fail "uninterrupted run"
  "$TOOL" compare pre.h5 pre_full.h5 0 > /dev/null || fail "SIGUSR1 + resume differs from an uninterrupted run"
fi

# ---- rank counts -------------------------------------------------------------------------------
if command -v mpirun > /dev/null; then
  for np in 2 3; do
    mpirun -np $np --oversubscribe "$BIN" --features good.h5 -k 6 --iters 8 --tol 0 --out np$np.h5 > np$np.log 2>&1 \
      || { fail "mpirun -np $np"; cat np$np.log; }
  done
  "$BIN" --features good.h5 -k 6 --iters 8 --tol 0 --out np1.h5 > /dev/null 2>&1 || fail "np1 run"
  "$TOOL" compare np2.h5 np1.h5 1e-6 || fail "-np 2 differs from -np 1 by more than 1e-6"
  "$TOOL" compare np3.h5 np1.h5 1e-6 || fail "-np 3 differs from -np 1 by more than 1e-6"
  # A bad input on several ranks: still one clear message and a non-zero exit.
  mpirun -np 2 --oversubscribe "$BIN" --features nan.h5 -k 3 --out out_np2.h5 > mpi_nan.out 2> mpi_nan.err
  [ $? -ne 0 ] || fail "mpirun with a NaN input exited 0"
  grep -q "is NaN" mpi_nan.err || fail "mpirun NaN message"
  [ ! -e out_np2.h5 ] || fail "mpirun NaN run wrote a codebook"
fi

# ---- pixel mode on real images (Fashion-MNIST → JPEG tree → shards) ---------------------------
FM=/usr/share/datasets/fashion-mnist
if [ -x "$KMIM_BIN_DIR/kmim_idx2folder" ] && [ -x "$KMIM_BIN_DIR/kmim_shard" ] && [ -f $FM/train-images-idx3-ubyte.gz ]; then
  "$KMIM_BIN_DIR/kmim_idx2folder" --out fm --per-class-train 30 --per-class-val 5 --rgb > prep.log 2>&1 \
    && "$KMIM_BIN_DIR/kmim_shard" --root fm --out shards --size 32 --shard-size 64 --splits train >> prep.log 2>&1 \
    || { fail "preparing shards"; cat prep.log; }
  if [ -f shards/train.h5 ]; then
    "$BIN" --manifest shards/train.h5 -k 8 --crop 28 --patch 7 --iters 5 --out pixel.h5 > pixel.log 2>&1 \
      || { fail "pixel mode run"; cat pixel.log; }
    h5dump -a mode pixel.h5 | grep -q '"pixel"' || fail "pixel codebook mode"
    h5dump -a patch_size pixel.h5 | grep -q "(0): 7" || fail "pixel codebook patch_size"
    h5dump -H -d centroids pixel.h5 | grep -q "( 8, 147 )" || fail "pixel centroids shape (7*7*3 = 147)"
    grep -q "300 items × 16 vectors" pixel.log || { fail "pixel vector count"; cat pixel.log; }
    grep -q "cached in memory as pixel bytes" pixel.log || fail "pixel mode caches bytes"
    # Streaming (floats read every pass) and the byte cache give the same codebook.
    "$BIN" --manifest shards/train.h5 -k 8 --crop 28 --patch 7 --iters 5 --memory-limit 0 --out pixel_stream.h5 \
      > pixel_stream.log 2>&1 || { fail "pixel mode streaming run"; cat pixel_stream.log; }
    "$TOOL" compare pixel_stream.h5 pixel.h5 0 > /dev/null || fail "pixel mode: streaming and byte cache differ"
    "$BIN" --manifest shards/train.h5 -k 8 --crop 28 --patch 7 --max-images 100 --patches-per-image 5 \
      --algorithm minibatch --batch-images 20 --passes 2 --out pixel_mb.h5 > pixel_mb.log 2>&1 \
      || { fail "pixel minibatch run"; cat pixel_mb.log; }
    grep -q "100 items × 5 vectors" pixel_mb.log || fail "pixel subset counts"
    expect_error bad_patch "must divide the crop size 28" --manifest shards/train.h5 --crop 28 --patch 5
    expect_error bad_crop "is larger than the stored images" --manifest shards/train.h5 --crop 64 --patch 8
    if command -v mpirun > /dev/null; then
      mpirun -np 2 --oversubscribe "$BIN" --manifest shards/train.h5 -k 8 --crop 28 --patch 7 --iters 5 --out pixel_np2.h5 \
        > pixel_np2.log 2>&1 || { fail "pixel mode on 2 ranks"; cat pixel_np2.log; }
      "$TOOL" compare pixel_np2.h5 pixel.h5 1e-6 || fail "pixel mode: 2 ranks differ from 1"
    fi
  fi
else
  echo "note: pixel-mode part skipped (kmim_idx2folder/kmim_shard not built or Fashion-MNIST missing)"
fi

if [ $failures -ne 0 ]; then
  echo "$failures failure(s)"
  exit 1
fi
echo "all kmim_kmeans program checks passed"
