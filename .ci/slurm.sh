#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for the tests of `reglab study --launcher slurm` and for
# trying the Slurm launcher on a laptop. Usage:
#
#   .ci/slurm.sh start     install slurm-wlm + munge if missing (apt-get, as root), write a minimal slurm.conf
#                          (no cgroups, one node "localhost" with this machine's CPUs and memory), start munged,
#                          slurmctld and slurmd; wait until the node is idle. Does nothing if already running.
#   .ci/slurm.sh stop      cancel this cluster's jobs, stop its daemons (and munged, if this script started it)
#   .ci/slurm.sh status    sinfo + squeue of this cluster
#   .ci/slurm.sh env       the line to paste into a shell: export SLURM_CONF=...
#
# Everything lives in $REGLAB_SLURM_DIR (default /tmp/reglab-slurm): slurm.conf, spool folders, daemon logs.
# Clients (sbatch, squeue, scancel, reglab) find this cluster through SLURM_CONF=$REGLAB_SLURM_DIR/slurm.conf;
# /etc/slurm is not touched. Needs root (the daemons run as root and jobs run as their submitter). Exit status 0
# when the cluster is up; otherwise 1 with the reason on the last line of stderr (the tests skip with it).
set -euo pipefail

DIR="${REGLAB_SLURM_DIR:-/tmp/reglab-slurm}"
CONF="$DIR/slurm.conf"
export SLURM_CONF="$CONF"

die() { echo "slurm.sh: $*" >&2; exit 1; }

install_packages() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null && return 0
  [ "$(id -u)" = 0 ] || die "slurm-wlm/munge are not installed and this is not root: sudo apt-get install slurm-wlm munge"
  command -v apt-get >/dev/null || die "slurm-wlm/munge are not installed and there is no apt-get here"
  echo "installing slurm-wlm and munge (apt-get) ..." >&2
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge; } >"$DIR/apt.log" 2>&1 \
    || die "apt-get install slurm-wlm munge failed (see $DIR/apt.log)"
}

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
  munge_ok && return 0
  mkdir -p /run/munge /var/lib/munge /var/log/munge /etc/munge
  if [ ! -s /etc/munge/munge.key ]; then
    if [ -x /usr/sbin/mungekey ]; then /usr/sbin/mungekey -c -k /etc/munge/munge.key
    else /usr/sbin/create-munge-key -f; fi
  fi
  chown -R munge:munge /run/munge /var/lib/munge /var/log/munge /etc/munge/munge.key
  chmod 0700 /var/lib/munge /var/log/munge
  chmod 0755 /run/munge
  chmod 0400 /etc/munge/munge.key
  runuser -u munge -- /usr/sbin/munged || die "munged did not start (see /var/log/munge/munged.log)"
  touch "$DIR/munged.started-here"
  for _ in $(seq 50); do munge_ok && return 0; sleep 0.1; done
  die "munged started but munge -n | unmunge fails"
}

write_conf() {
  local host mem cpus
  host="$(hostname -s)"
  cpus="$(nproc)"
  mem=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))  # MB, below what slurmd measures
  mkdir -p "$DIR/ctld" "$DIR/d"
  cat >"$CONF" <<EOF
# Written by .ci/slurm.sh: a single-node test cluster. No cgroups, no accounting database.
ClusterName=reglab
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/d
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
ReturnToService=2
KillWait=5
MinJobAge=600
InactiveLimit=0
NodeName=localhost NodeHostname=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
}

running() { [ -f "$CONF" ] && sinfo -h -o %T >/dev/null 2>&1; }

wait_idle() {
  local state=""
  for _ in $(seq 150); do
    state="$(sinfo -h -n localhost -o %T 2>/dev/null | head -1)"
    case "$state" in
      idle|mixed|allocated) return 0 ;;
      down*|drain*) scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.2
  done
  die "the node did not become idle (state '${state:-none}'); see $DIR/slurmctld.log and $DIR/slurmd.log"
}

start() {
  mkdir -p "$DIR"
  if running; then wait_idle; echo "slurm test cluster already running (SLURM_CONF=$CONF)"; return 0; fi
  [ "$(id -u)" = 0 ] || die "starting the test cluster needs root (daemons run as root)"
  install_packages
  start_munge
  write_conf
  slurmctld -f "$CONF" || die "slurmctld did not start (see $DIR/slurmctld.log)"
  slurmd -f "$CONF" -N localhost || die "slurmd did not start (see $DIR/slurmd.log)"
  wait_idle
  echo "slurm test cluster up: $(sinfo -h -o '%P %D node %c cpus %T') (SLURM_CONF=$CONF)"
}

stop_pid() {  # stop_pid PIDFILE NAME: SIGTERM, then wait up to 10 s
  local pid
  [ -f "$1" ] || return 0
  pid="$(cat "$1")"
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { echo "slurm.sh: $2 ($pid) ignored SIGTERM; SIGKILL" >&2; kill -9 "$pid" || true; }
  fi
  rm -f "$1"
}

stop() {
  if running; then scancel --full --quiet -u "$(id -un)" 2>/dev/null || true; fi
  stop_pid "$DIR/slurmd.pid" slurmd
  stop_pid "$DIR/slurmctld.pid" slurmctld
  if [ -f "$DIR/munged.started-here" ]; then
    stop_pid /run/munge/munged.pid munged
    rm -f "$DIR/munged.started-here"
  fi
  echo "slurm test cluster stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) running || die "not running (.ci/slurm.sh start)"; sinfo; squeue ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
