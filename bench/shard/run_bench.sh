#!/usr/bin/env bash
# kmim_shard throughput benchmark (not a test).
#  1. images/s per core of the whole pipeline (kmim_shard, 1 rank × 1 thread) vs the
#     libjpeg-turbo decode-only rate on the same files in the same run (ratio; aim >= 0.7);
#  2. rank scaling, 1 thread per rank (RANKS="2 4 8", default "2"), and optionally thread
#     scaling of one rank (THREADS=N). Ranks are started with --bind-to none.
# DECODE_RATE=path uses a prebuilt decode_rate (machines without the TurboJPEG headers).
# Input: ImageNet-like synthetic photos (500×375 JPEG q90 with fine noise, ~0.5 B/pixel).
# Usage: bench/shard/run_bench.sh [BUILD_DIR] [IMAGES_PER_CLASS]   (default build/, 300 → 900 images)
set -euo pipefail
BUILD=${1:-build}; PER_CLASS=${2:-300}
BUILD=$(cd "$BUILD" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kmim_shard_bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
export HDF5_USE_FILE_LOCKING=FALSE

echo "machine: $(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB"
for t in kmim_shard; do [ -x "$BUILD/bin/$t" ] || { echo "build $t first (cmake --build $BUILD --target $t make_test_tree)"; exit 1; }; done

"$BUILD/tests/make_test_tree" "$WORK/tree" --per-class "$PER_CLASS" --no-special --no-large --photo 500 375 > /dev/null
find "$WORK/tree/train" -name '*.JPEG' | sort > "$WORK/files.txt"
n=$(wc -l < "$WORK/files.txt")
bytes=$(cat $(cat "$WORK/files.txt") | wc -c)
echo "input: $n train JPEGs 500x375, mean $((bytes / n / 1024)) KiB"

if [ -n "${DECODE_RATE:-}" ]; then cp "$DECODE_RATE" "$WORK/decode_rate"  # prebuilt (machines without headers)
else g++ -O2 -std=c++20 "$HERE/decode_rate.cpp" -o "$WORK/decode_rate" $(pkg-config --cflags --libs libturbojpeg); fi
cat $(cat "$WORK/files.txt") > /dev/null  # warm the page cache for both measurements

rate_of() { sed -n 's/.* \([0-9.]*\) images\/s.*/\1/p' "$1" | head -1; }
shard() {  # shard <np> <threads> <out>   (--bind-to none: threads of a rank need several cores)
  mpirun -np "$1" --oversubscribe --bind-to none "$BUILD/bin/kmim_shard" --root "$WORK/tree" --out "$WORK/$3" \
    --splits train --size 256 --shard-size 64 --threads "$2" > "$WORK/$3.txt" 2> "$WORK/$3.log"
  rm -rf "$WORK/$3"
}

"$WORK/decode_rate" "$WORK/files.txt" 2 > "$WORK/decode.txt"
decode=$(sed -n 's/decode_only_images_per_s_per_core //p' "$WORK/decode.txt")
shard 1 1 np1; p1=$(rate_of "$WORK/np1.txt")
"$WORK/decode_rate" "$WORK/files.txt" 2 > "$WORK/decode2.txt"
decode2=$(sed -n 's/decode_only_images_per_s_per_core //p' "$WORK/decode2.txt")
echo "decode only (libjpeg-turbo, 1 core):        $decode images/s (again after the pipeline run: $decode2)"
echo "kmim_shard pipeline, 1 rank x 1 thread:     $p1 images/s  (resize 500x375 -> 341x256 + crop 256 + crc32 + HDF5 write)"
echo "ratio pipeline/decode per core:             $(awk -v a="$p1" -v b="$decode" -v c="$decode2" 'BEGIN{m = b > c ? b : c; printf "%.2f (vs the faster decode run: %.2f)", a/b, a/m}')"
# Rank scaling, 1 thread per rank (RANKS="1 2 4 8" on bigger machines).
for np in ${RANKS:-2}; do
  shard "$np" 1 "np$np"; p=$(rate_of "$WORK/np$np.txt")
  echo "kmim_shard pipeline, $np ranks x 1 thread:    $p images/s  (scaling vs 1 rank: $(awk -v a="$p" -v b="$p1" 'BEGIN{printf "%.2fx", a/b}'))"
done
if [ -n "${THREADS:-}" ]; then  # one rank with THREADS OpenMP decode threads
  shard 1 "$THREADS" "t$THREADS"; p=$(rate_of "$WORK/t$THREADS.txt")
  echo "kmim_shard pipeline, 1 rank x $THREADS threads:  $p images/s  (scaling vs 1 thread: $(awk -v a="$p" -v b="$p1" 'BEGIN{printf "%.2fx", a/b}'))"
fi
