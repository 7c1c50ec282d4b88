#!/usr/bin/env bash
# Starts a real single-node Slurm on this machine (munge, slurmctld, slurmd) without systemd, so
# the jobs/ scripts can be tried and tested locally. Idempotent: daemons it already started are
# left running; an up-and-healthy cluster makes it print one line and exit 0.
#
#   scripts/slurm_local_up.sh [--clean]     --clean: start slurmctld with an empty job queue
#                                            (when it is not running yet)
#
# Needs root and the Debian packages munge slurmctld slurmd slurm-client (scripts/install_deps.sh).
# Environment:
#   KMIM_SLURM_DIR        state folder owned by these scripts (default /var/lib/kmim-slurm):
#                         pid files, spool folders, daemon logs, the backed-up slurm.conf
#   KMIM_SLURM_CONF       the slurm.conf to write (default /etc/slurm/slurm.conf, where every Slurm
#                         command looks). An existing file that kmim did not write is moved to
#                         $KMIM_SLURM_DIR/slurm.conf.before-kmim and put back by slurm_local_down.sh
#   KMIM_SLURM_PARTITION  partition name (default local)
#   KMIM_SLURM_MEM_PERCENT  share of the memory `slurmd -C` reports that the node advertises
#                         (default 90; advertising all of it makes slurmd drain the node)
#   KMIM_SLURM_TIMEOUT    seconds each wait may take before the script gives up (default 60)
#
# The node is called "localhost" (NodeAddr 127.0.0.1) whatever the machine's hostname is.
# Only daemons started here are recorded (pid files under $KMIM_SLURM_DIR) and stopped by
# scripts/slurm_local_down.sh; a munged that was already running is used, never stopped.
set -euo pipefail

state="${KMIM_SLURM_DIR:-/var/lib/kmim-slurm}"
conf="${KMIM_SLURM_CONF:-/etc/slurm/slurm.conf}"
partition="${KMIM_SLURM_PARTITION:-local}"
mem_percent="${KMIM_SLURM_MEM_PERCENT:-90}"
timeout_s="${KMIM_SLURM_TIMEOUT:-60}"
marker="# written by kmim scripts/slurm_local_up.sh"
clean=0
for arg in "$@"; do
  case "$arg" in
    --clean) clean=1 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "slurm_local_up.sh: unknown option '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

say() { echo "slurm_local_up.sh: $*"; }
die() { echo "slurm_local_up.sh: error: $*" >&2; exit 1; }

# wait_for SECONDS COMMAND...: polls COMMAND (quietly) until it succeeds or time runs out.
wait_for() {
  local limit=$1; shift
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

# running PID: the process exists and is not a zombie (a PID 1 that is slow to reap would
# otherwise make a daemon that ended look alive).
running() { kill -0 "$1" 2>/dev/null && ! grep -qE '^[0-9]+ \(.*\) Z' "/proc/$1/stat" 2>/dev/null; }
# pid_alive FILE: the pid recorded in FILE names a running process.
pid_alive() { [ -s "$1" ] && running "$(cat "$1")"; }

[ "$(id -u)" = 0 ] || die "needs root (it starts munged, slurmctld and slurmd)"
for tool in munged munge unmunge slurmctld slurmd scontrol sinfo srun flock; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] \
    || die "'$tool' not found: install munge slurmctld slurmd slurm-client (scripts/install_deps.sh)"
done
export PATH="$PATH:/usr/sbin"
install -d -m 0755 "$state" "$state/ctld" "$state/slurmd" "$state/log"
# One up or down at a time on this machine. The daemons must not inherit the lock (9>&- below),
# or they would hold it for as long as they run.
exec 9>"$state/daemons.lock"
flock -w "$timeout_s" 9 || die "another slurm_local_up.sh or slurm_local_down.sh held $state/daemons.lock for ${timeout_s}s"

# --- munge: reuse a working munged, else start our own -------------------------------------------
munge_ok() { munge -n | unmunge; }
if munge_ok >/dev/null 2>&1; then
  if ! pid_alive "$state/munged.pid"; then
    rm -f "$state/munged.pid"  # not ours: never to be stopped by slurm_local_down.sh
    say "munge: using the munged that is already running"
  fi
else
  [ -s /etc/munge/munge.key ] || {
    say "munge: creating /etc/munge/munge.key"
    install -d -o munge -g munge -m 0700 /etc/munge
    if command -v mungekey >/dev/null || [ -x /usr/sbin/mungekey ]; then
      runuser -u munge -- "$(command -v mungekey || echo /usr/sbin/mungekey)" --create --keyfile=/etc/munge/munge.key
    else
      dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
      chown munge:munge /etc/munge/munge.key
    fi
    chmod 0400 /etc/munge/munge.key
  }
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 /var/log/munge
  install -d -o munge -g munge -m 0711 /var/lib/munge
  # munged writes its pid file as the munge user, so it lives in /run/munge; we record a copy.
  runuser -u munge -- "$(command -v munged || echo /usr/sbin/munged)" --pid-file=/run/munge/kmim-munged.pid 9>&- \
    || die "munged did not start (see /var/log/munge/munged.log)"
  wait_for "$timeout_s" test -s /run/munge/kmim-munged.pid \
    || die "munged wrote no pid file within ${timeout_s}s"
  cp /run/munge/kmim-munged.pid "$state/munged.pid"
  wait_for "$timeout_s" munge_ok || die "munge -n | unmunge still fails after ${timeout_s}s"
  say "munge: started munged (pid $(cat "$state/munged.pid"))"
fi

# --- slurm.conf ---------------------------------------------------------------------------------
ctld_up=0; slurmd_up=0
pid_alive "$state/slurmctld.pid" && ctld_up=1
pid_alive "$state/slurmd.pid" && slurmd_up=1
if [ "$ctld_up" = 0 ] && [ "$slurmd_up" = 0 ]; then
  # Refuse to take over a Slurm someone else runs on this machine.
  for daemon in slurmctld slurmd; do
    for pid in $(pgrep -x "$daemon" || true); do
      running "$pid" && die "a $daemon that these scripts did not start is running (pid $pid); stop it first"
    done
  done
  if [ -f "$conf" ] && ! grep -qxF "$marker" "$conf"; then
    [ -e "$state/slurm.conf.before-kmim" ] \
      || { cp -p "$conf" "$state/slurm.conf.before-kmim"; say "backed up $conf to $state/slurm.conf.before-kmim"; }
  fi

  # The node's hardware as slurmd sees it; the node name is ours, the rest is slurmd -C's.
  hw="$(slurmd -C | sed -n 1p)" || die "slurmd -C failed"
  field() { sed -n "s/.* $1=\([0-9]*\).*/\1/p" <<<"$hw"; }
  cpus="$(field CPUs)"; boards="$(field Boards)"; sockets="$(field SocketsPerBoard)"
  cores="$(field CoresPerSocket)"; threads="$(field ThreadsPerCore)"; mem="$(field RealMemory)"
  [ -n "$cpus" ] && [ -n "$mem" ] || die "cannot read CPUs/RealMemory from 'slurmd -C': $hw"
  mem=$((mem * mem_percent / 100))

  install -d "$(dirname "$conf")"
  write_conf() {  # write_conf MPI_DEFAULT
    cat >"$conf.kmim-new" <<EOF
$marker
# (state in $state; scripts/slurm_local_down.sh stops it and restores any earlier file)
ClusterName=kmim-local
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# A requeued job waits cred_expire seconds before it may start again (default 120).
AuthInfo=cred_expire=5
CryptoType=crypto/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/slurmd
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No systemd and no cgroups here.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MailProg=/bin/true
MpiDefault=$1
SchedulerType=sched/backfill
# One small node: schedule every second, so dependent and requeued jobs start without delay.
SchedulerParameters=bf_interval=1,sched_interval=1,batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# Never let a job hang forever: impossible requests are rejected at submission, and jobs whose
# afterok dependency failed are cancelled instead of pending with DependencyNeverSatisfied.
EnforcePartLimits=ALL
DependencyParameters=kill_invalid_depend
# No sacct here: finished jobs stay visible to 'scontrol show job' for 10 minutes.
MinJobAge=600
# Preemption: jobs may requeue themselves (scontrol requeue) after checkpointing.
JobRequeue=1
KillWait=10
ReturnToService=2
SlurmdTimeout=60
InactiveLimit=0
NodeName=localhost NodeAddr=127.0.0.1 NodeHostname=localhost CPUs=$cpus Boards=${boards:-1} SocketsPerBoard=${sockets:-1} CoresPerSocket=${cores:-$cpus} ThreadsPerCore=${threads:-1} RealMemory=$mem State=UNKNOWN
PartitionName=$partition Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$conf.kmim-new" "$conf"
  }
  # MpiDefault=pmix makes a plain 'srun ./mpi_program' work; use it when the pmix plugin loads.
  write_conf none
  mpi_default=none
  mpi_list="$(srun --mpi=list 2>&1)" || true
  if grep -qw pmix <<<"$mpi_list"; then mpi_default=pmix; fi
  write_conf "$mpi_default"
  say "wrote $conf (node localhost: $cpus CPUs, ${mem} MB, MpiDefault=$mpi_default)"
fi

# --- daemons ------------------------------------------------------------------------------------
if [ "$ctld_up" = 0 ]; then
  rm -f "$state/slurmctld.pid"
  flags=(-i)
  [ "$clean" = 1 ] && flags=(-c -i)
  slurmctld "${flags[@]}" 9>&- || die "slurmctld did not start (see $state/log/slurmctld.log)"
  wait_for "$timeout_s" test -s "$state/slurmctld.pid" \
    || die "slurmctld wrote no pid file within ${timeout_s}s (see $state/log/slurmctld.log)"
  say "started slurmctld (pid $(cat "$state/slurmctld.pid"))"
fi
wait_for "$timeout_s" scontrol ping \
  || die "slurmctld does not answer 'scontrol ping' after ${timeout_s}s (see $state/log/slurmctld.log)"
if [ "$slurmd_up" = 0 ]; then
  rm -f "$state/slurmd.pid"
  slurmd -N localhost 9>&- || die "slurmd did not start (see $state/log/slurmd.log)"
  wait_for "$timeout_s" test -s "$state/slurmd.pid" \
    || die "slurmd wrote no pid file within ${timeout_s}s (see $state/log/slurmd.log)"
  say "started slurmd (pid $(cat "$state/slurmd.pid"))"
fi

# --- health: node usable, a trivial job step runs -----------------------------------------------
node_state() { sinfo -h -N -n localhost -o %T 2>/dev/null | sed -n 1p; }
node_ready() { case "$(node_state)" in idle|mixed|allocated|completing) return 0 ;; *) return 1 ;; esac; }
if ! wait_for "$timeout_s" node_ready; then
  case "$(node_state)" in
    drain*|down*) scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true ;;
  esac
  wait_for "$timeout_s" node_ready \
    || die "node localhost is '$(node_state)', not idle, after $((2 * timeout_s))s: $(sinfo -h -N -n localhost -o '%E')"
fi
timeout "$timeout_s" srun -N 1 -n 1 -t 1 hostname >/dev/null 9>&- \
  || die "a trivial 'srun hostname' failed or took more than ${timeout_s}s (see $state/log/)"
say "Slurm is up: partition $partition, node localhost $(node_state) (state in $state)"
