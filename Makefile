# labelsync — see README.md. Every target installs or builds what it needs.
SHELL := /usr/bin/env bash
GO ?= go

.PHONY: help test test-short vet fmt-check run build bench fuzz

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

build: ## build every binary into ./bin
	$(GO) build -o bin/ ./cmd/...

vet: ## go vet and gofmt check
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "not gofmt-formatted:"; echo "$$out"; exit 1; fi

test: vet ## unit, fuzz-seed and end-to-end tests (pstest + fake-gcs-server + NATS, and Google's Pub/Sub emulator when installed)
	$(GO) test -count=1 -timeout 15m ./...
	@scripts/emulator-status.sh

test-short: ## unit tests only
	$(GO) test -count=1 -short ./...

run: build ## local stack: emulators, worker with embedded NATS, exporter; shows an upload become a task and an annotation land in the target bucket
	@scripts/run.sh

bench: ## throughput, latency and memory benchmarks on pstest and Google's Pub/Sub emulator (LABELSYNC_BENCH_N, LABELSYNC_BENCH_RSS_N, LABELSYNC_BENCH_LATENCY_SECONDS; docs/benchmarks.md)
	@echo "machine: $$(nproc) CPUs, $$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | xargs), $$(awk '/MemTotal/ {printf "%.1f GiB", $$2/1048576}' /proc/meminfo 2>/dev/null), $$($(GO) env GOVERSION), $$(date -u +%FT%TZ)"
	$(GO) test ./internal/bench -run '^$$' -bench . -benchtime 1x -timeout 60m -v
	$(GO) test ./internal/catalog -run '^$$' -bench CreateLive -benchtime 1x

fuzz: ## run each fuzzer for FUZZTIME (default 30s)
	$(GO) test ./internal/events -run '^$$' -fuzz FuzzDecode -fuzztime $${FUZZTIME:-30s}
	$(GO) test ./internal/events -run '^$$' -fuzz FuzzValidObject -fuzztime $${FUZZTIME:-30s}
	$(GO) test ./internal/storages -run '^$$' -fuzz FuzzParse -fuzztime $${FUZZTIME:-30s}
	$(GO) test ./internal/taskbus -run '^$$' -fuzz FuzzParsePubAck -fuzztime $${FUZZTIME:-30s}
	$(GO) test ./internal/taskfile -run '^$$' -fuzz 'FuzzRead$$' -fuzztime $${FUZZTIME:-30s}
	$(GO) test ./internal/taskfile -run '^$$' -fuzz FuzzReadParquet -fuzztime $${FUZZTIME:-30s}
	$(GO) test ./internal/annotation -run '^$$' -fuzz FuzzDecode -fuzztime $${FUZZTIME:-30s}
	$(GO) test ./internal/storages -run '^$$' -fuzz FuzzDecodeBody -fuzztime $${FUZZTIME:-30s}
