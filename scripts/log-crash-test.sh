#!/usr/bin/env bash
# The Log's crash test with many cycles: a real `conduit serve` producing through ProduceStream
# with durability `always` is killed with SIGKILL at random moments and restarted, N times; every
# acknowledged offset must read back identical. CI runs 3 cycles as part of scripts/test.sh.
#   bash scripts/log-crash-test.sh [CYCLES]   (default 50)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export CONDUIT_LOG_CRASH_CYCLES="${1:-50}"
dotnet build tests/Conduit.Log.Tests -c Release -nologo -v quiet
dotnet test tests/Conduit.Log.Tests -c Release --no-build -nologo --filter "FullyQualifiedName~CrashTests" \
  --logger "console;verbosity=detailed"
