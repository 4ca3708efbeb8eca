#!/usr/bin/env bash
# The cost of a rolling SIGTERM restart of a 3-node cluster to writers, with leadership
# transfer (a stopping leader hands over first, the default) and without (--no-handover, how
# raftd stopped before). Prints one JSON line per restart and a summary per mode.
#
#   scripts/bench-rolling-restart.sh [ROUNDS]      (default 3 rolling restarts per mode)
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
cargo build -q --release -p raftd --bin raftd
cargo build -q --release -p raftd-bench --bin raftd-rolling
for mode in --no-handover ""; do
    echo "== ${mode:-with handover}"
    # shellcheck disable=SC2086 # an empty mode is no argument
    target/release/raftd-rolling --raftd target/release/raftd --rounds "$ROUNDS" $mode
done
