#!/usr/bin/env bash
# Local 3-node raftd cluster on 127.0.0.1:8000-8002 (HTTP on 9000-9002: /metrics, /readyz, the
# store for curl), data under data/, logs under data/logs/.
#
#   scripts/cluster.sh start          build if needed, start nodes 1-3 (those not running)
#   scripts/cluster.sh start --tls    the same with TLS: a CA and node certificates in data/tls/
#                                     (raftctl settings in data/raftctl.env: source it)
#   scripts/cluster.sh stop           SIGTERM all nodes, wait for them to exit
#   scripts/cluster.sh status         each node's pid and its Status answer
#   scripts/cluster.sh kill N         SIGKILL node N (a crash)
#   scripts/cluster.sh restart N      stop node N (SIGTERM) and start it again
#   scripts/cluster.sh add N          start node N on port 7999+N with an empty data dir, joining
#                                     the cluster, and add it (a learner until caught up, then a
#                                     voter)
#   scripts/cluster.sh remove N       remove node N from the cluster, then stop it
#   scripts/cluster.sh logs N         follow node N's log
#
# The nodes it manages are 1-3 plus those added, minus those removed (kept in data/members).
# A leader stopped with SIGTERM hands leadership over first, so `restart` of each node in turn
# is a rolling restart without an election timeout.
#
# Peers are always authenticated: without --tls, start makes a cluster secret
# (data/cluster-secret, 32 random bytes as hex, mode 600) on first use and gives it to every
# node; with --tls, certificates instead. The choice is kept in data/security and reused by
# later starts and restarts (start --secret goes back to the secret).
#
# Environment: RUST_LOG (default info), RAFTD_PROFILE (release|debug, default release),
# RAFTD_DATA (default data), RAFTD_BASE_PORT (node N listens on RAFTD_BASE_PORT-1+N; default
# 8000), RAFTD_HTTP_BASE_PORT (node N serves HTTP on RAFTD_HTTP_BASE_PORT-1+N; default 9000),
# RAFTD_BIN_DIR (a directory holding raftd and raftctl already built: no cargo build).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
DATA=${RAFTD_DATA:-data}
PROFILE=${RAFTD_PROFILE:-release}
BASE_PORT=${RAFTD_BASE_PORT:-8000}
HTTP_BASE_PORT=${RAFTD_HTTP_BASE_PORT:-9000}
FOUNDERS=(1 2 3)
BIN_DIR=${RAFTD_BIN_DIR:-$ROOT/target/$PROFILE}
BIN="$BIN_DIR/raftd"
CTL="$BIN_DIR/raftctl"

port_of() { echo $((BASE_PORT - 1 + $1)); }
http_port_of() { echo $((HTTP_BASE_PORT - 1 + $1)); }

# The managed nodes, one per line: data/members if present, else the founders.
members() {
    if [ -f "$DATA/members" ]; then cat "$DATA/members"; else printf '%s\n' "${FOUNDERS[@]}"; fi
}
set_members() { mkdir -p "$DATA"; printf '%s\n' "$@" | sort -n | uniq >"$DATA/members"; }
is_member() { members | grep -qx "$1"; }

# --peers of a founder: the founders (a node's log holds the configuration after that).
peers_of() {
    local me=$1 out="" n
    for n in "${FOUNDERS[@]}"; do
        [ "$n" = "$me" ] && continue
        out+="${out:+,}$n=127.0.0.1:$(port_of "$n")"
    done
    echo "$out"
}

# Whether process $1 runs: it exists and is not a zombie (where nothing reaps the nodes this
# script started and left behind, one that exited stays a zombie).
alive() {
    kill -0 "$1" 2>/dev/null || return 1
    if [ -r "/proc/$1/stat" ]; then
        ! grep -q '^[0-9]* (.*) Z' "/proc/$1/stat"
    fi
}

pid_of() {
    local f="$DATA/node$1.pid"
    [ -f "$f" ] || return 1
    local pid
    pid=$(cat "$f")
    alive "$pid" || return 1
    echo "$pid"
}

build() {
    [ -n "${RAFTD_BIN_DIR:-}" ] && return
    local flag=()
    [ "$PROFILE" = release ] && flag=(--release)
    cargo build -q "${flag[@]}" --bin raftd --bin raftctl
}

mode() { cat "$DATA/security" 2>/dev/null || echo secret; }

# Creates what the chosen mode needs, once: the secret, or the CA and certificates.
prepare_security() {
    local want=$1 n
    mkdir -p "$DATA"
    echo "$want" >"$DATA/security"
    if [ "$want" = tls ]; then
        local dir="$DATA/tls"
        if [ ! -f "$dir/ca.pem" ]; then
            mkdir -p "$dir"
            chmod 700 "$dir"
            "$CTL" cert ca --dir "$dir" >/dev/null
            echo "made a CA in $dir/"
        fi
        for n in $(members) ${EXTRA_NODE:-}; do
            [ -f "$dir/node-$n.pem" ] || "$CTL" cert node "$n" --dir "$dir" >/dev/null
        done
        [ -f "$dir/raftctl.pem" ] || "$CTL" cert client raftctl --dir "$dir" >/dev/null
        local abs
        abs=$(cd "$dir" && pwd)
        cat >"$DATA/raftctl.env" <<ENV
export RAFTCTL_CACERT=$abs/ca.pem
export RAFTCTL_CERT=$abs/raftctl.pem
export RAFTCTL_KEY=$abs/raftctl-key.pem
ENV
        echo "TLS on; for raftctl: source $DATA/raftctl.env"
    else
        if [ ! -f "$DATA/cluster-secret" ]; then
            (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DATA/cluster-secret")
            echo "made a cluster secret in $DATA/cluster-secret"
        fi
        rm -f "$DATA/raftctl.env"
    fi
}

security_flags() {
    local n=$1
    if [ "$(mode)" = tls ]; then
        echo "--tls-cert $DATA/tls/node-$n.pem --tls-key $DATA/tls/node-$n-key.pem --tls-ca $DATA/tls/ca.pem"
    else
        echo "--cluster-secret-file $DATA/cluster-secret"
    fi
}

ctl_flags() {
    if [ "$(mode)" = tls ]; then
        echo "--cacert $DATA/tls/ca.pem --cert $DATA/tls/raftctl.pem --key $DATA/tls/raftctl-key.pem"
    fi
}

start_node() {
    local n=$1
    if pid=$(pid_of "$n"); then
        echo "node $n already running (pid $pid)"
        return
    fi
    mkdir -p "$DATA/logs"
    # Founders are started with the founding members; a node added later joins through the
    # members running now (a data dir that belongs to the cluster ignores --join).
    local where
    if [[ " ${FOUNDERS[*]} " == *" $n "* ]]; then
        where=(--peers "$(peers_of "$n")")
    else
        where=(--join "$(join_addrs "$n")")
    fi
    # shellcheck disable=SC2046 # the flags are words without spaces
    RUST_LOG=${RUST_LOG:-info} nohup "$BIN" --id "$n" --listen "127.0.0.1:$(port_of "$n")" \
        "${where[@]}" --data-dir "$DATA/node$n" $(security_flags "$n") \
        --http-listen "127.0.0.1:$(http_port_of "$n")" \
        >>"$DATA/logs/node$n.log" 2>&1 &
    echo $! >"$DATA/node$n.pid"
    echo "node $n started (pid $!, 127.0.0.1:$(port_of "$n"), HTTP 127.0.0.1:$(http_port_of "$n"), log $DATA/logs/node$n.log)"
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
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        echo "node $n did not stop within 10 s; sending SIGKILL"
        kill -KILL "$pid"
    fi
    rm -f "$DATA/node$n.pid"
    echo "node $n stopped"
}

# The addresses of the managed nodes other than $1, for --join and raftctl --cluster.
join_addrs() {
    local out="" n
    for n in $(members); do
        [ "$n" = "${1:-}" ] && continue
        out+="${out:+,}127.0.0.1:$(port_of "$n")"
    done
    echo "$out"
}

# The node's Status answer as JSON, through raftctl (which speaks TLS when the cluster does).
status_of() {
    # shellcheck disable=SC2046
    "$CTL" --cluster "127.0.0.1:$(port_of "$1")" $(ctl_flags) --timeout 2 --json status 2>/dev/null || echo "(no answer)"
}

check_n() {
    if ! [[ "${1:-}" =~ ^[1-9][0-9]*$ ]] || ! is_member "$1"; then
        echo "usage: $0 $2 N   (N is one of the managed nodes: $(members | tr '\n' ' '))" >&2
        exit 2
    fi
}

case "${1:-}" in
    start)
        case "${2:-}" in
            --tls) want=tls ;;
            --secret) want=secret ;;
            "") want=$(mode) ;;
            *) echo "usage: $0 start [--tls|--secret]" >&2; exit 2 ;;
        esac
        build
        prepare_security "$want"
        for n in $(members); do start_node "$n"; done
        ;;
    stop)
        for n in $(members); do stop_node "$n"; done
        ;;
    status)
        for n in $(members); do
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
        prepare_security "$(mode)"
        stop_node "$2"
        start_node "$2"
        ;;
    add)
        if ! [[ "${2:-}" =~ ^[1-9][0-9]*$ ]]; then
            echo "usage: $0 add N   (a positive node id; it listens on port $((BASE_PORT - 1))+N)" >&2
            exit 2
        fi
        if is_member "$2"; then
            echo "node $2 is already managed; use restart" >&2
            exit 2
        fi
        build
        EXTRA_NODE=$2 prepare_security "$(mode)"
        cluster=$(join_addrs "$2")
        start_node "$2"
        # shellcheck disable=SC2046
        "$CTL" --cluster "$cluster" $(ctl_flags) --timeout 30 member add "$2" "127.0.0.1:$(port_of "$2")"
        set_members $(members) "$2"
        ;;
    remove)
        check_n "${2:-}" remove
        cluster=$(join_addrs "$2")
        # shellcheck disable=SC2046
        "$CTL" --cluster "$cluster" $(ctl_flags) --timeout 30 member remove "$2"
        stop_node "$2"
        set_members $(members | grep -vx "$2")
        ;;
    logs)
        check_n "${2:-}" logs
        tail -f "$DATA/logs/node$2.log"
        ;;
    *)
        echo "usage: $0 start [--tls|--secret]|stop|status|kill N|restart N|add N|remove N|logs N" >&2
        exit 2
        ;;
esac
