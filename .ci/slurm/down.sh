#!/usr/bin/env bash
# Stop the one-node SLURM cluster started by .ci/slurm/up.sh.
#
#   .ci/slurm/down.sh            cancel every job, stop the daemons up.sh started (by their recorded PIDs)
#   .ci/slurm/down.sh --purge    also remove the files up.sh wrote (state folder, slurm.conf, slurmdbd.conf)
#
# Only processes whose PID up.sh recorded in $MVHAND_SLURM_STATE/pids/ (default /var/tmp/mvhand-slurm)
# and whose command name still matches are signalled: SIGTERM, then SIGKILL after 15 s. The installed
# packages stay (a later up.sh starts in seconds). Exit status 0 also when nothing was running.
set -uo pipefail

source "$(dirname "$0")/common.sh"
PURGE=0
flag_set --purge "$@" && PURGE=1

# stop NAME: SIGTERM the recorded process of NAME if it is still that program, wait, SIGKILL if needed.
stop() {
    local name=$1 file="$STATE/pids/$1.pid" pid comm
    [[ -f $file ]] || return 0
    pid=$(cat "$file")
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || comm=""
    if [[ -n $comm && $comm == "${name:0:15}"* ]]; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 30); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name (pid $pid) ignored SIGTERM for 15 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null
        fi
        log "stopped $name (pid $pid)"
    fi
    rm -f "$file"
}

if [[ -f $STATE/pids/slurmctld.pid ]] && command -v scancel >/dev/null; then
    # cancel every job of the test cluster and give their steps a moment to end
    timeout 10 scancel --full --quiet -u root 2>/dev/null
    for _ in $(seq 20); do
        [[ -z $(timeout 5 squeue -h -t R,CG -o %i 2>/dev/null) ]] && break
        sleep 0.5
    done
fi
for name in slurmd slurmctld slurmdbd mariadbd munged; do
    stop "$name"
done

if ((PURGE)); then
    for f in /etc/slurm/slurm.conf /etc/slurm/slurmdbd.conf; do
        [[ -f $f ]] && grep -qF "$MARKER" "$f" && rm -f "$f" && log "removed $f"
    done
    rm -rf "$STATE" && log "removed $STATE"
fi
exit 0
