#!/usr/bin/env bash
# Device checks for kmim's GPU backend: runs the GPU tests (which must RUN there, not skip), then
# the GPU K-means benchmark and its PyTorch peer, and prints a summary table LAST.
#
# Run from the repository root on a machine with an NVIDIA GPU (sm_90: H100/H200):
#   bash tests/gpu/run_device_checks.sh
#
# Binaries come from .device-bundle/ (tests/gpu/make_device_bundle.sh, built elsewhere) when it
# is there; otherwise, where a full build environment exists (a cluster node with the kmim
# dependencies), they are built from source into build-device/ (sm_90, Release). Set
# KMIM_DEVICE_CHECKS_BUILD=1 to build from source even when a bundle is present.
#
# Every step runs under `timeout`; a failing step is reported and the script goes on to the
# table. The steps fit in about 6 minutes (KMIM_DEVICE_CHECKS_SECONDS, default 330, bounds them;
# a source build is not counted). Logs go to $OUT when it is set (at most 6 files), else to
# ${TMPDIR:-/tmp}/kmim-device-checks. Exit status: 0 when every test passed, else 1.
set -u

start_time=$(date +%s)
budget="${KMIM_DEVICE_CHECKS_SECONDS:-330}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo" || exit 1
logdir="${OUT:-${TMPDIR:-/tmp}/kmim-device-checks}"
mkdir -p "$logdir"
log="$logdir/device_checks.log"    # everything, in order
results="$logdir/bench_results.txt" # RESULT lines of both benchmarks
: >"$log"
: >"$results"
say() { echo "$*" | tee -a "$log"; }

tests=(test_gpu_device test_gpu_kmeans_assign test_gpu_kmeans_lloyd test_gpu_patches test_gpu_nccl test_gpu_nccl_mpi
  test_gpu_lloyd_cpu_parity)
# Script checks of the real programs (run after the test binaries, counted with them).
program_checks=(test_kmeans_program_device)
declare -A status seconds
bundle_note=""
gpu_line="(nvidia-smi not available)"

remaining() { echo $((budget - ($(date +%s) - start_time))); }
LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}"  # exported by add_lib_dir once it holds something
# add_lib_dir DIR [front]: adds DIR to LD_LIBRARY_PATH once (no empty entries: they mean ".").
add_lib_dir() {
  case ":$LD_LIBRARY_PATH:" in *":$1:"*) return ;; esac
  if [ -z "$LD_LIBRARY_PATH" ]; then LD_LIBRARY_PATH="$1"
  elif [ "${2:-}" = front ]; then LD_LIBRARY_PATH="$1:$LD_LIBRARY_PATH"
  else LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$1"; fi
  export LD_LIBRARY_PATH
}
# step NAME CAP_SECONDS LOGFILE CMD... : runs CMD under timeout (the smaller of CAP and what is
# left of the budget), appends its output to LOGFILE and the main log, records PASS/FAIL/SKIP.
step() {
  local name="$1" cap="$2" file="$3"
  shift 3
  local left
  left=$(($(remaining) - 15))
  if [ "$left" -lt 5 ]; then
    status[$name]="NOT RUN (time budget used up)"
    seconds[$name]=0
    say "== $name: not run, time budget used up"
    return
  fi
  [ "$cap" -gt "$left" ] && cap="$left"
  say "== $name (timeout ${cap}s): $*"
  local t0 rc
  t0=$(date +%s)
  timeout --kill-after=10 "$cap" "$@" >>"$file.part" 2>&1
  rc=$?
  cat "$file.part" >>"$file"
  [ "$file" != "$log" ] && cat "$file.part" >>"$log"
  seconds[$name]=$(($(date +%s) - t0))
  case "$rc" in
    0) status[$name]=PASS ;;
    77) status[$name]="SKIP ($(grep -m1 -o 'SKIPPED:.*' "$file.part" | cut -c10-120))" ;;
    124 | 137) status[$name]="FAIL (timeout after ${cap}s)" ;;
    *) status[$name]="FAIL (exit $rc)" ;;
  esac
  rm -f "$file.part"
  say "== $name: ${status[$name]} in ${seconds[$name]}s"
}

# ---------------------------------------------------------------- the GPU
if command -v nvidia-smi >/dev/null 2>&1; then
  gpu_line="$(timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu \
    --format=csv,noheader 2>&1 | head -1)"
  timeout 30 nvidia-smi >>"$log" 2>&1
fi
say "GPU: $gpu_line"

# ---------------------------------------------------------------- the binaries
bin=""
bundle_tar="$repo/.device-bundle/kmim-device-bundle.tar.xz"
mpi_env=()
if [ -f "$bundle_tar" ] && [ "${KMIM_DEVICE_CHECKS_BUILD:-0}" != 1 ]; then
  work="${TMPDIR:-/tmp}/kmim-device-bundle"
  rm -rf "$work" && mkdir -p "$work"
  if ! tar -C "$work" -xJf "$bundle_tar" 2>>"$log"; then
    # No xz binary: Python's tarfile reads .tar.xz too.
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$bundle_tar" "$work" 2>>"$log"
  fi
  if [ -d "$work/bin" ]; then
    bin="$work/bin"
    bundle_note="bundle ($(sed -n 's/^built: //p; s/^commit: //p' "$repo/.device-bundle/MANIFEST.txt" 2>/dev/null | tr '\n' ' '))"
    add_lib_dir "$work/lib" front
    # OpenMPI from the bundle, for the singleton MPI test: plugin folders relocated, no daemon.
    mpi_env=(env OMPI_MCA_mca_base_component_path="$work/openmpi/plugins"
      PMIX_MCA_mca_base_component_path="$work/pmix/plugins" OMPI_MCA_ess_singleton_isolated=1
      OMPI_MCA_btl=self,vader OMPI_MCA_pml=ob1 OMPI_MCA_mca_base_component_show_load_errors=0
      OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1)
  else
    say "bundle: could not unpack $bundle_tar"
  fi
fi
if [ -z "$bin" ]; then
  if command -v cmake >/dev/null 2>&1; then
    say "== building from source into build-device/ (no usable bundle)"
    build_start=$(date +%s)
    if timeout 1800 cmake -S "$repo" -B "$repo/build-device" -DCMAKE_BUILD_TYPE=Release -DKMIM_CUDA=ON \
      -DCMAKE_CUDA_ARCHITECTURES=90 >>"$log" 2>&1 &&
      timeout 1800 cmake --build "$repo/build-device" -j"$(nproc)" --target "${tests[@]}" kmim_bench_kmeans_gpu kmim_kmeans_program kmeans_device_tool >>"$log" 2>&1; then
      bin="$repo/build-device/bin-links"
      mkdir -p "$bin"
      for t in "${tests[@]}"; do ln -sf "$repo/build-device/tests/$t" "$bin/$t"; done
      ln -sf "$repo/build-device/bench/bench_kmeans_gpu" "$bin/bench_kmeans_gpu"
      ln -sf "$repo/build-device/bin/kmim_kmeans" "$bin/kmim_kmeans"
      ln -sf "$repo/build-device/tests/kmeans_device_tool" "$bin/kmeans_device_tool"
      bundle_note="built from source in build-device/"
      mpi_env=(env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1)
    else
      say "build from source FAILED (see the log): a bundle or the kmim build dependencies are needed"
    fi
    start_time=$((start_time + $(date +%s) - build_start))  # the build does not count against the budget
  else
    say "no .device-bundle and no cmake: nothing to run"
  fi
fi

# ---------------------------------------------------------------- CUDA libraries
# The binaries load cudart/cuBLAS/NCCL from the machine: /usr/local/cuda, or the pip nvidia-*
# packages next to PyTorch. Each soname that does not resolve yet is searched for.
python_for_torch=""
for py in python3 /opt/torch/.venv/bin/python3 /usr/bin/python3; do
  if command -v "$py" >/dev/null 2>&1 && timeout 60 "$py" -c 'import torch' >/dev/null 2>&1; then
    python_for_torch="$(command -v "$py")"
    break
  fi
done
search_roots=(/usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda/lib /usr/lib/x86_64-linux-gnu)
[ -n "${CUDA_HOME:-}" ] && search_roots+=("$CUDA_HOME/lib64")
for py in "$python_for_torch" python3; do
  [ -n "$py" ] || continue
  site="$(timeout 60 "$py" -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0]))' 2>/dev/null)"
  [ -n "$site" ] && [ -d "$site/nvidia" ] && search_roots+=("$site/nvidia" "$site/torch/lib")
done
if [ -n "$bin" ]; then
  for round in 1 2 3; do
    missing="$(for b in "$bin"/*; do ldd "$b" 2>/dev/null; done | awk '/=> not found/ {print $1}' | sort -u)"
    [ -z "$missing" ] && break
    for so in $missing; do
      found=""
      for root in "${search_roots[@]}"; do
        [ -d "$root" ] || continue
        found="$(find -L "$root" -maxdepth 4 -name "$so" 2>/dev/null | head -1)"
        [ -n "$found" ] && break
      done
      if [ -n "$found" ]; then
        add_lib_dir "$(dirname "$found")"
        say "library $so: $found"
      elif [ "$round" = 3 ]; then
        say "library $so: NOT FOUND (searched ${search_roots[*]})"
      fi
    done
  done
  # The driver (libcuda.so.1, loaded by cudart at run time) where container images mount it.
  for dir in /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do
    [ -e "$dir/libcuda.so.1" ] && add_lib_dir "$dir"
  done
  # The machine's libstdc++ may be older than the one the bundle was built with.
  if for b in "$bin"/*; do ldd "$b" 2>&1; done | grep -q "version .GLIBCXX_.* not found\|version .GCC_.* not found"; then
    add_lib_dir "${work:-/nonexistent}/lib-fallback"
    say "libstdc++ on this machine is older than needed: using the bundled one"
  fi
  if for b in "$bin"/*; do ldd "$b" 2>&1; done | grep -q "version .GLIBC_.* not found"; then
    say "WARNING: this machine's glibc is older than the bundle needs ($(grep needs-glibc "$repo/.device-bundle/MANIFEST.txt" 2>/dev/null)); rebuild with KMIM_DEVICE_CHECKS_BUILD=1"
  fi
  say "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  for b in "$bin"/*; do
    outside="$(ldd "$b" 2>&1 | awk -v w="${work:-/nonexistent}" '$2 == "=>" && index($3, w) != 1 {print $1 "=" $3}' | tr '\n' ' ')"
    echo "ldd $(basename "$b"): from the machine: $outside" >>"$log"
  done
fi

# ---------------------------------------------------------------- tests
# One node, one process per GPU: NCCL's bootstrap may use the loopback interface (a machine
# without other network interfaces would otherwise fail it); warnings go to the logs.
export NCCL_SOCKET_IFNAME="${NCCL_SOCKET_IFNAME:-lo}" NCCL_DEBUG="${NCCL_DEBUG:-WARN}"
tests_log="$logdir/tests.log"
: >"$tests_log"
declare -A cap=([test_gpu_device]=60 [test_gpu_kmeans_assign]=120 [test_gpu_kmeans_lloyd]=120
  [test_gpu_patches]=60 [test_gpu_nccl]=90 [test_gpu_nccl_mpi]=90 [test_gpu_lloyd_cpu_parity]=90)
for t in "${tests[@]}"; do
  if [ -z "$bin" ] || [ ! -x "$bin/$t" ]; then
    status[$t]="FAIL (no binary)"
    seconds[$t]=0
    continue
  fi
  case "$t" in
    test_gpu_nccl_mpi | test_gpu_lloyd_cpu_parity)  # MPI singletons
      step "$t" "${cap[$t]}" "$tests_log" "${mpi_env[@]}" "$bin/$t" --log_level=message --report_level=short ;;
    *)
      step "$t" "${cap[$t]}" "$tests_log" "$bin/$t" --log_level=message --report_level=short ;;
  esac
done

# kmim_kmeans --device gpu vs --device cpu (the real program; an MPI singleton like the MPI tests).
if [ -n "$bin" ] && [ -x "$bin/kmim_kmeans" ] && [ -x "$bin/kmeans_device_tool" ]; then
  step test_kmeans_program_device 90 "$tests_log" "${mpi_env[@]}" env KMIM_BIN_DIR="$bin" \
    KMIM_DEVICE_TOOL="$bin/kmeans_device_tool" KMIM_TEST_TMP="${TMPDIR:-/tmp}/kmim-kmeans-device" \
    bash "$repo/tests/gpu/test_kmeans_program_device.sh"
else
  status[test_kmeans_program_device]="FAIL (no kmim_kmeans / kmeans_device_tool binary)"
  seconds[test_kmeans_program_device]=0
fi

# ---------------------------------------------------------------- benchmarks
bench_log="$logdir/bench_kmim.log"
torch_log="$logdir/bench_torch.log"
: >"$bench_log"
: >"$torch_log"
bench_args=(--n "${KMIM_BENCH_N:-4194304}" --repeats "${KMIM_BENCH_REPEATS:-5}")
if [ -n "$bin" ] && [ -x "$bin/bench_kmeans_gpu" ]; then
  step bench_kmim 150 "$bench_log" "$bin/bench_kmeans_gpu" "${bench_args[@]}"
  # Sensitivity to the chunk size: the assignment alone with an 8x larger distance tile.
  step bench_kmim_tile256 60 "$bench_log" "$bin/bench_kmeans_gpu" "${bench_args[@]}" --dims 768 \
    --lloyd false --tile-mib 256 --label kmim_tile256
else
  status[bench_kmim]="FAIL (no binary)"
  seconds[bench_kmim]=0
fi
if [ -n "$python_for_torch" ]; then
  step bench_torch 150 "$torch_log" env PYTHONUNBUFFERED=1 "$python_for_torch" "$repo/bench/gpu/torch_kmeans.py" "${bench_args[@]}"
else
  status[bench_torch]="SKIP (no python3 with PyTorch)"
  seconds[bench_torch]=0
fi
grep -h '^RESULT ' "$bench_log" "$torch_log" >"$results" 2>/dev/null

# ---------------------------------------------------------------- summary table (last)
summary="$logdir/summary.txt"
{
  echo
  echo "==================== kmim GPU device checks: summary ===================="
  echo "GPU:      $gpu_line"
  echo "binaries: ${bundle_note:-none}"
  echo "logs:     $logdir"
  printf '%-26s %-9s %s\n' "check" "seconds" "result"
  for t in "${tests[@]}" "${program_checks[@]}" bench_kmim bench_kmim_tile256 bench_torch; do
    printf '%-26s %-9s %s\n' "$t" "${seconds[$t]:-0}" "${status[$t]:-not run}"
  done
  echo
  awk '
    function field(line, key,   i, n, parts, kv) {
      n = split(line, parts, " ")
      for (i = 1; i <= n; i++) { split(parts[i], kv, "="); if (kv[1] == key) return kv[2] }
      return ""
    }
    /^RESULT / {
      key = field($0, "op") " d=" field($0, "d") " k=" field($0, "k") " " field($0, "precision")
      impl = field($0, "impl")
      if (!(key in seen)) { seen[key] = 1; order[++count] = key }
      ms[key, impl] = field($0, "ms"); tf[key, impl] = field($0, "tflops"); md[key, impl] = field($0, "mean_dist2")
      if (impl != "kmim" && impl != "torch") variants[key, impl] = 1
      n = field($0, "n")
    }
    END {
      if (count == 0) { print "benchmarks: no results"; exit }
      printf "%-28s %10s %9s %10s %9s %11s %s\n", "benchmark (n=" n ")", "kmim ms", "kmim TF/s", "torch ms", "torch TF/s", "torch/kmim", "mean dist2 kmim vs torch"
      for (i = 1; i <= count; i++) {
        k = order[i]
        km = ms[k, "kmim"]; tm = ms[k, "torch"]
        ratio = (km != "" && tm != "" && km > 0) ? sprintf("%.2fx", tm / km) : "-"
        agree = "-"
        if (md[k, "kmim"] != "" && md[k, "torch"] != "") {
          a = md[k, "kmim"] + 0; b = md[k, "torch"] + 0
          rel = (a > b ? a - b : b - a) / (b > 0 ? b : 1)
          agree = sprintf("rel diff %.1e", rel)
        }
        printf "%-28s %10s %9s %10s %9s %11s %s\n", k, (km == "" ? "-" : km), (tf[k, "kmim"] == "" ? "-" : tf[k, "kmim"]),
               (tm == "" ? "-" : tm), (tf[k, "torch"] == "" ? "-" : tf[k, "torch"]), ratio, agree
      }
      print "TF/s counts the assignment GEMM (2·n·k·d) for both ops; torch/kmim > 1 means kmim is faster."
      for (key in variants) {
        split(key, kv, SUBSEP)
        printf "  %-26s %-14s %10s ms %9s TF/s\n", kv[1], kv[2], ms[kv[1], kv[2]], tf[kv[1], kv[2]]
      }
    }' "$results"
  failed=0
  for t in "${tests[@]}" "${program_checks[@]}"; do
    case "${status[$t]:-}" in PASS) ;; *) failed=$((failed + 1)) ;; esac
  done
  if [ "$failed" = 0 ]; then
    echo "VERDICT: all $((${#tests[@]} + ${#program_checks[@]})) GPU tests PASS"
  else
    echo "VERDICT: $failed of $((${#tests[@]} + ${#program_checks[@]})) GPU tests did not pass (a SKIP means no usable GPU was found)"
  fi
  echo "total: $(($(date +%s) - start_time))s"
} >"$summary"
cat "$summary" >>"$log"
cat "$summary"
[ "${failed:-1}" = 0 ]
