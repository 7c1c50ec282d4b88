#!/usr/bin/env bash
# Stops the single-node Slurm that scripts/slurm_local_up.sh started: cancels the jobs still in
# its queue, stops slurmd, slurmctld and (only if slurm_local_up.sh started it) munged by the pid
# files under $KMIM_SLURM_DIR, and puts back the slurm.conf it had replaced (or removes the one it
# wrote). Idempotent: with nothing running it only tidies up and exits 0.
#
# Environment: KMIM_SLURM_DIR, KMIM_SLURM_CONF, KMIM_SLURM_TIMEOUT as for slurm_local_up.sh.
# The state folder (daemon logs, job state) is kept for inspection; delete it by hand if wanted.
set -euo pipefail

state="${KMIM_SLURM_DIR:-/var/lib/kmim-slurm}"
conf="${KMIM_SLURM_CONF:-/etc/slurm/slurm.conf}"
timeout_s="${KMIM_SLURM_TIMEOUT:-60}"
marker="# written by kmim scripts/slurm_local_up.sh"
case "${1:-}" in
  "") ;;
  -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
  *) echo "slurm_local_down.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
esac
export PATH="$PATH:/usr/sbin"
install -d -m 0755 "$state"
exec 9>"$state/daemons.lock"
flock -w "$timeout_s" 9 || { echo "slurm_local_down.sh: error: another slurm_local_up.sh or slurm_local_down.sh held $state/daemons.lock for ${timeout_s}s" >&2; exit 1; }

say() { echo "slurm_local_down.sh: $*"; }
pid_alive() { [ -s "$1" ] && running "$(cat "$1")"; }
# running PID: the process exists and is not a zombie (a PID 1 that does not reap would
# otherwise make a stopped daemon look alive).
running() { kill -0 "$1" 2>/dev/null && ! grep -qE '^[0-9]+ \(.*\) Z' "/proc/$1/stat" 2>/dev/null; }

# stop_daemon NAME PIDFILE: SIGTERM, wait (bounded), then SIGKILL; only the recorded pid, and
# only if that process still is NAME (a stale pid file may name a reused pid).
stop_daemon() {
  local name=$1 file=$2 pid deadline
  if ! pid_alive "$file"; then rm -f "$file"; return 0; fi
  pid="$(cat "$file")"
  if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != "$name" ]; then
    say "pid file $file names pid $pid, which is not $name now; leaving it alone"
    rm -f "$file"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + timeout_s))
  while running "$pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
  if running "$pid"; then
    say "$name (pid $pid) ignored SIGTERM for ${timeout_s}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
  say "stopped $name (pid $pid)"
}

# Jobs first, while the controller still answers: their processes run under slurmstepd, which
# outlives slurmd, so cancelling them is the only way to end them without killing by name.
if pid_alive "$state/slurmctld.pid" && scontrol ping >/dev/null 2>&1; then
  jobs="$(squeue -h -o %i 2>/dev/null | tr '\n' ' ')"
  if [ -n "${jobs// /}" ]; then
    say "cancelling jobs $jobs"
    # shellcheck disable=SC2086
    scancel $jobs 2>/dev/null || true
    deadline=$((SECONDS + timeout_s))
    while [ -n "$(squeue -h -o %i 2>/dev/null)" ] && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.5; done
    [ -z "$(squeue -h -o %i 2>/dev/null)" ] || say "warning: jobs still listed after ${timeout_s}s: $(squeue -h -o '%i %T' | tr '\n' ' ')"
  fi
fi

stop_daemon slurmd "$state/slurmd.pid"
stop_daemon slurmctld "$state/slurmctld.pid"
# munged only if we started it (slurm_local_up.sh records munged.pid only then).
if [ -f "$state/munged.pid" ]; then
  stop_daemon munged "$state/munged.pid"
  rm -f /run/munge/kmim-munged.pid
fi

if [ -f "$state/slurm.conf.before-kmim" ]; then
  mv "$state/slurm.conf.before-kmim" "$conf"
  say "restored the earlier $conf"
elif [ -f "$conf" ] && grep -qxF "$marker" "$conf"; then
  rm -f "$conf"
  say "removed $conf (there was none before)"
fi
say "done (logs and job state kept in $state)"
