#!/usr/bin/env bash
# Write throughput of a 3-node raftd with one follower's disk 10x slower than normal.
#
# Measures this disk's fdatasync latency first (median of 200 4-KiB appends), then starts a
# 3-node cluster on 127.0.0.1 with the test shim tests/support/faultfs/faultfs.c preloaded into
# every node (it does nothing until a control file says so), and runs the same closed-loop put
# load twice: with every disk as it is, and with one follower's fsyncs stretched to 10x the
# median (the shim sleeps 9x the median before each real fdatasync). The other follower forms
# the quorum, so throughput should stay within 10%. Prints one JSON line per run and the ratio.
#
# Environment: BENCH_SECS (default 10), BENCH_WARMUP (default 2), BENCH_CLIENTS (default 64),
# SLOW_FACTOR (default 10: how many times slower the slow follower's fsync is),
# BENCH_DIR (default: a new /tmp/raftd-slowdisk.*; removed afterwards unless KEEP=1).
# Needs: cargo, cc, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SECS=${BENCH_SECS:-10}
WARMUP=${BENCH_WARMUP:-2}
CLIENTS=${BENCH_CLIENTS:-64}
FACTOR=${SLOW_FACTOR:-10}
DIR=${BENCH_DIR:-$(mktemp -d /tmp/raftd-slowdisk.XXXXXX)}
mkdir -p "$DIR/logs"
say() { printf '== %s\n' "$*" >&2; }

say "building raftd and raftd-bench (release) and the fault shim"
cargo build -q --release --bin raftd
cargo build -q --release -p raftd-bench
SHIM="$ROOT/target/libfaultfs.so"
cc -shared -fPIC -O2 -Wall -Wextra -o "$SHIM" tests/support/faultfs/faultfs.c -ldl
RAFTD="$ROOT/target/release/raftd"
BENCH="$ROOT/target/release/raftd-bench"

# ---- this disk's fsync latency --------------------------------------------------------------
MEDIAN_US=$(python3 - "$DIR" <<'EOF'
import os, sys, time
path = os.path.join(sys.argv[1], "fsync-probe")
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
lat = []
for _ in range(200):
    os.write(fd, b"x" * 4096)
    t = time.perf_counter()
    os.fdatasync(fd)
    lat.append(time.perf_counter() - t)
os.close(fd)
os.unlink(path)
lat.sort()
print(int(lat[len(lat) // 2] * 1e6))
EOF
)
# The shim sleeps whole milliseconds: at least 1.
DELAY_MS=$(( ((FACTOR - 1) * MEDIAN_US + 500) / 1000 ))
[ "$DELAY_MS" -ge 1 ] || DELAY_MS=1
say "median fdatasync here: ${MEDIAN_US} us; the slow follower sleeps ${DELAY_MS} ms before each"

# ---- the cluster ----------------------------------------------------------------------------
mkdir -p "$DIR/pids"
cleanup() {
    for f in "$DIR"/pids/*; do [ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null || true; done
    if [ "${KEEP:-0}" != 1 ] && [ -z "${BENCH_DIR:-}" ]; then rm -rf "$DIR"; fi
}
trap cleanup EXIT
port() { echo $((19000 + $1)); }
EPS="127.0.0.1:$(port 1),127.0.0.1:$(port 2),127.0.0.1:$(port 3)"
(umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/cluster-secret")
for n in 1 2 3; do
    peers=""
    for m in 1 2 3; do [ "$m" = "$n" ] || peers+="${peers:+,}$m=127.0.0.1:$(port "$m")"; done
    mkdir -p "$DIR/ctl$n" "$DIR/data$n"
    # In a subshell, so the member is not a job of this shell (no "Killed" notices).
    (
        LD_PRELOAD="$SHIM" RAFTD_FAULTFS_CTL="$DIR/ctl$n" RAFTD_FAULTFS_ROOT="$(realpath "$DIR/data$n")" \
            RUST_LOG=info "$RAFTD" --id "$n" --listen "127.0.0.1:$(port "$n")" --peers "$peers" \
            --data-dir "$DIR/data$n" --cluster-secret-file "$DIR/cluster-secret" \
            >>"$DIR/logs/raftd$n.log" 2>&1 &
        echo $! >"$DIR/pids/$n"
    )
done
"$BENCH" ready --system raftd --endpoints "$EPS" --timeout-secs 60 >/dev/null
LEADER=$("$BENCH" leader --system raftd --endpoints "$EPS")
SLOW=""
for n in 1 2 3; do
    if [ "127.0.0.1:$(port "$n")" != "$LEADER" ]; then SLOW=$n; break; fi
done
say "leader $LEADER; node $SLOW will be the slow follower"

load() {
    "$BENCH" load --system raftd --endpoints "$EPS" --op put --clients "$CLIENTS" \
        --warmup-secs "$WARMUP" --secs "$SECS" 2>/dev/null
}
say "put x$CLIENTS, every disk as it is"
NORMAL=$(load)
echo "$NORMAL"
echo "$DELAY_MS" >"$DIR/ctl$SLOW/fsync_delay_ms"
say "put x$CLIENTS, node $SLOW's fsyncs ${FACTOR}x slower"
SLOWED=$(load)
echo "$SLOWED"
rm -f "$DIR/ctl$SLOW/fsync_delay_ms"
NOW_LEADER=$("$BENCH" leader --system raftd --endpoints "$EPS")
python3 - "$NORMAL" "$SLOWED" "$LEADER" "$NOW_LEADER" "$FACTOR" <<'EOF'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
r = b["ops_per_sec"] / a["ops_per_sec"]
print(f"normal {a['ops_per_sec']:.0f} ops/s (p50 {a.get('p50_ms', 0):.2f} ms, p99 {a.get('p99_ms', 0):.2f} ms); "
      f"one follower {sys.argv[5]}x slower {b['ops_per_sec']:.0f} ops/s (p50 {b.get('p50_ms', 0):.2f} ms, "
      f"p99 {b.get('p99_ms', 0):.2f} ms): {100 * r:.1f}% of normal; "
      f"leader {'unchanged' if sys.argv[3] == sys.argv[4] else 'CHANGED to ' + sys.argv[4]}")
EOF
