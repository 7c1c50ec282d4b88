#!/usr/bin/env bash
# kmim_idx2folder end to end: real Fashion-MNIST IDX files (Debian dataset-fashion-mnist) and
# hand-made malformed IDX files.
set -u
bin="$KMIM_BIN_DIR/kmim_idx2folder"
tmp="$KMIM_TEST_TMP"; rm -rf "$tmp"; mkdir -p "$tmp"
fail() { echo "FAIL: $*"; exit 1; }

# 1. A small real tree, RGB, upscaled to 64, two ranks.
mpirun -np 2 --oversubscribe "$bin" --out "$tmp/fm" --size 64 --rgb --per-class-train 7 \
  --per-class-val 3 >"$tmp/log" 2>&1 || { cat "$tmp/log"; fail "conversion failed"; }
[ "$(ls "$tmp/fm/train" | wc -l)" = 10 ] || fail "expected 10 class folders"
[ "$(ls "$tmp/fm/train" | head -1)" = c0_tshirt_top ] || fail "class folder names"
[ "$(find "$tmp/fm/train" -name '*.JPEG' | wc -l)" = 70 ] || fail "expected 70 train images"
[ "$(find "$tmp/fm/val" -name '*.JPEG' | wc -l)" = 30 ] || fail "expected 30 val images"
grep -q '^c9_ankle_boot Ankle boot$' "$tmp/fm/LOC_synset_mapping.txt" || fail "class mapping"
# The first training image of Fashion-MNIST is an ankle boot (label 9): index 000000.
[ -f "$tmp/fm/train/c9_ankle_boot/c9_ankle_boot_000000.JPEG" ] || fail "deterministic names"
python3 - "$tmp/fm/train/c9_ankle_boot/c9_ankle_boot_000000.JPEG" <<'PY' || fail "JPEG header"
import struct, sys
data = open(sys.argv[1], 'rb').read()
assert data[:2] == b'\xff\xd8', 'not a JPEG'
i = 2
while i < len(data):
    marker, length = data[i + 1], struct.unpack('>H', data[i + 2:i + 4])[0]
    if marker in (0xC0, 0xC2):
        h, w, comps = struct.unpack('>HHB', data[i + 5:i + 10])
        assert (w, h, comps) == (64, 64, 3), (w, h, comps)
        sys.exit(0)
    i += 2 + length
sys.exit('no SOF marker')
PY
# Rerunning with the same options keeps the tree; different options are refused.
"$bin" --out "$tmp/fm" --size 64 --rgb --per-class-train 7 --per-class-val 3 2>&1 | grep -q "already complete" \
  || fail "rerun should keep the existing tree"
out=$("$bin" --out "$tmp/fm" --size 32 2>&1); rc=$?
[ $rc -ne 0 ] && grep -q "different configuration" <<<"$out" || fail "changed options must be refused: $out"

# 2. Malformed IDX input: one clear error naming the file, exit 1, no split left behind.
python3 - "$tmp" <<'PY'
import gzip, struct, sys
d = sys.argv[1]
def idx(dims, body):
    return bytes([0, 0, 8, len(dims)]) + b''.join(struct.pack('>I', x) for x in dims) + body
gzip.open(f'{d}/img.gz', 'wb').write(idx([4, 2, 2], bytes(16)))
gzip.open(f'{d}/lab.gz', 'wb').write(idx([4], bytes([0, 1, 0, 1])))
gzip.open(f'{d}/lab3.gz', 'wb').write(idx([3], bytes([0, 1, 0])))
gzip.open(f'{d}/trunc.gz', 'wb').write(idx([4, 2, 2], bytes(10)))
gzip.open(f'{d}/magic.gz', 'wb').write(b'\x1f\x8b' + idx([4, 2, 2], bytes(16))[2:])
PY
check_error() {  # expected-substring args...
  local want="$1"; shift
  out=$("$bin" "$@" 2>&1); rc=$?
  [ $rc -eq 1 ] || fail "expected exit 1 for '$want', got $rc: $out"
  grep -q -- "$want" <<<"$out" || fail "expected '$want' in: $out"
  [ "$(wc -l <<<"$out")" = 1 ] || fail "expected one line, got: $out"
}
common=(--val-images "$tmp/img.gz" --val-labels "$tmp/lab.gz")
check_error "lab3.gz': holds 3 labels but" --out "$tmp/bad1" --train-images "$tmp/img.gz" --train-labels "$tmp/lab3.gz" "${common[@]}"
check_error "trunc.gz': truncated" --out "$tmp/bad2" --train-images "$tmp/trunc.gz" --train-labels "$tmp/lab.gz" "${common[@]}"
check_error "magic.gz': not an IDX file" --out "$tmp/bad3" --train-images "$tmp/magic.gz" --train-labels "$tmp/lab.gz" "${common[@]}"
check_error "option --size=0" --out "$tmp/bad4" --size 0
check_error "missing.gz': does not exist" --out "$tmp/bad5" --train-images "$tmp/missing.gz"
for b in bad1 bad2 bad3; do [ ! -e "$tmp/$b/train" ] || fail "$b: a final split was left behind"; done
# A tiny valid IDX pair converts (2x2 images upscaled to 8).
"$bin" --out "$tmp/tiny" --size 8 --train-images "$tmp/img.gz" --train-labels "$tmp/lab.gz" \
  "${common[@]}" --class-names none >/dev/null 2>&1 || fail "tiny conversion"
[ -f "$tmp/tiny/train/c1_class_1/c1_class_1_000003.JPEG" ] || fail "tiny names: $(find "$tmp/tiny")"
echo "PASS: kmim_idx2folder"
