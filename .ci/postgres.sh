# Start a throwaway PostgreSQL cluster for the tests and export FLYWHEEL_TEST_POSTGRES_URL.
start_postgres() {
  local bindir initdb pg_ctl
  initdb=$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n1 || true)
  [ -n "$initdb" ] || initdb=$(command -v initdb || true)
  if [ -z "$initdb" ]; then
    echo "PostgreSQL not installed: PostgreSQL tests will be skipped"
    [ "${CI:-}" = true ] && return 1
    return 0
  fi
  bindir=$(dirname "$initdb"); pg_ctl="$bindir/pg_ctl"
  local dir=/tmp/flywheel-ci-pg port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  rm -rf "$dir"; mkdir -p "$dir"
  local runas=()
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd -r -m postgres
    chown postgres "$dir"; runas=(su postgres -s /bin/bash -c)
    "${runas[@]}" "$initdb -D $dir/data -U flywheel --auth=trust >/dev/null"
    "${runas[@]}" "$pg_ctl -D $dir/data -o '-p $port -k $dir -c listen_addresses=127.0.0.1' -l $dir/log -w start >/dev/null"
  else
    "$initdb" -D "$dir/data" -U flywheel --auth=trust >/dev/null
    "$pg_ctl" -D "$dir/data" -o "-p $port -k $dir -c listen_addresses=127.0.0.1" -l "$dir/log" -w start >/dev/null
  fi
  export FLYWHEEL_TEST_POSTGRES_URL="postgresql+psycopg://flywheel@127.0.0.1:${port}/postgres"
  echo "PostgreSQL for tests at 127.0.0.1:${port}"
}
