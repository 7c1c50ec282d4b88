#!/usr/bin/env bash
# The kmim demo, end to end on real images (Fashion-MNIST from Debian's dataset-fashion-mnist):
# installs dependencies, builds (Release), converts the IDX files into an ImageNet-style JPEG
# tree and runs the pipeline stages that exist on it. Outputs go to ${KMIM_DEMO_DIR:-demo}.
#
# Environment: KMIM_DEMO_DIR (output folder), KMIM_DEMO_RANKS (MPI ranks, default 2),
# KMIM_BUILD_DIR (build folder, default build).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export KMIM_BUILD_DIR="${KMIM_BUILD_DIR:-$here/build}"
demo="${KMIM_DEMO_DIR:-$here/demo}"
ranks="${KMIM_DEMO_RANKS:-2}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
# mpirun binds each rank to one core by default, which starves the OpenMP threads inside a rank.
export OMPI_MCA_hwloc_base_binding_policy=none
export HDF5_USE_FILE_LOCKING=FALSE OMP_WAIT_POLICY=PASSIVE
bin="$KMIM_BUILD_DIR/bin"
run() { echo "+ $*"; "$@"; }

"$here/scripts/install_deps.sh"
"$here/scripts/build.sh"
mkdir -p "$demo"

echo "== 1. demo data: Fashion-MNIST → ImageNet-style JPEG tree (64x64 RGB, 500/100 per class)"
run mpirun -np "$ranks" "$bin/kmim_idx2folder" --out "$demo/fmnist" --size 64 --rgb \
  --per-class-train 500 --per-class-val 100

echo "== 2. kmim_shard: JPEG tree → HDF5 shards (resize 40 + centre crop, like Resize(256)+CenterCrop at ImageNet scale)"
run mpirun -np "$ranks" "$bin/kmim_shard" --root "$demo/fmnist" --out "$demo/shards" --size 40 --shard-size 1024

echo "== 3. kmim_kmeans: pixel codebooks over 4x4 patches of the centred 32x32 crop, K = 10, 50, 200"
for k in 10 50 200; do
  run mpirun -np "$ranks" "$bin/kmim_kmeans" --manifest "$demo/shards/train.h5" \
    --out "$demo/codebooks/pixel_k$k.h5" --k "$k" --crop 32 --patch 4 --iters 30 --seed 0
done

echo "== 4. kmim_tcas: which tokenizer aligns tokens with classes best (before any pretraining)"
run mpirun -np "$ranks" "$bin/kmim_tcas" --manifest "$demo/shards/val.h5" \
  --sweep "$demo/codebooks/pixel_k*.h5" --label-tokenizer --random-tokenizer 50 --out "$demo/tcas.h5"

echo "== 5. kmim_pretrain: vit_tiny_demo (img 32, patch 4) for K-MIM with each codebook, the MAE"
echo "      pixel baseline, and the label / random tokenizers (8 epochs each, global batch 128)"
pretrain() {  # name, extra options...
  local name="$1"; shift
  run mpirun -np "$ranks" "$bin/kmim_pretrain" --manifest "$demo/shards/train.h5" \
    --out-dir "$demo/pretrain/$name" --model vit_tiny_demo --epochs 8 --batch-size 128 \
    --warmup-epochs 1 --blr 1.5e-3 --seed 0 --log-every 10 --resume auto "$@"
}
for k in 10 50 200; do pretrain "kmim_pixel_k$k" --tokenizer pixel --codebook "$demo/codebooks/pixel_k$k.h5"; done
pretrain mae --loss mae
pretrain label --tokenizer label
pretrain random_k50 --tokenizer random --random-k 50

echo "kmim demo finished: outputs in $demo"
