#!/usr/bin/env bash
# The log on a 3-node Raft cluster against one `conduit serve`, in the same run, same machine
# (127.0.0.1), same load (docs/performance.md):
#  1. Produce throughput and latency (`conduit bench log.v1.Log/Produce`, closed loop) for 100-byte
#     and 4 KiB values: one node; the cluster's leader (followers fsync before they acknowledge,
#     the default); a second cluster whose followers acknowledge from memory
#     (Conduit:Cluster:FsyncBeforeAck=false, DotNext's own behaviour) — the cost of that fsync.
#  2. Consume, from one node, from the cluster's leader and from one of its followers, over topics
#     filled with ProduceBatch: unary Consume of one record (`conduit bench log.v1.Log/Consume`),
#     and ConsumeStream (`conduit log consume --count N`): records/s = N over the time of that
#     call minus the time of the same call with --count 1 (process start, connection).
# Usage: bash bench/cluster-vs-single.sh [DURATION=8s] [CONCURRENCY=16]
source "$(dirname "$0")/cluster-common.sh"
duration=${1:-8s}; concurrency=${2:-16}

serve() { # NAME PORT [cluster args...]
  local name=$1 port=$2; shift 2
  # dotnet itself in the background (not the conduit function: $! would be a subshell, and kill would leave the server)
  CONDUIT__CLUSTER__FSYNCBEFOREACK=${FSYNC:-true} dotnet "$dll" serve --urls "http://127.0.0.1:$port" --web-urls none --data "$work/$name" --log-level Warning "$@" >"$work/$name.out" 2>&1 &
  pids+=($!)
}
serve single 47300
# Cluster A (n1-n3, the default: fsync before ack) and cluster B (m1-m3, ack from memory).
peers_a="n1=127.0.0.1:47311,n2=127.0.0.1:47312,n3=127.0.0.1:47313"
peers_b="m1=127.0.0.1:47314,m2=127.0.0.1:47315,m3=127.0.0.1:47316"
for i in 1 2 3; do
  serve "n$i" "4730$i" --cluster-node-id "n$i" --cluster-address "127.0.0.1:4731$i" --cluster-peers "$peers_a"
  FSYNC=false serve "m$i" "4730$((i + 3))" --cluster-node-id "m$i" --cluster-address "127.0.0.1:4731$((i + 3))" --cluster-peers "$peers_b"
done
leader_of() { conduit cluster members --server "$1" 2>/dev/null | awk '$3=="leader"{print $2}'; }
follower_of() { conduit cluster members --server "$1" 2>/dev/null | awk '$3=="follower"{print $2; exit}'; }
for _ in $(seq 1 120); do
  leader_a=$(leader_of http://127.0.0.1:47301) || true
  leader_b=$(leader_of http://127.0.0.1:47304) || true
  [ -n "${leader_a:-}" ] && [ -n "${leader_b:-}" ] && grep -q "listening" "$work/single.out" && break
  sleep 0.5
done
[ -n "${leader_a:-}" ] && [ -n "${leader_b:-}" ] || { echo "no leader"; cat "$work"/n1.out "$work"/m1.out; exit 1; }
follower_a=$(follower_of http://127.0.0.1:47301)
# A leader is listed before it can write (its first entry of the term must commit): wait for a write on each.
for server in http://127.0.0.1:47300 "http://$leader_a" "http://$leader_b"; do
  for _ in $(seq 1 60); do echo ready | conduit log produce --server "$server" --topic ready >/dev/null 2>&1 && break; sleep 1; done
done
echo "$(date -u +%H:%M:%S) UTC, load: $(uptime | sed 's/.*load average/load average/')"
echo "cluster A leader $leader_a (follower $follower_a), cluster B leader $leader_b; $duration per row, concurrency $concurrency, durability always"

produce() { # LABEL SERVER DATA
  echo "== $1"
  conduit bench log.v1.Log/Produce --server "$2" --concurrency "$concurrency" -d "$duration" --data "$3" | grep -E "calls |latency |errors " || true # bench exits non-zero when a call failed
}
for bytes in 100 4096; do
  value=$(head -c "$bytes" /dev/zero | tr '\0' 'x' | base64 -w0)
  data="{\"topic\":\"v$bytes\",\"record\":{\"value\":\"$value\"}}"
  # Alternate, twice each: on a shared machine the load of other processes varies over a run.
  for round in 1 2; do
    produce "$bytes B, round $round: one node" http://127.0.0.1:47300 "$data"
    produce "$bytes B, round $round: 3 nodes, followers fsync before ack" "http://$leader_a" "$data"
    produce "$bytes B, round $round: 3 nodes, followers ack from memory" "http://$leader_b" "$data"
  done
done
echo "$(date -u +%H:%M:%S) UTC, load: $(uptime | sed 's/.*load average/load average/')"

next_offset() { # SERVER TOPIC
  conduit log topics --server "$1" --json | python3 -c "import json,sys; print(next((int(t.get('nextOffset', 0)) for t in map(json.loads, sys.stdin) if t.get('name') == '$2'), 0))"
}
seconds() { local start; start=$(date +%s.%N); "$@" >/dev/null; echo "$(date +%s.%N) - $start" | bc; }
# Consume: topics filled with ProduceBatch (one Raft entry per batch) on one node and cluster A.
for bytes in 100 4096; do
  per=$((bytes == 100 ? 100 : 10)); calls=$((bytes == 100 ? 2000 : 4000))
  value=$(head -c "$bytes" /dev/zero | tr '\0' 'y' | base64 -w0)
  records=$(python3 -c "import sys; print(','.join(['{\"value\":\"$value\"}'] * $per))")
  for server in http://127.0.0.1:47300 "http://$leader_a"; do
    conduit bench log.v1.Log/ProduceBatch --server "$server" --concurrency 4 -n "$calls" --warmup 0s \
      --data "{\"topic\":\"c$bytes\",\"records\":[$records]}" | grep -E "calls |errors " | sed "s|^|fill c$bytes on $server: |" || true
  done
done
targets=("one node=http://127.0.0.1:47300" "3 nodes, leader=http://$leader_a" "3 nodes, follower=http://$follower_a")
for bytes in 100 4096; do
  n=$(next_offset http://127.0.0.1:47300 "c$bytes"); c=$(next_offset "http://$leader_a" "c$bytes")
  [ "$c" -lt "$n" ] && n=$c
  [ "$n" -gt 1 ] || { echo "consume $bytes B: the topic is not filled on both (see the fill lines)"; continue; }
  for round in 1 2; do
    for target in "${targets[@]}"; do
      server=${target#*=}
      echo "== consume $bytes B, round $round, ${target%%=*}: unary Consume of one record (offset 1000), $duration"
      conduit bench log.v1.Log/Consume --server "$server" --concurrency "$concurrency" -d "$duration" --data "{\"topic\":\"c$bytes\",\"offset\":\"1000\"}" | grep -E "calls |latency |errors " || true
      one=$(seconds conduit log consume --server "$server" --topic "c$bytes" --from 0 --count 1)
      all=$(seconds conduit log consume --server "$server" --topic "c$bytes" --from 0 --count "$n")
      echo "  stream     $n records in $all s, 1 record in $one s: $(echo "$n / ($all - $one)" | bc) records/s"
    done
  done
done
echo "$(date -u +%H:%M:%S) UTC, load: $(uptime | sed 's/.*load average/load average/')"
