# shellcheck shell=bash
# Shared by the slurm test scripts (sourced). Skips (77) when no kmim-local Slurm is up, gives a
# fresh scratch folder, and the helpers of jobs/common.sh (kmim_wait_jobs, kmim_job_field).
set -euo pipefail
export PATH="$PATH:/usr/sbin"
: "${KMIM_SOURCE_DIR:?}" "${KMIM_BIN_DIR:?}" "${KMIM_TEST_TMP:?}"
source "$KMIM_SOURCE_DIR/jobs/common.sh"

fail() { echo "FAIL: $*" >&2; exit 1; }
# Debian's python3 has python3-h5py; a python3 earlier in PATH (pyenv, venv) may not.
PYTHON="$([ -x /usr/bin/python3 ] && echo /usr/bin/python3 || command -v python3)"

require_cluster() {
  scontrol ping >/dev/null 2>&1 \
    || { echo "skipped: no Slurm controller answers (the slurm_cluster_up fixture was skipped or failed)"; exit 77; }
  [ "$(scontrol show config 2>/dev/null | sed -n 's/^ClusterName *= *//p')" = kmim-local ] \
    || { echo "skipped: the running Slurm is not the kmim-local test cluster"; exit 77; }
  # One slurm test at a time on this machine, also across the ctest runs of other build trees
  # (RESOURCE_LOCK covers only one ctest run); the lock goes with this process.
  local lock="${KMIM_SLURM_DIR:-/var/lib/kmim-slurm}/tests.lock"
  exec 8>"$lock"
  flock -w 300 8 || fail "another slurm test held $lock for 300 s"
}

fresh_tmp() {
  rm -rf "$KMIM_TEST_TMP"
  mkdir -p "$KMIM_TEST_TMP"
}

# job_ids_of OUTPUT: "stage id" lines from jobs/pipeline.sh's "submitted <stage> job <id>" lines.
job_ids_of() { awk '$1 == "submitted" { print $2, $4 }' <<<"$1"; }

# show_logs DIR: every job log, for the test output when something fails.
show_logs() {
  local f
  for f in "$1"/*.out; do [ -f "$f" ] && { echo "----- $f"; cat "$f"; }; done
  return 0
}

# demo_images DIR: the Fashion-MNIST demo tree (32 px RGB, 20 train / 5 val per class).
demo_images() {
  "$KMIM_BIN_DIR/kmim_idx2folder" --out "$1" --size 32 --rgb --per-class-train 20 \
    --per-class-val 5 >/dev/null 2>&1 || fail "kmim_idx2folder could not make the demo images in $1"
}

# h5_check FILE PYTHON_EXPR...: opens FILE with h5py as f and asserts each expression.
h5_check() {
  local file=$1; shift
  "$PYTHON" - "$file" "$@" <<'PY' || fail "HDF5 check failed for $file"
import sys, h5py, numpy as np
with h5py.File(sys.argv[1], "r") as f:
    for expr in sys.argv[2:]:
        if not eval(expr):
            sys.exit(f"{sys.argv[1]}: check failed: {expr}")
PY
}
