#!/usr/bin/env bash
# Seeded faults against a cluster of real `conduit serve` processes (docs/cluster.md): kill -9 of
# the leader or a follower, SIGSTOP past the election timeout then SIGCONT, a follower restarted
# with a wiped data folder, and (as root, each node in a network namespace of its own on a private
# bridge) the leader isolated and a majority/minority split, then healed; two producers follow the
# leader and a consumer reads every node throughout. Then: every acknowledged record at its
# acknowledged offset on every node, offsets dense, replicas identical, nothing a consumer read
# ever changed. CI runs 3 cycles (seed 1, 3 nodes) as part of the Conduit.Cluster.Tests suite.
#   bash scripts/cluster-faults.sh [CYCLES=20] [SEED=1] [NODES=3]   (NODES: 3 or 5)
# CONDUIT_CLUSTER_FAULT_NETNS=0 runs on 127.0.0.1 without partitions.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CONDUIT_CLUSTER_FAULT_CYCLES="${1:-20}"
export CONDUIT_CLUSTER_FAULT_SEED="${2:-1}"
export CONDUIT_CLUSTER_FAULT_NODES="${3:-${NODES:-3}}"
dotnet build tests/Conduit.Cluster.Tests -c Release -nologo -v quiet
dotnet test tests/Conduit.Cluster.Tests -c Release --no-build -nologo --filter "FullyQualifiedName~FaultTests" \
  --logger "console;verbosity=detailed"
