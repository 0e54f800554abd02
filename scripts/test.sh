#!/usr/bin/env bash
# The whole of `make test`: setup a fresh machine needs, static checks, and
# every test. CI (.ci/run) calls `make test`, so this is also what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

lint_only=false
[[ "${1:-}" == "--lint-only" ]] && lint_only=true

step() { printf '\n== %s\n' "$*"; }

# duckdb-go exposes its Arrow API only under this build tag; without it the
# DuckDB connector is not built, so every check below uses it.
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-tags=duckdb_arrow"

step "setup"
./scripts/setup-test-env.sh

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.git/*'))
if [[ -n "$unformatted" ]]; then
  echo "gofmt would change these files (run gofmt -w):" >&2
  echo "$unformatted" >&2
  exit 1
fi

step "go vet"
go vet ./...

step "staticcheck"
go tool staticcheck ./...

$lint_only && exit 0

step "go test"
# The browser tests skip without Chromium when run alone; here setup has
# installed it, so its absence is a failure.
export HAVEN_REQUIRE_BROWSER=1
# -race everywhere: the suite stays well inside CI's limits on 2 cores.
go test -race -count=1 -timeout 20m ./...
