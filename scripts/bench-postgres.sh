#!/usr/bin/env bash
# The load benchmark with the PostgreSQL store beside the others, in one run:
# starts a throw-away PostgreSQL cluster (initdb into a temp dir, as `nobody`
# when run as root, on a free loopback port, fsync on as in production), runs
# `cargo bench --bench throughput` with `--store-url` on its database, and stops and deletes the cluster at the end, whatever happens.
#
#   scripts/bench-postgres.sh                 # baseline, ephemeral, durable, postgres
#   scripts/bench-postgres.sh --seconds 10    # any option of the benchmark
#
# Needs PostgreSQL's server programs (Debian: the postgresql package).
set -euo pipefail
cd "$(dirname "$0")/.."

bin=
if command -v initdb >/dev/null 2>&1; then
  bin=$(dirname "$(command -v initdb)")
else
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
fi
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  echo "PostgreSQL's programs (initdb, pg_ctl) are not installed" >&2
  exit 2
fi

work=$(mktemp -d /tmp/whereby-trigger-bench-pg.XXXXXX)
as_owner=()
if [ "$(id -u)" = 0 ]; then
  chown nobody "$work"
  as_owner=(setpriv --reuid=nobody --regid=nogroup --clear-groups --)
fi
stop() {
  "${as_owner[@]}" "$bin/pg_ctl" -D "$work/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap stop EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${as_owner[@]}" "$bin/initdb" -U postgres -A trust -E UTF8 --no-sync -D "$work/data" >/dev/null
"${as_owner[@]}" "$bin/pg_ctl" -D "$work/data" -l "$work/server.log" -w -t 30 \
  -o "-p $port -k $work -c listen_addresses=127.0.0.1" start >/dev/null

# The cluster is the benchmark's alone: its default database will do.
timeout 1800 cargo bench -p whereby-trigger --bench throughput -- \
  --store-url "postgres://postgres@127.0.0.1:$port/postgres" "$@"
