#!/usr/bin/env bash
# Configures and builds kmim (Release) into ${KMIM_BUILD_DIR:-build}. Extra arguments go to the
# CMake configure step, e.g. scripts/build.sh -DKMIM_CUDA=OFF.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${KMIM_BUILD_DIR:-$here/build}"
jobs="${KMIM_JOBS:-$(nproc)}"
cmake -S "$here" -B "$build" -DCMAKE_BUILD_TYPE=Release "$@" >"$build.configure.log" 2>&1 \
  || { cat "$build.configure.log"; echo "build.sh: CMake configure failed (log above)" >&2; exit 1; }
grep -E '^-- kmim:' "$build.configure.log" || true
cmake --build "$build" -j "$jobs"
