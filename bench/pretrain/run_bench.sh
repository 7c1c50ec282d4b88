#!/usr/bin/env bash
# Pretraining CPU benchmark (not a test): kmim's training step (bench_pretrain_step.cpp: the
# vit_mae forward/backward + AdamW of kmim_pretrain, without data loading) against the same MAE
# model in PyTorch (torch_mae.py: zero_grad, forward, backward, AdamW), same preset, batch,
# mask ratio 0.75, K, and thread count, in one run. Each configuration runs ROUNDS times,
# kmim and torch interleaved, and each side's fastest round counts (the machine is shared).
# Prints the markdown table for bench/RESULTS.md ("Pretraining CPU").
#
# Usage: bench/pretrain/run_bench.sh [BUILD_DIR] [THREADS] [ROUNDS]   (default build/, 2, 3)
# Environment: KMIM_BENCH_KEEP_OPENBLAS_ENV=1 keeps OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE as set
# (by default both are unset for both peers, so OpenBLAS picks its kernels for this CPU; the
# table says which ran). OMP_WAIT_POLICY=passive is set for both (the machine is shared).
# torch comes from PyPI in bench/.venv (scripts/install_deps.sh --bench); Debian's python3-torch
# (/usr/bin/python3) is the fallback.
set -euo pipefail
BUILD=$(cd "${1:-build}" && pwd); THREADS=${2:-2}; ROUNDS=${3:-3}
HERE=$(cd "$(dirname "$0")" && pwd); ROOT=$(cd "$HERE/../.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kmim_pretrain_bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

PY=""
for p in "$ROOT/bench/.venv/bin/python" /usr/bin/python3; do
  if [ -x "$p" ] && "$p" -c "import torch" 2>/dev/null; then PY=$p; break; fi
done
[ -n "$PY" ] || { echo "no python with torch (run scripts/install_deps.sh --bench)" >&2; exit 1; }

L="$BUILD/src/kmim"
g++ -std=c++20 -O2 -fopenmp -I"$ROOT/src" "$HERE/bench_pretrain_step.cpp" "$L/model/libkmim_model.a" \
  "$L/core/libkmim_core.a" $(pkg-config --libs openblas) -lfmt -lboost_program_options \
  -o "$WORK/bench_pretrain_step"

ENVCMD=(env)
[ "${KMIM_BENCH_KEEP_OPENBLAS_ENV:-0}" = 1 ] || ENVCMD+=(-u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE)
ENVCMD+=(OMP_WAIT_POLICY=passive)

echo "# $(date -u +%Y-%m-%d), $(lscpu | sed -n 's/^Model name: *//p') ($(nproc) CPUs), $THREADS threads, $ROUNDS rounds, load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset} in the environment; the runs: ${ENVCMD[*]:1}"
: > "$WORK/results.jsonl"
# preset batch steps warmup
for cfg in "vit_tiny_demo 32 40 5" "vit_tiny 16 8 2"; do
  read -r preset batch steps warmup <<<"$cfg"
  for _ in $(seq "$ROUNDS"); do
    "${ENVCMD[@]}" "$WORK/bench_pretrain_step" "$preset" "$batch" "$THREADS" "$steps" "$warmup" >> "$WORK/results.jsonl"
    "${ENVCMD[@]}" "$PY" "$HERE/torch_mae.py" "$preset" "$batch" "$THREADS" "$steps" "$warmup" >> "$WORK/results.jsonl"
  done
done
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
"$PY" - "$WORK/results.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
best = {}
for r in rows:
    key = (r["model"], r["batch"], r["impl"])
    if key not in best or r["images_per_second"] > best[key]["images_per_second"]:
        best[key] = r
kmim_blas = next(r["blas"] for r in rows if r["impl"] == "kmim")
t = next(r for r in rows if r["impl"] == "torch")
print(f"kmim BLAS: {kmim_blas}")
print(f"torch {t['torch']}, CPU capability {t['cpu_capability']}, oneDNN {t['mkldnn']}")
print()
print("| model | batch | threads | kmim img/s | torch img/s | speed-up | kmim peak RSS MB | torch peak RSS MB | RSS ratio | kmim GFLOP/s | loss after warmup kmim / torch (log K) |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for (model, batch, impl), k in best.items():
    if impl != "kmim":
        continue
    p = best[(model, batch, "torch")]
    print(f"| {model} | {batch} | {k['threads']} | {k['images_per_second']:.1f} | {p['images_per_second']:.1f} | "
          f"{k['images_per_second'] / p['images_per_second']:.2f}x | {k['peak_rss_mb']:.0f} | {p['peak_rss_mb']:.0f} | "
          f"{k['peak_rss_mb'] / p['peak_rss_mb']:.2f} | {k['gflops_per_second']:.1f} | "
          f"{k['first_loss']:.3f} / {p['first_loss']:.3f} ({p['log_k']:.3f}) |")
PY
