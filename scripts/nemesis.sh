#!/usr/bin/env bash
# A long nemesis soak by hand: real raftd processes on 127.0.0.1 behind fault-injecting
# proxies (partitions, one-way cuts, bridges, black holes, slow links, SIGKILL + restart,
# SIGSTOP/SIGCONT) while clients run; the client history must be linearizable and the cluster
# must recover once the faults stop. Runs the ignored test `nemesis_soak` of
# tests/e2e_nemesis.rs in a release build.
#
#   scripts/nemesis.sh [--nodes N] [--duration SECS] [--seed S]
#
# Defaults: 5 nodes, 600 s, a seed from the clock (printed; pass it back to replay the same
# fault schedule and client choices, though real processes never replay exactly). On failure
# the node logs and data dirs are kept and their directory is printed.
set -euo pipefail

cd "$(dirname "$0")/.."

NODES=5
DURATION=600
SEED=""

usage() {
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
        --nodes) NODES=${2:?--nodes needs a value}; shift 2 ;;
        --duration) DURATION=${2:?--duration needs a value}; shift 2 ;;
        --seed) SEED=${2:?--seed needs a value}; shift 2 ;;
        -h|--help) usage ;;
        *) echo "nemesis.sh: unknown argument $1" >&2; usage ;;
    esac
done

case "$NODES" in ''|*[!0-9]*) echo "nemesis.sh: --nodes must be a number" >&2; exit 2 ;; esac
case "$DURATION" in ''|*[!0-9]*) echo "nemesis.sh: --duration must be a number of seconds" >&2; exit 2 ;; esac
if [ -n "$SEED" ]; then
    case "$SEED" in *[!0-9]*) echo "nemesis.sh: --seed must be a number" >&2; exit 2 ;; esac
    export RAFTD_NEMESIS_SEED="$SEED"
fi
export RAFTD_NEMESIS_NODES="$NODES" RAFTD_NEMESIS_SECS="$DURATION"

exec cargo test --release --test e2e_nemesis -- --ignored --exact nemesis_soak --nocapture
