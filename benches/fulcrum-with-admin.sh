#!/usr/bin/env bash
# The metrics-cost benchmark: runs fulcrum with the config the harness wrote plus an
# [admin] table (which installs the Prometheus recorder), same process (exec), so the
# harness measures it like plain fulcrum:
#   ../shared/bench/compare --scenarios http-keepalive --contenders fulcrum \
#       --fulcrum benches/fulcrum-with-admin.sh
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bin="${FULCRUM_REAL_BIN:-$here/target/pgo/release/fulcrum}"   # scripts/pgo-build.sh
[ "${1:-}" = "-c" ] || exec "$bin" "$@"   # --version and the like go straight through
conf=$(mktemp --suffix=.toml)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
{ printf '[admin]\nbind = "127.0.0.1:%s"\n\n' "$port"; cat "$2"; } > "$conf"
exec "$bin" -c "$conf"
