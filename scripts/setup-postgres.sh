#!/usr/bin/env bash
# Makes sure PostgreSQL's server binaries (initdb, postgres, pg_ctl) are
# installed, for the tests that start a throwaway cluster of their own
# (internal/pgtest). Installs Debian's postgresql package with apt-get when
# they are missing. Idempotent: a second run only checks.
#
# No server is left running and no cluster is created: each test run makes
# its own in a temporary directory and removes it.
set -euo pipefail

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

find_initdb() {
  if command -v initdb >/dev/null; then
    command -v initdb
    return
  fi
  # Debian keeps the server binaries off PATH, one directory per release.
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin/initdb 2>/dev/null | sort -V | tail -n 1)
  [[ -n $found ]] && echo "$found"
}

if initdb=$(find_initdb); then
  echo "setup-postgres: PostgreSQL binaries present ($(dirname "$initdb"))"
  exit 0
fi

if ! command -v apt-get >/dev/null; then
  echo "setup-postgres: initdb not found and apt-get is unavailable;" \
    "install the PostgreSQL server binaries (initdb, pg_ctl, postgres) by hand" >&2
  exit 1
fi

echo "setup-postgres: installing PostgreSQL (Debian package postgresql) with apt-get" >&2
# Debian's package would create and start a cluster called main; the tests
# need none, so ask postgresql-common not to (only if nobody configured it).
if [[ ! -e /etc/postgresql-common/createcluster.conf ]]; then
  as_root mkdir -p /etc/postgresql-common
  echo "create_main_cluster = false" | as_root tee /etc/postgresql-common/createcluster.conf >/dev/null
fi
as_root apt-get update -qq
as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null

if ! initdb=$(find_initdb); then
  echo "setup-postgres: installed postgresql, but initdb is still not found" >&2
  exit 1
fi
echo "setup-postgres: PostgreSQL binaries present ($(dirname "$initdb"))"
