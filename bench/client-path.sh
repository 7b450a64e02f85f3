#!/usr/bin/env bash
# The client path in one run: `conduit bench` (grpc-dotnet's GrpcChannel) and bench/Conduit.ClientFloor (the
# same unary SayHello with nothing but SocketsHttpHandler, with and without a token source per
# call) against one `conduit serve`, server pinned to core 0, load to core 1, one after another.
# Prints calls/s and bytes allocated per measured call (the window after the warm-up).
#   bash bench/client-path.sh                    # 2 s warm-up + 10 s per row, 4 connections x 32
#   WARMUP=2 DURATION=5 bash bench/client-path.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
warmup="${WARMUP:-2}"
duration="${DURATION:-10}"
connections="${CONNECTIONS:-4}"
concurrency="${CONCURRENCY:-32}"
source "$root/scripts/lib.sh"
pid=""
cleanup() { [[ -n "$pid" ]] && kill "$pid" 2>/dev/null || true; }
trap cleanup EXIT

echo "building ..." >&2
dotnet build "$root/src/Conduit/Conduit.csproj" -c Release -nologo -v quiet >&2
dotnet build "$root/bench/Conduit.ClientFloor/Conduit.ClientFloor.csproj" -c Release -nologo -v quiet >&2
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
data="$(mktemp -d)"
taskset -c 0 dotnet "$root/src/Conduit/bin/Release/net10.0/conduit.dll" serve --urls "http://127.0.0.1:$port" \
  --data "$data" --log-level Warning >/dev/null 2>&1 &
pid=$!
wait_port "$port"

echo "conduit bench (GrpcChannel), CONDUIT_ALLOC_TRACE=bytes:"
CONDUIT_ALLOC_TRACE=bytes taskset -c 1 dotnet "$root/src/Conduit/bin/Release/net10.0/conduit.dll" bench helloworld.Greeter/SayHello \
  --server "http://127.0.0.1:$port" -c "$connections" --concurrency "$concurrency" -d "${duration}s" --warmup "${warmup}s" \
  --data '{"name":"bench"}' 2>&1 | grep -E "client allocated|calls "
floor=(dotnet "$root/bench/Conduit.ClientFloor/bin/Release/net10.0/Conduit.ClientFloor.dll" --server "http://127.0.0.1:$port"
  -c "$connections" --concurrency "$concurrency" -d "$duration" --warmup "$warmup")
taskset -c 1 "${floor[@]}"
taskset -c 1 "${floor[@]}" --cts
kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
rm -rf "$data"
