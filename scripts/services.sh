#!/usr/bin/env bash
# Makes Redis (127.0.0.1:6379) and PostgreSQL (127.0.0.1:5432) available on
# loopback for stratacache's tests, examples and benchmarks. Idempotent:
# services that already answer are used as they are; missing packages are
# installed with apt-get (Debian 12, as root); stopped services are started.
# Also makes sure the redis-server and redis-cli binaries exist, since the
# tests spawn their own throwaway servers.
#
# Prints one line per service saying what it did; exits non-zero with a
# message on failure.
#
# Environment: SERVICES_WAIT_SECS (default 30) bounds each readiness wait.
#
# --with-chromium: also make sure Debian's `chromium` is installed (the
# market dashboard's screenshot test drives it headless).
set -euo pipefail

WAIT_SECS="${SERVICES_WAIT_SECS:-30}"
REDIS_PORT=6379
PG_PORT=5432
HBA_MARK="# stratacache scripts/services.sh: trust local TCP"
APT_UPDATED=0

# join SEP WORDS...: prints WORDS separated by SEP.
join() {
    local sep=$1 out=$2
    shift 2
    for w in "$@"; do out+="$sep$w"; done
    printf '%s\n' "$out"
}

die() {
    echo "services.sh: error: $*" >&2
    exit 1
}

apt_install() {
    [ "$(id -u)" -eq 0 ] || die "need root to install: $*"
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install manually: $*"
    export DEBIAN_FRONTEND=noninteractive
    if [ "$APT_UPDATED" -eq 0 ]; then
        apt-get update -qq >/dev/null || die "apt-get update failed"
        APT_UPDATED=1
    fi
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null ||
        die "apt-get install $* failed"
}

# wait_for SECONDS COMMAND...: runs COMMAND every 0.5 s until it succeeds.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.5
    done
}

# ---------------------------------------------------------------- Redis ---

redis_answers() {
    if command -v redis-cli >/dev/null 2>&1; then
        [ "$(timeout 3 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = "PONG" ]
    else
        # No redis-cli yet: speak RESP over bash's /dev/tcp (in a subshell,
        # so a refused connection cannot end this script).
        local reply
        reply=$(
            exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT" || exit 0
            printf 'PING\r\n' >&3
            IFS= read -r -t 3 line <&3 || true
            printf '%s' "${line:-}"
        ) 2>/dev/null || true
        [ "${reply%$'\r'}" = "+PONG" ]
    fi
}

setup_redis() {
    local did=()
    if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
        apt_install redis-server redis-tools
        did+=("installed redis-server redis-tools")
    fi
    # The TLS tests make their certificates with the openssl command line.
    if ! command -v openssl >/dev/null 2>&1; then
        apt_install openssl
        did+=("installed openssl")
    fi
    if redis_answers; then
        did+=("Redis answers PONG at 127.0.0.1:$REDIS_PORT (using it)")
    else
        mkdir -p /var/lib/redis /var/log/redis
        if ! redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" \
            --save "" --appendonly no --dir /var/lib/redis \
            --logfile /var/log/redis/stratacache.log; then
            die "redis-server failed to start (see /var/log/redis/stratacache.log)"
        fi
        if ! wait_for "$WAIT_SECS" redis_answers; then
            tail -n 20 /var/log/redis/stratacache.log >&2 2>/dev/null || true
            die "Redis did not answer PING at 127.0.0.1:$REDIS_PORT within ${WAIT_SECS}s"
        fi
        did+=("started redis-server on 127.0.0.1:$REDIS_PORT (log /var/log/redis/stratacache.log)")
    fi
    echo "redis: $(join "; " "${did[@]}")"
}

# ----------------------------------------------------------- PostgreSQL ---

pg_answers() {
    command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h 127.0.0.1 -p "$PG_PORT"
}

pg_trust_ok() {
    env -u PGPASSWORD PGPASSFILE=/dev/null PGCONNECT_TIMEOUT=5 \
        psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -w -Atqc 'select 1' \
        >/dev/null 2>&1
}

# Prints "VERSION NAME" of the Debian cluster configured for port 5432, if any.
pg_cluster_on_port() {
    command -v pg_lsclusters >/dev/null 2>&1 || return 0
    pg_lsclusters -h 2>/dev/null | awk -v p="$PG_PORT" '$3 == p { print $1, $2; exit }'
}

# Adds trust lines for loopback TCP at the top of a cluster's pg_hba.conf.
pg_add_trust() {
    local ver=$1 name=$2 hba
    hba="/etc/postgresql/$ver/$name/pg_hba.conf"
    [ -f "$hba" ] || die "no $hba to allow password-less TCP logins"
    grep -qF "$HBA_MARK" "$hba" && return 0
    local tmp
    tmp=$(mktemp)
    {
        echo "$HBA_MARK"
        echo "host    all             all             127.0.0.1/32            trust"
        echo "host    all             all             ::1/128                 trust"
        cat "$hba"
    } >"$tmp"
    cat "$tmp" >"$hba"
    rm -f "$tmp"
}

setup_postgres() {
    local did=() ver="" name="" cluster
    if pg_answers; then
        did+=("PostgreSQL accepts connections at 127.0.0.1:$PG_PORT (using it)")
    else
        if ! command -v pg_ctlcluster >/dev/null 2>&1 ||
            ! compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null ||
            ! command -v psql >/dev/null 2>&1; then
            apt_install postgresql postgresql-client
            did+=("installed postgresql postgresql-client")
        fi
        cluster=$(pg_cluster_on_port)
        if [ -n "$cluster" ]; then
            read -r ver name <<<"$cluster"
        elif [ -d /etc/postgresql ] && [ -n "$(ls -A /etc/postgresql)" ]; then
            ver=$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)
            name=main
        else
            ver=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)
            name=main
        fi
        [ -n "$ver" ] || die "no PostgreSQL version found under /usr/lib/postgresql"
        if [ ! -f "/etc/postgresql/$ver/$name/postgresql.conf" ]; then
            pg_createcluster -p "$PG_PORT" "$ver" "$name" >/dev/null ||
                die "pg_createcluster $ver $name failed"
            did+=("created cluster $ver/$name")
        elif [ -z "$cluster" ]; then
            pg_conftool "$ver" "$name" set port "$PG_PORT"
            did+=("set port $PG_PORT on cluster $ver/$name")
        fi
        if ! pg_answers; then
            pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start ||
                pg_answers || die "pg_ctlcluster $ver $name start failed"
            did+=("started cluster $ver/$name")
        fi
        if ! wait_for "$WAIT_SECS" pg_answers; then
            tail -n 20 "/var/log/postgresql/postgresql-$ver-$name.log" >&2 2>/dev/null || true
            die "PostgreSQL did not accept connections at 127.0.0.1:$PG_PORT within ${WAIT_SECS}s"
        fi
    fi

    if ! command -v psql >/dev/null 2>&1; then
        apt_install postgresql-client
        did+=("installed postgresql-client")
    fi
    if pg_trust_ok; then
        did+=("user postgres logs in over TCP without a password")
    else
        cluster=$(pg_cluster_on_port)
        [ -n "$cluster" ] ||
            die "PostgreSQL at 127.0.0.1:$PG_PORT wants a password for user postgres and is not a local Debian cluster this script can reconfigure"
        read -r ver name <<<"$cluster"
        pg_add_trust "$ver" "$name"
        pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" reload ||
            die "pg_ctlcluster $ver $name reload failed"
        wait_for "$WAIT_SECS" pg_trust_ok ||
            die "user postgres still cannot log in over TCP without a password (check /etc/postgresql/$ver/$name/pg_hba.conf)"
        did+=("trusted loopback TCP in $ver/$name pg_hba.conf and reloaded")
    fi
    echo "postgresql: $(join "; " "${did[@]}")"
}

# ------------------------------------------------------------- Chromium ---

setup_chromium() {
    if command -v chromium >/dev/null 2>&1; then
        echo "chromium: $(chromium --version 2>/dev/null | head -n 1) (using it)"
    else
        apt_install chromium fonts-dejavu-core
        command -v chromium >/dev/null 2>&1 || die "chromium is not on PATH after installing it"
        echo "chromium: installed $(chromium --version 2>/dev/null | head -n 1)"
    fi
}

WITH_CHROMIUM=0
for arg in "$@"; do
    case "$arg" in
        --with-chromium) WITH_CHROMIUM=1 ;;
        *) die "unknown argument $arg (known: --with-chromium)" ;;
    esac
done

setup_redis
setup_postgres
if [ "$WITH_CHROMIUM" -eq 1 ]; then
    setup_chromium
fi
