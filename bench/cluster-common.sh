# Sourced by the cluster benches (cluster-vs-single.sh, cluster-tls.sh): strict mode, the repository
# root, the built conduit.dll, a scratch folder removed at exit with every server started there
# (their pids in `pids`), and `conduit` to run the CLI.
set -euo pipefail
cd "$(dirname "$0")/.."
dll=src/Conduit/bin/Release/net10.0/conduit.dll
[ -f "$dll" ] || dotnet build src/Conduit -c Release -v quiet
work=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
conduit() { dotnet "$dll" "$@"; }
