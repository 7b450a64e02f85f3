#!/usr/bin/env bash
# Times `conduit users create --from-csv` (10,000 users through one CreateUsers stream) and
# `conduit users list --all` (10 ListUsers pages of 1000) on SQLite and on a loopback
# PostgreSQL, each on a fresh database, three rounds in the same run. Wall clock of the client
# command, including its process start-up (~0.3 s). Needs root (PostgreSQL runs as the
# postgres user), the postgresql package and bc.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dotnet build "$repo/src/Conduit/Conduit.csproj" -c Release -nologo -v quiet >/dev/null
C="dotnet $repo/src/Conduit/bin/Release/net10.0/conduit.dll"
source "$repo/scripts/lib.sh"
PG=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
D=$(mktemp -d /tmp/users-bench-XXXX)
chown postgres "$D"
sp=""
cleanup() {
  [[ -n "$sp" ]] && kill -TERM "$sp" 2>/dev/null && wait "$sp" || true
  [[ -f "$D/data/postmaster.pid" ]] && runuser -u postgres -- "$PG/pg_ctl" -D "$D/data" -m fast -w stop >/dev/null || true
  rm -rf "$D"
}
trap cleanup EXIT
runuser -u postgres -- "$PG/initdb" -D "$D/data" -U postgres --auth=trust --no-locale -E UTF8 >/dev/null
runuser -u postgres -- "$PG/pg_ctl" -D "$D/data" -w -l "$D/log" -o "-p 54987 -c listen_addresses=127.0.0.1 -k $D" start >/dev/null
python3 -c "
print('name,email')
for i in range(10000): print(f'User {i},user{i}@example.com')" > "$D/10k.csv"
n=0
for round in 1 2 3; do
  for kind in sqlite postgres; do
    n=$((n+1))
    args=(--data "$D/d$n")
    if [[ $kind == postgres ]]; then
      runuser -u postgres -- "$PG/createdb" -h 127.0.0.1 -p 54987 -U postgres "b$n"
      args+=(--users-db "Host=127.0.0.1;Port=54987;Username=postgres;Database=b$n")
    fi
    $C serve --urls http://127.0.0.1:50979 "${args[@]}" > "$D/serve$n.log" 2>&1 &
    sp=$!
    wait_port 50979 || { cat "$D/serve$n.log"; exit 1; }
    s=$(date +%s.%N); $C users create --from-csv "$D/10k.csv" --server http://127.0.0.1:50979 >/dev/null 2>&1; e=$(date +%s.%N)
    l=$($C users list --all --server http://127.0.0.1:50979 | wc -l); f=$(date +%s.%N)
    printf "round %d %-8s create 10k: %.2f s   list --all (%d users): %.2f s\n" "$round" "$kind" "$(echo "$e - $s" | bc)" "$l" "$(echo "$f - $e" | bc)"
    kill -TERM "$sp"; wait "$sp" || true   # SIGTERM: a script's background jobs ignore SIGINT
    sp=""
  done
done
