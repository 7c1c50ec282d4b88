#!/usr/bin/env bash
# K-means CPU benchmark (not a test): kmim_kmeans vs faiss-cpu vs scikit-learn KMeans on real
# Fashion-MNIST 7×7 pixel patches (960000 × 49) and a synthetic 1M × 64 Gaussian mixture,
# K = 16, 256, 1024, same initial centroids, same iterations, same threads; plus OpenBLAS sgemm
# peak measured in the same run and each process's peak memory. Prints the markdown table for
# bench/RESULTS.md ("K-means CPU").
# Usage: bench/kmeans/run_bench.sh [BUILD_DIR] [THREADS] [ITERS] [ROUNDS]   (default build/, 2, 5, 2)
# On a shared machine each method runs ROUNDS times, interleaved, and its fastest round counts.
# Peers come from PyPI into bench/.venv (created here); Debian's python3-sklearn is the fallback.
set -euo pipefail
BUILD=$(cd "${1:-build}" && pwd); THREADS=${2:-2}; ITERS=${3:-5}; ROUNDS=${4:-2}
HERE=$(cd "$(dirname "$0")" && pwd); ROOT=$(cd "$HERE/../.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kmim_kmeans_bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 HDF5_USE_FILE_LOCKING=FALSE

VENV="$ROOT/bench/.venv"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c "import faiss, sklearn, h5py, numpy, threadpoolctl" 2>/dev/null; then
  "$VENV/bin/pip" install -q faiss-cpu scikit-learn h5py numpy threadpoolctl \
    || echo "warning: could not install the peers from PyPI" >&2
fi
PY="$VENV/bin/python"
"$PY" -c "import faiss, sklearn" 2>/dev/null || { echo "faiss/scikit-learn unavailable: no comparison" >&2; exit 1; }

# The benchmark's helpers, linked against the build's kmim libraries.
L="$BUILD/src/kmim"
mpicxx -std=c++20 -O2 -fopenmp -I"$ROOT/src" $(pkg-config --cflags hdf5-openmpi) \
  "$HERE/make_bench_data.cpp" "$L/kmeans/libkmim_kmeans.a" "$L/io/libkmim_io.a" "$L/dist/libkmim_dist.a" \
  "$L/core/libkmim_core.a" $(pkg-config --libs hdf5-openmpi openblas libturbojpeg zlib stb) -lfmt \
  -lboost_program_options -o "$WORK/make_bench_data"
g++ -O2 "$HERE/sgemm_peak.cpp" $(pkg-config --cflags --libs openblas) -o "$WORK/sgemm_peak"

"$WORK/make_bench_data" fmnist "$WORK/fmnist.h5" /usr/share/datasets/fashion-mnist 7 >&2
"$WORK/make_bench_data" synthetic "$WORK/synthetic.h5" 1000000 64

echo "# $(date -u +%Y-%m-%d), $(lscpu | sed -n 's/^Model name: *//p') ($(nproc) CPUs), $THREADS threads, $ITERS iterations, load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$PY" "$HERE/run_bench.py" "$BUILD/bin/kmim_kmeans" "$WORK" "$WORK" "$THREADS" "$ITERS" "$ROUNDS"
