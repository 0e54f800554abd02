#!/usr/bin/env bash
# Prepares a fresh machine for the test suite. Idempotent: a second run
# only checks. Everything the tests need and a new clone lacks belongs here.
set -euo pipefail
cd "$(dirname "$0")/.."

need_go="1.26"
have_go=$(go env GOVERSION 2>/dev/null | sed 's/^go//') || {
  echo "setup: the go command was not found; install Go $need_go or newer" >&2
  exit 1
}
case "$have_go" in
  1.2[6-9]*|1.[3-9]*) ;;
  *) echo "setup: Go $have_go is too old; Haven needs Go $need_go or newer" >&2; exit 1 ;;
esac

# Modules and the pinned tools (staticcheck, opa, protoc plugins).
go mod download
echo "setup: go $have_go, modules present"

# PostgreSQL server binaries for the tests that start a throwaway cluster
# (internal/pgtest); installs Debian's postgresql when missing.
./scripts/setup-postgres.sh

# Chromium for the tests that drive web pages in a real browser; installs
# Debian's chromium when missing. make test sets HAVEN_REQUIRE_BROWSER, so
# those tests fail rather than skip if it is absent.
./scripts/setup-chromium.sh
