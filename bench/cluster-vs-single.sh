#!/usr/bin/env bash
# Produce throughput and latency: one `conduit serve` against a 3-node cluster's leader, in the
# same run, same machine (127.0.0.1), same load: `conduit bench log.v1.Log/Produce`, closed loop.
# Usage: bash bench/cluster-vs-single.sh [DURATION=10s] [CONCURRENCY=16] [VALUE_BYTES=100]
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10s}; concurrency=${2:-16}; bytes=${3:-100}
dll=src/Conduit/bin/Release/net10.0/conduit.dll
[ -f "$dll" ] || dotnet build src/Conduit -c Release -v quiet
work=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
value=$(head -c "$bytes" /dev/zero | tr '\0' 'x' | base64 -w0)
data="{\"record\":{\"value\":\"$value\"}}"

dotnet "$dll" serve --urls http://127.0.0.1:47300 --web-urls none --data "$work/single" --log-level Warning >"$work/single.out" 2>&1 & pids+=($!)
peers="n1=127.0.0.1:47311,n2=127.0.0.1:47312,n3=127.0.0.1:47313"
for i in 1 2 3; do
  dotnet "$dll" serve --urls http://127.0.0.1:4730$i --web-urls none --data "$work/n$i" --log-level Warning \
    --cluster-node-id n$i --cluster-address 127.0.0.1:4731$i --cluster-peers "$peers" >"$work/n$i.out" 2>&1 & pids+=($!)
done
for i in $(seq 1 120); do
  leader=$(dotnet "$dll" cluster members --server http://127.0.0.1:47301 2>/dev/null | awk '$3=="leader"{print $2}') || true
  [ -n "${leader:-}" ] && grep -q "listening" "$work/single.out" && break
  sleep 0.5
done
[ -n "${leader:-}" ] || { echo "no leader"; cat "$work"/n1.out; exit 1; }
echo "leader: $leader; duration $duration, concurrency $concurrency, $bytes-byte values, durability always"
# Alternate, twice each: on a shared machine the load of other processes varies over a run.
for round in 1 2; do
  echo "== round $round: one node"
  dotnet "$dll" bench log.v1.Log/Produce --server http://127.0.0.1:47300 --concurrency "$concurrency" -d "$duration" --data "$data" | grep -E "calls |latency "
  echo "== round $round: 3-node cluster, through the leader"
  dotnet "$dll" bench log.v1.Log/Produce --server "http://$leader" --concurrency "$concurrency" -d "$duration" --data "$data" | grep -E "calls |latency "
done
