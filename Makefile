# Haven's entry points. Everything a fresh clone needs is done by the
# scripts these targets call; nothing is installed by hand.

GO ?= go
# duckdb-go exposes its Arrow API only under this tag (DuckDB connector).
export GOFLAGS := $(strip $(GOFLAGS) -tags=duckdb_arrow)

.PHONY: test demo proto build lint bench bench-protection bench-national bench-synth fuzz attack soak-links clean

## test: vet, staticcheck, gofmt and every test (with the race detector)
test:
	./scripts/test.sh

## demo: the whole network on this machine (coordinator, one node per site, two runs)
# Flags go through DEMO_FLAGS: make demo DEMO_FLAGS="--keep --postgres"
demo:
	$(GO) run ./cmd/haven demo $(DEMO_FLAGS)

## proto: regenerate the Go code of proto/haven/... from the .proto sources
proto:
	./scripts/gen-proto.sh

## build: the haven binary and the connector plugins into bin/
build:
	$(GO) build -o bin/haven ./cmd/haven
	$(GO) build -o bin/haven-connector-duckdb ./cmd/haven-connector-duckdb
	$(GO) build -o bin/haven-connector-postgres ./cmd/haven-connector-postgres

## lint: the static checks of `make test` without the tests
lint:
	./scripts/test.sh --lint-only

## bench: the linkage reference query end to end at ICB scale vs one DuckDB query
# over the pooled data; prints a table of both times, the ratio and the
# coordinator's peak RSS. BENCH_FLAGS go to go test (e.g. -v).
# HAVEN_BENCH_ROUNDS, HAVEN_BENCH_SCALE and HAVEN_BENCH_SITES_PER_NODE tune it.
bench:
	$(GO) test -run '^$$' -bench BenchmarkICBLinkage -benchtime 1x -timeout 60m $(BENCH_FLAGS) ./integration/correctness/

## fuzz: every fuzz target for FUZZTIME each (default 10m), one after another;
# FUZZ_TARGETS="Submit NodeMessages" picks some. Not part of make test (the
# committed seed corpora run there as ordinary tests).
FUZZTIME ?= 10m
fuzz:
	FUZZTIME=$(FUZZTIME) ./scripts/fuzz.sh $(FUZZ_TARGETS)

## attack: the attacker of integration/attack with its larger sweeps (without
# protection: two months of daily index dates, every min_age at one date; on
# the reference bundle: 36 month starts, every allowed min_age at each month
# start of 2025), the 24-hour rate limits and the ledger's budget lifted;
# prints what it infers and its summary tables. ATTACK_FLAGS go to go test.
attack:
	HAVEN_ATTACK_SWEEP=full $(GO) test -count=1 -v -run 'TestAttack' -timeout 60m $(ATTACK_FLAGS) ./integration/attack/

## bench-protection: make bench's query with and without cell-key perturbation
## and the ledger's rules, in turns on one network (issue 11's budget)
bench-protection:
	HAVEN_BENCH_PROTECTION=alternate $(GO) test -run '^$$' -bench BenchmarkICBLinkage -benchtime 1x -timeout 90m $(BENCH_FLAGS) ./integration/correctness/

## bench-national: one coordinator process with 6,500 simulated practices and
# 230 trusts linked (real mTLS NodeLink streams and Flight uploads from one
# simulator process), at each scale of HAVEN_NATIONAL_SCALES (patients):
# registration, an aggregate run and a linkage run, each table checked
# against the central answer, rows linked, peak RSS, spill; idle links and a
# restart at the first scale; CPU and heap profiles of the coordinator at the
# last, in HAVEN_NATIONAL_PROFILES; then a run with faults (silent sites,
# malformed, dropped and oversized uploads). About 12 minutes on 2 cores.
# HAVEN_NATIONAL_GPS, _TRUSTS, _BUDGET, _MEMORY_LIMIT (the coordinator's
# memory_limit; default 6GiB), _DIALS, _JITTER, _FAULTS=0 change it.
HAVEN_NATIONAL_SCALES ?= 1.5M,6M,15M,60M
HAVEN_NATIONAL_PROFILES ?= $(CURDIR)/bench-out/national
HAVEN_NATIONAL_MEMORY_LIMIT ?= 6GiB
bench-national:
	HAVEN_NATIONAL_SCALES=$(HAVEN_NATIONAL_SCALES) HAVEN_NATIONAL_PROFILES=$(HAVEN_NATIONAL_PROFILES) \
		HAVEN_NATIONAL_MEMORY_LIMIT=$(HAVEN_NATIONAL_MEMORY_LIMIT) \
		$(GO) test -run '^$$' -bench BenchmarkNationalLinks -benchtime 1x -timeout 120m $(BENCH_FLAGS) ./integration/national/

## soak-links: the faults network's "links cut" step for 300 runs: every
# node's connections to the coordinator cut twice in each run's first two
# seconds; every outcome must arrive, once. LINKCUT_ROUNDS changes the count.
LINKCUT_ROUNDS ?= 300
soak-links:
	HAVEN_LINKCUT_ROUNDS=$(LINKCUT_ROUNDS) $(GO) test -count=1 -v -run 'TestFaults/^(baseline|links_cut)$$' -timeout 90m ./integration/faults/

## bench-synth: time and peak memory of generating the ICB-scale network
bench-synth:
	$(GO) test -run '^$$' -bench BenchmarkGenerateICB -benchtime 1x -timeout 30m ./synth/

clean:
	rm -rf bin .demo
