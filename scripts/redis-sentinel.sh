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

# shellcheck source-path=SCRIPTDIR source=lib/throwaway-redis.sh
. "$(dirname "$0")/lib/throwaway-redis.sh"

# Picks a free port below the kernel's ephemeral port range that is not in
# the PICKED list (the caller adds the result to PICKED: this runs in a
# command substitution).

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

    master=$(pick_port 0)
    PICKED+=("$master")
    replica=$(pick_port 0)
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
        port=$(pick_port 0)
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

main "$@"
