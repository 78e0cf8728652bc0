#!/usr/bin/env bash
# Bring up a real single-node Slurm cluster (munge + MariaDB + slurmdbd +
# slurmctld + slurmd) on loopback, for the `slurm`-marked tests and for CI.
#
# Usage: scripts/slurm-local.sh install|start|stop|status|env
#
#   install  apt-get the Debian packages (no-op when they are present)
#   start    write the configs and start every daemon; idempotent
#   stop     cancel all jobs, then stop the daemons this script started,
#            by the pids they wrote; idempotent
#   status   say which daemon is up, then run sinfo
#   env      print `export SLURM_CONF=...`; use as
#            eval "$(bash scripts/slurm-local.sh env)"
#
# Environment:
#   LAI_SLURM_DIR   state dir holding configs, logs, pids, DB  [/tmp/lai_bench_slurm]
#   LAI_SLURM_CPUS  CPUs the node declares (may exceed the real count)  [24]
#   LAI_SLURM_TIMEOUT  seconds to wait for each daemon  [60]
#
# Needs root, no systemd. Ports: MariaDB 3306, slurmctld 6817, slurmd 6818,
# slurmdbd 6819, all on 127.0.0.1.
set -euo pipefail

STATE_DIR="${LAI_SLURM_DIR:-/tmp/lai_bench_slurm}"
NODE_CPUS="${LAI_SLURM_CPUS:-24}"
WAIT_S="${LAI_SLURM_TIMEOUT:-60}"

CLUSTER_NAME="laibench"
DB_PORT=3306
DB_NAME="slurm_acct_db"
DB_USER="slurm"
DB_PASS="laibench-local-only"

PACKAGES=(slurmctld slurmd slurm-client slurmdbd munge mariadb-server)

SLURM_CONF_FILE="$STATE_DIR/slurm.conf"
DBD_CONF_FILE="$STATE_DIR/slurmdbd.conf"
LOG_DIR="$STATE_DIR/log"
RUN_DIR="$STATE_DIR/run"
MUNGE_DIR="$STATE_DIR/munge"         # owned by munge: its pid, log, seed
MYSQL_DIR="$STATE_DIR/mysql"         # owned by mysql: datadir + socket/pid/log
MYSQL_SOCK="$MYSQL_DIR/mysqld.sock"
MYSQL_PID="$MYSQL_DIR/mysqld.pid"
MYSQL_LOG="$MYSQL_DIR/error.log"
MUNGE_PID="$MUNGE_DIR/munged.pid"
MUNGE_LOG="$MUNGE_DIR/munged.log"
DBD_PID="$RUN_DIR/slurmdbd.pid"
CTLD_PID="$RUN_DIR/slurmctld.pid"
SLURMD_PID="$RUN_DIR/slurmd.pid"
DBD_LOG="$LOG_DIR/slurmdbd.log"
CTLD_LOG="$LOG_DIR/slurmctld.log"
SLURMD_LOG="$LOG_DIR/slurmd.log"

export SLURM_CONF="$SLURM_CONF_FILE"

log() { printf '[slurm-local] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

show_log() {
    local file="$1"
    if [[ -f "$file" ]]; then
        log "---- last lines of $file ----"
        tail -n 30 "$file" >&2 || true
        log "----"
    else
        log "(no log file $file)"
    fi
}

need_root() {
    [[ "$(id -u)" -eq 0 ]] || die "must run as root (daemons, /run/munge, apt-get)"
}

# ---------------------------------------------------------------- pids

# Print the pid recorded in $1 if that process is alive and its name is $2.
live_pid() {
    local pidfile="$1" name="$2" pid comm
    [[ -s "$pidfile" ]] || return 1
    pid="$(tr -dc '0-9' < "$pidfile" 2>/dev/null || true)"
    [[ -n "$pid" ]] || return 1
    [[ -r "/proc/$pid/comm" ]] || return 1
    comm="$(cat "/proc/$pid/comm" 2>/dev/null || true)"
    [[ "$comm" == "$name" ]] || return 1
    printf '%s\n' "$pid"
}

is_up() { live_pid "$1" "$2" >/dev/null; }

# Terminate the process recorded in pidfile $1 if it is named $2.
stop_by_pidfile() {
    local pidfile="$1" name="$2" grace="${3:-20}" pid i
    if ! pid="$(live_pid "$pidfile" "$name")"; then
        log "$name: not running"
        rm -f "$pidfile"
        return 0
    fi
    log "$name: stopping pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
        [[ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" == "$name" ]] || break
        sleep 0.1
    done
    if [[ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" == "$name" ]]; then
        log "$name: still alive after ${grace}s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$pidfile"
}

# Wait (bounded) until the command "$@" succeeds. $1 = description, $2 = log.
wait_for() {
    local what="$1" logfile="$2"; shift 2
    local deadline=$((SECONDS + WAIT_S))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            log "timed out after ${WAIT_S}s waiting for $what"
            show_log "$logfile"
            exit 1
        fi
        sleep 0.3
    done
}

# ---------------------------------------------------------------- install

packages_present() {
    local p status
    for p in "${PACKAGES[@]}"; do
        status="$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)"
        [[ "$status" == "installed" ]] || return 1
    done
}

cmd_install() {
    need_root
    if packages_present; then
        log "packages already installed: ${PACKAGES[*]}"
        return 0
    fi
    export DEBIAN_FRONTEND=noninteractive
    log "installing ${PACKAGES[*]}"
    apt-get update -q < /dev/null
    apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${PACKAGES[@]}" < /dev/null
    # Debian's postinst scripts may have launched daemons through invoke-rc.d;
    # without systemd that usually does nothing. We manage our own instances.
    packages_present || die "packages still missing after apt-get install"
}

# ---------------------------------------------------------------- configs

real_memory_mb() {
    local kb
    kb="$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)"
    # leave ~10% for the OS; slurmd uses these numbers as given (config_overrides)
    echo $((kb * 9 / 10 / 1024))
}

write_if_changed() {
    # $1 = target, $2 = mode; content on stdin
    local target="$1" mode="$2" tmp
    tmp="$(mktemp "$target.XXXXXX")"
    cat > "$tmp"
    chmod "$mode" "$tmp"
    if [[ -f "$target" ]] && cmp -s "$tmp" "$target"; then
        rm -f "$tmp"
        chmod "$mode" "$target"
        return 1
    fi
    mv -f "$tmp" "$target"
    return 0
}

write_configs() {
    local mem changed=0
    [[ "$NODE_CPUS" =~ ^[1-9][0-9]*$ ]] || die "LAI_SLURM_CPUS must be a positive integer, got '$NODE_CPUS'"
    mem="$(real_memory_mb)"

    if write_if_changed "$SLURM_CONF_FILE" 644 <<EOF
# Generated by scripts/slurm-local.sh - single-node loopback test cluster.
ClusterName=$CLUSTER_NAME
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=10
MailProg=/bin/true
StateSaveLocation=$STATE_DIR/state
SlurmdSpoolDir=$STATE_DIR/spool
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$CTLD_LOG
SlurmdLogFile=$SLURMD_LOG
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SlurmdParameters=config_overrides
MpiDefault=none
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$NODE_CPUS RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=localhost Default=NO MaxTime=INFINITE State=UP
EOF
    then changed=1; fi

    if write_if_changed "$DBD_CONF_FILE" 600 <<EOF
# Generated by scripts/slurm-local.sh - accounting for the loopback cluster.
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
DebugLevel=info
LogFile=$DBD_LOG
PidFile=$DBD_PID
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=$DB_USER
StoragePass=$DB_PASS
StorageLoc=$DB_NAME
EOF
    then changed=1; fi

    if ((changed)) && is_up "$CTLD_PID" slurmctld; then
        log "WARNING: configuration changed while slurmctld runs;" \
            "run 'stop' then 'start' to apply it"
    fi
}

prepare_dirs() {
    mkdir -p "$STATE_DIR"
    # mysql and munge must traverse the state dir to reach their subdirs
    chmod 755 "$STATE_DIR"
    mkdir -p "$LOG_DIR" "$RUN_DIR" "$STATE_DIR/state" "$STATE_DIR/spool"
    mkdir -p "$MUNGE_DIR"
    chown munge:munge "$MUNGE_DIR"
    chmod 700 "$MUNGE_DIR"
    install -d -o munge -g munge -m 755 /run/munge
}

# ---------------------------------------------------------------- daemons

munge_works() { munge -n < /dev/null | unmunge > /dev/null; }

start_munge() {
    if is_up "$MUNGE_PID" munged; then
        log "munged: already running (pid $(live_pid "$MUNGE_PID" munged))"
    elif munge_works 2>/dev/null; then
        # a munged this script did not start answers on the default socket
        log "munged: a foreign munged already answers; using it (stop will leave it alone)"
        return 0
    else
        [[ -s /etc/munge/munge.key ]] || {
            log "munged: no /etc/munge/munge.key, creating one"
            mungekey --create --keyfile=/etc/munge/munge.key
            chown munge:munge /etc/munge/munge.key
            chmod 400 /etc/munge/munge.key
        }
        rm -f "$MUNGE_PID"
        log "munged: starting"
        # --force: take over a stale socket left by an earlier boot
        if ! runuser -u munge -- /usr/sbin/munged --force \
                --pid-file="$MUNGE_PID" --log-file="$MUNGE_LOG" \
                --seed-file="$MUNGE_DIR/munged.seed" < /dev/null > "$LOG_DIR/munged.out" 2>&1; then
            cat "$LOG_DIR/munged.out" >&2 || true
            show_log "$MUNGE_LOG"
            die "munged failed to start"
        fi
    fi
    wait_for "munge -n | unmunge" "$MUNGE_LOG" munge_works
}

mysql_client() {
    mariadb --no-defaults --protocol=socket --socket="$MYSQL_SOCK" -uroot "$@" < /dev/null
}

mysql_ping() { mariadb-admin --no-defaults --socket="$MYSQL_SOCK" -uroot ping; }

start_mariadb() {
    if [[ ! -d "$MYSQL_DIR/mysql" ]]; then
        log "mariadb: initialising datadir $MYSQL_DIR"
        mkdir -p "$MYSQL_DIR"
        chown mysql:mysql "$MYSQL_DIR"
        chmod 750 "$MYSQL_DIR"
        if ! mariadb-install-db --no-defaults --user=mysql --datadir="$MYSQL_DIR" \
                --skip-test-db --auth-root-authentication-method=socket \
                < /dev/null > "$LOG_DIR/mariadb-install-db.log" 2>&1; then
            show_log "$LOG_DIR/mariadb-install-db.log"
            rm -rf "$MYSQL_DIR"
            die "mariadb-install-db failed"
        fi
    fi
    chown mysql:mysql "$MYSQL_DIR"
    if is_up "$MYSQL_PID" mariadbd; then
        log "mariadb: already running (pid $(live_pid "$MYSQL_PID" mariadbd))"
    else
        rm -f "$MYSQL_PID" "$MYSQL_SOCK" "$MYSQL_SOCK.lock"
        log "mariadb: starting on 127.0.0.1:$DB_PORT"
        setsid /usr/sbin/mariadbd --no-defaults --user=mysql \
            --datadir="$MYSQL_DIR" --socket="$MYSQL_SOCK" \
            --pid-file="$MYSQL_PID" --log-error="$MYSQL_LOG" \
            --bind-address=127.0.0.1 --port="$DB_PORT" \
            --innodb-buffer-pool-size=64M --innodb-log-file-size=16M \
            --skip-name-resolve \
            < /dev/null >> "$LOG_DIR/mariadbd.out" 2>&1 &
        disown || true
    fi
    wait_for "mariadb to answer ping" "$MYSQL_LOG" mysql_ping
    # with skip-name-resolve TCP clients from 127.0.0.1 match only IP grants
    if ! mysql_client -e "
        CREATE DATABASE IF NOT EXISTS \`$DB_NAME\`;
        CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
        CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$DB_PASS';
        GRANT ALL ON \`$DB_NAME\`.* TO '$DB_USER'@'127.0.0.1';
        GRANT ALL ON \`$DB_NAME\`.* TO '$DB_USER'@'localhost';
        FLUSH PRIVILEGES;" 2> "$LOG_DIR/mariadb-grant.err"; then
        cat "$LOG_DIR/mariadb-grant.err" >&2 || true
        show_log "$MYSQL_LOG"
        die "could not create the accounting database user"
    fi
}

sacctmgr_ok() { timeout 5 sacctmgr -n list cluster < /dev/null; }

start_slurmdbd() {
    if is_up "$DBD_PID" slurmdbd; then
        log "slurmdbd: already running (pid $(live_pid "$DBD_PID" slurmdbd))"
    else
        rm -f "$DBD_PID"
        log "slurmdbd: starting"
        # slurmdbd reads slurmdbd.conf from the directory of SLURM_CONF
        if ! slurmdbd < /dev/null > "$LOG_DIR/slurmdbd.out" 2>&1; then
            cat "$LOG_DIR/slurmdbd.out" >&2 || true
            show_log "$DBD_LOG"
            die "slurmdbd failed to start"
        fi
    fi
    wait_for "slurmdbd (sacctmgr list cluster)" "$DBD_LOG" sacctmgr_ok
}

ctld_ok() { timeout 5 scontrol ping < /dev/null | grep -q 'is UP'; }

start_slurmctld() {
    if is_up "$CTLD_PID" slurmctld; then
        log "slurmctld: already running (pid $(live_pid "$CTLD_PID" slurmctld))"
    else
        rm -f "$CTLD_PID"
        log "slurmctld: starting"
        if ! slurmctld < /dev/null > "$LOG_DIR/slurmctld.out" 2>&1; then
            cat "$LOG_DIR/slurmctld.out" >&2 || true
            show_log "$CTLD_LOG"
            die "slurmctld failed to start"
        fi
    fi
    wait_for "slurmctld (scontrol ping)" "$CTLD_LOG" ctld_ok
}

node_ready() {
    local states
    states="$(timeout 5 sinfo -h -o %t < /dev/null)" || return 1
    grep -Eqx 'idle|mix|alloc' <<< "$states"
}

start_slurmd() {
    if is_up "$SLURMD_PID" slurmd; then
        log "slurmd: already running (pid $(live_pid "$SLURMD_PID" slurmd))"
    else
        rm -f "$SLURMD_PID"
        log "slurmd: starting (node localhost, $NODE_CPUS CPUs)"
        if ! slurmd -N localhost < /dev/null > "$LOG_DIR/slurmd.out" 2>&1; then
            cat "$LOG_DIR/slurmd.out" >&2 || true
            show_log "$SLURMD_LOG"
            die "slurmd failed to start"
        fi
    fi
    if ! wait_for_node; then
        show_log "$SLURMD_LOG"
        show_log "$CTLD_LOG"
        exit 1
    fi
}

wait_for_node() {
    local deadline=$((SECONDS + WAIT_S)) resumed=0
    until node_ready 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            log "timed out after ${WAIT_S}s waiting for node localhost to be idle;" \
                "sinfo says: $(sinfo -h -o '%t %E' 2>&1 | tr '\n' ' ')"
            return 1
        fi
        # a node left DOWN/DRAIN by an earlier unclean stop: bring it back
        if ((!resumed)) && sinfo -h -o %t 2>/dev/null | grep -Eq '^(down|drain|drng)'; then
            scontrol update NodeName=localhost State=RESUME >/dev/null 2>&1 || true
            resumed=1
        fi
        sleep 0.3
    done
}

all_up() {
    is_up "$SLURMD_PID" slurmd && is_up "$CTLD_PID" slurmctld \
        && is_up "$DBD_PID" slurmdbd && is_up "$MYSQL_PID" mariadbd \
        && munge_works 2>/dev/null && node_ready 2>/dev/null
}

cmd_start() {
    need_root
    local t0=$SECONDS
    for b in munged mariadbd mariadb-install-db slurmdbd slurmctld slurmd sinfo sacctmgr; do
        command -v "$b" >/dev/null 2>&1 || [[ -x "/usr/sbin/$b" ]] \
            || die "$b not found; run '$0 install' first"
    done
    if [[ -f "$SLURM_CONF_FILE" ]] && all_up; then
        log "already running (state dir $STATE_DIR)"
        return 0
    fi
    prepare_dirs
    write_configs
    start_munge
    start_mariadb
    start_slurmdbd
    start_slurmctld
    start_slurmd
    log "cluster up in $((SECONDS - t0))s; state dir $STATE_DIR"
    log "use it with: eval \"\$(bash $0 env)\""
}

# ---------------------------------------------------------------- stop

cancel_all_jobs() {
    local ids i
    is_up "$CTLD_PID" slurmctld || return 0
    ids="$(timeout 5 squeue -h -o %A < /dev/null 2>/dev/null || true)"
    [[ -n "$ids" ]] || return 0
    log "cancelling jobs: $(tr '\n' ' ' <<< "$ids")"
    # shellcheck disable=SC2086
    timeout 10 scancel $ids < /dev/null || true
    for ((i = 0; i < 100; i++)); do
        [[ -z "$(timeout 5 squeue -h -o %A < /dev/null 2>/dev/null || true)" ]] && break
        sleep 0.2
    done
}

# slurmstepd processes spawned by *our* slurmd carry our SLURM_CONF in their
# environment; end any that outlive slurmd.
stop_our_stepds() {
    local p pid
    for p in /proc/[0-9]*; do
        pid="${p#/proc/}"
        [[ "$(cat "$p/comm" 2>/dev/null || true)" == "slurmstepd" ]] || continue
        if tr '\0' '\n' < "$p/environ" 2>/dev/null | grep -qxF "SLURM_CONF=$SLURM_CONF_FILE"; then
            log "slurmstepd: ending leftover pid $pid"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
}

cmd_stop() {
    need_root
    if [[ ! -d "$STATE_DIR" ]]; then
        log "nothing to stop (no $STATE_DIR)"
        return 0
    fi
    cancel_all_jobs
    stop_by_pidfile "$SLURMD_PID" slurmd
    stop_our_stepds
    stop_by_pidfile "$CTLD_PID" slurmctld
    stop_by_pidfile "$DBD_PID" slurmdbd
    stop_by_pidfile "$MYSQL_PID" mariadbd 60
    stop_by_pidfile "$MUNGE_PID" munged
    log "stopped"
}

# ---------------------------------------------------------------- status

cmd_status() {
    local name pidfile pid rc=0
    for pair in "munged:$MUNGE_PID" "mariadbd:$MYSQL_PID" "slurmdbd:$DBD_PID" \
                "slurmctld:$CTLD_PID" "slurmd:$SLURMD_PID"; do
        name="${pair%%:*}"; pidfile="${pair#*:}"
        if pid="$(live_pid "$pidfile" "$name")"; then
            printf '%-10s up (pid %s)\n' "$name" "$pid"
        else
            printf '%-10s down\n' "$name"
            rc=1
        fi
    done
    printf 'SLURM_CONF=%s\n' "$SLURM_CONF_FILE"
    if [[ -f "$SLURM_CONF_FILE" ]] && timeout 5 sinfo < /dev/null; then
        :
    else
        echo "sinfo: no answer"
        rc=1
    fi
    return "$rc"
}

cmd_env() {
    printf 'export SLURM_CONF=%q\n' "$SLURM_CONF_FILE"
}

main() {
    case "${1:-}" in
        install) cmd_install ;;
        start)   cmd_start ;;
        stop)    cmd_stop ;;
        status)  cmd_status ;;
        env)     cmd_env ;;
        *)
            echo "usage: $0 install|start|stop|status|env" >&2
            exit 2
            ;;
    esac
}

main "$@"
