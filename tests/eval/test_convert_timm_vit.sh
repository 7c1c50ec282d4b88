#!/usr/bin/env bash
# tools/convert_timm_vit.py against a PyTorch reference ViT (convert_timm_vit_check.py): DINO,
# DeiT and timm layouts, randomly initialised, converted and run through kmim's encoder (and
# kmim_extract on real 32x32 shards) within fp32 tolerance; a real-size ViT-S/16 conversion.
# Needs Debian's python3-torch, python3-numpy and python3-h5py (/usr/bin/python3).
set -u
T=${KMIM_TEST_TMP:?}; BIN=${KMIM_BIN_DIR:?}; TESTS=${KMIM_BUILD_DIR:?}/tests; SRC=${KMIM_SOURCE_DIR:?}
rm -rf "$T"; mkdir -p "$T"; cd "$T"
fail() { echo "FAIL: $*" >&2; exit 1; }
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=2 OMP_WAIT_POLICY=PASSIVE
PY=/usr/bin/python3
"$PY" -c 'import torch, numpy, h5py' 2>/dev/null \
  || { echo "SKIP: $PY lacks torch/numpy/h5py (Debian: python3-torch python3-numpy python3-h5py)"; exit 77; }
for prog in kmim_idx2folder kmim_shard kmim_extract; do
  [ -x "$BIN/$prog" ] || { echo "SKIP: $BIN/$prog not built"; exit 77; }
done
[ -x "$TESTS/kmim_test_encoder_tokens" ] || { echo "SKIP: kmim_test_encoder_tokens not built"; exit 77; }
manifest=""
if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  "$BIN/kmim_idx2folder" --out fm --size 32 --rgb --per-class-train 1 --per-class-val 2 > data.log 2>&1 \
    && "$BIN/kmim_shard" --root fm --out sh --size 32 --splits val --threads 1 >> data.log 2>&1 \
    || { cat data.log; fail "making the shards"; }
  manifest=sh/val.h5
fi
"$PY" "$SRC/tests/eval/convert_timm_vit_check.py" "$SRC/tools/convert_timm_vit.py" \
  "$TESTS/kmim_test_encoder_tokens" "$BIN" work $manifest || fail "convert_timm_vit_check.py"
