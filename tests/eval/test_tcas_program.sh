#!/usr/bin/env bash
# kmim_tcas end to end on real shards: Fashion-MNIST → JPEG tree (64×64 RGB) → kmim_shard →
# kmim_kmeans pixel codebooks (crop 56, patch 8, K = 10 and 50) → kmim_tcas with the label and
# random references; -np 1 / -np 3 give identical counts; bad inputs give one clear error and
# leave no report.
set -u
T=${KMIM_TEST_TMP:?}; BIN=${KMIM_BIN_DIR:?}
rm -rf "$T"; mkdir -p "$T"; cd "$T"
fail() { echo "FAIL: $*" >&2; exit 1; }
step() { echo "--- $*"; }
export OPENBLAS_NUM_THREADS=1

D=/usr/share/datasets/fashion-mnist
[ -f "$D/train-images-idx3-ubyte.gz" ] || { echo "SKIP: $D missing (dataset-fashion-mnist)"; exit 77; }
for prog in kmim_idx2folder kmim_shard kmim_kmeans kmim_tcas; do
  [ -x "$BIN/$prog" ] || { echo "SKIP: $BIN/$prog not built"; exit 77; }
done
PY=""
for p in /usr/bin/python3 python3; do
  if command -v "$p" >/dev/null && "$p" -c 'import numpy, h5py, sklearn' 2>/dev/null; then PY=$p; break; fi
done

step "shards and codebooks"
"$BIN/kmim_idx2folder" --out fm --size 64 --rgb --per-class-train 60 --per-class-val 30 >/dev/null 2>&1 \
  || fail "kmim_idx2folder"
"$BIN/kmim_shard" --root fm --out shards --size 64 --threads 1 >shard.log 2>&1 || { cat shard.log; fail "kmim_shard"; }
"$BIN/kmim_shard" --root fm --out shards80 --size 80 --splits train --threads 1 >shard80.log 2>&1 \
  || { cat shard80.log; fail "kmim_shard --size 80"; }
for k in 10 50; do
  "$BIN/kmim_kmeans" --manifest shards/train.h5 --out "cb/k$k.h5" -k $k --crop 56 --patch 8 --iters 5 \
    >"k$k.log" 2>&1 || { cat "k$k.log"; fail "kmim_kmeans k=$k"; }
done
# A codebook made for larger images (crop 72): it does not fit the 64×64 val shards.
"$BIN/kmim_kmeans" --manifest shards80/train.h5 --out big/crop72.h5 -k 4 --crop 72 --patch 8 --iters 2 \
  --max-images 50 >big.log 2>&1 || { cat big.log; fail "kmim_kmeans crop 72"; }

step "sweep + references, -np 1 and -np 3"
echo "not a codebook" > cb/k10.h5.ckpt.h5  # a kmim_kmeans checkpoint name: the sweep skips it
tcas=(--manifest shards/val.h5 --sweep 'cb/k*.h5' --label-tokenizer --random-tokenizer 50)
"$BIN/kmim_tcas" "${tcas[@]}" --out np1.h5 >np1.out 2>np1.err || { cat np1.err; fail "kmim_tcas -np 1"; }
cat np1.out
mpirun -np 3 --oversubscribe "$BIN/kmim_tcas" "${tcas[@]}" --batch-images 5 --out np3.h5 >np3.out 2>np3.err \
  || { cat np3.err; fail "kmim_tcas -np 3"; }
grep -q "images/s" np1.err || fail "no progress line with a rate"
grep -q "skipping 'cb/k10.h5.ckpt.h5'" np1.err || fail "the sweep did not skip the checkpoint name"
rows=$(sed -n '/^tokenizer/,/^recommended/p' np1.out)
[ "$(sed -n 2p <<<"$rows" | awk '{print $1}')" = label ] || fail "label must rank first: $rows"
[ "$(sed -n 5p <<<"$rows" | awk '{print $1}')" = random_k50 ] || fail "random must rank last: $rows"
grep -q "<- recommended" <<<"$(sed -n 3p <<<"$rows")" || fail "the best codebook is not marked: $rows"
grep -q "^recommended codebook: cb/k[0-9]*.h5 (TCAS 0\.[0-9]*, lowest among 2 codebooks)" np1.out \
  || fail "no recommendation line"
label_tcas=$(awk '$1 == "label" {print $4}' <<<"$rows")
random_tcas=$(awk '$1 == "random_k50" {print $4}' <<<"$rows")
[ "$label_tcas" = 0.0000 ] || fail "label TCAS $label_tcas"
awk -v r="$random_tcas" 'BEGIN { exit !(r > 0.95 && r < 1.02) }' || fail "random TCAS $random_tcas"
for g in codebook_k10 codebook_k50 label random_k50; do
  diff <(h5dump -d "/$g/counts" np1.h5 | tail -n +2) <(h5dump -d "/$g/counts" np3.h5 | tail -n +2) >/dev/null \
    || fail "-np 3 counts of $g differ from -np 1"
done
h5dump -a /tcas_definition np1.h5 | grep -q "alpha0 = 1 - sum_c p(c)^2" || fail "no TCAS definition in the report"

step "--max-per-class"
"$BIN/kmim_tcas" --manifest shards/val.h5 --codebook cb/k10.h5 --max-per-class 7 --out sample.h5 \
  >sample.out 2>&1 || { cat sample.out; fail "--max-per-class"; }
grep -q "^kmim_tcas: 70 images, 10 classes" sample.out || fail "expected 70 images: $(head -1 sample.out)"

step "bad inputs: one clear line, exit 1, no report"
check_error() {  # expected-substring args...
  local want="$1"; shift
  out=$("$BIN/kmim_tcas" "$@" --out bad.h5 2>&1); rc=$?
  [ $rc -eq 1 ] || fail "expected exit 1 for '$want', got $rc: $out"
  grep -q -- "$want" <<<"$out" || fail "expected '$want' in: $out"
  [ "$(wc -l <<<"$out")" = 1 ] || fail "expected one line, got: $out"
  [ ! -e bad.h5 ] || fail "'$want': a report was left behind"
}
check_error "crop72.h5': crop 72 is larger than the stored images (64×64)" --manifest shards/val.h5 --codebook big/crop72.h5
check_error "missing.h5': does not exist" --manifest shards/missing.h5 --label-tokenizer
check_error "nothing to measure" --manifest shards/val.h5
check_error "option --sweep=nomatch/\*.h5: matches no file" --manifest shards/val.h5 --sweep 'nomatch/*.h5'
check_error "option --random-tokenizer=0: must be at least 1" --manifest shards/val.h5 --random-tokenizer 0
check_error "option --crop=96: is larger than the stored images" --manifest shards/val.h5 --label-tokenizer --crop 96 --patch 8
check_error "shards/train.h5" --manifest shards/val.h5 --codebook shards/train.h5

[ -n "$PY" ] || { echo "SKIP: python3 with numpy, h5py and scikit-learn not found; report cross-check did not run"; exit 77; }
step "report cross-check (numpy TCAS, scikit-learn NMI)"
"$PY" - np1.h5 <<'PYEOF' || fail "report cross-check"
import sys, h5py, numpy as np
from sklearn.metrics import normalized_mutual_info_score
f = h5py.File(sys.argv[1], 'r')
assert f.attrs['kind'] == 'kmim_tcas_report'
assert f.attrs['images'] == 300
names = [n.decode() if isinstance(n, bytes) else n for n in f['tokenizers'][:]]
assert names == ['codebook_k10', 'codebook_k50', 'label', 'random_k50'], names
for name in names:
    g = f[name]; n = g['counts'][:].astype(np.float64); a = g.attrs
    assert n.sum() == 300 * 49, (name, n.sum())
    N = n.sum(); nt = n.sum(1); nc = n.sum(0); used = nt > 0
    alpha = (nt[used] / N * (1 - ((n[used] / nt[used, None]) ** 2).sum(1))).sum()
    alpha0 = 1 - ((nc / N) ** 2).sum()
    assert abs(a['alpha'] - alpha) < 1e-12 and abs(a['alpha0'] - alpha0) < 1e-12, name
    assert abs(a['tcas'] - alpha / alpha0) < 1e-12, name
    t, c = np.nonzero(n)
    reps = n[t, c].astype(int)
    nmi = normalized_mutual_info_score(np.repeat(c, reps), np.repeat(t, reps))
    assert abs(a['nmi'] - nmi) < 1e-9, (name, a['nmi'], nmi)
    p = nt[used] / N
    assert abs(a['perplexity'] - np.exp(-(p * np.log(p)).sum())) < 1e-9
    assert a['dead_tokens'] == (~used).sum()
print('report agrees with numpy and scikit-learn')
PYEOF
echo "PASS: kmim_tcas"
