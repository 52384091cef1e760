#!/usr/bin/env bash
# Throwaway Redis Sentinel setup on loopback (1 master + 1 replica + 3
# sentinels watching "stratamaster", quorum 2, down-after-milliseconds 1000,
# failover-timeout 3000), for humans and benchmarks; the shell counterpart
# of stratacache-testkit's RedisSentinelGroup.
#
#   scripts/redis-sentinel.sh start [DIR]   start; prints the sentinel addresses and DIR
#   scripts/redis-sentinel.sh stop DIR      stop the processes started in DIR, remove DIR
#
# start writes one config, pidfile and log per process under DIR/PORT/ (DIR
# is a new `mktemp -d` directory unless given), starts daemonized processes,
# waits until every sentinel sees the master, the replica and the two other
# sentinels, and writes the sentinel URLs (redis://127.0.0.1:PORT, one per
# line) to DIR/urls, the master name to DIR/master_name and the data nodes'
# URLs (master first) to DIR/data_urls.
# stop only signals the pids recorded in DIR's pidfiles, and only if they
# are still redis-server processes on the recorded ports.
#
# Environment: WAIT_SECS (readiness bound, default 60).
set -euo pipefail

MASTER_NAME="stratamaster"
MARKER=".stratacache-redis-sentinel"
WAIT_SECS="${WAIT_SECS:-60}"
PROG="${0##*/}"

usage() {
    echo "usage: $PROG start [DIR] | stop DIR" >&2
    exit 2
}

die() {
    echo "$PROG: error: $*" >&2
    exit 1
}

need() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || die "$c not found on PATH (run scripts/services.sh)"
    done
}

# wait_for SECONDS COMMAND...: runs COMMAND every 0.2 s until it succeeds.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

rcli() {
    local port=$1
    shift
    timeout 5 redis-cli -h 127.0.0.1 -p "$port" "$@" 2>/dev/null
}

pong() {
    [ "$(rcli "$1" PING)" = PONG ]
}

port_in_use() {
    if command -v ss >/dev/null 2>&1 && [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; then
        return 0
    fi
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Picks a free port below the kernel's ephemeral port range that is not in
# the PICKED list (the caller adds the result to PICKED: this runs in a
# command substitution).
PICKED=()
pick_port() {
    local p i
    for ((i = 0; i < 1000; i++)); do
        p=$((10000 + RANDOM % 22000))
        [[ " ${PICKED[*]:-} " == *" $p "* ]] && continue
        port_in_use "$p" && continue
        echo "$p"
        return 0
    done
    die "no free port found"
}

# pid_of DIR/PORT: the recorded pid if it still is redis-server on PORT.
pid_of() {
    local node=$1 port pid title
    port=${node##*/}
    [ -f "$node/redis.pid" ] || return 1
    pid=$(<"$node/redis.pid")
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    title=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ "$title" == redis-server*":$port"* ]] || return 1
    echo "$pid"
}

gone() {
    ! kill -0 "$1" 2>/dev/null
}

stop_dir() {
    local dir=$1 node pid pids=()
    [ -f "$dir/$MARKER" ] || die "$dir was not created by $PROG start (no $MARKER); refusing to touch it"
    for node in "$dir"/*/; do
        node=${node%/}
        if pid=$(pid_of "$node"); then
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
    done
    for pid in "${pids[@]}"; do
        wait_for 10 gone "$pid" || kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf -- "$dir"
    echo "stopped ${#pids[@]} redis-server process(es); removed $dir"
}

# Set while starting: on a failed exit, everything started in it is stopped
# and the directory removed.
CLEANUP_DIR=""
on_exit() {
    local rc=$?
    if [ "$rc" -ne 0 ] && [ -n "$CLEANUP_DIR" ]; then
        echo "$PROG: start failed; stopping what was started in $CLEANUP_DIR" >&2
        stop_dir "$CLEANUP_DIR" >/dev/null 2>&1 || true
    fi
}
trap on_exit EXIT

fail() {
    echo "$PROG: error: $*" >&2
    exit 1
}

# write_common DIR/PORT: config lines shared by data nodes and sentinels.
write_common() {
    local node=$1
    cat <<EOF
port ${node##*/}
bind 127.0.0.1
dir $node
daemonize yes
pidfile $node/redis.pid
logfile $node/redis.log
EOF
}

# launch DIR/PORT ARGS...: starts redis-server with the node's config.
launch() {
    local node=$1
    shift
    redis-server "$node/redis.conf" "$@" >/dev/null
    if ! wait_for 20 pong "${node##*/}"; then
        tail -n 20 "$node/redis.log" >&2 || true
        fail "redis-server on port ${node##*/} did not answer PING"
    fi
}

replica_linked() {
    rcli "$1" INFO replication | grep -q '^master_link_status:up'
}

# field KEY: the line after the line KEY on stdin (SENTINEL MASTER replies
# alternate key and value lines).
field() {
    awk -v k="$1" 'prev == k { print; exit } { prev = $0 }'
}

sentinel_ready() {
    local out
    out=$(rcli "$1" SENTINEL MASTER "$MASTER_NAME") || return 1
    [ "$(field flags <<<"$out")" = "master" ] &&
        [ "$(field num-slaves <<<"$out")" = "1" ] &&
        [ "$(field num-other-sentinels <<<"$out")" = "2" ]
}

all_sentinels_ready() {
    local p
    for p in "${SENTINEL_PORTS[@]}"; do sentinel_ready "$p" || return 1; done
}

start() {
    need redis-server redis-cli timeout
    local dir=${1:-} port node master replica
    if [ -z "$dir" ]; then
        dir=$(mktemp -d -t stratacache-sentinel.XXXXXX)
    elif [ -e "$dir" ] && [ -n "$(ls -A "$dir")" ]; then
        [ -f "$dir/$MARKER" ] || die "$dir is not empty; give a new or empty DIR"
        die "$dir already holds a sentinel group; run: $PROG stop $dir"
    else
        mkdir -p "$dir"
    fi
    dir=$(cd "$dir" && pwd)
    touch "$dir/$MARKER"
    CLEANUP_DIR=$dir

    master=$(pick_port)
    PICKED+=("$master")
    replica=$(pick_port)
    PICKED+=("$replica")
    for port in "$master" "$replica"; do
        node="$dir/$port"
        mkdir -p "$node"
        {
            write_common "$node"
            echo 'save ""'
            echo "appendonly no"
            echo "repl-diskless-sync-delay 0"
            if [ "$port" = "$replica" ]; then echo "replicaof 127.0.0.1 $master"; fi
        } >"$node/redis.conf"
        launch "$node"
    done
    wait_for "$WAIT_SECS" replica_linked "$replica" ||
        fail "replica on port $replica did not link to master $master"

    SENTINEL_PORTS=()
    for _ in 1 2 3; do
        port=$(pick_port)
        PICKED+=("$port")
        SENTINEL_PORTS+=("$port")
        node="$dir/$port"
        mkdir -p "$node"
        {
            write_common "$node"
            echo "sentinel resolve-hostnames no"
            echo "sentinel monitor $MASTER_NAME 127.0.0.1 $master 2"
            echo "sentinel down-after-milliseconds $MASTER_NAME 1000"
            echo "sentinel failover-timeout $MASTER_NAME 3000"
            echo "sentinel parallel-syncs $MASTER_NAME 1"
        } >"$node/redis.conf"
        launch "$node" --sentinel
    done
    if ! wait_for "$WAIT_SECS" all_sentinels_ready; then
        rcli "${SENTINEL_PORTS[0]}" SENTINEL MASTER "$MASTER_NAME" >&2 || true
        fail "sentinels did not see master, replica and each other within ${WAIT_SECS}s"
    fi
    CLEANUP_DIR=""

    : >"$dir/urls"
    for port in "${SENTINEL_PORTS[@]}"; do echo "redis://127.0.0.1:$port" >>"$dir/urls"; done
    echo "$MASTER_NAME" >"$dir/master_name"
    printf 'redis://127.0.0.1:%s\n' "$master" "$replica" >"$dir/data_urls"
    echo "Redis Sentinel group ready: master name $MASTER_NAME, master 127.0.0.1:$master, replica 127.0.0.1:$replica"
    echo "sentinel addresses (URLs in $dir/urls):"
    for port in "${SENTINEL_PORTS[@]}"; do echo "  127.0.0.1:$port"; done
    echo "dir: $dir"
    echo "stop: $0 stop $dir"
}

case "${1:-}" in
start)
    [ $# -le 2 ] || usage
    start "${2:-}"
    ;;
stop)
    [ $# -eq 2 ] || usage
    [ -d "$2" ] || die "no such directory: $2"
    stop_dir "$2"
    ;;
*) usage ;;
esac
