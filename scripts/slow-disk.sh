#!/usr/bin/env bash
# A slow disk under a 3-node cluster (docs/cluster.md, "A slow disk"): what the followers' fsync
# inside the AppendEntries answer (Conduit:Cluster:FsyncBeforeAck, the default) does when fsync
# takes 100 ms to 1 s, against FsyncBeforeAck=false, in the same run.
#
# Each node's data folder is on a FUSE file system of its own (scripts/slowfs.c: a passthrough
# whose fsync, which msync of the WAL's pages also reaches, sleeps for the milliseconds in a file;
# device-mapper's delay target is what one would use, but this machine's kernel has no
# device-mapper driver). Per row: three fresh `conduit serve` nodes (default timings: elections
# 300-600 ms, request timeout 300 ms, unless CONDUIT__CLUSTER__* says otherwise), a leader, then
# the delay is set on the chosen nodes' file systems (one follower, both followers, or the leader)
# and scripts/produce-load.py produces RPS records/s (open loop, 100 B, a 2 s deadline, following
# the leader) for SECONDS; then the delay is removed and the time until every node applied the
# leader's commit index is measured. Target `sigstop-leader`: no slow disk, the leader is SIGSTOPped
# 5 s into the load and the time to the first produce that succeeds after that is measured (what
# raised timeouts cost a failover).
#
# Needs root (FUSE mounts), gcc and libfuse3-dev (apt-get install libfuse3-dev fuse3).
# Usage: bash scripts/slow-disk.sh [DELAYS="0 100 500 1000"] [TARGETS="follower followers leader"] [SECONDS=20] [RPS=50]
# Environment: MODES (default "true false": FsyncBeforeAck per row), REPEAT (rows per cell, default 1),
# CONDUIT__CLUSTER__* (e.g. REQUESTTIMEOUTMS) for every node, KEEP=DIR to keep each row's logs.
set -euo pipefail
cd "$(dirname "$0")/.."
delays=${1:-0 100 500 1000}; targets=${2:-follower followers leader}; seconds=${3:-20}; rps=${4:-50}
modes=${MODES:-true false}
dll=src/Conduit/bin/Release/net10.0/conduit.dll
[ -f "$dll" ] || dotnet build src/Conduit -c Release -v quiet
[ "$(id -u)" = 0 ] || { echo "needs root (FUSE mounts)"; exit 2; }
work=$(mktemp -d /tmp/slow-disk.XXXXXX); pids=(); mounts=()
stop_nodes() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; kill -CONT "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
  for m in "${mounts[@]}"; do fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  mounts=()
}
cleanup() { stop_nodes; rm -rf "$work"; }
trap cleanup EXIT
gcc -O2 -Wall -o "$work/slowfs" scripts/slowfs.c $(pkg-config --cflags --libs fuse3)
conduit() { dotnet "$dll" "$@"; }
value=$(head -c 100 /dev/zero | tr '\0' 'x' | base64 -w0)
members() { conduit cluster members --json --timeout 2s --server "$1" 2>/dev/null || true; }
# From `cluster members --json` lines: "field" of the member whose "state" is leader.
leader_field() { python3 -c "
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get('state') == 'leader': print(m.get('$1', '')); break"; }

run=0
one_row() { # TARGET DELAY FSYNC
  local target=$1 delay=$2 fsync=$3 dir peers i
  run=$((run + 1)); dir="$work/r$run"
  # Six free ports (gRPC 1-3, Raft 4-6), as the kernel hands them out: other programs on this machine use fixed ones.
  local port=(0 $(python3 -c "
import socket
socks = [socket.socket() for _ in range(6)]
for s in socks: s.bind(('127.0.0.1', 0))
print(' '.join(str(s.getsockname()[1]) for s in socks))"))
  peers="n1=127.0.0.1:${port[4]},n2=127.0.0.1:${port[5]},n3=127.0.0.1:${port[6]}"
  for i in 1 2 3; do
    mkdir -p "$dir/back$i" "$dir/n$i"; echo 0 > "$dir/delay$i"
    "$work/slowfs" "$dir/delay$i" "$dir/back$i" "$dir/n$i" -f >"$dir/fs$i.log" 2>&1 &
    pids+=($!); mounts+=("$dir/n$i")
  done
  for i in 1 2 3; do for _ in $(seq 1 50); do mountpoint -q "$dir/n$i" && break; sleep 0.1; done; done
  for i in 1 2 3; do
    CONDUIT__CLUSTER__FSYNCBEFOREACK=$fsync dotnet "$dll" serve --urls "http://127.0.0.1:${port[i]}" --web-urls none \
      --data "$dir/n$i" --log-level "${LOG_LEVEL:-Warning}" --cluster-node-id "n$i" --cluster-address "127.0.0.1:${port[3 + i]}" \
      --cluster-peers "$peers" >"$dir/n$i.out" 2>&1 &
    pids+=($!)
  done
  local servers="127.0.0.1:${port[1]},127.0.0.1:${port[2]},127.0.0.1:${port[3]}" leader="" term0 term1 leader1
  for _ in $(seq 1 120); do
    leader=$(members "http://127.0.0.1:${port[1]}" | leader_field id)
    [ -n "$leader" ] && echo ready | conduit log produce --server "conduit:///$servers" --topic t >/dev/null 2>&1 && break
    sleep 0.5
  done
  [ -n "$leader" ] || { echo "row $target $delay $fsync: no leader"; tail -5 "$dir"/n*.out; stop_nodes; return; }
  term0=$(members "http://127.0.0.1:${port[1]}" | leader_field term)
  local slow=()
  for i in 1 2 3; do
    case $target in
      leader) [ "n$i" = "$leader" ] && slow+=("$i") ;;
      followers) [ "n$i" != "$leader" ] && slow+=("$i") ;;
      follower) [ "n$i" != "$leader" ] && [ ${#slow[@]} -eq 0 ] && slow+=("$i") ;;
      sigstop-leader) ;; # no slow disk: the failover time under these timeouts
    esac
  done
  for i in "${slow[@]}"; do echo "$delay" > "$dir/delay$i"; done
  local warned0; warned0=$(cat "$dir"/n*.out | grep -c "Conduit.Cluster.*: no leader" || true)
  local stopper="" stopper_pid=""
  if [ "$target" = sigstop-leader ]; then
    # Failover: SIGSTOP the leader 5 s into the load (held until the row ends).
    local lpid=${pids[$((3 + ${leader#n} - 1))]}
    stopper="$dir/stopped"
    ( sleep 5; kill -STOP "$lpid"; touch "$stopper" ) &
    stopper_pid=$!
  fi
  /usr/bin/python3 scripts/produce-load.py "$servers" "$seconds" "$rps" $stopper >"$dir/load.json" 2>"$dir/load.err" || true
  local snap; snap=$(members "http://127.0.0.1:${port[1]}")
  term1=$(echo "$snap" | leader_field term); leader1=$(echo "$snap" | leader_field id)
  local noleader; noleader=$(( $(cat "$dir"/n*.out | grep -c "Conduit.Cluster.*: no leader" || true) - warned0 ))
  # The nodes' own warnings (DiskWaits): how many, and the longest wait for the WAL's flush they name.
  local slowwarn; slowwarn=$( (cat "$dir"/n*.out | grep -o "waited [0-9]* ms for the disk (a [a-z']*" || true) | awk '{printf "%s%s ms (%s)", (n++ ? ", " : ""), $2, ($8 == "commit" ? "commit" : "append")} END {if (!n) printf "none"}')
  if [ -n "$stopper" ]; then wait "$stopper_pid"; for p in "${pids[@]}"; do kill -CONT "$p" 2>/dev/null || true; done; fi
  for i in "${slow[@]}"; do echo 0 > "$dir/delay$i"; done
  # Catch-up: until the three nodes are reachable with lag 0 (or 60 s).
  local start caught=""; start=$(date +%s.%N)
  for _ in $(seq 1 120); do
    if members "http://127.0.0.1:${port[1]}" | python3 -c "
import json, sys
ms = [json.loads(l) for l in sys.stdin]
sys.exit(0 if len(ms) == 3 and all(m.get('reachable') and int(m.get('lagEntries', 0) or 0) == 0 for m in ms) and any(m.get('state') == 'leader' for m in ms) else 1)"; then
      caught=$(echo "$(date +%s.%N) - $start" | bc); break
    fi
    sleep 0.5
  done
  python3 - "$dir/load.json" "$target" "$delay" "$fsync" "$leader" "${term0:-?}" "$leader1" "${term1:-?}" "$noleader" "${caught:-none in 60 s}" "${slow[*]}" "$slowwarn" <<'EOF'
import json, sys
path, target, delay, fsync, leader, term0, leader1, term1, noleader, caught, slow, slowwarn = sys.argv[1:]
try:
    b = json.load(open(path))
except Exception as e:
    b = {"error": str(e)}
print(f"{target:14} {delay:>5} ms  fsync-before-ack={fsync:5} slow n{slow.replace(' ', ',n') or '-'}: "
      f"leader {leader} term {term0} -> {leader1 or 'none'} term {term1} ({int(term1) - int(term0) if term0.isdigit() and term1.isdigit() else '?'} elections); "
      f"load {json.dumps(b, separators=(',', ':'))}; slow-disk warnings {slowwarn}; all caught up {caught} s after the delay was removed")
EOF
  stop_nodes
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP/r$run"; cp "$dir"/*.out "$dir"/load.* "$KEEP/r$run/"; fi
  return 0
}

echo "$(date -u +%H:%M:%S) UTC, load: $(uptime | sed 's/.*load average/load average/'); $seconds s of $rps Produce/s (100 B) per row"
for target in $targets; do
  for delay in $delays; do
    for _ in $(seq 1 "${REPEAT:-1}"); do
      for fsync in $modes; do one_row "$target" "$delay" "$fsync"; done
    done
  done
done
echo "$(date -u +%H:%M:%S) UTC, load: $(uptime | sed 's/.*load average/load average/')"
