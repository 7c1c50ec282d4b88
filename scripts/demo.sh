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
export HDF5_USE_FILE_LOCKING=FALSE
bin="$KMIM_BUILD_DIR/bin"
run() { echo "+ $*"; "$@"; }

"$here/scripts/install_deps.sh"
"$here/scripts/build.sh"
mkdir -p "$demo"

echo "== 1. demo data: Fashion-MNIST → ImageNet-style JPEG tree (64x64 RGB, 500/100 per class)"
run mpirun -np "$ranks" "$bin/kmim_idx2folder" --out "$demo/fmnist" --size 64 --rgb \
  --per-class-train 500 --per-class-val 100

echo "kmim demo finished: outputs in $demo"
