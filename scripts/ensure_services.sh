#!/usr/bin/env bash
# Make sure the PostgreSQL and Redis servers the project needs answer; start local ones if not.
#
#   scripts/ensure_services.sh [--postgres URL]... [--redis URL]...
#   scripts/ensure_services.sh --stop-started      # stop the redis-servers this script started
#
# A server is only ever started on this machine (URL host 127.0.0.1, localhost or ::1):
#   PostgreSQL: pg_ctlcluster --skip-systemctl-redirect <version> main start
#   Redis:      redis-server on the URL's port, nothing on disk, pid and log in .run/
# If it still does not answer, print what is missing and how to start it, and exit 1.
set -euo pipefail

cd "$(dirname "$0")/.."
RUN_DIR=.run
PYTHON=${PYTHON:-python3}
if [[ -x .venv/bin/python ]]; then
    PYTHON=.venv/bin/python
fi

say() { echo "ensure_services: $*" >&2; }

# Print "host port" of a URL (default port $2 when the URL has none).
host_port() {
    "$PYTHON" - "$1" "$2" <<'EOF'
import sys
from urllib.parse import urlsplit

url = urlsplit(sys.argv[1])
print(url.hostname or "127.0.0.1", url.port or int(sys.argv[2]))
EOF
}

is_local() {
    [[ $1 == 127.0.0.1 || $1 == localhost || $1 == ::1 ]]
}

# Wait up to $1 seconds for the command after it to succeed.
wait_for() {
    local seconds=$1
    shift
    local deadline=$((SECONDS + seconds))
    until "$@"; do
        if ((SECONDS >= deadline)); then
            return 1
        fi
        sleep 0.5
    done
}

# --- PostgreSQL ------------------------------------------------------------------------------

postgres_answers() {
    local host=$1 port=$2
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h "$host" -p "$port" -t 2
        return
    fi
    # No client tools: a server that accepts a TCP connection is taken as up.
    "$PYTHON" -c 'import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 2).close()' \
        "$host" "$port" >/dev/null 2>&1
}

ensure_postgres() {
    local url=$1 host port
    read -r host port < <(host_port "$url" 5432)
    if postgres_answers "$host" "$port"; then
        return 0
    fi
    if is_local "$host" && command -v pg_ctlcluster >/dev/null 2>&1 && [[ -d /etc/postgresql ]]; then
        local version
        version=$(ls /etc/postgresql | sort -V | tail -n 1)
        if [[ -n $version ]]; then
            say "PostgreSQL is not answering at $host:$port; starting cluster $version/main"
            pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
            if wait_for 20 postgres_answers "$host" "$port"; then
                return 0
            fi
        fi
    fi
    say "PostgreSQL is not answering at $host:$port and could not be started here."
    say "  The tests need a real PostgreSQL server (user postgres, allowed to create databases)."
    say "  Install it:  apt-get install postgresql"
    say "  Start it:    pg_ctlcluster --skip-systemctl-redirect \$(ls /etc/postgresql) main start"
    say "               (or: service postgresql start)"
    say "  Or point DATABASE_URL at a running server, e.g. postgres://postgres@127.0.0.1:5432/messaging"
    return 1
}

# --- Redis -----------------------------------------------------------------------------------

redis_answers() {
    local url=$1 host=$2 port=$3
    if command -v redis-cli >/dev/null 2>&1; then
        [[ $(redis-cli -u "$url" ping 2>/dev/null) == PONG ]]
        return
    fi
    # No redis-cli: speak RESP directly; any reply (+PONG, or -NOAUTH with a password) is a Redis.
    "$PYTHON" - "$host" "$port" >/dev/null 2>&1 <<'EOF'
import socket
import sys

with socket.create_connection((sys.argv[1], int(sys.argv[2])), 2) as conn:
    conn.sendall(b"PING\r\n")
    sys.exit(0 if conn.recv(64)[:1] in (b"+", b"-") else 1)
EOF
}

ensure_redis() {
    local url=$1 host port
    read -r host port < <(host_port "$url" 6379)
    if redis_answers "$url" "$host" "$port"; then
        return 0
    fi
    if ! is_local "$host"; then
        say "Redis is not answering at $host:$port (from $url); start it there or fix the URL."
        return 1
    fi
    if ! command -v redis-server >/dev/null 2>&1; then
        say "Nothing answers at $url and there is no redis-server binary to start one."
        say "  Install Redis:  apt-get install redis-server   (macOS: brew install redis)"
        say "  or start one:   redis-server --port $port --save '' --appendonly no --daemonize yes"
        say "  or set REDIS_URL to a running Redis, e.g. redis://127.0.0.1:6379/0"
        return 1
    fi
    mkdir -p "$RUN_DIR"
    say "Redis is not answering at $host:$port; starting a local redis-server"
    # Nothing is persisted: the database and the broker state are in PostgreSQL/SQLite or
    # disposable. The pid file lets `make clean` stop exactly this server.
    redis-server --bind 127.0.0.1 --port "$port" --save "" --appendonly no --daemonize yes \
        --dir "$PWD/$RUN_DIR" --logfile "$PWD/$RUN_DIR/redis-$port.log" \
        --pidfile "$PWD/$RUN_DIR/redis-$port.pid" || true
    if wait_for 10 redis_answers "$url" "$host" "$port"; then
        say "started redis-server on port $port (pid $(cat "$RUN_DIR/redis-$port.pid" 2>/dev/null || echo '?'));" \
            "stop it with: redis-cli -p $port shutdown nosave (or make clean)"
        return 0
    fi
    say "redis-server did not come up on port $port; see $RUN_DIR/redis-$port.log"
    return 1
}

# Stop the redis-servers started above (pid files in .run/), checking each pid is a redis-server.
stop_started() {
    local pidfile pid
    for pidfile in "$RUN_DIR"/redis-*.pid; do
        [[ -e $pidfile ]] || continue
        pid=$(cat "$pidfile")
        if [[ -n $pid && -r /proc/$pid/comm && $(cat "/proc/$pid/comm") == redis-server ]]; then
            say "stopping redis-server pid $pid ($pidfile)"
            kill "$pid"
        fi
        rm -f "$pidfile"
    done
}

status=0
while (($#)); do
    case $1 in
        --postgres)
            ensure_postgres "$2" || status=1
            shift 2
            ;;
        --redis)
            ensure_redis "$2" || status=1
            shift 2
            ;;
        --stop-started)
            stop_started
            shift
            ;;
        *)
            say "unknown argument: $1"
            exit 2
            ;;
    esac
done
exit "$status"
