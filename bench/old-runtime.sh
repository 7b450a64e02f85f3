#!/usr/bin/env bash
# Prints the path of the conduit.dll of Conduit's OWN gRPC runtime as it was before the switch to
# grpc-dotnet (commit d0e41d9, the last one before it), building it once if it is not built yet.
# The source is taken with `git archive` (no worktree is registered in this repository, nothing is
# left behind if the build is interrupted) into a cache folder outside the repository, and built
# Release there with that commit's own build files; later runs reuse the build.
#   bash bench/old-runtime.sh          # -> .../conduit.dll (progress on stderr)
#   OLD_COMMIT=<sha> OLD_CACHE=<dir> bash bench/old-runtime.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
commit="${OLD_COMMIT:-d0e41d9}"
cache="${OLD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/conduit-bench/old-runtime-$commit}"
dll="$cache/src/Conduit/bin/Release/net10.0/conduit.dll"
if [[ ! -f "$cache/.built" ]]; then
  echo "building the old runtime ($commit) in $cache ..." >&2
  rm -rf "$cache"; mkdir -p "$cache"
  git -C "$root" cat-file -e "$commit^{commit}" 2>/dev/null \
    || { echo "commit $commit is not in this repository (a shallow clone? git fetch --unshallow)" >&2; exit 1; }
  git -C "$root" archive "$commit" | tar -x -C "$cache"
  dotnet build "$cache/src/Conduit/Conduit.csproj" -c Release -nologo -v quiet >&2
  touch "$cache/.built"
fi
echo "$dll"
