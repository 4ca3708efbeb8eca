#!/usr/bin/env bash
# raftd next to etcd on this machine, same workload, same run.
#
# Starts a 3-member etcd and a 3-node raftd on 127.0.0.1 (fsync on in both, data under one
# temporary directory on the same disk), runs closed-loop loads alternately against each
# (puts at 1, 16, 64 and 256 clients, linearizable gets at 64, range reads of 100 keys at 16,
# transactions at 64, lease keep-alives at 64, and puts at 64 with 1,000 watches of every key
# on the leader; 256-byte values over 10k keys),
# measures failover (SIGKILL the leader under writes, time to the next acknowledged write;
# median of 5), and each member's peak RSS, then prints one table with raftd/etcd per row.
#
# Environment:
#   BENCH_SECS       measuring window per load, seconds (default 10)
#   BENCH_WARMUP     warm-up before each window, seconds (default 2)
#   FAILOVER_ROUNDS  kills per system (default 5)
#   ETCD_CONNS       gRPC channels the etcd clients share (default 16)
#   BENCH_ROWS       the loads, op:clients[:wWATCHERS[:raw]] (default "put:1 put:16 put:64
#                    put:256 get:64 range:16 txn:64 keepalive:64 put:64:w1000"; ops: put, get,
#                    range, txn, keepalive; ":raw": raftd's watchers count events without
#                    decoding them, to see what serving them costs the node alone; etcd's are
#                    decoded by etcd-client either way)
#   BENCH_DIR        where data, logs and results go (default: a new /tmp/raftd-bench.*)
#   KEEP=1           keep BENCH_DIR afterwards (it is removed otherwise; the results are
#                    copied to target/bench-vs-etcd.jsonl)
#   RAFTD_BIN        a raftd binary to measure instead of building this checkout's (to
#                    compare versions)
#   --keys N         scale mode (or BENCH_KEYS=N): instead of the loads above, fill each
#                    system with BENCH_PUTS puts (default 1.2 N) over N distinct keys by 128
#                    clients, timing each tenth of the fill; count the elections during it;
#                    then each member's RSS and data dir size, and puts at 64 clients over
#                    the N keys. BENCH_SYSTEMS picks the systems (default "etcd raftd"; use
#                    "raftd" for 10M keys, past etcd's default quota).
#   BENCH_AUTH       raftd's peer authentication: secret (default; clients in plaintext), tls
#                    (TLS on its port, certificates made with raftctl cert, the benchmark's
#                    clients speaking TLS; etcd stays plaintext), or none (for a RAFTD_BIN
#                    older than the security flags)
#
# Needs: cargo, python3; installs etcd-server and protobuf-compiler from Debian if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

KEYS=${BENCH_KEYS:-}
while [ $# -gt 0 ]; do
    case "$1" in
        --keys) KEYS=$2; shift 2 ;;
        --keys=*) KEYS=${1#--keys=}; shift ;;
        *) echo "usage: $0 [--keys N]" >&2; exit 2 ;;
    esac
done
SYSTEMS=${BENCH_SYSTEMS:-etcd raftd}

SECS=${BENCH_SECS:-10}
WARMUP=${BENCH_WARMUP:-2}
ROUNDS=${FAILOVER_ROUNDS:-5}
ETCD_CONNS=${ETCD_CONNS:-16}
ROWS=${BENCH_ROWS:-put:1 put:16 put:64 put:256 get:64 range:16 txn:64 keepalive:64 put:64:w1000}
DIR=${BENCH_DIR:-$(mktemp -d /tmp/raftd-bench.XXXXXX)}
mkdir -p "$DIR/pids" "$DIR/logs"
RESULTS="$DIR/results.jsonl"
: >"$RESULTS"

say() { printf '== %s\n' "$*" >&2; }

# ---- dependencies ---------------------------------------------------------------------------
need_apt=()
command -v etcd >/dev/null || need_apt+=(etcd-server)
command -v protoc >/dev/null || need_apt+=(protobuf-compiler)
command -v python3 >/dev/null || need_apt+=(python3)
if [ ${#need_apt[@]} -gt 0 ]; then
    say "installing ${need_apt[*]} from Debian"
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
say "building raftd and raftd-bench (release)"
cargo build -q --release --bin raftctl
if [ -z "${RAFTD_BIN:-}" ]; then
    cargo build -q --release --bin raftd
fi
cargo build -q --release -p raftd-bench --features etcd
RAFTD=${RAFTD_BIN:-$ROOT/target/release/raftd}
BENCH="$ROOT/target/release/raftd-bench"

# ---- clusters -------------------------------------------------------------------------------
NODES=(1 2 3)
raftd_port() { echo $((17999 + $1)); }
etcd_client_port() { echo $((12369 + 10 * $1)); }
etcd_peer_port() { echo $((12370 + 10 * $1)); }
RAFTD_EPS=$(for n in "${NODES[@]}"; do printf '127.0.0.1:%s,' "$(raftd_port "$n")"; done)
RAFTD_EPS=${RAFTD_EPS%,}
ETCD_EPS=$(for n in "${NODES[@]}"; do printf '127.0.0.1:%s,' "$(etcd_client_port "$n")"; done)
ETCD_EPS=${ETCD_EPS%,}
ETCD_CLUSTER=$(for n in "${NODES[@]}"; do printf 'e%s=http://127.0.0.1:%s,' "$n" "$(etcd_peer_port "$n")"; done)
ETCD_CLUSTER=${ETCD_CLUSTER%,}

# The peers' authentication: a secret, or TLS (then the clients speak TLS too).
CTL="$ROOT/target/release/raftctl"
mkdir -p "$DIR"
AUTH=${BENCH_AUTH:-secret}
if [ "$AUTH" = tls ]; then
    "$CTL" cert ca --dir "$DIR/tls" >/dev/null
    for n in "${NODES[@]}"; do "$CTL" cert node "$n" --dir "$DIR/tls" >/dev/null; done
    export RAFTCTL_CACERT="$DIR/tls/ca.pem"
    raftd_security() { echo "--tls-cert $DIR/tls/node-$1.pem --tls-key $DIR/tls/node-$1-key.pem --tls-ca $DIR/tls/ca.pem"; }
elif [ "$AUTH" = secret ]; then
    (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/cluster-secret")
    raftd_security() { echo "--cluster-secret-file $DIR/cluster-secret"; }
else
    raftd_security() { :; }
fi

start_raftd() {
    local n=$1 peers="" m
    for m in "${NODES[@]}"; do
        [ "$m" = "$n" ] || peers+="${peers:+,}$m=127.0.0.1:$(raftd_port "$m")"
    done
    # In a subshell, so the member is not a job of this shell (no "Killed" notices).
    (
        RUST_LOG=${RUST_LOG:-info} "$RAFTD" --id "$n" --listen "127.0.0.1:$(raftd_port "$n")" \
            --peers "$peers" --data-dir "$DIR/raftd$n" $(raftd_security "$n") \
            >>"$DIR/logs/raftd$n.log" 2>&1 &
        echo $! >"$DIR/pids/$(raftd_port "$n").pid"
    )
}

start_etcd() {
    local n=$1 state=${2:-new}
    (etcd --name "e$n" --data-dir "$DIR/etcd$n" --logger zap --log-outputs stderr \
        --listen-client-urls "http://127.0.0.1:$(etcd_client_port "$n")" \
        --advertise-client-urls "http://127.0.0.1:$(etcd_client_port "$n")" \
        --listen-peer-urls "http://127.0.0.1:$(etcd_peer_port "$n")" \
        --initial-advertise-peer-urls "http://127.0.0.1:$(etcd_peer_port "$n")" \
        --initial-cluster "$ETCD_CLUSTER" --initial-cluster-token raftd-bench \
        --initial-cluster-state "$state" >>"$DIR/logs/etcd$n.log" 2>&1 &
        echo $! >"$DIR/pids/$(etcd_client_port "$n").pid")
}

stop_all() {
    local f
    for f in "$DIR"/pids/*.pid; do
        [ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null || true
    done
}
cleanup() {
    stop_all
    if [ "${KEEP:-0}" != 1 ] && [ -z "${BENCH_DIR:-}" ]; then
        cp "$RESULTS" "$ROOT/target/bench-vs-etcd.jsonl" 2>/dev/null || true
        rm -rf "$DIR"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

eps_of() { [ "$1" = raftd ] && echo "$RAFTD_EPS" || echo "$ETCD_EPS"; }

ready() { "$BENCH" ready --system "$1" --endpoints "$(eps_of "$1")" --timeout-secs 60 >/dev/null; }

has() { [[ " $SYSTEMS " == *" $1 "* ]]; }
say "starting $SYSTEMS (etcd ports $ETCD_EPS, raftd ports $RAFTD_EPS) under $DIR"
for n in "${NODES[@]}"; do
    if [ -z "$KEYS" ] || has etcd; then start_etcd "$n"; fi
    if [ -z "$KEYS" ] || has raftd; then start_raftd "$n"; fi
done
if [ -z "$KEYS" ] || has etcd; then ready etcd; fi
if [ -z "$KEYS" ] || has raftd; then ready raftd; fi

# Leader elections so far, from the members' logs (each election won is logged once).
elections() {
    if [ "$1" = raftd ]; then
        cat "$DIR"/logs/raftd*.log | grep -c 'won the election' || true
    else
        cat "$DIR"/logs/etcd*.log | grep -c 'became leader at term' || true
    fi
}
E0_etcd=$(elections etcd)
E0_raftd=$(elections raftd)

# ---- scale mode -----------------------------------------------------------------------------
member_pid() { # system member
    local port
    port=$([ "$1" = raftd ] && raftd_port "$2" || etcd_client_port "$2")
    cat "$DIR/pids/$port.pid"
}
# raftd's recovery at size: a follower SIGKILLed and restarted (load the snapshot, replay the
# log, catch up), and one that was down while 200,000 puts went on; each timed from its start
# until it has applied what the leader had committed when it started.
raftd_status() { # node -> the node's Status as JSON (empty if it does not answer)
    "$CTL" --cluster "127.0.0.1:$(raftd_port "$1")" --timeout 1 --json status 2>/dev/null || true
}
status_field() { # field, Status JSON on stdin
    python3 -c 'import json,sys
try:
    print(json.load(sys.stdin)["nodes"][0].get(sys.argv[1], ""))
except Exception:
    print("")' "$1"
}
raftd_leader() { # the leader's node number (empty if none answers as leader within 20 s)
    local n _
    for _ in $(seq 1 100); do
        for n in "${NODES[@]}"; do
            [ "$(raftd_status "$n" | status_field role)" = Leader ] && { echo "$n"; return 0; }
        done
        sleep 0.2
    done
    return 0
}
kill_member() { # node
    local pid
    pid=$(member_pid raftd "$1")
    kill -KILL "$pid" 2>/dev/null || true
    while [ -r "/proc/$pid/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$pid/status"; do sleep 0.05; done
}
# Starts node $1 and prints the ms until it applied the leader's commit index of that moment.
time_catch_up() {
    local n=$1 leader target t0 applied
    leader=$(raftd_leader)
    target=$(raftd_status "$leader" | status_field commit_index)
    t0=$(date +%s%N)
    start_raftd "$n"
    for _ in $(seq 1 12000); do
        applied=$(raftd_status "$n" | status_field last_applied)
        if [ -n "$applied" ] && [ "$applied" -ge "$target" ]; then
            echo $((($(date +%s%N) - t0) / 1000000))
            return
        fi
        sleep 0.05
    done
    echo -1
}
measure_raftd_recovery() {
    local leader f ms
    leader=$(raftd_leader)
    if [ -z "$leader" ]; then
        say "no raftd node answers as leader: restart and catch-up not timed"
        return 0
    fi
    # (Not a pipeline: with pipefail, a loop whose last test fails, when the leader is the last
    # node, would end the script.)
    for f in "${NODES[@]}"; do
        [ "$f" = "$leader" ] || break
    done
    kill_member "$f"
    ms=$(time_catch_up "$f")
    printf '{"system":"raftd","restart_caught_up_ms":%s}\n' "$ms" >>"$RESULTS"
    kill_member "$f"
    "$BENCH" fill --system raftd --endpoints "$RAFTD_EPS" --keys "$KEYS" --puts 200000 \
        --clients 64 --quiet >/dev/null
    ms=$(time_catch_up "$f")
    printf '{"system":"raftd","catch_up_200k_ms":%s}\n' "$ms" >>"$RESULTS"
}

if [ -n "$KEYS" ]; then
    PUTS=${BENCH_PUTS:-$((KEYS + KEYS / 5))}
    for sys in $SYSTEMS; do
        e0=$(elections "$sys")
        say "fill $sys: $PUTS puts over $KEYS keys, 128 clients"
        extra=()
        [ "$sys" = etcd ] && extra=(--conns "$ETCD_CONNS")
        "$BENCH" fill --system "$sys" --endpoints "$(eps_of "$sys")" --keys "$KEYS" \
            --puts "$PUTS" --clients 128 "${extra[@]}" | tee -a "$RESULTS" >/dev/null
        e1=$(elections "$sys")
        for n in "${NODES[@]}"; do
            pid=$(member_pid "$sys" "$n")
            rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
            hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")
            # Anonymous (heap) and file-backed (mapped snapshot files) parts of the RSS.
            anon=$(awk '/^RssAnon:/ {print $2}' "/proc/$pid/status")
            file=$(awk '/^RssFile:/ {print $2}' "/proc/$pid/status")
            disk=$(du -sb "$DIR/$sys$n" | cut -f1)
            printf '{"system":"%s","member":%s,"rss_kib":%s,"peak_rss_kib":%s,"anon_kib":%s,"file_kib":%s,"disk_bytes":%s,"scale":true}\n' \
                "$sys" "$n" "$rss" "$hwm" "${anon:-0}" "${file:-0}" "$disk" >>"$RESULTS"
        done
        printf '{"system":"%s","elections_during_fill":%s}\n' "$sys" $((e1 - e0)) >>"$RESULTS"
        say "puts x64 over $KEYS keys: $sys"
        extra=()
        [ "$sys" = etcd ] && extra=(--conns "$ETCD_CONNS" --leader-only)
        "$BENCH" load --system "$sys" --endpoints "$(eps_of "$sys")" --op put --clients 64 \
            --keys "$KEYS" --warmup-secs "$WARMUP" --secs "$SECS" "${extra[@]}" |
            tee -a "$RESULTS" >/dev/null
        printf '{"system":"%s","elections_after_fill":%s}\n' "$sys" $(($(elections "$sys") - e1)) >>"$RESULTS"
        if [ "$sys" = raftd ]; then
            say "raftd: restart of a follower, and catch-up of one that missed 200k writes"
            measure_raftd_recovery
        fi
    done
    say "results ($RESULTS)"
    python3 - "$RESULTS" "$KEYS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
keys = int(sys.argv[2])
systems = [s for s in ("etcd", "raftd") if any(r.get("system") == s for r in rows)]
def one(s, key):
    for r in rows:
        if r.get("system") == s and key in r:
            return r
    return None
print(f"scale: {keys} keys")
print(f"{'':<34}" + "".join(f"{s:>14}" for s in systems))
def line(label, f):
    print(f"{label:<34}" + "".join(f"{f(s):>14}" for s in systems))
fill = {s: one(s, "tenths_ops_per_sec") for s in systems}
line("fill puts/s (all)", lambda s: f"{fill[s]['ops_per_sec']:.0f}")
for i in range(10):
    line(f"  tenth {i + 1} puts/s", lambda s: f"{fill[s]['tenths_ops_per_sec'][i]:.0f}" if len(fill[s]['tenths_ops_per_sec']) > i else "-")
line("last tenth / first tenth", lambda s: f"{fill[s]['last_over_first']:.2f}")
line("fill p99 ms / max ms", lambda s: f"{fill[s]['p99_ms']:.0f}/{fill[s]['max_ms']:.0f}")
line("longest stall s", lambda s: f"{fill[s]['longest_stall_secs']:.1f}")
line("put errors (retried)", lambda s: f"{fill[s]['errors']}")
line("elections during fill", lambda s: f"{one(s, 'elections_during_fill')['elections_during_fill']}")
mem = {s: [r for r in rows if r.get("system") == s and r.get("scale")] for s in systems}
line("RSS MiB (max member)", lambda s: f"{max(r['rss_kib'] for r in mem[s]) / 1024:.0f}")
line("peak RSS MiB (max member)", lambda s: f"{max(r['peak_rss_kib'] for r in mem[s]) / 1024:.0f}")
line("RSS bytes per key", lambda s: f"{max(r['rss_kib'] for r in mem[s]) * 1024 / keys:.0f}")
line("  of it heap (anon) B/key", lambda s: f"{max(r.get('anon_kib', 0) for r in mem[s]) * 1024 / keys:.0f}")
line("  of it mapped files B/key", lambda s: f"{max(r.get('file_kib', 0) for r in mem[s]) * 1024 / keys:.0f}")
line("data dir MiB (max member)", lambda s: f"{max(r['disk_bytes'] for r in mem[s]) / 2**20:.0f}")
put = {s: next((r for r in rows if r.get("system") == s and r.get("op") == "put"), None) for s in systems}
line("puts x64 after fill ops/s", lambda s: f"{put[s]['ops_per_sec']:.0f}")
line("puts x64 after fill p99 ms", lambda s: f"{put[s]['p99_ms']:.1f}")
line("elections after fill", lambda s: f"{one(s, 'elections_after_fill')['elections_after_fill']}")
for key, label in (("restart_caught_up_ms", "follower restart, caught up, s"),
                   ("catch_up_200k_ms", "catch-up after 200k puts, s")):
    line(label, lambda s: f"{one(s, key)[key] / 1000:.1f}" if one(s, key) else "-")
print()
print(f"{'check':<34}{'value':>14}{'met':>14}")
def check(name, value, ok):
    print(f"{name:<34}{value:>14}{'yes' if ok else 'NO':>14}")
for s in systems:
    f = fill[s]
    check(f"{s}: last tenth within 15% of first", f"{f['last_over_first']:.2f}", f["last_over_first"] >= 0.85)
    el = one(s, "elections_during_fill")["elections_during_fill"] + one(s, "elections_after_fill")["elections_after_fill"]
    check(f"{s}: no election during the runs", str(el), el == 0)
if "raftd" in systems:
    per_key = max(r["rss_kib"] for r in mem["raftd"]) * 1024 / keys
    check("raftd: RSS per key < 400 B", f"{per_key:.0f}", per_key < 400)
    if "etcd" in systems:
        etcd_key = max(r["rss_kib"] for r in mem["etcd"]) * 1024 / keys
        check("raftd: RSS per key <= etcd's", f"{per_key / etcd_key:.2f}", per_key <= etcd_key)
PY
    exit 0
fi

# ---- loads ----------------------------------------------------------------------------------
# CPU time (user + system, in clock ticks) the system's members used so far.
cpu_ticks() { # system
    local n pid total=0 t
    for n in "${NODES[@]}"; do
        pid=$(member_pid "$1" "$n")
        t=$(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)
        total=$((total + t))
    done
    echo "$total"
}
CLK_TCK=$(getconf CLK_TCK)

load() { # system op clients watchers [raw]
    local extra=() c0 c1 t0 t1
    [ "$1" = etcd ] && extra=(--conns "$ETCD_CONNS" --leader-only)
    [ "$1" = raftd ] && [ "${5:-}" = raw ] && extra+=(--watch-raw)
    c0=$(cpu_ticks "$1")
    t0=$(date +%s.%N)
    "$BENCH" load --system "$1" --endpoints "$(eps_of "$1")" --op "$2" --clients "$3" \
        --watchers "$4" --warmup-secs "$WARMUP" --secs "$SECS" "${extra[@]}" |
        tee -a "$RESULTS" >/dev/null
    c1=$(cpu_ticks "$1")
    t1=$(date +%s.%N)
    # The members' CPU over the whole load (warm-up included), as cores busy on average: with
    # the load's rate, the CPU time each operation cost the cluster.
    printf '{"system":"%s","op":"%s","clients":%s,"watchers":%s,"raw":%s,"cpu_cores":%s}\n' \
        "$1" "$2" "$3" "$4" "$([ "${5:-}" = raw ] && echo true || echo false)" \
        "$(python3 -c "print(round(($c1 - $c0) / $CLK_TCK / ($t1 - $t0), 3))")" >>"$RESULTS"
}

for row in $ROWS; do
    IFS=: read -r op clients w raw <<<"$row"
    watchers=${w#w}
    watchers=${watchers:-0}
    say "$op x$clients (watchers: $watchers ${raw:-}): etcd"
    load etcd "$op" "$clients" "$watchers"
    say "$op x$clients (watchers: $watchers ${raw:-}): raftd"
    load raftd "$op" "$clients" "$watchers" "${raw:-}"
done

E1_etcd=$(elections etcd)
E1_raftd=$(elections raftd)

# Peak resident memory (VmHWM) of every member, before any of them is killed and restarted.
for n in "${NODES[@]}"; do
    for sys in etcd raftd; do
        port=$([ $sys = raftd ] && raftd_port "$n" || etcd_client_port "$n")
        pid=$(cat "$DIR/pids/$port.pid")
        kb=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")
        printf '{"system":"%s","member":%s,"peak_rss_kib":%s}\n' "$sys" "$n" "$kb" >>"$RESULTS"
    done
done

# ---- failover -------------------------------------------------------------------------------
# A killed member stays a zombie until its parent (not this shell: members run in subshells)
# reaps it, so "alive" means a process that is not a zombie.
alive() {
    [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

restart_killed() { # system
    local n port pid
    for n in "${NODES[@]}"; do
        port=$([ "$1" = raftd ] && raftd_port "$n" || etcd_client_port "$n")
        pid=$(cat "$DIR/pids/$port.pid")
        if ! alive "$pid"; then
            if [ "$1" = raftd ]; then start_raftd "$n"; else start_etcd "$n" existing; fi
        fi
    done
}

for round in $(seq 1 "$ROUNDS"); do
    for sys in etcd raftd; do
        say "failover $round/$ROUNDS: $sys"
        "$BENCH" failover --system "$sys" --endpoints "$(eps_of "$sys")" \
            --pid-file "$DIR/pids/{port}.pid" | tee -a "$RESULTS" >/dev/null
        restart_killed "$sys"
        ready "$sys"
    done
done

for sys in etcd raftd; do
    b="E0_$sys"
    l="E1_$sys"
    printf '{"system":"%s","elections_at_start":%s,"elections_during_loads":%s,"elections_during_failover":%s,"kills":%s}\n' \
        "$sys" "${!b}" $((${!l} - ${!b})) $(($(elections "$sys") - ${!l})) "$ROUNDS" >>"$RESULTS"
done

# ---- table ----------------------------------------------------------------------------------
say "results ($RESULTS)"
python3 - "$RESULTS" "$SECS" "$ROWS" <<'PY'
import json, statistics, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
asked = []
for row in sys.argv[3].split():
    parts = row.split(":")
    asked.append((parts[0], int(parts[1]), int(parts[2][1:]) if len(parts) > 2 else 0,
                  len(parts) > 3 and parts[3] == "raw"))
loads = {(r["system"], r["op"], r["clients"], r.get("watchers", 0)): r
         for r in rows if "ops_per_sec" in r and not r.get("watch_raw")}
fail = {s: [r["failover_ms"] for r in rows if r.get("system") == s and "failover_ms" in r]
        for s in ("etcd", "raftd")}
cpu = {(r["system"], r["op"], r["clients"], r["watchers"], r["raw"]): r["cpu_cores"]
       for r in rows if "cpu_cores" in r}
rss = {s: max((r["peak_rss_kib"] for r in rows if r.get("system") == s and "peak_rss_kib" in r),
              default=0) / 1024 for s in ("etcd", "raftd")}

def ratio(a, b):
    return f"{a / b:.2f}" if b else "n/a"

print(f"{'workload':<28}{'etcd':>12}{'raftd':>12}{'raftd/etcd':>12}")
print("-" * 64)
raw_loads = {(r["op"], r["clients"], r.get("watchers", 0)): r
             for r in rows if "ops_per_sec" in r and r.get("watch_raw")}
for op, c, w, raw in asked:
    e = loads.get(("etcd", op, c, w))
    r = raw_loads.get((op, c, w)) if raw else loads.get(("raftd", op, c, w))
    name = f"{op} x{c}" + (f" w{w}" if w else "") + (" raw" if raw else "")
    if not e or not r:
        print(f"{name}: missing"); continue
    fields = [("ops/s", "ops_per_sec", "{:.0f}"), ("p50 ms", "p50_ms", "{:.2f}"),
              ("p90 ms", "p90_ms", "{:.2f}"), ("p99 ms", "p99_ms", "{:.2f}"),
              ("max ms", "max_ms", "{:.1f}")]
    if w:
        fields.append(("events/s", "watch_events_per_sec", "{:.0f}"))
    for label, key, fmt in fields:
        print(f"{f'{name} {label}':<28}{fmt.format(e[key]):>12}{fmt.format(r[key]):>12}"
              f"{ratio(r[key], e[key]):>12}")
    ce = cpu.get(("etcd", op, c, w, False))
    cr = cpu.get(("raftd", op, c, w, raw))
    if ce is not None and cr is not None and e["ops_per_sec"] and r["ops_per_sec"]:
        # CPU time of the three members per operation.
        ue, ur = ce / e["ops_per_sec"] * 1e6, cr / r["ops_per_sec"] * 1e6
        print(f"{f'{name} cpu us/op':<28}{ue:>12.0f}{ur:>12.0f}{ratio(ur, ue):>12}")
    if e["errors"] or r["errors"]:
        print(f"{f'{name} errors':<28}{e['errors']:>12}{r['errors']:>12}")
med = {s: statistics.median(v) if v else float("nan") for s, v in fail.items()}
print(f"{'failover ms (median)':<28}{med['etcd']:>12.0f}{med['raftd']:>12.0f}"
      f"{ratio(med['raftd'], med['etcd']):>12}")
for s in ("etcd", "raftd"):
    print(f"  {s} failover runs ms: {', '.join(f'{v:.0f}' for v in fail[s])}")
el = {r["system"]: r for r in rows if "elections_during_loads" in r}
if "etcd" in el and "raftd" in el:
    print(f"{'elections during loads':<28}{el['etcd']['elections_during_loads']:>12}"
          f"{el['raftd']['elections_during_loads']:>12}")
    print(f"{'elections in failover':<28}{el['etcd']['elections_during_failover']:>12}"
          f"{el['raftd']['elections_during_failover']:>12}   (one per kill expected)")
print(f"{'peak RSS MiB (max member)':<28}{rss['etcd']:>12.1f}{rss['raftd']:>12.1f}"
      f"{ratio(rss['raftd'], rss['etcd']):>12}")

def get(s, op, c, k, w=0):
    r = loads.get((s, op, c, w)); return r[k] if r else float("nan")
targets = [
    ("puts x64 ops/s >= 4x", ratio(get("raftd","put",64,"ops_per_sec"), get("etcd","put",64,"ops_per_sec")),
     get("raftd","put",64,"ops_per_sec") >= 4 * get("etcd","put",64,"ops_per_sec")),
    ("puts x64 p99 no higher", ratio(get("raftd","put",64,"p99_ms"), get("etcd","put",64,"p99_ms")),
     get("raftd","put",64,"p99_ms") <= get("etcd","put",64,"p99_ms")),
    ("put x1 p50 <= 0.4x", ratio(get("raftd","put",1,"p50_ms"), get("etcd","put",1,"p50_ms")),
     get("raftd","put",1,"p50_ms") <= 0.4 * get("etcd","put",1,"p50_ms")),
    ("gets x64 ops/s >= 3x", ratio(get("raftd","get",64,"ops_per_sec"), get("etcd","get",64,"ops_per_sec")),
     get("raftd","get",64,"ops_per_sec") >= 3 * get("etcd","get",64,"ops_per_sec")),
    ("failover <= 1/3", ratio(med["raftd"], med["etcd"]), med["raftd"] <= med["etcd"] / 3),
    ("peak RSS <= 0.15x", ratio(rss["raftd"], rss["etcd"]), rss["raftd"] <= 0.15 * rss["etcd"]),
    ("no election during loads", str(el["raftd"]["elections_during_loads"]) if "raftd" in el else "n/a",
     "raftd" in el and el["raftd"]["elections_during_loads"] == 0),
]
print()
print(f"{'target':<28}{'ratio':>12}{'met':>12}")
for name, r, ok in targets:
    print(f"{name:<28}{r:>12}{'yes' if ok else 'NO':>12}")
PY
