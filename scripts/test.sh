#!/usr/bin/env bash
# The whole test suite: README's test command, and what .ci/run runs after fmt and clippy.
# Installs what the tests need beyond the Rust toolchain first: Debian's chromium, in which the
# timeline page is rendered (tests/e2e_timeline.rs; RAFTD_CHROMIUM names another browser).
# Extra arguments go to `cargo test` (e.g. scripts/test.sh --test e2e_backup).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${RAFTD_CHROMIUM:-}" ] && ! [ -x /usr/bin/chromium ]; then
    as_root=()
    [ "$(id -u)" = 0 ] || as_root=(sudo -n)
    if command -v apt-get >/dev/null && { [ "$(id -u)" = 0 ] || sudo -n true 2>/dev/null; }; then
        echo "== installing chromium (for the timeline's browser test)"
        "${as_root[@]}" apt-get update -qq
        DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq chromium >/dev/null
    else
        echo "scripts/test.sh: the browser test needs Debian's chromium: apt-get install chromium (as root), or set RAFTD_CHROMIUM" >&2
        exit 1
    fi
fi
exec cargo test --workspace --locked "$@"
