#!/usr/bin/env bash
# Builds Conduit when its sources changed since the last build (scripts/lib.sh conduit_build),
# then runs `conduit serve` on its embedded defaults: 127.0.0.1:50051 (h2c), data folder ./data.
# Extra arguments go to `conduit serve` (--urls, --tls-cert, --tls-key, --data, --log-level).
# Ctrl-C stops it.
set -euo pipefail
root="$(cd -P "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/lib.sh"
conduit_build "$root"
exec dotnet "$root/src/Conduit/bin/Release/net10.0/conduit.dll" serve "$@"
