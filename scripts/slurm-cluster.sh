#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for trying and testing `hydra/launcher=submitit_slurm`.
#
#   bash scripts/slurm-cluster.sh start    # install (Debian slurm-wlm + munge) if missing, start, wait until idle
#   bash scripts/slurm-cluster.sh status   # daemons and `sinfo`
#   bash scripts/slurm-cluster.sh stop     # stop the daemons this script started (by their pid files)
#
# Needs root and apt (Debian/Ubuntu). One node named after this host with its real CPU count and
# memory (as `slurmd -C` detects them), one default partition (SLURM_PARTITION, default `debug`),
# no accounting (no slurmdbd, so no `sacct`: submitit warns "Bypassing sacct error", harmlessly).
# It writes /etc/slurm/slurm.conf (the previous one is kept as slurm.conf.orig-landscape) and keeps
# its state under /var/spool/slurm-landscape, logs under /var/log/slurm-landscape.
set -euo pipefail

PARTITION="${SLURM_PARTITION:-debug}"
CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
STATE=/var/spool/slurm-landscape
LOGS=/var/log/slurm-landscape
RUN=/run/slurm-landscape
CTLD_PID="$RUN/slurmctld.pid"
SLURMD_PID="$RUN/slurmd.pid"
MUNGE_PID=/run/munge/munged.pid
MUNGE_STARTED="$RUN/munged.started-by-us"
WAIT_S="${SLURM_START_TIMEOUT:-60}"

say() { echo "slurm-cluster: $*" >&2; }
die() { say "$*"; exit 1; }

need_root() {
  [ "$(id -u)" = 0 ] || die "must run as root (installs packages, starts daemons); got uid $(id -u)"
}

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
     && command -v sinfo >/dev/null; then
    return
  fi
  command -v apt-get >/dev/null || die "slurm is not installed and there is no apt-get to install it"
  say "installing slurm-wlm and munge with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # The packages' maintainer scripts try to start services; without an init system that fails
  # harmlessly, and we start the daemons ourselves below.
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
}

pid_alive() {  # pid_alive <pidfile>: the pid in the file names a live process
  [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

start_munge() {
  install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
  install -d -o munge -g munge -m 0755 /run/munge
  if [ ! -s /etc/munge/munge.key ]; then
    say "creating /etc/munge/munge.key"
    if command -v mungekey >/dev/null; then
      mungekey --create --keyfile=/etc/munge/munge.key
    else
      dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
    fi
  fi
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
  if pid_alive "$MUNGE_PID" && munge -n </dev/null | unmunge >/dev/null 2>&1; then
    return  # already running (ours or the system's)
  fi
  # munged refuses to run as root: run it as the munge user the package created.
  runuser -u munge -- /usr/sbin/munged --force
  touch "$MUNGE_STARTED"
  for _ in $(seq 1 50); do
    munge -n </dev/null | unmunge >/dev/null 2>&1 && return
    sleep 0.1
  done
  die "munged did not come up (see /var/log/munge/munged.log)"
}

write_conf() {
  local host node_line
  host="$(hostname -s)"
  # The node as slurmd itself sees it (CPUs, sockets, cores, threads, RealMemory): a NodeName line
  # that claims more than the hardware has makes slurmctld drain the node.
  node_line="$(slurmd -C | head -n 1)"
  case "$node_line" in
    NodeName=*) ;;
    *) die "unexpected output of 'slurmd -C': $node_line" ;;
  esac
  node_line="$(echo "$node_line" | sed -E "s/^NodeName=[^ ]+/NodeName=$host/")"
  install -d -m 0755 "$CONF_DIR" "$STATE" "$STATE/ctld" "$STATE/d" "$LOGS" "$RUN"
  if [ -f "$CONF" ] && [ ! -f "$CONF.orig-landscape" ] && ! grep -q "written by scripts/slurm-cluster.sh" "$CONF"; then
    cp -p "$CONF" "$CONF.orig-landscape"
  fi
  cat >"$CONF" <<EOF
# written by scripts/slurm-cluster.sh (landscape-exp): a single-node test cluster
ClusterName=landscape
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
MinJobAge=300
KillWait=5
Waittime=0
$node_line State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  # cons_tres asks for a cgroup.conf only with task/cgroup; an empty gres.conf keeps slurmd quiet
  [ -f "$CONF_DIR/gres.conf" ] || : >"$CONF_DIR/gres.conf"
}

node_state() {
  sinfo --noheader --Node --format='%T' 2>/dev/null | head -n 1 | tr -d '*'
}

start() {
  need_root
  install_packages
  install -d -m 0755 "$RUN"
  start_munge
  write_conf
  if pid_alive "$CTLD_PID"; then
    scontrol reconfigure >/dev/null 2>&1 || true  # already up: pick up the rewritten slurm.conf
  else
    rm -f "$CTLD_PID"
    slurmctld -i   # -i: ignore state files of an older cluster (jobs, nodes) rather than refuse to start
  fi
  if ! pid_alive "$SLURMD_PID"; then
    rm -f "$SLURMD_PID"
    slurmd
  fi
  local state=""
  for _ in $(seq 1 "$((WAIT_S * 2))"); do
    state="$(node_state || true)"
    case "$state" in
      idle|mixed|allocated) break ;;
      down|drained|draining|drain)  # e.g. after an unclean stop: let it serve again
        scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 0.5
  done
  case "$state" in
    idle|mixed|allocated) ;;
    *) say "node state is '${state:-unknown}' after ${WAIT_S}s; logs in $LOGS"; status || true; exit 1 ;;
  esac
  say "up: partition '$PARTITION' on node $(hostname -s) ($state)"
  sinfo
}

stop_daemon() {  # stop_daemon <name> <pidfile>
  local pid
  if pid_alive "$2"; then
    pid="$(cat "$2")"
    kill "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    say "stopped $1 (pid $pid)"
  fi
  rm -f "$2"
}

stop() {
  need_root
  stop_daemon slurmd "$SLURMD_PID"
  stop_daemon slurmctld "$CTLD_PID"
  if [ -f "$MUNGE_STARTED" ]; then  # only the munged this script started
    stop_daemon munged "$MUNGE_PID"
    rm -f "$MUNGE_STARTED"
  fi
}

status() {
  local name file
  for name in munged slurmctld slurmd; do
    case "$name" in
      munged) file="$MUNGE_PID" ;;
      slurmctld) file="$CTLD_PID" ;;
      slurmd) file="$SLURMD_PID" ;;
    esac
    if pid_alive "$file"; then echo "$name: running (pid $(cat "$file"))"; else echo "$name: not running"; fi
  done
  if command -v sinfo >/dev/null; then sinfo 2>&1 || true; else echo "sinfo: not installed"; fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  restart) stop; start ;;
  *) echo "usage: $0 start|stop|status|restart" >&2; exit 2 ;;
esac
