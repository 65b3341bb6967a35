# Shared by .ci/slurm/up.sh and down.sh (sourced): where the test cluster keeps its files, how its
# configuration files are recognised, option parsing and logging.

STATE=${MVHAND_SLURM_STATE:-/var/tmp/mvhand-slurm}
CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
MARKER="# written by mvhand .ci/slurm/up.sh"
SCRIPT=$(basename "$0")

# flag_set FLAG ARGS...: 0 if FLAG is among ARGS; -h/--help prints the script's header; other args exit 2.
flag_set() {
    local flag=$1 found=1 arg
    shift
    for arg in "$@"; do
        case "$arg" in
            "$flag") found=0 ;;
            -h | --help) sed -n '2,/^set /p' "$0" | sed '$d'; exit 0 ;;
            *) echo "$SCRIPT: unknown argument $arg (use $flag or --help)" >&2; exit 2 ;;
        esac
    done
    return $found
}

log() { echo "[${SCRIPT%.sh} $(date +%H:%M:%S)] $*" >&2; }
