#!/usr/bin/env bash
# Runs every fuzz target for FUZZTIME each (default 10m), one after another,
# and prints one line per target: executions and whether it found a crash.
# A crash leaves its input under the package's testdata/fuzz/<Target>/, which
# then runs as a regression seed in every `go test`. FUZZFLAGS go to go test
# (e.g. -parallel=1 on a shared machine). Not part of `make test`:
# the seed corpora run there as ordinary tests.
set -uo pipefail
cd "$(dirname "$0")/.."
FUZZTIME="${FUZZTIME:-10m}"
export GOFLAGS="${GOFLAGS:-} -tags=duckdb_arrow"

# package target — the inputs an outsider controls.
targets=(
	"./coordinator/api FuzzSubmitRequest"          # the submit API's request
	"./policy/catalog FuzzParseDefinition"         # the definition parser
	"./policy/catalog FuzzParseCodelist"
	"./coordinator/flightsvc FuzzDoPut"            # Arrow ingest
	"./internal/arrowsafe FuzzVerifyMessage"
	"./coordinator/nodelink FuzzNodeMessages"      # NodeLink, coordinator side
	"./node/session FuzzCoordinatorMessages"       # NodeLink, node side
	"./coordinator/config FuzzParse"               # both config loaders
	"./node/config FuzzParse"
)
if [ $# -gt 0 ]; then # only targets whose name matches one of the arguments
	keep=()
	for t in "${targets[@]}"; do
		for a in "$@"; do [[ "$t" == *"$a"* ]] && keep+=("$t") && break; done
	done
	targets=("${keep[@]}")
fi

failed=0
summary=()
for t in "${targets[@]}"; do
	read -r pkg name <<<"$t"
	log="$(mktemp)"
	echo "== $pkg $name for $FUZZTIME"
	go test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" ${FUZZFLAGS:-} "$pkg" 2>&1 | tee "$log"
	rc=${PIPESTATUS[0]}
	execs="$(grep -o 'execs: [0-9]*' "$log" | tail -1 | cut -d' ' -f2)"
	if [ "$rc" -eq 0 ]; then
		summary+=("$pkg $name: ${execs:-?} executions, 0 crashes")
	else
		failed=1
		summary+=("$pkg $name: ${execs:-?} executions, FAILED (see testdata/fuzz/$name in the package)")
	fi
	rm -f "$log"
done
echo
printf '%s\n' "${summary[@]}"
exit $failed
