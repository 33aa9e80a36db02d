#!/usr/bin/env bash
# Single-node SLURM test cluster: munge, MariaDB, slurmdbd, slurmctld, slurmd, with
# accounting (sacct works) and a node that advertises 2 fake GPUs.
#
# Usage: tests/slurm/cluster.sh start|stop|status      (as root; Debian 12, no systemd)
#
# Layout (why it is split this way):
# - Configs go to /etc/slurm (slurm.conf, gres.conf, slurmdbd.conf). Debian's client
#   commands read /etc/slurm/slurm.conf by default, so sbatch/squeue/sacct work in any
#   shell or subprocess without exporting SLURM_CONF. They are rewritten on each start.
# - All runtime state lives under $VITNQS_SLURM_DIR (default /tmp/vitnqs-slurm): pid
#   files, logs, slurmd spool, slurmctld state, the fake GPU device nodes, smoke-job
#   output. MariaDB keeps Debian's datadir /var/lib/mysql (set up by the package); only
#   its pid file and error log go to the state dir. The munge key stays in /etc/munge.
# - `stop` only stops daemons whose pid files are in the state dir. `start` refuses to
#   run next to the same daemons started by someone else (ports, and a second slurmd
#   kills the first). To apply a changed config: stop, then start.
set -euo pipefail

D=${VITNQS_SLURM_DIR:-/tmp/vitnqs-slurm}
CLUSTER=ci
NODE=localhost
DB_PASS=vitnqs-slurmdbd   # local test database, reachable only via the unix socket
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)   # start order; stop is reversed

log() { printf '[cluster %3ds] %s\n' "$SECONDS" "$*"; }
die() {
  printf '[cluster] ERROR: %s\n' "$*" >&2
  exit 1
}

pidfile() {
  case $1 in
    munged) echo "$D/munge/munged.pid" ;;
    mariadbd) echo "$D/mysql/mariadbd.pid" ;;
    *) echo "$D/slurm/$1.pid" ;;
  esac
}

logfile() {
  case $1 in
    munged) echo "$D/munge/munged.log" ;;
    mariadbd) echo "$D/mysql/error.log" ;;
    *) echo "$D/log/$1.log" ;;
  esac
}

# Pid of a daemon we started, if it still runs (the comm check guards against pid reuse).
our_pid() {
  local f pid
  f=$(pidfile "$1")
  [[ -r $f ]] || return 1
  pid=$(tr -dc 0-9 <"$f")
  [[ -n $pid && "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$1" ]] || return 1
  echo "$pid"
}

# Fail if the same daemon runs but was not started by us (it would hold the ports).
# A daemon that just removed its pid file may still be shutting down: give it 10 s.
foreign_pids() {
  local ours p
  ours=$(our_pid "$1" || true)
  for p in $(pgrep -x "$1" || true); do
    [[ $p == "$ours" ]] || echo "$p"
  done
}

check_not_foreign() {
  local end=$((SECONDS + 10)) p
  while p=$(foreign_pids "$1") && [[ -n $p ]]; do
    ((SECONDS < end)) ||
      die "$1 already runs as pid ${p//$'\n'/ } but was not started by this script (state dir $D); stop it first"
    sleep 0.5
  done
}

# wait_for SECONDS DESCRIPTION LOGFILE COMMAND...: poll until COMMAND succeeds.
wait_for() {
  local timeout=$1 what=$2 logf=$3 end
  shift 3
  end=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < end)) || die "timed out after ${timeout}s waiting for $what; see $logf"
    sleep 0.5
  done
}

install_packages() {
  local p missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]} == 0)) && return 0
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Post-install scripts do not start daemons here (policy-rc.d), we start them below.
  if ! apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >"$D/apt.log" 2>&1; then
    log "install failed, retrying after apt-get update"
    apt-get update -q >>"$D/apt.log" 2>&1 || die "apt-get update failed; see $D/apt.log"
    apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >>"$D/apt.log" 2>&1 ||
      die "apt-get install failed; see $D/apt.log"
  fi
}

make_dirs() {
  install -d -m 755 "$D" "$D/spool" "$D/gpu" "$D/smoke"
  install -d -m 700 -o munge -g munge "$D/munge"
  install -d -m 750 -o mysql -g mysql "$D/mysql"
  # slurmctld/slurmdbd run as user slurm and write their pid, log and state here.
  install -d -m 755 -o slurm -g slurm "$D/slurm" "$D/log"
  install -d -m 700 -o slurm -g slurm "$D/state"
  install -d -m 755 /etc/slurm
  install -d -m 755 -o munge -g munge /run/munge
  install -d -m 755 -o mysql -g mysql /run/mysqld
  # Fake GPUs: gres.conf needs File= entries that are character devices (a GPU entry
  # without File= makes the node INVAL; plain files work but log errors). 1,3 = /dev/null.
  local i
  for i in 0 1; do
    [[ -c $D/gpu/nvidia$i ]] || { rm -f "$D/gpu/nvidia$i" && mknod -m 666 "$D/gpu/nvidia$i" c 1 3; }
  done
}

write_configs() {
  cat >/etc/slurm/slurm.conf <<EOF
# Written by tests/slurm/cluster.sh; state in $D
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmUser=slurm
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$(pidfile slurmctld)
SlurmdPidFile=$(pidfile slurmd)
SlurmctldLogFile=$(logfile slurmctld)
SlurmdLogFile=$(logfile slurmd)
SlurmctldDebug=info
SlurmdDebug=info
# cgroups are not usable in this container. proctrack/pgid, not linuxproc: like cgroup
# on real clusters, it kills what is left of a step when its task exits, including
# processes orphaned by a dying parent (linuxproc loses those: they outlive the job,
# which would let a test pass that fails on a production cluster)
ProctrackType=proctrack/pgid
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Without a default a job that gives no --mem takes all the node's memory
DefMemPerCPU=1000
# Snakemake's slurm plugin (squeue mode) needs finished jobs visible for a while
MinJobAge=600
# Lets the node advertise more CPUs/memory/GPUs than the machine has
SlurmdParameters=config_overrides
ReturnToService=2
MailProg=/bin/true
InactiveLimit=0
# No grace beyond the time limit (slurmctld checks limits every 30 s, so a job ends
# 0-30 s after it); then KillWait seconds between SIGTERM and SIGKILL to checkpoint.
# The --signal=URG@N warning comes at the same 30 s checks, N to N+30 s before the limit.
OverTimeLimit=0
KillWait=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu
# sacct shows the comment Snakemake's SLURM plugin sets (rule_<rule>_wildcards_<...>)
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=16 RealMemory=64000 Gres=gpu:2 State=UNKNOWN
# Preemption by partition priority: a job in urgent (higher tier) that needs what a job
# in a preemptible partition holds takes it. preemptible requeues the job under the
# same id (it waits on a BeginTime of about 2 minutes), preemptible-cancel cancels it;
# both first send SIGTERM, then SIGKILL GraceTime later (one smoke step and a checkpoint
# take well under a second). debug, the default, is never preempted. Preemption
# happens in a scheduling pass: every 10 s here instead of 60 s.
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SchedulerParameters=sched_interval=10
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP PreemptMode=OFF
PartitionName=preemptible Nodes=$NODE MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE GraceTime=30
PartitionName=preemptible-cancel Nodes=$NODE MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=CANCEL GraceTime=30
PartitionName=urgent Nodes=$NODE MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF
EOF
  cat >/etc/slurm/gres.conf <<EOF
AutoDetect=off
NodeName=$NODE Name=gpu File=$D/gpu/nvidia[0-1]
EOF
  # slurmdbd refuses to start unless its config is mode 600 and owned by SlurmUser.
  (
    umask 077
    cat >/etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
LogFile=$(logfile slurmdbd)
PidFile=$(pidfile slurmdbd)
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
  )
  chown slurm:slurm /etc/slurm/slurmdbd.conf
  chmod 600 /etc/slurm/slurmdbd.conf
}

munge_ok() { munge -n | unmunge; }

start_munged() {
  if [[ ! -s /etc/munge/munge.key ]]; then
    mungekey --create --keyfile=/etc/munge/munge.key
  fi
  chown munge:munge /etc/munge/munge.key
  chmod 600 /etc/munge/munge.key
  runuser -u munge -- /usr/sbin/munged --pid-file="$(pidfile munged)" \
    --log-file="$(logfile munged)" </dev/null >>"$D/munge/console.log" 2>&1 ||
    die "munged failed to start; see $(logfile munged) and $D/munge/console.log"
  wait_for 15 "munge (munge -n | unmunge)" "$(logfile munged)" munge_ok
}

start_mariadbd() {
  # The package normally initialises the datadir; do it if that was skipped.
  [[ -d /var/lib/mysql/mysql ]] ||
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql >>"$D/mysql/install.log" 2>&1 ||
    die "mariadb-install-db failed; see $D/mysql/install.log"
  # mariadbd does not daemonize: detach it, it writes its own pid file.
  setsid -f /usr/sbin/mariadbd --user=mysql --pid-file="$(pidfile mariadbd)" \
    --log-error="$(logfile mariadbd)" </dev/null >>"$D/mysql/console.log" 2>&1
  wait_for 60 "MariaDB (mariadb-admin ping)" "$(logfile mariadbd)" mariadb-admin --silent ping
  wait_for 10 "MariaDB pid file" "$(logfile mariadbd)" our_pid mariadbd
  mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;" ||
    die "could not create slurm_acct_db; see $(logfile mariadbd)"
}

start_slurmdbd() {
  slurmdbd </dev/null >>"$D/log/console.log" 2>&1 || die "slurmdbd failed to start; see $(logfile slurmdbd)"
  wait_for 30 "slurmdbd (sacctmgr show cluster)" "$(logfile slurmdbd)" timeout 10 sacctmgr -n show cluster
  # Register the cluster once; slurmctld needs it in the database.
  if ! sacctmgr -n -P show cluster format=cluster | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null || die "sacctmgr add cluster failed; see $(logfile slurmdbd)"
  fi
}

ctld_up() { scontrol ping | grep -q 'is UP'; }

start_slurmctld() {
  slurmctld </dev/null >>"$D/log/console.log" 2>&1 || die "slurmctld failed to start; see $(logfile slurmctld)"
  wait_for 30 "slurmctld (scontrol ping)" "$(logfile slurmctld)" ctld_up
}

start_slurmd() {
  # -N fixes the node name whatever the hostname is.
  slurmd -N "$NODE" </dev/null >>"$D/log/console.log" 2>&1 || die "slurmd failed to start; see $(logfile slurmd)"
  wait_for 15 "slurmd pid file" "$(logfile slurmd)" our_pid slurmd
}

node_state() { sinfo -h -N -n "$NODE" -o %T 2>/dev/null | head -n1; }

node_ok() {
  case $(node_state) in
    idle | mixed | allocated | completing) return 0 ;;
    *) return 1 ;;
  esac
}

wait_node_idle() {
  local end=$((SECONDS + 60)) state last_resume=0
  until node_ok; do
    state=$(node_state)
    ((SECONDS < end)) || die "timed out after 60s waiting for node $NODE to be idle (state '$state'); see $(logfile slurmd) and $(logfile slurmctld)"
    # ReturnToService=2 usually clears DOWN on registration; a node left DRAIN/INVAL
    # by an earlier run needs an explicit resume (only once slurmd answers: no '*').
    if [[ $state =~ down|drain|inval|fail && $state != *'*' ]] && ((SECONDS - last_resume >= 5)); then
      log "node is $state, resuming it"
      scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
      last_resume=$SECONDS
    fi
    sleep 0.5
  done
}

job_state() { scontrol -o show job "$1" | grep -o 'JobState=[A-Z_]*' | cut -d= -f2; }

jobs_finished() {
  local j
  for j; do
    case $(job_state "$j") in
      COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE) ;;
      *) return 1 ;;
    esac
  done
}

sacct_has_gpu_job() { sacct -n -X -P -j "$1" -o State,AllocTRES | grep -q '^COMPLETED|.*gres/gpu=1'; }

smoke_test() {
  local plain jid j out
  # Submit both, then poll every 0.5 s: `sbatch --wait` polls at 2 s then 8 s, which
  # adds ~10 s right after a restart (slurmctld's first scheduling pass comes late).
  plain=$(sbatch --parsable -J smoke -o /dev/null --wrap true) ||
    die "sbatch --wrap true failed; see $(logfile slurmctld)"
  # shellcheck disable=SC2016  # expanded inside the job, not here
  jid=$(sbatch --parsable -J smoke-gpu --gpus=1 -o "$D/smoke/gpu-%j.out" \
    --wrap 'echo "CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES"') ||
    die "sbatch --gpus=1 failed; see $(logfile slurmctld)"
  wait_for 90 "smoke jobs $plain $jid to finish" "$(logfile slurmctld) and $(logfile slurmd)" \
    jobs_finished "$plain" "$jid"
  for j in "$plain" "$jid"; do
    [[ $(job_state "$j") == COMPLETED ]] ||
      die "smoke job $j ended $(job_state "$j"); see $(logfile slurmctld) and $(logfile slurmd)"
  done
  out=$(cat "$D/smoke/gpu-$jid.out" 2>/dev/null || true)
  [[ $out =~ ^CUDA_VISIBLE_DEVICES=[01]$ ]] ||
    die "GPU smoke job $jid printed '$out' instead of CUDA_VISIBLE_DEVICES=0|1; see $(logfile slurmd)"
  log "GPU smoke job $jid: $out; checking sacct"
  # The job record reaches slurmdbd asynchronously.
  wait_for 30 "job $jid in sacct with gres/gpu=1" "$(logfile slurmdbd)" sacct_has_gpu_job "$jid"
}

healthy() {
  local d
  for d in "${DAEMONS[@]}"; do our_pid "$d" >/dev/null || return 1; done
  ctld_up >/dev/null 2>&1 && node_ok && timeout 10 sacctmgr -n show cluster >/dev/null 2>&1
}

cmd_start() {
  [[ $EUID -eq 0 ]] || die "must run as root"
  if [[ -d $D ]] && command -v sinfo >/dev/null && healthy; then
    log "already running and healthy (state dir $D)"
    return 0
  fi
  install -d -m 755 "$D"
  install_packages
  local d pid
  for d in "${DAEMONS[@]}"; do check_not_foreign "$d"; done
  make_dirs
  write_configs
  # Start what is not running yet, in dependency order.
  for d in "${DAEMONS[@]}"; do
    if pid=$(our_pid "$d"); then
      log "$d already runs (pid $pid)"
    else
      log "starting $d"
      "start_$d"
    fi
  done
  wait_node_idle
  log "node $NODE is $(node_state); running smoke jobs"
  smoke_test
  log "cluster ready in ${SECONDS}s (state dir $D, config /etc/slurm)"
}

cmd_stop() {
  local i d pid end
  for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
    d=${DAEMONS[i]}
    if ! pid=$(our_pid "$d"); then
      log "$d not running"
      continue
    fi
    kill -TERM "$pid" 2>/dev/null || true
    end=$((SECONDS + 30))
    while [[ -e /proc/$pid ]] && ((SECONDS < end)); do sleep 0.2; done
    if [[ -e /proc/$pid ]]; then
      log "$d (pid $pid) ignored SIGTERM for 30s, killing it; see $(logfile "$d")"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$(pidfile "$d")"
    log "stopped $d (pid $pid)"
  done
}

cmd_status() {
  local d pid ok=0
  for d in "${DAEMONS[@]}"; do
    if pid=$(our_pid "$d"); then
      printf '%-10s running (pid %s)\n' "$d" "$pid"
    else
      printf '%-10s not running\n' "$d"
      ok=1
    fi
  done
  if command -v sinfo >/dev/null; then
    sinfo || ok=1
    squeue || ok=1
    ((ok == 0)) && { node_ok || ok=1; }
    ((ok == 0)) && { timeout 10 sacctmgr -n show cluster >/dev/null 2>&1 || ok=1; }
  else
    ok=1
  fi
  if ((ok == 0)); then log "healthy"; else log "NOT healthy (logs in $D/log, $D/mysql, $D/munge)"; fi
  return "$ok"
}

case ${1:-} in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
