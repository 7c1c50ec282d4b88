#!/usr/bin/env bash
# CTest fixture for the slurm tests: "up" makes sure the local single-node Slurm of
# scripts/slurm_local_up.sh runs, "down" stops it when the last test run that needed it is done.
#   cluster_fixture.sh up|down SCRIPTS_DIR
# Several ctest runs on one machine (several build trees) share the one cluster: each run
# registers itself (its ctest pid) under $KMIM_SLURM_DIR/fixture-users, and the cluster is
# stopped only when no live run is registered and a fixture (not a user) started it. A kmim-local
# Slurm started by hand is used and left running; any other Slurm makes the tests skip.
set -euo pipefail
mode=$1 scripts=$2
state="${KMIM_SLURM_DIR:-/var/lib/kmim-slurm}"
users="$state/fixture-users"
me="$PPID"   # the ctest process
export PATH="$PATH:/usr/sbin"

if [ "$mode" = up ]; then
  if [ "$(id -u)" != 0 ]; then echo "skipped: the slurm tests start daemons and need root"; exit 77; fi
  for tool in munged slurmctld slurmd sbatch flock; do
    command -v "$tool" >/dev/null || { echo "skipped: '$tool' not installed (scripts/install_deps.sh installs Slurm)"; exit 77; }
  done
fi
mkdir -p "$users"
exec 9>"$state/fixture.lock"
flock -w 300 9 || { echo "cluster_fixture.sh: another test run held $state/fixture.lock for 300 s" >&2; exit 1; }
for f in "$users"/*; do  # runs that ended without their "down"
  [ -e "$f" ] && ! kill -0 "$(basename "$f")" 2>/dev/null && rm -f "$f"
done

case "$mode" in
  up)
    if scontrol ping >/dev/null 2>&1; then
      cluster="$(scontrol show config 2>/dev/null | sed -n 's/^ClusterName *= *//p')"
      if [ "$cluster" != kmim-local ]; then
        echo "skipped: a Slurm cluster '$cluster' is already running here; the tests run only on the kmim-local one"
        exit 77
      fi
      echo "using the kmim-local Slurm that is already running"
    else
      # An empty queue, unless another test run is using the cluster (then it crashed: keep its jobs).
      clean=--clean
      [ -z "$(ls -A "$users")" ] || clean=""
      "$scripts/slurm_local_up.sh" $clean 9>&-
      touch "$state/fixture-started"
    fi
    touch "$users/$me"
    ;;
  down)
    rm -f "$users/$me"
    if [ -n "$(ls -A "$users")" ]; then
      echo "leaving Slurm running for the other test runs using it: $(ls "$users" | tr '\n' ' ')"
    elif [ -f "$state/fixture-started" ]; then
      "$scripts/slurm_local_down.sh" 9>&-
      rm -f "$state/fixture-started"
    else
      echo "nothing to stop (Slurm was not started by a test fixture)"
    fi
    ;;
  *) echo "cluster_fixture.sh: up or down?" >&2; exit 2 ;;
esac
