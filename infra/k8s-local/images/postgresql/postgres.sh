#!/bin/sh
# initdb on first start (POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB), then the server on 0.0.0.0:5432.
set -eu
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
USER_NAME="${POSTGRES_USER:-flywheel}"
DB="${POSTGRES_DB:-flywheel}"
PGDATA="${PGDATA:-/var/lib/postgresql/data/pgdata}"
BIN=/usr/lib/postgresql/15/bin
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  pw=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pw"
  # UTF-8: with the C locale initdb picks SQL_ASCII, and psycopg then returns text as bytes.
  "$BIN/initdb" -D "$PGDATA" -U "$USER_NAME" --pwfile="$pw" --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$pw"
  echo "host all all 0.0.0.0/0 scram-sha-256" >>"$PGDATA/pg_hba.conf"
  "$BIN/pg_ctl" -D "$PGDATA" -o "-c listen_addresses='' -k /tmp" -w start >/dev/null
  "$BIN/psql" -h /tmp -U "$USER_NAME" -d postgres -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$DB\"" >/dev/null
  "$BIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null
fi
exec "$BIN/postgres" -D "$PGDATA" -c listen_addresses='*' -k /tmp
