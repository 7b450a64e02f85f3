#!/usr/bin/env bash
# Garbage collections during a unary load run, as the issue asks ("zero Gen2 collections in a
# 60 s run"): `conduit serve` pinned to core 0, h2load (SayHello, 4 connections x 32 streams)
# pinned to core 1, WARMUP seconds of load and then DURATION seconds measured. The server prints
# its figures so far (calls, bytes allocated per call, GC counts by generation) when sent SIGUSR1:
# once when the warm-up ends and once when the run ends; the difference is the steady state. Its
# summary at shutdown covers the whole life (warm-up included). With CONDUIT_ALLOC_TRACE=1 the
# server also prints collections by generation and reason, what each gen1/gen2 promoted, and
# its top allocating types.
#
#   bash bench/gc-run.sh                     # 20 s warm-up, 60 s measured
#   WARMUP=5 DURATION=10 CONDUIT_ALLOC_TRACE=1 bash bench/gc-run.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
warmup="${WARMUP:-20}"
duration="${DURATION:-60}"
port="${PORT:-50095}"
work="$(mktemp -d)"
server=""
cleanup() { [[ -n "$server" ]] && kill "$server" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
source "$root/scripts/lib.sh"
ensure_packages nghttp2-client
dotnet build "$root/src/Conduit/Conduit.csproj" -c Release -nologo -v quiet >&2

(exec taskset -c 0 dotnet "$root/src/Conduit/bin/Release/net10.0/conduit.dll" serve \
  --urls "http://127.0.0.1:$port" --log-level Warning --data "$work/data" > "$work/server.out" 2>&1) &
server=$!
wait_port "$port" || { cat "$work/server.out"; exit 1; }
h2load_sayhello "$port" "$work" -D "$((warmup + duration))" -c 4 -m 32 > "$work/h2load.out" &
load=$!
# The sleeps are the measurement itself, not a wait for an event: they mark the end of the
# warm-up and the end of the measured window on the wall clock, where the snapshots are taken.
sleep "$warmup"; kill -USR1 "$server"
sleep "$duration"; kill -USR1 "$server"
wait "$load"
grep -E '^(finished|requests|status codes)' "$work/h2load.out"
kill -TERM "$server"; wait "$server" || true; server=""
grep -v -e '^conduit serve: listening' -e '^services:' "$work/server.out"
# The measured window: the second snapshot minus the first.
grep '^conduit serve: so far' "$work/server.out" | python3 -c '
import re, sys
pattern = r"so far (\d+) calls .*allocated ([\d.]+) MiB.*gen0/gen1/gen2 (\d+)/(\d+)/(\d+)"
(c0, m0, *g0), (c1, m1, *g1) = [re.search(pattern, line).groups() for line in sys.stdin][:2]
calls = int(c1) - int(c0)
per_call = (float(m1) - float(m0)) * 1024 * 1024 / max(calls, 1)
gcs = "/".join(str(int(b) - int(a)) for a, b in zip(g0, g1))
print(f"steady state, the {sys.argv[1]} s after the warm-up: {calls} calls ({calls / int(sys.argv[1]):.0f}/s), about {per_call:.0f} bytes allocated per call, GC collections gen0/gen1/gen2 {gcs}")
' "$duration"
