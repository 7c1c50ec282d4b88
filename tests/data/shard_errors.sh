#!/usr/bin/env bash
# kmim_shard on bad input: one clear error naming the thing, exit code != 0, and nothing
# half-written under a final name.
set -uo pipefail
T=${KMIM_TEST_TMP:?}; BIN=${KMIM_BIN_DIR:?}; TESTS=${KMIM_BUILD_DIR:?}/tests
rm -rf "$T"; mkdir -p "$T"; cd "$T" || exit 1
fail() { echo "FAIL: $*" >&2; exit 1; }
"$TESTS/make_test_tree" tree --per-class 3 --no-large > /dev/null || fail "make_test_tree"

# expect_error <name> <pattern> <out> -- kmim_shard args...: the run must fail, print an error
# line matching pattern on stderr, and leave no manifest, no report and no *.partial. (Shards
# completed before the error may stay: they are whole and verified, and a rerun reuses them.)
expect_error() {
  local name=$1 pattern=$2 out=$3; shift 4
  "$@" > "$name.out" 2> "$name.err"
  local rc=$?
  [ $rc -ne 0 ] || fail "$name: exit code 0"
  grep -q "kmim_shard: error: .*$pattern" "$name.err" || { cat "$name.err"; fail "$name: no error line matching '$pattern'"; }
  local lines; lines=$(grep -c "error:" "$name.err")
  [ "$lines" -eq 1 ] || { cat "$name.err"; fail "$name: $lines error lines, expected one"; }
  if [ -d "$out" ]; then
    left=$(find "$out" -maxdepth 1 -name '*.h5' -o -name '*.tsv' -o -name '*.partial')
    [ -z "$left" ] || fail "$name: left behind: $left"
  fi
  echo "ok: $name: $(grep 'error:' "$name.err")"
}
S="$BIN/kmim_shard"

expect_error missing_root "nowhere" o1 -- "$S" --root nowhere --out o1
expect_error missing_root_np2 "nowhere" o1b -- mpirun -np 2 --oversubscribe "$S" --root nowhere --out o1b
printf 'n00000001\nn00000077\n' > unknown.txt
expect_error unknown_class "n00000077" o2 -- "$S" --root tree --out o2 --classes unknown.txt
: > empty.txt
expect_error empty_class_list "empty.txt.*no class" o3 -- "$S" --root tree --out o3 --classes empty.txt
mkdir -p tree/train/n00000009
expect_error empty_class "n00000009" o4 -- "$S" --root tree --out o4
rmdir tree/train/n00000009
touch afile
expect_error unwritable_out "afile" afile/sub -- "$S" --root tree --out afile/sub
if [ "$(id -u)" != 0 ]; then
  mkdir ro && chmod 555 ro
  expect_error readonly_out "ro" ro -- "$S" --root tree --out ro/out
fi
expect_error strict "zero.JPEG\|text.JPEG\|truncated.JPEG" o5 -- "$S" --root tree --out o5 --strict --size 16
expect_error strict_np3 "zero.JPEG\|text.JPEG\|truncated.JPEG" o5b -- mpirun -np 3 --oversubscribe "$S" --root tree --out o5b --strict --size 16 --shard-size 4
expect_error bad_size "option --size" o6 -- "$S" --root tree --out o6 --size 0
expect_error bad_compression "option --compression" o7 -- "$S" --root tree --out o7 --compression 12
expect_error missing_split "nosuch" o8 -- "$S" --root tree --out o8 --splits train,nosuch
expect_error missing_labels "val-labels" o9 -- "$S" --root tree --out o9 --splits val --val-labels missing.csv
# A full disk, simulated with a per-file size limit (SIGXFSZ ignored, so writes fail EFBIG):
# shards of 7 images at 256 px (1.3 MiB) cannot be written under a 512 KiB limit. (MPI's
# singleton start-up needs large shared-memory files: keep it off them.)
( trap '' XFSZ; ulimit -f 512; export PMIX_MCA_gds=hash OMPI_MCA_btl=self; exec "$S" --root tree --out o10 --size 256 --shard-size 7 --threads 1 ) > full.out 2> full.err
rc=$?
[ $rc -ne 0 ] || fail "full disk: exit code 0"
grep -q "kmim_shard: error: .*o10/train/train-00000-of" full.err || { cat full.err; fail "full disk: message does not name the shard"; }
[ -z "$(find o10 -name '*.h5' -o -name '*.partial' -o -name '*.tsv')" ] || fail "full disk: files left: $(find o10 -type f)"
echo "ok: full disk: $(grep 'error:' full.err)"
echo "shard_errors: all checks passed"
