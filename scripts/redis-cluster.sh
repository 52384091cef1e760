#!/usr/bin/env bash
# Throwaway Redis Cluster (3 masters + 3 replicas) on loopback, for humans
# and benchmarks; the shell counterpart of stratacache-testkit's
# RedisCluster.
#
#   scripts/redis-cluster.sh start [DIR]   start; prints the seed URLs and DIR
#   scripts/redis-cluster.sh stop DIR      stop the nodes started in DIR, remove DIR
#
# start writes one config, pidfile and log per node under DIR/PORT/ (DIR is
# a new `mktemp -d` directory unless given), starts daemonized redis-server
# processes, joins them with `redis-cli --cluster create`, waits until every
# node reports cluster_state:ok with all replicas attached, and writes the
# seed URLs (redis://127.0.0.1:PORT, one per line) to DIR/urls.
# stop only signals the pids recorded in DIR's pidfiles, and only if they
# are still redis-server processes on the recorded ports.
#
# Environment: NODE_TIMEOUT_MS (cluster-node-timeout, default 2000),
# WAIT_SECS (readiness bound, default 60).
set -euo pipefail

NODES=6
MARKER=".stratacache-redis-cluster"
NODE_TIMEOUT_MS="${NODE_TIMEOUT_MS:-2000}"
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

port_in_use() {
    if command -v ss >/dev/null 2>&1 && [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; then
        return 0
    fi
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Picks a free port whose cluster bus port (+10000) is free too, both below
# the kernel's ephemeral port range, and not in the PICKED list (the caller
# adds the result to PICKED: this runs in a command substitution).
PICKED=()
pick_port() {
    local p i
    for ((i = 0; i < 1000; i++)); do
        p=$((10000 + RANDOM % 12768))
        [[ " ${PICKED[*]:-} " == *" $p "* || " ${PICKED[*]:-} " == *" $((p + 10000)) "* ]] && continue
        port_in_use "$p" && continue
        port_in_use "$((p + 10000))" && continue
        echo "$p"
        return 0
    done
    die "no free port pair found"
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
        wait_for 10 gone "$pid" ||
            kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf -- "$dir"
    echo "stopped ${#pids[@]} redis-server process(es); removed $dir"
}

node_ready() {
    local port=$1 info nodes
    info=$(rcli "$port" CLUSTER INFO) || return 1
    [[ "$info" == *"cluster_state:ok"* && "$info" == *"cluster_known_nodes:$NODES"* ]] || return 1
    nodes=$(rcli "$port" CLUSTER NODES) || return 1
    [[ "$nodes" != *fail* ]] || return 1
    [ "$(grep -c ' connected' <<<"$nodes")" -eq "$NODES" ] || return 1
    [ "$(grep -c 'slave' <<<"$nodes")" -eq $((NODES / 2)) ] || return 1
    if grep -q 'myself,slave' <<<"$nodes"; then
        rcli "$port" INFO replication | grep -q '^master_link_status:up' || return 1
    fi
}

pong() {
    [ "$(rcli "$1" PING)" = PONG ]
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

all_ready() {
    local p
    for p in "${PORTS[@]}"; do node_ready "$p" || return 1; done
}

start() {
    need redis-server redis-cli timeout
    local dir=${1:-} port node addrs=()
    if [ -z "$dir" ]; then
        dir=$(mktemp -d -t stratacache-cluster.XXXXXX)
    elif [ -e "$dir" ] && [ -n "$(ls -A "$dir")" ]; then
        [ -f "$dir/$MARKER" ] || die "$dir is not empty; give a new or empty DIR"
        die "$dir already holds a cluster; run: $PROG stop $dir"
    else
        mkdir -p "$dir"
    fi
    dir=$(cd "$dir" && pwd)
    touch "$dir/$MARKER"
    CLEANUP_DIR=$dir

    PORTS=()
    for ((i = 0; i < NODES; i++)); do
        port=$(pick_port)
        PICKED+=("$port" "$((port + 10000))")
        PORTS+=("$port")
        node="$dir/$port"
        mkdir -p "$node"
        cat >"$node/redis.conf" <<EOF
port $port
bind 127.0.0.1
dir $node
daemonize yes
pidfile $node/redis.pid
logfile $node/redis.log
save ""
appendonly no
cluster-enabled yes
cluster-config-file nodes.conf
cluster-node-timeout $NODE_TIMEOUT_MS
cluster-replica-validity-factor 0
repl-diskless-sync-delay 0
EOF
        redis-server "$node/redis.conf" >/dev/null
        if ! wait_for 20 pong "$port"; then
            tail -n 20 "$node/redis.log" >&2 || true
            fail "redis-server on port $port did not answer PING"
        fi
        addrs+=("127.0.0.1:$port")
    done

    if ! timeout "$WAIT_SECS" redis-cli --cluster create "${addrs[@]}" \
        --cluster-replicas 1 --cluster-yes >"$dir/cluster-create.log" 2>&1; then
        cat "$dir/cluster-create.log" >&2
        fail "redis-cli --cluster create failed"
    fi
    if ! wait_for "$WAIT_SECS" all_ready; then
        rcli "${PORTS[0]}" CLUSTER NODES >&2 || true
        fail "cluster not ready within ${WAIT_SECS}s"
    fi
    CLEANUP_DIR=""

    : >"$dir/urls"
    for port in "${PORTS[@]}"; do echo "redis://127.0.0.1:$port" >>"$dir/urls"; done
    echo "Redis Cluster ready (3 masters + 3 replicas, cluster-node-timeout ${NODE_TIMEOUT_MS}ms)"
    echo "seed urls (also in $dir/urls):"
    sed 's/^/  /' "$dir/urls"
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
