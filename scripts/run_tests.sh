#!/usr/bin/env bash
# The whole kmim test suite: installs dependencies, builds with warnings as errors, runs every
# CTest test (labels unit, mpi, e2e, slurm, gpu; gpu tests report "skipped" without a GPU).
# Extra arguments go to ctest, e.g. scripts/run_tests.sh -L unit.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export KMIM_BUILD_DIR="${KMIM_BUILD_DIR:-$here/build}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
"$here/scripts/install_deps.sh"
"$here/scripts/build.sh" -DKMIM_WERROR=ON
cd "$KMIM_BUILD_DIR"
ctest --output-on-failure -j "${KMIM_JOBS:-$(nproc)}" "$@"
