#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for the SLURM integration test and for trying the
# workflow's SLURM profile by hand (Debian/Ubuntu, as root, no systemd needed).
#
#   .ci/slurm/up.sh [--accounting]      install + configure + start; returns when the node is idle
#   .ci/slurm/down.sh [--purge]         stop what up.sh started (by PID), optionally remove its files
#
# What it does:
#   1. apt-get install munge slurmctld slurmd slurm-client (+ slurmdbd mariadb-server with --accounting);
#   2. writes /etc/slurm/slurm.conf for this node (CPUs from `slurmd -C`, 85 % of its memory, one
#      partition `ci`; no cgroups, no GPUs), keeping every state/log/pid file under $MVHAND_SLURM_STATE
#      (default /var/tmp/mvhand-slurm);
#   3. starts munged, (mariadbd, slurmdbd,) slurmctld and slurmd without systemd, records their PIDs in
#      $MVHAND_SLURM_STATE/pids/, and waits (bounded) until `sinfo` shows the node idle.
#
# Without --accounting (≈ 20 s) `sacct` does not work: run Snakemake's SLURM plugin with
# `--slurm-status-command squeue` (this cluster keeps finished jobs visible to squeue for
# MinJobAge=3600 s, and every finished job is also written to $MVHAND_SLURM_STATE/jobcomp.log).
# With --accounting (≈ 90 s: MariaDB bound to 127.0.0.1 + slurmdbd) `sacct` works as on a real cluster.
#
# Exit status: 0 = the cluster is up (also when it already was); 77 = SLURM cannot be set up on this
# machine (not root, no apt-get, packages not installable, a SLURM configuration that up.sh did not
# write): the reason is printed on stderr and nothing was changed; anything else = a failure (see the
# logs in $MVHAND_SLURM_STATE/log/).
set -euo pipefail

source "$(dirname "$0")/common.sh"
ACCOUNTING=0
flag_set --accounting "$@" && ACCOUNTING=1

cannot() { echo "up.sh: cannot set up SLURM here: $*" >&2; exit 77; }
fail() {
    echo "up.sh: $*" >&2
    for f in "$STATE"/log/*.log; do [[ -f $f ]] && { echo "--- tail of $f" >&2; tail -n 20 "$f" >&2; }; done
    exit 1
}

# wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.5 s until it succeeds, or fail.
wait_for() {
    local limit=$1 what=$2 t0=$SECONDS
    shift 2
    until "$@" >/dev/null 2>&1; do
        ((SECONDS - t0 < limit)) || fail "timed out after ${limit} s waiting for $what"
        sleep 0.5
    done
}

# start NAME COMMAND...: start a daemon in the foreground-mode of COMMAND, detached from our stdio,
# in its own session, and record its PID in $STATE/pids/NAME.pid.
start() {
    local name=$1
    shift
    setsid "$@" </dev/null >>"$STATE/log/$name.out" 2>&1 &
    echo $! >"$STATE/pids/$name.pid"
    log "started $name (pid $!)"
}

# alive NAME: the process recorded for NAME is running.
alive() {
    local pid
    pid=$(cat "$STATE/pids/$1.pid" 2>/dev/null) || return 1
    kill -0 "$pid" 2>/dev/null
}

node_idle() { [[ $(sinfo -h -N -o '%T' 2>/dev/null | head -n 1) == idle ]]; }
node_up() { [[ $(sinfo -h -N -o '%T' 2>/dev/null | head -n 1) =~ ^(idle|mixed|allocated|completing)$ ]]; }

# ---- 0. preconditions (nothing is changed before they hold) ----------------------------------------
[[ $(id -u) == 0 ]] || cannot "must run as root (it installs Debian packages and starts daemons)"
command -v apt-get >/dev/null || cannot "no apt-get (a Debian/Ubuntu machine is needed)"
if [[ -e $CONF ]] && ! grep -qF "$MARKER" "$CONF"; then
    cannot "$CONF exists and was not written by up.sh (a real SLURM installation?); not touching it"
fi
if [[ -e $CONF ]] && alive slurmctld && alive slurmd && node_up; then
    if ((ACCOUNTING)) && ! alive slurmdbd; then
        fail "a cluster without accounting is running; stop it first (.ci/slurm/down.sh)"
    fi
    log "already up: $(sinfo -h -N -o '%N %T %c CPUs %m MB')"
    exit 0
fi

# ---- 1. packages ------------------------------------------------------------------------------------
packages=(munge slurmctld slurmd slurm-client)
((ACCOUNTING)) && packages+=(slurmdbd mariadb-server)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    log "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    timeout 300 apt-get update -q >/tmp/mvhand-slurm-apt.log 2>&1 ||
        cannot "apt-get update failed (no access to the Debian package registry?); see /tmp/mvhand-slurm-apt.log"
    timeout 600 apt-get install -y -q --no-install-recommends "${missing[@]}" >>/tmp/mvhand-slurm-apt.log 2>&1 ||
        cannot "apt-get install ${missing[*]} failed; see /tmp/mvhand-slurm-apt.log"
fi

# ---- 2. configuration ---------------------------------------------------------------------------------
mkdir -p "$STATE"/{pids,log,ctld,d}
chown slurm:slurm "$STATE/ctld" "$STATE/log"
host=$(hostname -s)
node_line=$(slurmd -C | head -n 1)
[[ $node_line == NodeName=* ]] || fail "slurmd -C printed no node line: $node_line"
real_mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node_line")
node_line=$(sed "s/RealMemory=[0-9]*/RealMemory=$((real_mem * 85 / 100))/; s/^NodeName=[^ ]*/NodeName=$host/" <<<"$node_line")
if ((ACCOUNTING)); then
    storage="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux"
else
    storage="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi
mkdir -p /etc/slurm
cat >"$CONF.tmp" <<EOF
$MARKER: a one-node test cluster (stop: .ci/slurm/down.sh)
ClusterName=mvhand-ci
SlurmctldHost=$host
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/ctld/slurmctld.pid
SlurmdPidFile=$STATE/d/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
# Finished jobs stay visible to squeue/scontrol for an hour (the plugin's squeue status needs >= 120 s).
MinJobAge=3600
# One line per finished job (id, name, state, CPUs, node), with or without accounting.
JobCompType=jobcomp/filetxt
JobCompLoc=$STATE/jobcomp.log
$storage
$node_line State=UNKNOWN
PartitionName=ci Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
mv "$CONF.tmp" "$CONF"
touch "$STATE/jobcomp.log" && chown slurm:slurm "$STATE/jobcomp.log"

# ---- 3. daemons ---------------------------------------------------------------------------------------
# munge (authentication): its own key from the package's postinst
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    install -d -o munge -g munge -m 0755 /run/munge
    start munged setpriv --reuid=munge --regid=munge --init-groups munged --foreground
    wait_for 20 "munged" bash -c 'munge -n | unmunge'
fi

if ((ACCOUNTING)); then
    install -d -o mysql -g mysql -m 0755 /run/mysqld
    if ! mariadb-admin ping >/dev/null 2>&1; then
        start mariadbd mariadbd --user=mysql --bind-address=127.0.0.1 --skip-networking=0 \
            --socket=/run/mysqld/mysqld.sock
        wait_for 60 "MariaDB" mariadb-admin ping
    fi
    if [[ -f $DBD_CONF ]] && grep -qF "$MARKER" "$DBD_CONF"; then
        password=$(sed -n 's/^StoragePass=//p' "$DBD_CONF")
    else
        [[ -e $DBD_CONF ]] && cannot "$DBD_CONF exists and was not written by up.sh; not touching it"
        password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
    fi
    mariadb -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$password';
        ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$password';
        GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
    (
        umask 077
        cat >"$DBD_CONF" <<EOF
$MARKER (accounting of the one-node test cluster)
AuthType=auth/munge
DbdAddr=127.0.0.1
DbdHost=localhost
SlurmUser=slurm
PidFile=$STATE/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$password
StorageLoc=slurm_acct_db
EOF
    )
    chown slurm:slurm "$DBD_CONF"
    alive slurmdbd || start slurmdbd slurmdbd -D
    wait_for 60 "slurmdbd" bash -c "exec 3<>/dev/tcp/127.0.0.1/6819"
fi

# slurmctld: -c starts from a clean state (no jobs of an earlier bring-up), -i ignores missing state files
alive slurmctld || start slurmctld slurmctld -D -c -i
wait_for 30 "slurmctld" scontrol ping
alive slurmd || start slurmd slurmd -D
wait_for 60 "node $host to be idle" node_idle
if ((ACCOUNTING)); then
    # slurmctld registers the cluster in slurmdbd itself; sacct works once it has
    wait_for 60 "the cluster in the accounting database" bash -c 'sacctmgr -n -P list cluster format=cluster | grep -qx mvhand-ci'
    wait_for 30 "sacct" sacct -n -X -a
fi
log "up: $(sinfo -h -N -o '%N %T %c CPUs %m MB'); accounting $( ((ACCOUNTING)) && echo on || echo off)"
