#!/usr/bin/env bash
# A throwaway PostgreSQL server for the sweep tests (and for trying shared storage by hand).
#
#   .ci/postgres.sh start DIR [PORT]   install Debian's postgresql if missing (as root), create a cluster in DIR
#                                      (a new or empty folder), start it on localhost:PORT (default: a free port),
#                                      create database "reglab"; prints its URL, the only line on stdout:
#                                      postgresql://reglab:PASSWORD@localhost:PORT/reglab
#   .ci/postgres.sh stop DIR           stop that server and remove DIR
#   .ci/postgres.sh install            only install Debian's postgresql if missing (as root)
#
# Root cannot run a PostgreSQL server: as root the cluster belongs to the `postgres` user (created by the Debian
# package), otherwise to the calling user. The server listens on 127.0.0.1 only (and a Unix socket inside DIR),
# with password authentication over TCP. Exit codes: 0 done, 3 PostgreSQL is missing and cannot be installed
# here (not root), 1 anything else; messages go to stderr.
set -euo pipefail

say() { echo "postgres.sh: $*" >&2; }
die() { say "$*"; exit 1; }

pg_bin() {  # the newest installed server's bin folder
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && echo "$d"
}

install_postgres() {
  [ -n "$(pg_bin)" ] && return 0
  if [ "$(id -u)" != 0 ]; then
    say "PostgreSQL is not installed and this is not root: sudo apt-get install postgresql"
    exit 3
  fi
  command -v apt-get >/dev/null || { say "PostgreSQL is not installed and there is no apt-get here"; exit 3; }
  say "installing Debian's postgresql (apt-get) ..."
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  # policy-rc.d 101: the package must not start its own "main" cluster on port 5432; ours runs in DIR
  local policy=/usr/sbin/policy-rc.d made_policy=0
  if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; made_policy=1; fi
  apt-get install -y -qq postgresql >&2 || { [ "$made_policy" = 1 ] && rm -f "$policy"; die "apt-get install postgresql failed"; }
  [ "$made_policy" = 1 ] && rm -f "$policy"
  [ -n "$(pg_bin)" ] || die "postgresql installed but no /usr/lib/postgresql/*/bin/initdb found"
}

as_owner() {  # run a command as the cluster's owner
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
  local dir=${1:?usage: postgres.sh start DIR [PORT]} port=${2:-}
  install_postgres
  local bin; bin=$(pg_bin)
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [ -z "$(ls -A "$dir")" ] || die "$dir is not empty; give a new folder"
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || die "no 'postgres' user to run the server as (the postgresql package creates it)"
    chown postgres: "$dir"
    as_owner test -w "$dir" || die "user postgres cannot write to $dir (a parent folder is not open to it); use a folder under /tmp"
  fi
  [ -n "$port" ] || port=$(free_port)
  local password; password=$(python3 -c 'import secrets; print(secrets.token_hex(12))')
  printf '%s\n' "$password" | as_owner sh -c 'umask 077; cat > "$1"' sh "$dir/pwfile"
  as_owner "$bin/initdb" -D "$dir/data" -U reglab --pwfile="$dir/pwfile" --auth-local=trust \
    --auth-host=scram-sha-256 -E UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; die "initdb failed"; }
  as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=100" start >&2 \
    || { cat "$dir/server.log" >&2; die "the server did not start (port $port taken?)"; }
  as_owner "$bin/createdb" -h "$dir" -p "$port" -U reglab reglab || die "createdb failed"
  local url="postgresql://reglab:$password@localhost:$port/reglab"
  printf '%s\n' "$url" | as_owner sh -c 'umask 077; cat > "$1"' sh "$dir/url"
  say "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') running in $dir on localhost:$port"
  echo "$url"
}

stop() {
  local dir=${1:?usage: postgres.sh stop DIR}
  [ -d "$dir" ] || { say "$dir does not exist; nothing to stop"; return 0; }
  local bin; bin=$(pg_bin) || true
  if [ -n "$bin" ] && [ -f "$dir/data/postmaster.pid" ]; then
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >&2 || say "pg_ctl stop failed; removing $dir anyway"
  fi
  rm -rf "$dir"
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) shift; stop "$@" ;;
  install) install_postgres; say "PostgreSQL server programs in $(pg_bin)" ;;
  *) echo "usage: $0 start DIR [PORT] | stop DIR | install" >&2; exit 2 ;;
esac
