#!/usr/bin/env bash
# The test command: installs what the tests need on Debian (the official gRPC peers and their
# protobuf runtime), builds everything with warnings as errors, checks formatting
# (dotnet format, .editorconfig), runs every test suite, and ends
# with one line "N passed, M failed" summed over all suites.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

# python3-grpcio: the C-core gRPC for Python, our interop peer (client and server).
# python3-protobuf + protobuf-compiler: generate and run its message classes from protos/.
# python3-grpc-tools: grpc_tools.protoc generates the seed tests' grpcio clients (stubs too) from protos/seeds.
# postgresql: the users and cache tests start their own server (initdb/pg_ctl on 127.0.0.1, a temp dir).
# redis-server: the cache tests start their own on 127.0.0.1 (the Redis backend).
# nginx: the proxy-balancing test starts its own (grpc_pass over three conduit serve, docs/client.md).
# chromium: the browser test loads the demo page in it, headless (driven by Microsoft.Playwright).
# libnss3-tools: certutil and pk12util put a client certificate into chromium's NSS database (ConsoleCertificateTests).
packages=(python3-grpcio python3-protobuf protobuf-compiler python3-grpc-tools redis-server postgresql nginx chromium libnss3-tools)
source "$root/scripts/lib.sh"
ensure_packages "${packages[@]}"
# node and npm: the build runs `npm ci` in console/ (the console's pinned toolchain, Conduit.csproj).
command -v npm >/dev/null || ensure_packages nodejs npm
# buf (npm @bufbuild/buf, pinned): the reflection tests call the server with `buf curl --reflect`.
ensure_npm_tool @bufbuild/buf 1.75.0 buf

dotnet build Conduit.slnx -c Release -nologo -v quiet

# Formatting and style as .editorconfig says; a difference counts as one failed test.
format_failed=0
if ! dotnet format Conduit.slnx --verify-no-changes --severity warn --no-restore; then
  echo "formatting: run 'dotnet format Conduit.slnx --severity warn' and commit the result" >&2
  format_failed=1
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
dotnet test Conduit.slnx -c Release --no-build -nologo 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

# Sum the per-suite summaries: "Passed!  - Failed:     0, Passed:    69, Skipped: ..."
passed=$(grep -Eo 'Passed: +[0-9]+' "$log" | awk '{s+=$2} END {print s+0}')
failed=$(grep -Eo 'Failed: +[0-9]+' "$log" | awk '{s+=$2} END {print s+0}')
failed=$((failed + format_failed))
[[ "$format_failed" -ne 0 ]] && status=1
suites=$(grep -Ec '(Passed|Failed)! +- ' "$log" || true)
expected=$(grep -Ec 'Path="tests/[^"]*\.Tests\.csproj"' Conduit.slnx)
if [[ "$suites" -lt "$expected" && "$status" -eq 0 ]]; then
  echo "expected $expected test suites, saw $suites" >&2
  status=1
fi
echo "$passed passed, $failed failed"
exit "$status"
