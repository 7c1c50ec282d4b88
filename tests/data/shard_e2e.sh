#!/usr/bin/env bash
# kmim_shard end to end: rank-count independence (-np 1, 2, 3), reading the output through the
# VDS manifest with h5dump and h5py (also after moving the folder), resume after damage and
# after kill -9, flat val layouts, class subsets.
set -euo pipefail
T=${KMIM_TEST_TMP:?}; BIN=${KMIM_BIN_DIR:?}; TESTS=${KMIM_BUILD_DIR:?}/tests
rm -rf "$T"; mkdir -p "$T"; cd "$T"
fail() { echo "FAIL: $*" >&2; exit 1; }
step() { echo "--- $*"; }

PY=""
for p in python3 /usr/bin/python3; do
  if command -v "$p" >/dev/null && "$p" -c 'import h5py, numpy' 2>/dev/null; then PY=$p; break; fi
done

"$TESTS/make_test_tree" tree --per-class 8
NAMES=tree/LOC_synset_mapping.txt
shard() {  # shard <np> <out> [options...]
  local np=$1 out=$2; shift 2
  mpirun -np "$np" --oversubscribe "$BIN/kmim_shard" --root tree --out "$out" --size 32 \
    --shard-size 7 --threads 1 --class-names "$NAMES" "$@" > "$out.stdout" 2> "$out.stderr" \
    || { cat "$out.stderr"; fail "kmim_shard -np $np $out failed"; }
}
tables() { h5dump -d /shard_checksums -d /shard_offsets -d /class_counts -a /fingerprint "$1" | grep -v HDF5; }

step "rank-count independence"
for np in 1 2 3; do shard "$np" "np$np" --shuffle --seed 11; done
cat np3.stdout
grep -q "^train: .* 3 skipped" np1.stdout || fail "train should skip the 3 broken files"
for np in 2 3; do
  for split in train val; do
    diff <(tables "np1/$split.h5") <(tables "np$np/$split.h5") > /dev/null \
      || fail "-np $np: $split checksums differ from -np 1"
    for f in np1/$split/*.h5; do
      h=$(basename "$f")
      [ "$(h5dump -a /checksum "$f" | grep '(0)')" = "$(h5dump -a /checksum "np$np/$split/$h" | grep '(0)')" ] \
        || fail "-np $np: checksum of $h differs"
    done
  done
  summary() { sed -e 's/ [0-9.]* images\/s//' -e 's/(see [^)]*)//' "$1"; }
  diff <(summary np1.stdout) <(summary "np$np.stdout") \
    || fail "-np $np: summary differs"
done
sort np1/train_skipped.tsv | cut -f1 > skipped.txt
diff skipped.txt <(printf 'train/n00000002/text.JPEG\ntrain/n00000002/truncated.JPEG\ntrain/n00000002/zero.JPEG\n') \
  || fail "skipped report lists the wrong files"
grep -q "rank(s)" np2.stderr || fail "no start-up log line"
grep -q "images/s" np2.stderr || fail "no progress line with a rate"

step "h5dump reads through the virtual datasets"
mkdir -p elsewhere && (cd elsewhere && h5dump -d /images -s "0,0,0,0" -c "2,1,2,3" ../np2/train.h5) > vds.txt
grep -q "DATASET \"/images\"" vds.txt || fail "h5dump cannot read the VDS"
h5dump -H np2/train/train-00000-of-*.h5 | grep -q 'DATASET "images"' || fail "shard has no images"

if [ -n "$PY" ]; then
  step "h5py reads through the virtual datasets (also after moving the folder)"
  mv np2 moved && cd elsewhere
  "$PY" - ../moved <<'PYEOF'
import sys, zlib, h5py, numpy as np
out = sys.argv[1]
m = h5py.File(f"{out}/train.h5", "r")
n = m.attrs["num_images"]; assert m["images"].shape == (n, 32, 32, 3), m["images"].shape
assert m["images"].dtype == np.uint8 and m["labels"].dtype == np.int32
assert m.attrs["format"] == "kmim_shard_manifest"
imgs, labels = m["images"][:], m["labels"][:]
assert imgs.any(), "VDS returned zeros (sources not found?)"
offs = m["shard_offsets"][:]
for k, name in enumerate(m["shard_files"].asstr()[:]):
    s = h5py.File(f"{out}/{name}", "r")
    si, sl = s["images"][:], s["labels"][:]
    assert (si == imgs[offs[k]:offs[k + 1]]).all() and (sl == labels[offs[k]:offs[k + 1]]).all()
    crc = zlib.crc32(sl.astype("<i4").tobytes(), zlib.crc32(si.tobytes()))
    assert crc == s.attrs["checksum"] == m["shard_checksums"][k], (name, crc)
    assert m["images"][offs[k]].tobytes() == si[0].tobytes() if len(si) else True
assert (np.bincount(labels, minlength=3) == m["class_counts"][:]).all()
print("h5py ok:", n, "images,", len(offs) - 1, "shards")
PYEOF
  cd .. && mv moved np2
else
  echo "(h5py not found: skipping the h5py check)"
fi

step "resume: a deleted and a damaged shard are redone, the rest reused"
cp -r np1 resumed
rm resumed/train/train-00001-of-*.h5
victim=$(ls resumed/train/train-00003-of-*.h5)
size=$(stat -c %s "$victim")
printf '\xde\xad\xbe\xef\xde\xad\xbe\xef' | dd of="$victim" bs=1 seek=$((size - 3000)) conv=notrunc 2>/dev/null
shard 2 resumed --shuffle --seed 11
grep "^train:" resumed.stdout
shards=$(grep "^train:" resumed.stdout | sed 's/.* in \([0-9]*\) shards (\([0-9]*\) reused).*/\1 \2/')
set -- $shards
[ "$2" -eq $(( $1 - 2 )) ] || fail "expected $(( $1 - 2 )) reused train shards, got '$shards'"
grep -q "^val: .* in 2 shards (2 reused)" resumed.stdout || fail "val shards should be reused"
diff <(tables np1/train.h5) <(tables resumed/train.h5) > /dev/null || fail "resumed output differs from a clean run"
grep -q "rewriting" resumed.stderr || fail "the damaged shard was not reported"

step "resume after kill -9"
"$TESTS/make_test_tree" big --per-class 60 --no-large --no-special > /dev/null
killrun() { exec "$BIN/kmim_shard" --root big --out "$1" --size 128 --shard-size 2 --threads 1 --splits train "${@:2}"; }
(killrun killed) > killed.log 2>&1 &
pid=$!  # the kmim_shard process itself (exec), not a subshell
killed_mid_run=0
for _ in $(seq 1 500); do
  n=$( (ls killed/train/*.h5 2>/dev/null || true) | wc -l)
  if [ "$n" -ge 5 ] && [ ! -e killed/train.h5 ]; then kill -9 "$pid"; killed_mid_run=1; break; fi
  [ -e killed/train.h5 ] && break
  sleep 0.02
done
wait "$pid" 2>/dev/null || true
if [ "$killed_mid_run" = 1 ]; then
  [ ! -e killed/train.h5 ] || fail "a manifest exists after kill -9"
  (killrun killed) > killed2.log 2>&1 || { cat killed2.log; fail "rerun after kill failed"; }
  (killrun clean) > clean.log 2>&1 || fail "clean run failed"
  diff <(tables clean/train.h5) <(tables killed/train.h5) > /dev/null || fail "rerun after kill -9 differs from a clean run"
  reused=$(grep "^train:" killed2.log | sed 's/.*(\([0-9]*\) reused).*/\1/')
  [ "$reused" -ge 5 ] || fail "the rerun reused $reused shards; at least 5 were complete"
  [ -z "$(find killed -name '*.partial')" ] || fail "temporary files left after the rerun"
  echo "killed mid-run after $n shards; rerun matches a clean run"
else
  echo "WARNING: the run finished before it could be killed; kill -9 resume not exercised"
fi

step "flat val (LOC_val_solution.csv and 'filename wnid' list) = val in class folders"
"$TESTS/make_test_tree" flatcsv --per-class 2 --no-special --val-layout csv > /dev/null
"$TESTS/make_test_tree" flatlist --per-class 2 --no-special --val-layout list > /dev/null
"$TESTS/make_test_tree" folders --per-class 2 --no-special > /dev/null
for t in flatcsv flatlist folders; do
  extra=(); [ $t = flatlist ] && extra=(--val-labels flatlist/val_labels.txt)
  "$BIN/kmim_shard" --root $t --out out_$t --splits val --size 16 "${extra[@]}" > $t.stdout 2> $t.stderr \
    || { cat $t.stderr; fail "flat val $t failed"; }
done
fp() { grep "^val:" "$1" | sed 's/.*fingerprint //'; }
[ "$(fp flatcsv.stdout)" = "$(fp folders.stdout)" ] || fail "csv-labelled val differs from class folders"
[ "$(fp flatlist.stdout)" = "$(fp folders.stdout)" ] || fail "list-labelled val differs from class folders"

step "class subset"
printf 'n00000003\nn00000001\n' > subset.txt
"$BIN/kmim_shard" --root tree --out subset --classes subset.txt --size 16 > subset.stdout 2>&1 \
  || { cat subset.stdout; fail "subset run failed"; }
h5dump -d /class_ids subset/val.h5 | grep -q '"n00000001", "n00000003"' || fail "subset class table wrong"
h5dump -a /num_classes subset/train.h5 | grep -q '(0): 2' || fail "subset should have 2 classes"

echo "shard_e2e: all checks passed"
