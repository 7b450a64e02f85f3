#!/usr/bin/env bash
# Seeded faults against a 3-node cluster of real `conduit serve` processes (docs/cluster.md):
# kill -9 of the leader or a follower, SIGSTOP past the election timeout then SIGCONT, a follower
# restarted with a wiped data folder; a producer follows the leader throughout. Then: every
# acknowledged record at its acknowledged offset on every node, offsets dense, replicas identical.
# CI runs 2 cycles (seed 1) as part of scripts/test.sh.
#   bash scripts/cluster-faults.sh [CYCLES=20] [SEED=1]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CONDUIT_CLUSTER_FAULT_CYCLES="${1:-20}"
export CONDUIT_CLUSTER_FAULT_SEED="${2:-1}"
dotnet build tests/Conduit.Cluster.Tests -c Release -nologo -v quiet
dotnet test tests/Conduit.Cluster.Tests -c Release --no-build -nologo --filter "FullyQualifiedName~FaultTests" \
  --logger "console;verbosity=detailed"
