#!/usr/bin/env bash
# Builds Conduit and runs `conduit serve` on its embedded defaults: 127.0.0.1:50051 (h2c),
# data folder ./data. Extra arguments go to `conduit serve` (--urls, --tls-cert, --tls-key,
# --data, --log-level). Ctrl-C stops it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dotnet build "$root/src/Conduit/Conduit.csproj" -c Release -nologo -v quiet
exec dotnet "$root/src/Conduit/bin/Release/net10.0/conduit.dll" serve "$@"
