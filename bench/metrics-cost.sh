#!/usr/bin/env bash
# Same build: metrics off / default / with ASP.NET Core's per-request meter, alternated.
# Server on core 0, h2load (-c 4 -m 32, 15 s warm-up + 20 s) on core 1.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"; source "$root/scripts/lib.sh"
work=$(mktemp -d)
for round in 1 2; do
  for variant in off default http; do
    port=$((50300 + RANDOM % 500))
    case $variant in
      off) envs=(CONDUIT__TELEMETRY__METRICS=false) ;;
      default) envs=(CONDUIT__TELEMETRY__METRICS=true) ;;
      http) envs=(CONDUIT__TELEMETRY__HTTPMETRICS=true) ;;
    esac
    env "${envs[@]}" taskset -c 0 dotnet "$root/src/Conduit/bin/Release/net10.0/conduit.dll" serve --urls "http://127.0.0.1:$port" --web-urls none --log-level Warning --data "$work/d-$variant-$round" > "$work/log-$variant-$round" 2>&1 &
    pid=$!
    for i in $(seq 50); do grep -q "listening on" "$work/log-$variant-$round" 2>/dev/null && break; sleep 0.2; done
    out="$(h2load_sayhello $port $work -D 20 --warm-up-time 15 -c 4 -m 32 2>&1)"
    echo "round $round metrics $variant: $(grep -Eo 'finished in [0-9.]+s, [0-9.]+ req/s' <<<"$out"); $(grep -Eo '[0-9]+ succeeded, [0-9]+ failed' <<<"$out")"
    kill -TERM $pid; wait $pid 2>/dev/null || true
  done
done
rm -rf "$work"
