#!/usr/bin/env bash
# The log bench (bench/Conduit.Log.Bench) against a `conduit serve` of its own process, so the
# CPU per MB splits into the client's and the server's (docs/performance.md, "the client apart").
# PIN="0 1" runs the server on core 0 and the bench on core 1 (taskset), as a client on another
# machine would be; PIN unset shares every core, as the in-process bench does.
# Usage: [PIN="0 1"] [PORT=50061] bash bench/log-split.sh [bench arguments, e.g. --rows producer --sizes 4096]
# Environment: DIR (the bench's --dir, default /tmp/conduit-log-split; the server's data goes in
# $DIR-server, on the same disk), and CONDUIT__* settings for the server.
set -euo pipefail
root="$(cd -P "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
port="${PORT:-50061}"
dir="${DIR:-/tmp/conduit-log-split}"
read -r server_cpus client_cpus <<< "${PIN:-all all}"
echo "building ..." >&2
dotnet build "$root/bench/Conduit.Log.Bench" -c Release -nologo -v quiet >&2
on() { local cpus=$1; shift; if [[ "$cpus" == all ]]; then "$@"; else taskset -c "$cpus" "$@"; fi; }

rm -rf "$dir-server"
CONDUIT__LOG__RETENTIONCHECKSECONDS="${CONDUIT__LOG__RETENTIONCHECKSECONDS:-0}" \
  on "$server_cpus" dotnet "$root/src/Conduit/bin/Release/net10.0/conduit.dll" serve \
  --urls "http://127.0.0.1:$port" --web-urls none --data "$dir-server" --log-level Warning &
launcher=$!
# The server's own process (taskset execs it; without PIN it is the background job itself).
server=""
for _ in $(seq 100); do
  server="$(pgrep -f "conduit.dll serve --urls http://127.0.0.1:$port " | head -1 || true)"
  if [[ -n "$server" ]] && (echo > "/dev/tcp/127.0.0.1/$port") 2> /dev/null; then break; fi
  sleep 0.2
done
stop() {
  kill "$server" 2> /dev/null || true
  while kill -0 "$server" 2> /dev/null; do sleep 0.1; done
  wait "$launcher" 2> /dev/null || true
  rm -rf "$dir-server"
}
trap stop EXIT
[[ -n "$server" ]] || { echo "the server did not start" >&2; exit 1; }
on "$client_cpus" dotnet "$root/bench/Conduit.Log.Bench/bin/Release/net10.0/Conduit.Log.Bench.dll" \
  --dir "$dir" --target "http://127.0.0.1:$port" --server-pid "$server" "$@"
