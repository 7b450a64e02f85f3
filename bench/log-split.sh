#!/usr/bin/env bash
# The log bench (bench/Conduit.Log.Bench) against a `conduit serve` of its own process, so the
# CPU per MB splits into the client's and the server's (docs/performance.md, "the client apart").
# PIN="0 1" runs the server on core 0 and the bench on core 1 (taskset), as a client on another
# machine would be; PIN unset shares every core, as the in-process bench does. Each run starts a
# new server with an empty data folder (the bench's topic names are fixed) and stops it after.
# Usage: [PIN="0 1"] [PORT=50061] bash bench/log-split.sh [bench arguments, e.g. --rows producer --sizes 4096]
# Environment: DIR (the bench's --dir, default /tmp/conduit-log-split; the server's data goes in
# $DIR-server, on the same disk), and CONDUIT__* settings for the server.
set -euo pipefail
root="$(cd -P "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
port="${PORT:-50061}"
dir="${DIR:-/tmp/conduit-log-split}"
read -r server_cpus client_cpus <<< "${PIN:-all all}"
pinned() { if [[ "$1" == all ]]; then echo; else echo "taskset -c $1"; fi; }
if (echo > "/dev/tcp/127.0.0.1/$port") 2> /dev/null; then echo "port $port is taken: PORT=another" >&2; exit 1; fi
echo "building ..." >&2
dotnet build "$root/bench/Conduit.Log.Bench" -c Release -nologo -v quiet >&2

rm -rf "$dir-server"
server=""
stop() {
  if [[ -n "$server" ]]; then
    kill "$server" 2> /dev/null || true
    wait "$server" 2> /dev/null || true
  fi
  rm -rf "$dir-server"
}
trap stop EXIT
# taskset execs dotnet, so $! is the server's own process either way.
# shellcheck disable=SC2046
CONDUIT__LOG__RETENTIONCHECKSECONDS="${CONDUIT__LOG__RETENTIONCHECKSECONDS:-0}" \
  $(pinned "$server_cpus") dotnet "$root/src/Conduit/bin/Release/net10.0/conduit.dll" serve \
  --urls "http://127.0.0.1:$port" --web-urls none --data "$dir-server" --log-level Warning &
server=$!
for _ in $(seq 100); do
  if (echo > "/dev/tcp/127.0.0.1/$port") 2> /dev/null; then break; fi
  kill -0 "$server" 2> /dev/null || { echo "the server exited" >&2; exit 1; }
  sleep 0.2
done
(echo > "/dev/tcp/127.0.0.1/$port") 2> /dev/null || { echo "the server did not listen on $port" >&2; exit 1; }
# shellcheck disable=SC2046
$(pinned "$client_cpus") dotnet "$root/bench/Conduit.Log.Bench/bin/Release/net10.0/Conduit.Log.Bench.dll" \
  --dir "$dir" --target "http://127.0.0.1:$port" --server-pid "$server" "$@"
