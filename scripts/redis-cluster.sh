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

# shellcheck source-path=SCRIPTDIR source=lib/throwaway-redis.sh
. "$(dirname "$0")/lib/throwaway-redis.sh"

# Picks a free port whose cluster bus port (+10000) is free too, both below
# the kernel's ephemeral port range, and not in the PICKED list (the caller
# adds the result to PICKED: this runs in a command substitution).

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
        port=$(pick_port 10000)
        PICKED+=("$port" "$((port + 10000))")
        PORTS+=("$port")
        node="$dir/$port"
        mkdir -p "$node"
        {
            write_common "$node"
            cat <<EOF
save ""
appendonly no
cluster-enabled yes
cluster-config-file nodes.conf
cluster-node-timeout $NODE_TIMEOUT_MS
cluster-replica-validity-factor 0
repl-diskless-sync-delay 0
EOF
        } >"$node/redis.conf"
        launch "$node"
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
    
    : >"$dir/urls"
    for port in "${PORTS[@]}"; do echo "redis://127.0.0.1:$port" >>"$dir/urls"; done
    echo "Redis Cluster ready (3 masters + 3 replicas, cluster-node-timeout ${NODE_TIMEOUT_MS}ms)"
    echo "seed urls (also in $dir/urls):"
    sed 's/^/  /' "$dir/urls"
    echo "dir: $dir"
    echo "stop: $0 stop $dir"
}

main "$@"
