#!/usr/bin/env bash
# The kmim demo, end to end on real images (Fashion-MNIST from Debian's dataset-fashion-mnist):
# installs dependencies, builds (Release), converts the IDX files into an ImageNet-style JPEG
# tree and runs the pipeline stages that exist on it. Outputs go to ${KMIM_DEMO_DIR:-demo}.
#
# Environment: KMIM_DEMO_DIR (output folder), KMIM_DEMO_RANKS (MPI ranks, default 2),
# KMIM_BUILD_DIR (build folder, default build).
#
#   scripts/demo.sh            every stage directly under mpirun
#   scripts/demo.sh --slurm    the pipeline as a chain of Slurm jobs (jobs/demo_pipeline.sh) on the
#                              demo's images and sizes: starts a local single-node Slurm
#                              (scripts/slurm_local_up.sh) unless one is running, waits for the
#                              jobs, prints their states and outputs, stops the Slurm it started
set -euo pipefail
slurm=0
for arg in "$@"; do
  case "$arg" in
    --slurm) slurm=1 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "demo.sh: unknown option '$arg' (try --help)" >&2; exit 2 ;;
  esac
done
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

# --slurm: the same images through the job scripts (the chain of jobs/pipeline.sh, see
# docs/cluster.md) with the sizes of the stages below: 40 px shards, one pixel codebook (K = 50,
# Lloyd, 30 iterations over 4x4 patches of the centred 32x32 crop), TCAS of it, one K-MIM
# pretraining (vit_tiny_demo, 8 epochs, global batch 128), and the linear probe of its encoder
# (the settings of step 6). The K sweep, the ablations and the report of the direct run are not
# in the chain.
demo_on_slurm() {
  local run="$demo/slurm" rc=0 f
  export PATH="$PATH:/usr/sbin"
  if scontrol ping >/dev/null 2>&1; then
    echo "== 2. Slurm: using the cluster '$(scontrol show config | sed -n 's/^ClusterName *= *//p')' that is running (left running)"
  else
    echo "== 2. Slurm: starting a local single-node Slurm (scripts/slurm_local_up.sh; stopped at the end)"
    trap '"$here/scripts/slurm_local_down.sh"' EXIT
    "$here/scripts/slurm_local_up.sh"
  fi
  echo "== 3. jobs/demo_pipeline.sh: shard -> kmeans -> pretrain -> linprobe, kmeans -> tcas, each an sbatch job"
  rm -rf "$run"
  KMIM_RUN_DIR="$run" KMIM_BIN_DIR="$bin" KMIM_IMAGENET_ROOT="$demo/fmnist" KMIM_CLASSES="" \
    KMIM_SHARD_IMAGE_SIZE=40 KMIM_SHARD_IMAGES=1024 \
    KMIM_K=50 KMIM_KMEANS_CROP=32 KMIM_KMEANS_PATCH=4 KMIM_KMEANS_ALGORITHM=lloyd KMIM_KMEANS_ITERS=30 \
    KMIM_KMEANS_ARGS="--seed 0" \
    KMIM_MODEL=vit_tiny_demo KMIM_EPOCHS=8 KMIM_BATCH_SIZE=128 KMIM_BLR=1.5e-3 KMIM_WARMUP_EPOCHS=1 \
    KMIM_PRETRAIN_ARGS="--seed 0 --log-every 10" \
    KMIM_LINPROBE_EPOCHS=10 KMIM_LINPROBE_ARGS="--warmup-epochs 1 --batch-size 256 --base-lr 4.0 --pool mean --seed 0" \
    KMIM_WAIT_TIMEOUT="${KMIM_WAIT_TIMEOUT:-3600}" \
    run "$here/jobs/demo_pipeline.sh" --wait || rc=$?
  echo "== results (from the job logs in $run/logs)"
  { grep -h -E "\] epoch [0-9]+ done:|pretrain: finished at" "$run"/logs/kmim-pretrain-*.out | tail -n 2
    grep -h -A 3 "^kmim_tcas:" "$run"/logs/kmim-tcas-*.out
    grep -h "^kmim_linprobe:" "$run"/logs/kmim-linprobe-*.out; } 2>/dev/null || true
  echo "== outputs in $run"
  for f in data/train.h5 data/val.h5 codebook.h5 pretrain/metrics.jsonl tcas.h5 linprobe.h5; do
    [ -e "$run/$f" ] && echo "  $run/$f"
  done
  for f in "$run"/pretrain/checkpoint-*.h5; do [ -e "$f" ] && echo "  $f"; done
  for f in "$run"/skipped/*; do [ -e "$f" ] && echo "  stage $(basename "$f") skipped: $(cat "$f")"; done
  echo "  job logs: $run/logs/"
  if [ "$rc" != 0 ]; then
    for f in "$run"/logs/*.out; do
      grep -q "FAILED" "$f" 2>/dev/null && { echo "----- $f (last lines)"; tail -n 15 "$f"; }
    done
    echo "kmim demo on Slurm: not every job COMPLETED (states above)" >&2
    exit "$rc"
  fi
  echo "kmim demo on Slurm finished: every job COMPLETED"
}
if [ "$slurm" = 1 ]; then demo_on_slurm; exit 0; fi

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

echo "== 6. kmim_linprobe: frozen encoder of each run, BatchNorm + linear head with LARS (MAE protocol;"
echo "      demo settings: 10 epochs, mean-pooled tokens, base lr 4 for the few steps of 5,000 images)"
runs=(kmim_pixel_k10 kmim_pixel_k50 kmim_pixel_k200 mae label random_k50)
report_args=(--tcas "$demo/tcas.h5")
for name in "${runs[@]}"; do
  ckpt="$(ls "$demo/pretrain/$name"/checkpoint-*.h5 | sort | tail -n 1)"
  if [ ! -f "$demo/linprobe/$name.h5" ]; then
    run mpirun -np "$ranks" "$bin/kmim_linprobe" --checkpoint "$ckpt" --train "$demo/shards/train.h5" \
      --val "$demo/shards/val.h5" --out "$demo/linprobe/$name.h5" --epochs 10 --warmup-epochs 1 \
      --batch-size 256 --base-lr 4.0 --pool mean --seed 0 --resume
  fi
  report_args+=(--pretrain-run "$name=$demo/pretrain/$name" --linprobe "$name=$demo/linprobe/$name.h5")
done

echo "== 7. kmim_report: plots (gnuplot PNG) and the summary table"
run "$bin/kmim_report" "${report_args[@]}" --out "$demo/report"
echo
cat "$demo/report/summary.md"
echo
echo "kmim demo finished: outputs in $demo (plots and summary.md in $demo/report)"
