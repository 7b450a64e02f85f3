# Shell helpers shared by scripts/test.sh and the bench/ scripts (source it).

# ensure_packages PKG...: installs the Debian packages that are missing (as root, or via sudo).
ensure_packages() {
  local missing=() p sudo=""
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  [[ "$(id -u)" -ne 0 ]] && sudo="sudo"
  echo "installing: ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# ensure_npm_tool PACKAGE VERSION BIN: installs an npm package at exactly VERSION into
# <repo>/.cache/tools (not global, not in git), unless .cache/tools/node_modules/.bin/BIN already
# reports that version.
ensure_npm_tool() {
  local package="$1" version="$2" bin="$3"
  local tools
  tools="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.cache/tools"
  [[ -x "$tools/node_modules/.bin/$bin" ]] && "$tools/node_modules/.bin/$bin" --version 2>/dev/null | grep -qx "$version" && return 0
  echo "installing: $package@$version (npm, into .cache/tools)" >&2
  mkdir -p "$tools"
  npm install --prefix "$tools" --no-audit --no-fund --loglevel=error "$package@$version" >/dev/null
}

# wait_port PORT: until something accepts connections on 127.0.0.1:PORT (10 s at most). A
# server announces readiness by listening; there is nothing else to wait on.
wait_port() {
  local _
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  return 1
}

# h2load_sayhello PORT DIR H2LOAD-OPTION...: h2load on core 1 (where every bench load runs),
# posting HelloRequest{name="bench"} to helloworld.Greeter/SayHello on 127.0.0.1:PORT. The body
# is one gRPC frame, written to DIR/sayhello.bin: flag 0, length 7, field 1 (0x0a) length 5.
h2load_sayhello() {
  local port="$1" dir="$2"; shift 2
  printf '\x00\x00\x00\x00\x07\x0a\x05bench' > "$dir/sayhello.bin"
  taskset -c 1 h2load "$@" -H 'content-type: application/grpc' -H 'te: trailers' -d "$dir/sayhello.bin" \
    "http://127.0.0.1:$port/helloworld.Greeter/SayHello"
}

# conduit_stale ROOT: succeeds when ROOT's Release build of src/Conduit is missing or older than
# any source it is built from (*.cs, *.csproj, *.props, *.targets, *.proto, *.json under src/ and
# protos/, ROOT's Directory.*.props, and the console's sources under console/). The build stamp is
# written by conduit_build only.
conduit_stale() {
  local root="$1" out="$1/src/Conduit/bin/Release/net10.0"
  [[ -f "$out/conduit.dll" && -f "$out/.conduit-build-stamp" ]] || return 0
  [[ -n "$(find "$root/src" "$root/protos" "$root/console" "$root"/Directory.*.props -newer "$out/.conduit-build-stamp" \
    \( -name '*.cs' -o -name '*.csproj' -o -name '*.props' -o -name '*.targets' -o -name '*.proto' -o -name '*.json' \
    -o -name '*.ts' -o -name '*.html' -o -name '*.css' -o -name '*.yaml' \) \
    -not -path '*/bin/*' -not -path '*/obj/*' -not -path '*/node_modules/*' -not -path '*/dist/*' -not -path '*/src/gen/*' -print -quit 2>/dev/null)" ]]
}

# conduit_build ROOT: builds src/Conduit (Release) when conduit_stale says so; a no-op otherwise,
# so a start costs no build when nothing changed and never runs a stale build. The stamp is taken
# before the build starts: a source saved during the build makes the next call build again.
conduit_build() {
  local root="$1" out="$1/src/Conduit/bin/Release/net10.0"
  conduit_stale "$root" || return 0
  mkdir -p "$out"
  touch "$out/.conduit-build-stamp.next"
  dotnet build "$root/src/Conduit/Conduit.csproj" -c Release -nologo -v quiet >&2
  mv "$out/.conduit-build-stamp.next" "$out/.conduit-build-stamp"
}
