#!/usr/bin/env bash
# The cost of mutual TLS on the Raft port (docs/cluster.md, "Security"; docs/performance.md), in
# the same run, same machine (127.0.0.1): Produce throughput and latency (`conduit bench
# log.v1.Log/Produce`, closed loop) for 100-byte and 4 KiB values on one node, on the leader of a
# 3-node cluster with plain Raft, and on the leader of one whose Raft port speaks mutual TLS
# (--cluster-ca, certificates from `conduit certs dev`). The gRPC port is h2c on all of them, so
# the difference is the Raft port's TLS alone. Both clusters fsync before ack (the default).
# Usage: [ROUNDS="1 2"] bash bench/cluster-tls.sh [DURATION=5s] [CONCURRENCY=16]; CONDUIT__CLUSTER__*
# variables reach every node (e.g. longer election timeouts on a loaded machine). Ports 47400-47416.
source "$(dirname "$0")/cluster-common.sh"
duration=${1:-5s}; concurrency=${2:-16}
conduit certs dev --out "$work/certs" >/dev/null

serve() { # NAME PORT [args...]
  local name=$1 port=$2; shift 2
  dotnet "$dll" serve --urls "http://127.0.0.1:$port" --web-urls none --data "$work/$name" --log-level Warning "$@" >"$work/$name.out" 2>&1 &
  pids+=($!)
}
serve single 47400
peers_p="p1=127.0.0.1:47411,p2=127.0.0.1:47412,p3=127.0.0.1:47413"
peers_t="t1=127.0.0.1:47414,t2=127.0.0.1:47415,t3=127.0.0.1:47416"
tls=(--tls-cert "$work/certs/server.pem" --tls-key "$work/certs/server-key.pem" --cluster-ca "$work/certs/ca.pem")
for i in 1 2 3; do
  serve "p$i" "4740$i" --cluster-node-id "p$i" --cluster-address "127.0.0.1:4741$i" --cluster-peers "$peers_p"
  serve "t$i" "4740$((i + 3))" --cluster-node-id "t$i" --cluster-address "127.0.0.1:4741$((i + 3))" --cluster-peers "$peers_t" "${tls[@]}"
done
leader_of() { conduit cluster members --server "$1" 2>/dev/null | awk '$3=="leader"{print $2}'; }
for _ in $(seq 1 120); do
  leader_p=$(leader_of http://127.0.0.1:47401) || true
  leader_t=$(leader_of http://127.0.0.1:47404) || true
  [ -n "${leader_p:-}" ] && [ -n "${leader_t:-}" ] && grep -q "listening" "$work/single.out" && break
  sleep 0.5
done
[ -n "${leader_p:-}" ] && [ -n "${leader_t:-}" ] || { echo "no leader"; cat "$work"/p1.out "$work"/t1.out; exit 1; }
grep -q "plain TCP" "$work/p1.out" && ! grep -q "plain TCP" "$work/t1.out" || { echo "expected plain Raft on p1 and TLS on t1"; exit 1; }
for server in http://127.0.0.1:47400 "http://$leader_p" "http://$leader_t"; do
  for _ in $(seq 1 60); do echo ready | conduit log produce --server "$server" --topic ready >/dev/null 2>&1 && break; sleep 1; done
done
echo "$(date -u +%H:%M:%S) UTC, load: $(uptime | sed 's/.*load average/load average/')"
echo "plain cluster leader $leader_p, TLS cluster leader $leader_t; $duration per row, concurrency $concurrency, durability always"
produce() { # LABEL SERVER DATA
  echo "== $1"
  conduit bench log.v1.Log/Produce --server "$2" --concurrency "$concurrency" -d "$duration" --data "$3" | grep -E "calls |latency |errors " || true
}
for bytes in 100 4096; do
  value=$(head -c "$bytes" /dev/zero | tr '\0' 'x' | base64 -w0)
  data="{\"topic\":\"v$bytes\",\"record\":{\"value\":\"$value\"}}"
  for round in ${ROUNDS:-1 2}; do # alternate: the load of other processes varies over a run
    produce "$bytes B, round $round: one node" http://127.0.0.1:47400 "$data"
    # The leader again before each row: at a high load an election may have moved it.
    leader_p=$(leader_of http://127.0.0.1:47401) || true; leader_t=$(leader_of http://127.0.0.1:47404) || true
    # Which cluster goes first changes every round (a row right after another may inherit its load).
    rows=("plain Raft (leader $leader_p)=http://$leader_p" "Raft over mutual TLS (leader $leader_t)=http://$leader_t")
    [ $((round % 2)) -eq 0 ] && rows=("${rows[1]}" "${rows[0]}")
    for row in "${rows[@]}"; do produce "$bytes B, round $round: 3 nodes, ${row%%=*}" "${row#*=}" "$data"; done
  done
done
echo "$(date -u +%H:%M:%S) UTC, load: $(uptime | sed 's/.*load average/load average/')"
