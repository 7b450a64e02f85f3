#!/usr/bin/env bash
# Cache Get/Store requests/s and latency at 1 and 64 concurrent callers, side by side in one run
# with redis-benchmark -t get,set at the same concurrency against the same local redis-server:
#   conduit (memory)  conduit serve with the embedded backend
#   conduit (redis)   conduit serve --cache-backend redis://... (every call also goes to Redis)
#   redis-benchmark   Redis itself, no gRPC
# Everything runs on this machine over loopback. Usage: bash bench/cache-vs-redis.sh [seconds]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${1:-5}"
dotnet build "$root/src/Conduit/Conduit.csproj" -c Release -nologo -v quiet >&2
dotnet build "$root/bench/Conduit.Cache.Bench/Conduit.Cache.Bench.csproj" -c Release -nologo -v quiet >&2
conduit=(dotnet "$root/src/Conduit/bin/Release/net10.0/conduit.dll")
bench=(dotnet "$root/bench/Conduit.Cache.Bench/bin/Release/net10.0/Conduit.Cache.Bench.dll")

tmp="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
source "$root/scripts/lib.sh"

rport=$(free_port); mport=$(free_port); xport=$(free_port)
redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no --dir "$tmp" >"$tmp/redis.log" 2>&1 & pids+=($!)
wait_port "$rport" || { cat "$tmp/redis.log" >&2; exit 1; }
"${conduit[@]}" serve --urls "http://127.0.0.1:$mport" --data "$tmp/m" --log-level Warning >"$tmp/m.log" 2>&1 & pids+=($!)
"${conduit[@]}" serve --urls "http://127.0.0.1:$xport" --data "$tmp/x" --log-level Warning --cache-backend "redis://127.0.0.1:$rport" >"$tmp/x.log" 2>&1 & pids+=($!)
wait_port "$mport" || { cat "$tmp/m.log" >&2; exit 1; }
wait_port "$xport" || { cat "$tmp/x.log" >&2; exit 1; }

echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(redis-server --version | grep -o 'v=[0-9.]*'), ${seconds}s per row"
echo
echo "| server | operation | callers | requests/s | p50 ms | p99 ms |"
echo "|---|---|---|---|---|---|"
for c in 1 64; do
  "${bench[@]}" --server "http://127.0.0.1:$mport" --concurrency "$c" --seconds "$seconds" --label "conduit (memory)"
  "${bench[@]}" --server "http://127.0.0.1:$xport" --concurrency "$c" --seconds "$seconds" --label "conduit (redis)"
  # redis-benchmark: as many requests as it does in about the same time, default 3-byte values, one key.
  n=$(( c == 1 ? 50000 : 400000 ))
  redis-benchmark -h 127.0.0.1 -p "$rport" -t set,get -c "$c" -n "$n" --csv 2>/dev/null \
    | awk -F'","' -v c="$c" 'NR>1 { gsub(/"/,""); split($0,f,","); printf "| redis-benchmark | %s | %s | %.0f | %.3f | %.3f |\n", (f[1]=="SET"?"Store (SET)":"Get (GET)"), c, f[2], f[5], f[7] }'
done
