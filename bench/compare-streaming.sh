#!/usr/bin/env bash
# Streaming side by side, same load generator, same pinning (server on core 0, load on core 1), in
# one run: grpc.testing.TestService on Conduit (`conduit interop server`, grpc-dotnet), on
# Conduit's own runtime as it was before the switch to grpc-dotnet (`old`: commit d0e41d9's
# `conduit interop server`, built once by bench/old-runtime.sh), on the C++ gRPC library
# (bench/reference/cpp/test_server.cc, callback API), and bare Kestrel answering the same two
# methods with canned frames (bench/BareKestrel: the ceiling for any gRPC layer on Kestrel).
# Issue 10's target: conduit / old at least 0.90 for both shapes.
#   - server stream: StreamingOutputCall, 100 messages of 10 bytes per call
#   - bidi ping-pong: FullDuplexCall, one 10-byte message each way per round trip
#   bash bench/compare-streaming.sh                     # 10 s warm-up + 20 s per row
#   WARMUP=2 DURATION=5 CONCURRENCY=4 bash bench/compare-streaming.sh
#   LOAD=conduit CONNECTIONS=4 CONCURRENCY=32 bash bench/compare-streaming.sh
#   SERVERS="conduit old" bash bench/compare-streaming.sh
#
# LOAD picks the load generator, the same one for both servers:
#   cpp (default)  bench/reference/cpp/stream_load.cc on Debian's libgrpc++ 1.51 (async API, two
#                  completion-queue threads), neither server's own stack
#   conduit        `conduit bench`, our C# client
# cpp is the default because it is not the limit where conduit bench is. Quick runs on 2026-11-21
# (WARMUP=1 DURATION=3 CONCURRENCY=32, a shared and busy machine: single runs vary a lot):
#   ping-pong, LOAD=cpp:         conduit  64k msgs/s at 95% server CPU, cpp 101k at 91%
#              LOAD=conduit:     conduit  68k at 77%, cpp 63k at 72%, conduit bench at 87-97% of
#                                its core: equal rates, servers idle part of the time = the
#                                client is the limit, which is what LOAD=cpp removes
#   server stream, LOAD=cpp:     conduit 624k at 86% (stream_load at 88%), cpp 146k at 99%
#                  LOAD=conduit: conduit 406k at 57% (conduit bench at 59%), cpp 134k at 91%
# Against Conduit's server stream neither client saturates the server on one core in every run
# (parsing 100 small messages costs the client more than writing them costs the server): treat
# that cell as a lower bound and read the load CPU column. The load generator also changes the
# server's work per message: in ping-pong each server spent less CPU per message with its own
# stack's client (Conduit's server ~10.6 us with conduit bench vs ~14 us with stream_load;
# C++'s ~9.4 us with stream_load vs ~15 us with conduit bench), another reason for a third party.
# Each row prints the server's and the load generator's CPU use over the run (warm-up included): a
# server well below 100% of its core is not the limit; the load generator is (or, for ping-pong at
# few calls in flight, the round trip is).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
warmup="${WARMUP:-10}"
duration="${DURATION:-20}"
concurrency="${CONCURRENCY:-4}"
connections="${CONNECTIONS:-1}"
load="${LOAD:-cpp}"
servers="${SERVERS:-kestrel conduit old cpp}"
[[ "$load" == cpp || "$load" == conduit ]] || { echo "LOAD must be cpp or conduit" >&2; exit 1; }
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]:-}"; do [[ -n "$p" ]] && kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

need=(libgrpc++-dev protobuf-compiler-grpc protobuf-compiler pkg-config g++)
source "$root/scripts/lib.sh"
ensure_packages "${need[@]}"

echo "building ..." >&2
dotnet build "$root/src/Conduit/Conduit.csproj" -c Release -nologo -v quiet >&2
dotnet build "$root/bench/BareKestrel/BareKestrel.csproj" -c Release -nologo -v quiet >&2
old=""
if [[ " $servers " == *" old "* ]]; then old="$(bash "$root/bench/old-runtime.sh")"; fi
protos=(grpc/testing/empty.proto grpc/testing/messages.proto grpc/testing/test.proto)
(cd "$root/protos" && protoc -I . --cpp_out="$work" --grpc_out="$work" --plugin=protoc-gen-grpc="$(command -v grpc_cpp_plugin)" "${protos[@]}")
g++ -O2 -std=c++17 -I"$work" "$root/bench/reference/cpp/test_server.cc" \
  "$work"/grpc/testing/*.pb.cc $(pkg-config --cflags --libs grpc++ protobuf) -o "$work/test_server"
if [[ "$load" == cpp ]]; then
  g++ -O2 -std=c++17 -I"$work" "$root/bench/reference/cpp/stream_load.cc" \
    "$work"/grpc/testing/*.pb.cc $(pkg-config --cflags --libs grpc++ protobuf) -o "$work/stream_load"
fi

conduit=(dotnet "$root/src/Conduit/bin/Release/net10.0/conduit.dll")
stream_data="$(python3 -c 'import json; print(json.dumps({"response_parameters": [{"size": 10}] * 100}))')"
pingpong_data='{"response_parameters":[{"size":10}],"payload":{"body":"AAAAAAAAAAAAAA=="}}'

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; } # user + system time of a process, in 1/100 s

# One load run on core 1, its JSON (messages_per_s, latency_ms, errors) in $work/bench.json.
run_load() { # port method mode data
  case "$load" in
    cpp) taskset -c 1 "$work/stream_load" --target "127.0.0.1:$1" --mode "$3" -c "$connections" \
           --concurrency "$concurrency" --warmup "$warmup" --duration "$duration" ;;
    conduit) taskset -c 1 "${conduit[@]}" bench "grpc.testing.TestService/$2" --server "http://127.0.0.1:$1" \
           -c "$connections" --concurrency "$concurrency" -d "${duration}s" --warmup "${warmup}s" --data "$4" --json ;;
  esac
}

# Rate and latency from the load generator; the server's and the load generator's CPU use over the
# same run (warm-up included): when the server's core is not saturated, it is not the limit.
measure() { # port pid method mode data -> "messages/s p50 p99 errors server-cpu-% load-cpu-%"
  local before after start end TIMEFORMAT='%3U %3S'
  before="$(cpu_ticks "$2")"; start="$(date +%s.%N)"
  { time run_load "$1" "$3" "$4" "$5" > "$work/bench.json" 2> "$work/load.err"; } 2> "$work/load.time" \
    || { cat "$work/load.err" >&2; echo "the load generator failed" >&2; exit 1; }
  after="$(cpu_ticks "$2")"; end="$(date +%s.%N)"
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); l=r["latency_ms"]; wall=float(sys.argv[5])-float(sys.argv[4]); cpu=(int(sys.argv[3])-int(sys.argv[2]))/100/wall; load=sum(map(float, open(sys.argv[6]).read().split()))/wall; print("%.0f %.3f %.3f %d %.0f %.0f" % (r["messages_per_s"], l["p50"], l["p99"], sum(r["errors"].values()), 100*cpu, 100*load))' \
    "$work/bench.json" "$before" "$after" "$start" "$end" "$work/load.time"
}

declare -A result
port=50190
for name in $servers; do
  port=$((port + 1))
  case "$name" in
    kestrel) (exec taskset -c 0 dotnet "$root/bench/BareKestrel/bin/Release/net10.0/BareKestrel.dll" --port "$port") > "$work/$name.log" 2>&1 & ;;
    conduit) (exec taskset -c 0 "${conduit[@]}" interop server --port "$port") > "$work/$name.log" 2>&1 & ;;
    old) (exec taskset -c 0 dotnet "$old" interop server --port "$port") > "$work/$name.log" 2>&1 & ;;
    cpp) (exec taskset -c 0 "$work/test_server" "$port") > "$work/$name.log" 2>&1 & ;;
  esac
  pids+=($!)
  wait_port "$port" || { echo "$name did not start" >&2; cat "$work/$name.log" >&2; exit 1; }
  echo "measuring $name ..." >&2
  result["$name stream"]="$(measure "$port" "${pids[-1]}" StreamingOutputCall stream "$stream_data")"
  result["$name pingpong"]="$(measure "$port" "${pids[-1]}" FullDuplexCall pingpong "$pingpong_data")"
  kill "${pids[-1]}" 2>/dev/null || true
  wait "${pids[-1]}" 2>/dev/null || true
done

echo
load_name="$([[ "$load" == cpp ]] && echo "stream_load (C++)" || echo "conduit bench")"
echo "streaming, LOAD=$load: $load_name on core 1, server on core 0, $connections connection(s) x $concurrency calls in flight, ${warmup}s warm-up + ${duration}s per row, $(date -u '+%Y-%m-%d %H:%M UTC')"
printf '%-8s %22s %10s %10s %11s %9s %18s %10s %10s %11s %9s\n' server "server-stream msgs/s" "call p50" "call p99" "server CPU" "load CPU" "ping-pong msgs/s" "rtt p50" "rtt p99" "server CPU" "load CPU"
for name in $servers; do
  read -r s_rate s_p50 s_p99 s_err s_cpu s_load <<<"${result[$name stream]}"
  read -r p_rate p_p50 p_p99 p_err p_cpu p_load <<<"${result[$name pingpong]}"
  printf '%-8s %22s %9sms %9sms %10s%% %8s%% %18s %9sms %9sms %10s%% %8s%%\n' "$name" "$s_rate" "$s_p50" "$s_p99" "$s_cpu" "$s_load" "$p_rate" "$p_p50" "$p_p99" "$p_cpu" "$p_load"
  if [[ "$s_err" != "0" || "$p_err" != "0" ]]; then echo "  ($name: errors: $s_err / $p_err)"; fi
done
ratio() { # a b -> "a/b" of the message rates, and of the rates per server CPU-second
  [[ -n "${result[$1 stream]:-}" && -n "${result[$2 stream]:-}" ]] || return 0
  read -r as _ _ _ asc _ <<<"${result[$1 stream]}"; read -r bs _ _ _ bsc _ <<<"${result[$2 stream]}"
  read -r ap _ _ _ apc _ <<<"${result[$1 pingpong]}"; read -r bp _ _ _ bpc _ <<<"${result[$2 pingpong]}"
  awk -v n="$1 / $2" -v a="$as" -v b="$bs" -v c="$ap" -v d="$bp" -v ac="$asc" -v bc="$bsc" -v cc="$apc" -v dc="$bpc" \
    'BEGIN { printf "%-16s server stream %.2fx (per server CPU-second %.2fx), ping-pong %.2fx (per server CPU-second %.2fx)\n", n, a/b, (a/ac)/(b/bc), c/d, (c/cc)/(d/dc) }'
}
ratio conduit old
ratio conduit cpp
ratio conduit kestrel
