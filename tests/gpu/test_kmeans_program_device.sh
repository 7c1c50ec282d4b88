#!/bin/bash
# kmim_kmeans --device gpu end to end against --device cpu (label gpu; exit 77 = skipped when this
# build or machine has no usable GPU). Checks: fp32 codebook within 1e-5 relative of the CPU's and
# the same cluster sizes up to a few near-tie vectors (docs/kmeans.md); the same with two empty
# clusters relocated in iteration 1; tf32 runs; resume on the GPU gives the uninterrupted codebook
# bit for bit; a CPU checkpoint is refused by a GPU run; streaming and bad --precision are errors.
# Env: KMIM_BIN_DIR (kmim_kmeans), KMIM_DEVICE_TOOL (else $KMIM_BUILD_DIR/tests/kmeans_device_tool),
# KMIM_TEST_TMP (scratch).
set -u
BIN="$KMIM_BIN_DIR/kmim_kmeans"
TOOL="${KMIM_DEVICE_TOOL:-$KMIM_BUILD_DIR/tests/kmeans_device_tool}"
T="${KMIM_TEST_TMP:-${TMPDIR:-/tmp}/kmim_kmeans_device}"
rm -rf "$T" && mkdir -p "$T" && cd "$T" || exit 1
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

"$TOOL" features blobs.h5 6000 24 || exit 1
common=(--features blobs.h5 -k 12 --tol 0 --seed 5)

# Probe: no GPU here (or no CUDA backend) → skipped, never passed.
if ! "$BIN" "${common[@]}" --iters 30 --device gpu --out gpu.h5 > gpu.log 2>&1; then
  if grep -qE "no usable CUDA device|has no CUDA backend" gpu.log; then
    echo "SKIPPED: $(tail -1 gpu.log)"
    exit 77
  fi
  cat gpu.log
  echo "FAIL: kmim_kmeans --device gpu"
  exit 1
fi
grep -q "GPU Lloyd on device" gpu.log || fail "GPU path not logged"
grep -q "iteration 30/30" gpu.log || fail "30 iterations not logged"
cat gpu.log | tail -3

"$BIN" "${common[@]}" --iters 30 --device cpu --out cpu.h5 > cpu.log 2>&1 || { cat cpu.log; fail "cpu run"; }
echo "fp32 vs cpu:"; "$TOOL" compare gpu.h5 cpu.h5 1e-5 3 || fail "fp32 GPU codebook differs from the CPU's"

# Both runs reach their fixed point (about 15 and 30 iterations on the CPU): the comparison is of
# converged codebooks, not of float vs fp64 rounding accumulated along a trajectory.
# Two empty clusters in iteration 1 (duplicated initial centroids): the same relocation policy.
"$TOOL" duplicate dup_init.h5 cpu.h5 || exit 1
dup=(--features blobs.h5 -k 12 --tol 0 --iters 40 --init-centroids dup_init.h5)
"$BIN" "${dup[@]}" --device cpu --out dup_cpu.h5 > dup_cpu.log 2>&1 || { cat dup_cpu.log; fail "cpu run (empty clusters)"; }
"$BIN" "${dup[@]}" --device gpu --out dup_gpu.h5 > dup_gpu.log 2>&1 || { cat dup_gpu.log; fail "gpu run (empty clusters)"; }
grep -q "iteration 1/40 .* empty 2 " dup_cpu.log || fail "CPU: two empty clusters in iteration 1"
grep -q "iteration 1/40 .* empty 2 " dup_gpu.log || fail "GPU: two empty clusters in iteration 1"
echo "empty clusters, fp32 vs cpu:"; "$TOOL" compare dup_gpu.h5 dup_cpu.h5 1e-5 3 || fail "GPU relocation differs from the CPU's"

# TF32: runs, logged, and lands near the CPU result (bounded distance error, docs/gpu.md).
"$BIN" "${common[@]}" --iters 30 --device gpu --precision tf32 --out tf32.h5 > tf32.log 2>&1 || { cat tf32.log; fail "tf32 run"; }
grep -q "tf32 precision" tf32.log || fail "tf32 precision not logged"
echo "tf32 vs cpu:"; "$TOOL" compare tf32.h5 cpu.h5 5e-2 600 || fail "tf32 codebook far from the CPU's"

# Resume on the GPU: the interrupted run ends where the uninterrupted one does (bit for bit).
"$BIN" "${common[@]}" --device gpu --iters 6 --out part.h5 > /dev/null 2>&1 || fail "gpu first half"
[ -f part.h5.ckpt.h5 ] || fail "gpu: no checkpoint"
"$BIN" "${common[@]}" --iters 30 --device gpu --resume --out part.h5 > resume.log 2>&1 || { cat resume.log; fail "gpu resume"; }
grep -q "resuming from" resume.log || fail "gpu resume not logged"
echo "resumed vs uninterrupted:"; "$TOOL" compare part.h5 gpu.h5 0 0 || fail "resumed GPU codebook differs"
# A CPU checkpoint does not continue on the GPU (float vs fp64 centroids): refused.
"$BIN" "${common[@]}" --device cpu --iters 3 --out mixed.h5 > /dev/null 2>&1 || fail "cpu first half"
rm -f mixed.h5
if "$BIN" "${common[@]}" --iters 30 --device gpu --resume --out mixed.h5 > mixed.log 2>&1; then fail "cpu checkpoint resumed on the gpu"; fi
grep -q "different settings" mixed.log || { cat mixed.log; fail "cpu checkpoint refusal message"; }
[ ! -e mixed.h5 ] || fail "a codebook was written from a foreign checkpoint"

# Errors only a GPU machine reaches (the rest: test_kmeans_program_no_gpu.sh).
rm -f s.h5
if "$BIN" "${common[@]}" --iters 2 --device gpu --memory-limit 0 --out s.h5 > stream.log 2>&1; then fail "streaming accepted"; fi
grep -q "needs every rank's vectors cached in memory" stream.log || { cat stream.log; fail "streaming message"; }
[ ! -e s.h5 ] || fail "streaming: a codebook was written"

[ $failures -eq 0 ] && echo "all kmim_kmeans --device gpu checks passed"
exit $((failures > 0))
