#!/usr/bin/env bash
# Builds the GPU tests and the GPU benchmark on THIS machine (Release, sm_90) and packs them, with
# every shared library they load that a bare CUDA machine lacks, into .device-bundle/ — for a GPU
# machine that has the CUDA driver, CUDA 13 libraries and PyTorch but none of the Debian -dev
# packages kmim links (MPI, OpenBLAS, Boost, fmt, ...) and cannot install any.
# tests/gpu/run_device_checks.sh, run there from the repository root, unpacks and runs it.
#
#   bash tests/gpu/make_device_bundle.sh            # then carry .device-bundle to the GPU machine
#
# Not bundled (found on the GPU machine at run time): glibc, the CUDA driver and the CUDA
# libraries (cudart, cuBLAS/cuBLASLt, NCCL: /usr/local/cuda/lib64 or the pip nvidia-* packages).
# libstdc++/libgcc_s go into lib-fallback/, used only when the machine's own are older than the
# binaries need. OpenMPI (only test_gpu_nccl_mpi loads it; the other binaries are linked with
# --as-needed and load no MPI) comes with the plugins a singleton run needs.
#
# Output: .device-bundle/kmim-device-bundle.tar.xz (bin/, lib/, lib-fallback/, openmpi/, pmix/)
# and .device-bundle/MANIFEST.txt. Environment: KMIM_DEVICE_BUILD_DIR (default build-device/),
# KMIM_BUILD_JOBS (default: all cores).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
build="${KMIM_DEVICE_BUILD_DIR:-$repo/build-device}"
bundle="$repo/.device-bundle"
jobs="${KMIM_BUILD_JOBS:-$(nproc)}"
max_bytes=$((50 * 1024 * 1024))

tests=(test_gpu_device test_gpu_kmeans_assign test_gpu_kmeans_lloyd test_gpu_patches test_gpu_nccl test_gpu_nccl_mpi
  test_gpu_lloyd_cpu_parity)

# The bundle must never travel as part of the tracked tree by accident.
exclude="$repo/.git/info/exclude"
if [ -d "$repo/.git" ] && ! grep -qx '/.device-bundle/' "$exclude" 2>/dev/null; then
  mkdir -p "$repo/.git/info"
  echo '/.device-bundle/' >>"$exclude"
fi

echo "== configure + build ($build, sm_90, Release, $jobs jobs)"
mkdir -p "$build"
cmake -S "$repo" -B "$build" -DCMAKE_BUILD_TYPE=Release -DKMIM_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DKMIM_WERROR=ON >"$build/device-bundle-configure.log" 2>&1 || { cat "$build/device-bundle-configure.log"; exit 1; }
cmake --build "$build" -j"$jobs" --target "${tests[@]}" kmim_bench_kmeans_gpu kmim_kmeans_program kmeans_device_tool

stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,lib,lib-fallback,openmpi/plugins,pmix/plugins}
for t in "${tests[@]}"; do cp "$build/tests/$t" "$stage/bin/"; done
cp "$build/bench/bench_kmeans_gpu" "$stage/bin/"
# kmim_kmeans --device gpu against --device cpu (tests/gpu/test_kmeans_program_device.sh).
cp "$build/bin/kmim_kmeans" "$build/tests/kmeans_device_tool" "$stage/bin/"
strip --strip-debug "$stage"/bin/*

# Where a library goes: "skip" (the GPU machine has it), "fallback" or "bundle".
classify() {
  case "$1" in
    linux-vdso.so*|ld-linux*|libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|libresolv.so*|libutil.so*)
      echo skip ;;  # glibc
    libcuda.so*|libcudart.so*|libcublas.so*|libcublasLt.so*|libnccl.so*|libcudnn*|libnvrtc*|libnvJitLink*|libnvidia-*)
      echo skip ;;  # CUDA driver and CUDA libraries
    libstdc++.so*|libgcc_s.so*)
      echo fallback ;;
    *) echo bundle ;;
  esac
}

# Copies every library `ldd $1` resolves into the stage (by soname), as classify says.
collect() {
  local name arrow path rest
  while read -r name arrow path rest; do
    [ "$arrow" = "=>" ] || continue
    [ -n "$path" ] && [ -e "$path" ] || { echo "error: $1 needs $name, which does not resolve here" >&2; exit 1; }
    case "$(classify "$name")" in
      bundle) [ -e "$stage/lib/$name" ] || cp -L "$path" "$stage/lib/$name" ;;
      fallback) [ -e "$stage/lib-fallback/$name" ] || cp -L "$path" "$stage/lib-fallback/$name" ;;
    esac
  done < <(ldd "$1")
}

for b in "$stage"/bin/*; do collect "$b"; done

# OpenMPI for a singleton run (test_gpu_nccl_mpi): its MCA plugins, except those for fabrics a
# single-GPU check never uses (UCX, libfabric, verbs, PSM) and OpenSHMEM, plus PMIx's plugins.
if [ -e "$stage/lib/libmpi.so.40" ]; then
  ompi_plugins="$(ompi_info --path pkglibdir 2>/dev/null | awk -F': ' '/Pkglibdir/ {print $2}')"
  [ -d "$ompi_plugins" ] || ompi_plugins=/usr/lib/x86_64-linux-gnu/openmpi/lib/openmpi3
  heavy='libuc[pstm]|libfabric|libibverbs|librdmacm|libpsm|libinfinipath|libefa|liboshmem|libnuma|libnl-'
  for p in "$ompi_plugins"/mca_*.so; do
    if ldd "$p" | grep -qE "$heavy"; then continue; fi
    cp -L "$p" "$stage/openmpi/plugins/"
    collect "$p"
  done
  pmix_lib="$(ldd "$stage/openmpi/plugins/mca_pmix_ext3x.so" 2>/dev/null | awk '/libpmix/ {print $3}')"
  if [ -n "$pmix_lib" ] && [ -d "$(dirname "$(readlink -f "$pmix_lib")")/pmix" ]; then
    for p in "$(dirname "$(readlink -f "$pmix_lib")")"/pmix/*.so; do
      cp -L "$p" "$stage/pmix/plugins/"
      collect "$p"
    done
  fi
fi

# What the binaries need from the GPU machine's glibc and libstdc++.
glibc_max="$(objdump -T "$stage"/bin/* "$stage"/lib/* 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)"
glibc_newer="$(for f in "$stage"/bin/* "$stage"/lib/*; do
  if objdump -T "$f" 2>/dev/null | grep -qE 'GLIBC_2\.3[5-9]|GLIBC_2\.[4-9][0-9]'; then basename "$f"; fi; done | tr '\n' ' ')"
glibcxx_max="$(objdump -T "$stage"/bin/* "$stage"/lib/* 2>/dev/null | grep -o 'GLIBCXX_[0-9.]*' | sort -uV | tail -1)"
cuda_needed="$(for b in "$stage"/bin/*; do ldd "$b"; done | awk '{print $1}' | grep -E '^lib(cuda|cudart|cublas|cublasLt|nccl|cudnn)' | sort -u | tr '\n' ' ')"

rm -rf "$bundle"
mkdir -p "$bundle"
tar -C "$stage" -cJf "$bundle/kmim-device-bundle.tar.xz" .
{
  echo "kmim device bundle"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -srm)"
  echo "commit: $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown) (plus uncommitted changes, if any)"
  echo "cuda: $(/usr/local/cuda/bin/nvcc --version 2>/dev/null | tail -1) sm_90"
  echo "needs-glibc: $glibc_max (only these need more than 2.34: ${glibc_newer:-none})"
  echo "needs-glibcxx: $glibcxx_max"
  echo "needs-cuda-libs: $cuda_needed"
  echo "unpacked bytes: $(du -sb "$stage" | cut -f1)"
  echo "files:"
  (cd "$stage" && find . -type f -printf '%10s %p\n' | sort -k2)
} >"$bundle/MANIFEST.txt"

size="$(stat -c %s "$bundle/kmim-device-bundle.tar.xz")"
echo "== bundle: $bundle/kmim-device-bundle.tar.xz ($((size / 1024)) KiB packed, $(($(du -sb "$stage" | cut -f1) / 1024)) KiB unpacked)"
echo "   needs on the GPU machine: glibc >= ${glibc_max#GLIBC_}, CUDA libs: $cuda_needed"
if [ "$size" -gt "$max_bytes" ]; then
  echo "error: bundle is larger than 50 MiB" >&2
  exit 1
fi
