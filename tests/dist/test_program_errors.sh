#!/usr/bin/env bash
# run_program's error contract under real mpirun: one clear line, non-zero exit, no hang.
set -u
probe="$KMIM_BUILD_DIR/tests/kmim_error_probe"
fail() { echo "FAIL: $*"; exit 1; }

# 1. An error on rank 1 of 2 while rank 0 waits in a barrier: the job is aborted (no hang),
#    the message names the rank, the file and the problem.
out=$(timeout 60 mpirun -np 2 --oversubscribe "$probe" --fail-rank 1 2>&1); rc=$?
[ $rc -ne 0 ] || fail "expected a non-zero exit, got 0"
[ $rc -ne 124 ] || fail "the job hung instead of aborting"
grep -q "kmim_error_probe: error: \[rank 1/2\] file 'input.h5': probe failure on purpose" <<<"$out" \
  || fail "missing error line in: $out"

# 2. Three ranks oversubscribed, error on rank 2.
out=$(timeout 60 mpirun -np 3 --oversubscribe "$probe" --fail-rank 2 2>&1); rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "3 ranks: rc=$rc"
grep -q "\[rank 2/3\]" <<<"$out" || fail "3 ranks: missing rank in: $out"

# 3. A bad option is reported once (by rank 0), exit 1, without MPI_Abort noise.
out=$(timeout 60 mpirun -np 2 --oversubscribe "$probe" --k 0 2>&1); rc=$?
[ $rc -ne 0 ] || fail "bad option: expected non-zero exit"
[ "$(grep -c 'option --k=0: must be at least 1' <<<"$out")" = 1 ] || fail "bad option: not exactly one line: $out"

# 4. Singleton (no mpirun): error → exit 1 and the plain message.
out=$("$probe" --fail-rank 0 2>&1); rc=$?
[ $rc -eq 1 ] || fail "singleton: expected exit 1, got $rc"
[ "$out" = "kmim_error_probe: error: file 'input.h5': probe failure on purpose" ] || fail "singleton: got '$out'"
out=$("$probe" --nonsense 2>&1); rc=$?
[ $rc -eq 1 ] || fail "unknown option: expected exit 1"
grep -q "unrecognised option '--nonsense'" <<<"$out" || fail "unknown option: got '$out'"

# 5. Success path.
timeout 60 mpirun -np 2 --oversubscribe "$probe" >/dev/null 2>&1 || fail "success path failed"
echo "PASS: run_program error contract"
