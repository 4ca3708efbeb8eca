#!/usr/bin/env bash
# Local 3-node raftd cluster on 127.0.0.1:8000-8002, data under data/, logs under data/logs/.
#
#   scripts/cluster.sh start          build if needed, start nodes 1-3 (those not running)
#   scripts/cluster.sh stop           SIGTERM all nodes, wait for them to exit
#   scripts/cluster.sh status         each node's pid and its Status answer
#   scripts/cluster.sh kill N         SIGKILL node N (a crash)
#   scripts/cluster.sh restart N      stop node N (SIGTERM) and start it again
#   scripts/cluster.sh logs N         follow node N's log
#
# Environment: RUST_LOG (default info), RAFTD_PROFILE (release|debug, default release),
# RAFTD_DATA (default data).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
DATA=${RAFTD_DATA:-data}
PROFILE=${RAFTD_PROFILE:-release}
NODES=(1 2 3)
BIN="$ROOT/target/$PROFILE/raftd"

port_of() { echo $((7999 + $1)); }

peers_of() {
    local me=$1 out="" n
    for n in "${NODES[@]}"; do
        [ "$n" = "$me" ] && continue
        out+="${out:+,}$n=127.0.0.1:$(port_of "$n")"
    done
    echo "$out"
}

pid_of() {
    local f="$DATA/node$1.pid"
    [ -f "$f" ] || return 1
    local pid
    pid=$(cat "$f")
    kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

build() {
    local flag=()
    [ "$PROFILE" = release ] && flag=(--release)
    cargo build -q "${flag[@]}" --bin raftd
}

start_node() {
    local n=$1
    if pid=$(pid_of "$n"); then
        echo "node $n already running (pid $pid)"
        return
    fi
    mkdir -p "$DATA/logs"
    RUST_LOG=${RUST_LOG:-info} nohup "$BIN" --id "$n" --listen "127.0.0.1:$(port_of "$n")" \
        --peers "$(peers_of "$n")" --data-dir "$DATA/node$n" >>"$DATA/logs/node$n.log" 2>&1 &
    echo $! >"$DATA/node$n.pid"
    echo "node $n started (pid $!, 127.0.0.1:$(port_of "$n"), log $DATA/logs/node$n.log)"
}

stop_node() {
    local n=$1 pid i
    if ! pid=$(pid_of "$n"); then
        echo "node $n not running"
        rm -f "$DATA/node$n.pid"
        return
    fi
    kill -TERM "$pid"
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "node $n did not stop within 10 s; sending SIGKILL"
        kill -KILL "$pid"
    fi
    rm -f "$DATA/node$n.pid"
    echo "node $n stopped"
}

# Sends {"type":"Status"} over the client protocol (4-byte big-endian length + JSON) with
# bash's /dev/tcp, and prints the JSON answer.
status_of() {
    local port=$(($1 + 7999))
    timeout 2 bash -c '
        body="{\"type\":\"Status\",\"id\":1}"
        exec 3<>/dev/tcp/127.0.0.1/'"$port"' || exit 1
        printf "\\x00\\x00\\x00\\x$(printf %02x ${#body})%s" "$body" >&3
        len=$(head -c 4 <&3 | od -An -tu1 | awk "{print \$1*16777216+\$2*65536+\$3*256+\$4}")
        head -c "$len" <&3
    ' 2>/dev/null || echo "(no answer)"
}

check_n() {
    case "${1:-}" in
        1 | 2 | 3) ;;
        *) echo "usage: $0 $2 N   (N is 1, 2 or 3)" >&2; exit 2 ;;
    esac
}

case "${1:-}" in
    start)
        build
        for n in "${NODES[@]}"; do start_node "$n"; done
        ;;
    stop)
        for n in "${NODES[@]}"; do stop_node "$n"; done
        ;;
    status)
        for n in "${NODES[@]}"; do
            if pid=$(pid_of "$n"); then
                printf 'node %s  pid %-7s  %s\n' "$n" "$pid" "$(status_of "$n")"
            else
                printf 'node %s  down\n' "$n"
            fi
        done
        ;;
    kill)
        check_n "${2:-}" kill
        if pid=$(pid_of "$2"); then
            kill -KILL "$pid"
            rm -f "$DATA/node$2.pid"
            echo "node $2 killed (SIGKILL)"
        else
            echo "node $2 not running"
        fi
        ;;
    restart)
        check_n "${2:-}" restart
        build
        stop_node "$2"
        start_node "$2"
        ;;
    logs)
        check_n "${2:-}" logs
        tail -f "$DATA/logs/node$2.log"
        ;;
    *)
        echo "usage: $0 start|stop|status|kill N|restart N|logs N" >&2
        exit 2
        ;;
esac
