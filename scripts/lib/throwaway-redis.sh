# Shared by scripts/redis-cluster.sh and scripts/redis-sentinel.sh: process
# plumbing for throwaway redis-server groups started under one directory.
# The including script sets PROG, MARKER and WAIT_SECS and defines start();
# it calls `main "$@"` last.
# shellcheck shell=bash

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

# pick_port [COMPANION_OFFSET]: a free port below the kernel's ephemeral port
# range (with PORT+COMPANION_OFFSET free too, e.g. a cluster bus port) that is
# not in the PICKED list (the caller adds the result to PICKED: this runs in a
# command substitution).
PICKED=()
pick_port() {
    local offset=${1:-0} p i
    for ((i = 0; i < 1000; i++)); do
        p=$((10000 + RANDOM % (22768 - offset)))
        [[ " ${PICKED[*]:-} " == *" $p "* ]] && continue
        if [ "$offset" -gt 0 ]; then
            [[ " ${PICKED[*]:-} " == *" $((p + offset)) "* ]] && continue
            port_in_use "$((p + offset))" && continue
        fi
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
        wait_for 10 gone "$pid" ||
            kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf -- "$dir"
    echo "stopped ${#pids[@]} redis-server process(es); removed $dir"
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

main() {
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
}
