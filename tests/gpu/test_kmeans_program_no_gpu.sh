#!/bin/bash
# kmim_kmeans --device gpu where it cannot run (CUDA-less build, or no usable GPU): exit 1, one
# error line naming --device and the reason, no codebook, no crash. Skipped (77) on a machine
# where the GPU path works (test_kmeans_program_device.sh covers that). Also the option errors
# that need no device.
set -u
BIN="$KMIM_BIN_DIR/kmim_kmeans"
TOOL="$KMIM_BUILD_DIR/tests/kmeans_device_tool"
T="$KMIM_TEST_TMP"
rm -rf "$T" && mkdir -p "$T" && cd "$T" || exit 1
export OMP_NUM_THREADS=1
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# expect_error NAME MESSAGE_PART ARGS... : exit 1, exactly one stderr line holding the message,
# no codebook or partial file.
expect_error() {
  local name=$1 message=$2
  shift 2
  rm -f out.h5
  "$BIN" --out out.h5 "$@" >"$name.out" 2>"$name.err"
  local rc=$?
  [ $rc -eq 1 ] || fail "$name: exit code $rc, expected 1"
  grep -qF -- "$message" "$name.err" || { fail "$name: stderr lacks '$message'"; cat "$name.err"; }
  [ "$(grep -c . "$name.err")" -eq 1 ] || { fail "$name: not exactly one stderr line"; cat "$name.err"; }
  [ ! -e out.h5 ] || fail "$name: a codebook was written"
  [ ! -e out.h5.partial ] || fail "$name: a partial codebook was left behind"
}

"$TOOL" features blobs.h5 600 8 || exit 1
# Option errors found before any device is touched.
expect_error minibatch "supports --algorithm lloyd only" --features blobs.h5 -k 4 --device gpu --algorithm minibatch
expect_error bad_device "must be 'cpu' or 'gpu'" --features blobs.h5 -k 4 --device tpu
expect_error bad_precision "must be 'fp32' or 'tf32'" --features blobs.h5 -k 4 --device gpu --precision bf16
expect_error cpu_tf32 "applies to --device gpu only" --features blobs.h5 -k 4 --precision tf32
"$BIN" --help | grep -q -- "--device" || fail "--help lacks --device"
"$BIN" --help | grep -q -- "--precision" || fail "--help lacks --precision"

rm -f gpu.h5
"$BIN" --features blobs.h5 -k 4 --iters 2 --device gpu --out gpu.h5 > gpu.out 2> gpu.err
rc=$?
if [ $rc -eq 0 ]; then
  echo "SKIPPED: --device gpu works on this machine (see test_kmeans_program_device)"
  [ $failures -eq 0 ] && exit 77
  exit 1
fi
[ $rc -eq 1 ] || fail "no GPU: exit code $rc, expected 1"
grep -qE "option --device.*(has no CUDA backend|no usable CUDA device)" gpu.err || { fail "no GPU: message"; cat gpu.err; }
[ "$(grep -c . gpu.err)" -eq 1 ] || { fail "no GPU: not exactly one stderr line"; cat gpu.err; }
[ ! -e gpu.h5 ] && [ ! -e gpu.h5.partial ] || fail "no GPU: a codebook was written"
echo "no GPU: $(cat gpu.err)"
[ $failures -eq 0 ] && echo "all checks passed"
exit $((failures > 0))
