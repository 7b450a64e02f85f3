#!/usr/bin/env bash
# Streaming side by side, same load generator (conduit bench), same pinning (server on core 0,
# load on core 1), in one run: grpc.testing.TestService on Conduit (`conduit interop server`) and
# on the C++ gRPC library (bench/reference/cpp/test_server.cc, callback API).
#   - server stream: StreamingOutputCall, 100 messages of 10 bytes per call
#   - bidi ping-pong: FullDuplexCall, one 10-byte message each way per round trip
#   bash bench/compare-streaming.sh                     # 10 s warm-up + 20 s per row
#   WARMUP=2 DURATION=5 CONCURRENCY=4 bash bench/compare-streaming.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
warmup="${WARMUP:-10}"
duration="${DURATION:-20}"
concurrency="${CONCURRENCY:-4}"
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]:-}"; do [[ -n "$p" ]] && kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

need=(libgrpc++-dev protobuf-compiler-grpc protobuf-compiler pkg-config g++)
source "$root/scripts/lib.sh"
ensure_packages "${need[@]}"

echo "building ..." >&2
dotnet build "$root/src/Conduit/Conduit.csproj" -c Release -nologo -v quiet >&2
protos=(grpc/testing/empty.proto grpc/testing/messages.proto grpc/testing/test.proto)
(cd "$root/protos" && protoc -I . --cpp_out="$work" --grpc_out="$work" --plugin=protoc-gen-grpc="$(command -v grpc_cpp_plugin)" "${protos[@]}")
g++ -O2 -std=c++17 -I"$work" "$root/bench/reference/cpp/test_server.cc" \
  "$work"/grpc/testing/*.pb.cc $(pkg-config --cflags --libs grpc++ protobuf) -o "$work/test_server"

conduit=(dotnet "$root/src/Conduit/bin/Release/net10.0/conduit.dll")
stream_data="$(python3 -c 'import json; print(json.dumps({"response_parameters": [{"size": 10}] * 100}))')"
pingpong_data='{"response_parameters":[{"size":10}],"payload":{"body":"AAAAAAAAAAAAAA=="}}'

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; } # user + system time of a process, in 1/100 s

# Rate and latency from conduit bench; the server's CPU use over the same run (warm-up included):
# when the server's core is not saturated, the load generator is the limit, not the server.
measure() { # port pid method data -> "messages/s p50 p99 errors server-cpu-%"
  local before after start end
  before="$(cpu_ticks "$2")"; start="$(date +%s.%N)"
  taskset -c 1 "${conduit[@]}" bench "grpc.testing.TestService/$3" --server "http://127.0.0.1:$1" -c 1 \
    --concurrency "$concurrency" -d "${duration}s" --warmup "${warmup}s" --data "$4" --json > "$work/bench.json"
  after="$(cpu_ticks "$2")"; end="$(date +%s.%N)"
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); l=r["latency_ms"]; cpu=(int(sys.argv[3])-int(sys.argv[2]))/100/(float(sys.argv[5])-float(sys.argv[4])); print("%.0f %.3f %.3f %d %.0f" % (r["messages_per_s"], l["p50"], l["p99"], sum(r["errors"].values()), 100*cpu))' \
    "$work/bench.json" "$before" "$after" "$start" "$end"
}

declare -A result
port=50190
for name in conduit cpp; do
  port=$((port + 1))
  case "$name" in
    conduit) (exec taskset -c 0 "${conduit[@]}" interop server --port "$port") > "$work/$name.log" 2>&1 & ;;
    cpp) (exec taskset -c 0 "$work/test_server" "$port") > "$work/$name.log" 2>&1 & ;;
  esac
  pids+=($!)
  wait_port "$port" || { echo "$name did not start" >&2; cat "$work/$name.log" >&2; exit 1; }
  echo "measuring $name ..." >&2
  result["$name stream"]="$(measure "$port" "${pids[-1]}" StreamingOutputCall "$stream_data")"
  result["$name pingpong"]="$(measure "$port" "${pids[-1]}" FullDuplexCall "$pingpong_data")"
  kill "${pids[-1]}" 2>/dev/null || true
  wait "${pids[-1]}" 2>/dev/null || true
done

echo
echo "streaming, conduit bench on core 1, server on core 0, 1 connection x $concurrency calls in flight, ${warmup}s warm-up + ${duration}s per row, $(date -u '+%Y-%m-%d %H:%M UTC')"
printf '%-8s %22s %10s %10s %11s %18s %10s %10s %11s\n' server "server-stream msgs/s" "call p50" "call p99" "server CPU" "ping-pong msgs/s" "rtt p50" "rtt p99" "server CPU"
for name in conduit cpp; do
  read -r s_rate s_p50 s_p99 s_err s_cpu <<<"${result[$name stream]}"
  read -r p_rate p_p50 p_p99 p_err p_cpu <<<"${result[$name pingpong]}"
  printf '%-8s %22s %9sms %9sms %10s%% %18s %9sms %9sms %10s%%\n' "$name" "$s_rate" "$s_p50" "$s_p99" "$s_cpu" "$p_rate" "$p_p50" "$p_p99" "$p_cpu"
  if [[ "$s_err" != "0" || "$p_err" != "0" ]]; then echo "  ($name: errors: $s_err / $p_err)"; fi
done
read -r cs _ _ _ csc <<<"${result[conduit stream]}"; read -r ps _ _ _ psc <<<"${result[cpp stream]}"
read -r cp _ _ _ cpc <<<"${result[conduit pingpong]}"; read -r pp _ _ _ ppc <<<"${result[cpp pingpong]}"
awk -v a="$cs" -v b="$ps" -v c="$cp" -v d="$pp" 'BEGIN { printf "conduit / cpp: server stream %.2fx, ping-pong %.2fx\n", a / b, c / d }'
# Messages per second of server CPU: what each server would do with its core to itself.
awk -v a="$cs" -v b="$ps" -v c="$cp" -v d="$pp" -v ac="$csc" -v bc="$psc" -v cc="$cpc" -v dc="$ppc" \
  'BEGIN { printf "per server CPU-second: server stream conduit %.0f, cpp %.0f (%.2fx); ping-pong conduit %.0f, cpp %.0f (%.2fx)\n", 100*a/ac, 100*b/bc, (a/ac)/(b/bc), 100*c/cc, 100*d/dc, (c/cc)/(d/dc) }'
