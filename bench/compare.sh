#!/usr/bin/env bash
# Unary SayHello side by side, same load generator (h2load), same pinning (server on core 0,
# load on core 1), same warm-up, in one run; a fresh server per row:
#   kestrel       bare Kestrel, canned reply: the ceiling for any layer on Kestrel
#   greeter       bench/MinimalGreeter: AddGrpc + MapGrpcService<Greeter> only, no logging, no
#                 interceptors: the ceiling for a service on grpc-dotnet
#   conduit       `conduit serve` as a user runs it: no flags (the per-call log at Information)
#   conduit-warn  `conduit serve --log-level Warning` (the per-call log off): conduit / conduit-warn
#                 is what the default logging costs
#   old, old-warn the same two for Conduit's own runtime before the switch to grpc-dotnet, built
#                 from commit d0e41d9 by bench/old-runtime.sh (once; cached outside the repo)
#   cpp           C++ gRPC (Debian libgrpc++, callback API)
#   node, python  @grpc/grpc-js, grpcio (sync)
# Prints one table and the issue's ratios; only ratios within one run mean anything on a shared
# machine.
#
#   bash bench/compare.sh                      # 30 s warm-up + 30 s per row, as the issue asks
#   WARMUP=2 DURATION=5 bash bench/compare.sh  # a quick look
#   SERVERS="greeter conduit conduit-warn old-warn" bash bench/compare.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
warmup="${WARMUP:-30}"
duration="${DURATION:-30}"
servers="${SERVERS:-kestrel greeter conduit conduit-warn old old-warn cpp node python}"
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]:-}"; do [[ -n "$p" ]] && kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

need=(nghttp2-client python3-grpcio python3-protobuf protobuf-compiler)
[[ " $servers " == *" cpp "* ]] && need+=(libgrpc++-dev protobuf-compiler-grpc pkg-config g++)
# Node: the machine's own node/npm when there are (Debian's npm conflicts with other installs).
[[ " $servers " == *" node "* ]] && ! command -v npm >/dev/null && need+=(nodejs npm)
source "$root/scripts/lib.sh"
ensure_packages "${need[@]}"

echo "building ..." >&2
dotnet build "$root/src/Conduit/Conduit.csproj" -c Release -nologo -v quiet >&2
dotnet build "$root/bench/BareKestrel/BareKestrel.csproj" -c Release -nologo -v quiet >&2
dotnet build "$root/bench/MinimalGreeter/MinimalGreeter.csproj" -c Release -nologo -v quiet >&2
old=""
if [[ " $servers " == *" old"* ]]; then old="$(bash "$root/bench/old-runtime.sh")"; fi
if [[ " $servers " == *" cpp "* ]]; then
  mkdir -p "$work/cpp"
  protoc -I "$root/protos" --cpp_out="$work/cpp" --grpc_out="$work/cpp" \
    --plugin=protoc-gen-grpc="$(command -v grpc_cpp_plugin)" "$root/protos/helloworld/helloworld.proto"
  g++ -O2 -std=c++17 -I"$work/cpp" "$root/bench/reference/cpp/greeter_server.cc" \
    "$work/cpp/helloworld/helloworld.pb.cc" "$work/cpp/helloworld/helloworld.grpc.pb.cc" \
    $(pkg-config --cflags --libs grpc++ protobuf) -o "$work/cpp/greeter_server"
fi
if [[ " $servers " == *" node "* ]]; then
  cp "$root/bench/reference/node/"{package.json,server.js} "$work/"
  (cd "$work" && npm install --silent --no-audit --no-fund >/dev/null)
fi

start_server() { # name port
  case "$1" in
    kestrel) exec taskset -c 0 dotnet "$root/bench/BareKestrel/bin/Release/net10.0/BareKestrel.dll" --port "$2" ;;
    greeter) exec taskset -c 0 dotnet "$root/bench/MinimalGreeter/bin/Release/net10.0/MinimalGreeter.dll" --port "$2" ;;
    conduit) exec taskset -c 0 dotnet "$root/src/Conduit/bin/Release/net10.0/conduit.dll" serve --urls "http://127.0.0.1:$2" --data "$work/data-$2" ;;
    conduit-warn) exec taskset -c 0 dotnet "$root/src/Conduit/bin/Release/net10.0/conduit.dll" serve --urls "http://127.0.0.1:$2" --log-level Warning --data "$work/data-$2" ;;
    old) exec taskset -c 0 dotnet "$old" serve --urls "http://127.0.0.1:$2" --data "$work/data-$2" ;;
    old-warn) exec taskset -c 0 dotnet "$old" serve --urls "http://127.0.0.1:$2" --log-level Warning --data "$work/data-$2" ;;
    cpp) exec taskset -c 0 "$work/cpp/greeter_server" "$2" ;;
    node) exec taskset -c 0 node "$work/server.js" "$root/protos" "$2" ;;
    python) exec taskset -c 0 /usr/bin/python3 "$root/bench/reference/python/greeter_server.py" "$2" ;;
  esac
}


run_h2load() { # port connections streams -> "req/s mean_ms"
  local out
  out="$(h2load_sayhello "$1" "$work" -D "$duration" --warm-up-time "$warmup" -c "$2" -m "$3" 2>&1)"
  local rps mean failed
  rps="$(grep -Eo 'finished in [0-9.]+[a-z]+, [0-9.]+ req/s' <<<"$out" | grep -Eo '[0-9.]+ req/s' | cut -d' ' -f1)"
  mean="$(grep -E '^time for request:' <<<"$out" | awk '{print $6}')"
  failed="$(grep -Eo '[0-9]+ failed' <<<"$out" | head -1 | cut -d' ' -f1)"
  echo "${rps:-0} ${mean:-?} ${failed:-?}"
}

port=50090
declare -A result
declare -A latency
for name in $servers; do
  port=$((port + 1))
  # The default rows log a line per call (a gigabyte in a 30 s run): their stdout goes to /dev/null,
  # so the figure is the logging pipeline's cost without a terminal's.
  case "$name" in
    conduit|old) start_server "$name" "$port" > /dev/null 2> "$work/$name.log" & ;;
    *) start_server "$name" "$port" > "$work/$name.log" 2>&1 & ;;
  esac
  pids+=($!)
  if ! wait_port "$port"; then echo "$name did not start:" >&2; cat "$work/$name.log" >&2; continue; fi
  echo "measuring $name ..." >&2
  result["$name 1x1"]="$(run_h2load "$port" 1 1)"
  result["$name 4x32"]="$(run_h2load "$port" 4 32)"
  # h2load reports means only: the 1x1 percentiles come from conduit bench, pinned the same way.
  latency["$name"]="$(taskset -c 1 dotnet "$root/src/Conduit/bin/Release/net10.0/conduit.dll" bench helloworld.Greeter/SayHello \
    --server "http://127.0.0.1:$port" -c 1 --concurrency 1 -d "${duration}s" --warmup "${warmup}s" --data '{"name":"bench"}' --json \
    | python3 -c 'import json,sys; r=json.load(sys.stdin); l=r["latency_ms"]; print("%.0f %.3f %.3f %.3f" % (r["calls_per_s"], l["p50"], l["p99"], l["p99_9"]))')"
  kill "${pids[-1]}" 2>/dev/null || true
  wait "${pids[-1]}" 2>/dev/null || true
done

echo
echo "unary SayHello, h2load $(h2load --version | head -1 | awk '{print $2}'), server pinned to core 0, h2load to core 1, ${warmup}s warm-up + ${duration}s per row, $(date -u '+%Y-%m-%d %H:%M UTC')"
printf '%-13s %14s %12s %14s %12s %10s %10s\n' server "1x1 req/s" "1x1 mean" "4x32 req/s" "4x32 mean" "vs kestrel" "vs greeter"
rate4() { awk '{print $1}' <<<"${result[$1 4x32]:-0}"; }
div() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0 && b > 0) printf "%.2f", a / b; else print "-" }'; }
for name in $servers; do
  read -r r1 m1 f1 <<<"${result[$name 1x1]:-0 ? ?}"
  read -r r4 m4 f4 <<<"${result[$name 4x32]:-0 ? ?}"
  printf '%-13s %14s %12s %14s %12s %10s %10s\n' "$name" "$r1" "$m1" "$r4" "$m4" "$(div "$r4" "$(rate4 kestrel)")" "$(div "$r4" "$(rate4 greeter)")"
  if [[ "$f1" != "0" || "$f4" != "0" ]]; then echo "  ($name: failed requests: $f1 / $f4)"; fi
done
echo
echo "1 connection x 1 call in flight, latency percentiles from conduit bench (same client for every server):"
printf '%-13s %12s %12s %12s %12s\n' server "calls/s" p50 p99 p99.9
for name in $servers; do
  read -r c p50 p99 p999 <<<"${latency[$name]:-0 ? ? ?}"
  printf '%-13s %12s %12s %12s %12s\n' "$name" "$c" "${p50}ms" "${p99}ms" "${p999}ms"
done
echo
echo "issue 10's targets at 4x32 (ratios of the rows above; '-' where a row was not run):"
echo "  default conduit / minimal greeter    $(div "$(rate4 conduit)" "$(rate4 greeter)")   (at least 0.90)"
echo "  default conduit / old runtime        $(div "$(rate4 conduit)" "$(rate4 old)") default, $(div "$(rate4 conduit)" "$(rate4 old-warn)") --log-level Warning   (at least 1.00)"
echo "  default conduit / C++                $(div "$(rate4 conduit)" "$(rate4 cpp)")   (at least 2.00)"
echo "  default conduit / conduit Warning    $(div "$(rate4 conduit)" "$(rate4 conduit-warn)")   (what the default per-call log costs: at least 0.90)"
