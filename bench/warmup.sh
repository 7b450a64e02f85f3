#!/usr/bin/env bash
# Time to full speed: a fresh `conduit serve` pinned to core 0, SayHello load from h2load on core 1
# (4 connections x 32 streams) started the moment the server says it listens, and the server's
# throughput in WINDOW-second windows for WINDOWS windows (default 8 x 5 s = 40 s). The counts are
# the server's own (`conduit serve` prints its calls so far on SIGUSR1, sent at each window's end).
# Issue 10's goal: the 5-10 s window within 10% of the steady state (taken as the last window).
#
# One fresh server per variant, each a candidate fix, one after the other in one run:
#   default       `conduit serve` as built (Release, JIT, tiered compilation with PGO)
#   r2r           published with ReadyToRun (precompiled code for Conduit's own assemblies; the
#                 shared framework is ReadyToRun already)
#   pgo-off       DOTNET_TieredPGO=0            (no instrumented tier between tier 0 and tier 1)
#   tc-off        DOTNET_TieredCompilation=0    (every method fully optimized at its first call)
#   quickjit-off  DOTNET_TC_QuickJit=0          (tier 0 is optimized code; tiering stays on)
#   loops-off     DOTNET_TC_QuickJitForLoops=0  (methods with loops start optimized, no OSR)
#   delay100      DOTNET_TC_CallCountingDelayMs=100: the runtime's own default, which conduit's
#                 runtimeconfig sets to 0 (tier up as soon as a method has 30 calls, not after
#                 100 ms without new tier-0 activity, which a busy start keeps pushing back)
# (A start-up warm-up of 20,000 SayHello calls to itself was measured here too, did not reach the
# goal, and was removed; docs/performance.md has its row.)
# The same knobs as runtimeconfig settings, for a deployment: System.Runtime.TieredPGO,
# System.Runtime.TieredCompilation, System.Runtime.TieredCompilation.QuickJit,
# System.Runtime.TieredCompilation.QuickJitForLoops (csproj: <TieredPGO>, <TieredCompilation>,
# <TieredCompilationQuickJit>, <TieredCompilationQuickJitForLoops>, <PublishReadyToRun>).
#
#   bash bench/warmup.sh                                   # every variant, 8 x 5 s each
#   VARIANTS="default delay100" bash bench/warmup.sh
#   VARIANTS=default WINDOWS=2 WINDOW=2 bash bench/warmup.sh    # a smoke run
#   SERVE_ARGS="" bash bench/warmup.sh    # default is --log-level Warning: the JIT, not the log
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
variants="${VARIANTS:-default r2r pgo-off tc-off quickjit-off loops-off delay100}"
windows="${WINDOWS:-8}"
window="${WINDOW:-5}"
read -r -a serve_args <<<"${SERVE_ARGS---log-level Warning}"
port="${PORT:-50096}"
work="$(mktemp -d)"
server=""
load=""
cleanup() {
  [[ -n "$load" ]] && kill "$load" 2>/dev/null || true
  [[ -n "$server" ]] && kill "$server" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
source "$root/scripts/lib.sh"
ensure_packages nghttp2-client

echo "building ..." >&2
dotnet build "$root/src/Conduit/Conduit.csproj" -c Release -nologo -v quiet >&2
jit_dll="$root/src/Conduit/bin/Release/net10.0/conduit.dll"
r2r_dll="$work/r2r/conduit.dll"
if [[ " $variants " == *" r2r"* ]]; then
  # Its own output and intermediate folders, so the JIT build above is left as it is.
  dotnet publish "$root/src/Conduit/Conduit.csproj" -c Release -r linux-x64 --self-contained false \
    -p:PublishReadyToRun=true -o "$work/r2r" -nologo -v quiet >&2
fi

run_variant() { # name -> prints one result line
  local name="$1" dll="$jit_dll" envs=()
  case "$name" in
    default) ;;
    r2r) dll="$r2r_dll" ;;
    pgo-off) envs=(DOTNET_TieredPGO=0) ;;
    tc-off) envs=(DOTNET_TieredCompilation=0) ;;
    quickjit-off) envs=(DOTNET_TC_QuickJit=0) ;;
    loops-off) envs=(DOTNET_TC_QuickJitForLoops=0) ;;
    delay100) envs=(DOTNET_TC_CallCountingDelayMs=100) ;;
    *) echo "unknown variant $name" >&2; return 1 ;;
  esac
  local out="$work/$name.out" t0 ready i
  rm -rf "$work/data"
  t0="$(date +%s.%N)"
  (exec env "${envs[@]}" taskset -c 0 dotnet "$dll" serve --urls "http://127.0.0.1:$port" --data "$work/data" \
    "${serve_args[@]}" > "$out" 2>&1) &
  server=$!
  # Ready is when it says it listens, not when the port accepts.
  for i in $(seq 1 600); do grep -q '^conduit serve: listening' "$out" && break; kill -0 "$server" 2>/dev/null || break; sleep 0.05; done
  grep -q '^conduit serve: listening' "$out" || { echo "$name did not start:" >&2; cat "$out" >&2; return 1; }
  ready="$(date +%s.%N)"
  h2load_sayhello "$port" "$work" -D "$((windows * window + 2))" -c 4 -m 32 > "$work/h2load.out" 2>&1 &
  load=$!
  local marks=("$(date +%s.%N)")
  kill -USR1 "$server"
  # The sleeps are the measurement itself: they mark the windows on the wall clock.
  for i in $(seq 1 "$windows"); do sleep "$window"; kill -USR1 "$server"; marks+=("$(date +%s.%N)"); done
  kill "$load" 2>/dev/null || true; wait "$load" 2>/dev/null || true; load=""
  kill -TERM "$server"; wait "$server" 2>/dev/null || true; server=""
  python3 - "$name" "$t0" "$ready" "$out" "${marks[@]}" <<'PY'
import re, sys
name, t0, ready, out, *marks = sys.argv[1:]
calls = [int(m.group(1)) for m in re.finditer(r"^conduit serve: so far (\d+) calls", open(out).read(), re.M)]
marks = [float(m) for m in marks]
if len(calls) != len(marks):
    sys.exit(f"{name}: expected {len(marks)} SIGUSR1 reports, got {len(calls)}")
rates = [(calls[i + 1] - calls[i]) / (marks[i + 1] - marks[i]) for i in range(len(calls) - 1)]
steady = rates[-1]
line = f"{name:<13} {float(ready) - float(t0):7.2f}s " + " ".join(f"{r / 1000:7.1f}k" for r in rates)
line += "   " + " ".join(f"{r / steady:4.2f}" for r in rates) if steady > 0 else ""
print(line)
PY
}

echo "time to full speed: fresh conduit serve ${serve_args[*]} on core 0, h2load SayHello 4x32 on core 1 from the moment it listens, ${windows} windows of ${window}s, $(date -u '+%Y-%m-%d %H:%M UTC')"
printf '%-13s %8s  %s   %s\n' variant ready "req/s per window" "each window / the last"
for v in $variants; do run_variant "$v"; done
