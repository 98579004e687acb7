# labelsync — see README.md. Every target installs or builds what it needs.
SHELL := /usr/bin/env bash
GO ?= go

.PHONY: help test test-short vet fmt-check run build bench fuzz deploy-check install-prometheus

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

deploy-check: install-prometheus ## Dockerfile, docker-compose.yml, deploy/terraform, the dashboard and the alert rules against the code: compose-go, HCL, promtool, and a real Prometheus scraping a worker and an exporter (docs/operations.md)
	LABELSYNC_REQUIRE_PROMETHEUS=1 $(GO) test -count=1 ./internal/deploytest ./deploy/...

install-prometheus: ## install Prometheus and promtool (Debian's package) when missing; internal/deploytest skips without them
	@if command -v prometheus >/dev/null && command -v promtool >/dev/null; then \
	  echo "prometheus: $$(command -v prometheus), promtool: $$(command -v promtool)"; \
	else \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null && \
	  echo "installed $$(prometheus --version 2>&1 | head -1)"; \
	fi

run: build ## local stack: emulators, worker with embedded NATS, exporter; shows an upload become a task and an annotation land in the target bucket
	@scripts/run.sh

bench: ## throughput, latency and memory benchmarks on pstest and Google's Pub/Sub emulator (LABELSYNC_BENCH_N, LABELSYNC_BENCH_RSS_N, LABELSYNC_BENCH_LATENCY_SECONDS, LABELSYNC_BENCH_LS_N, LABELSYNC_BENCH_LS_LAG_SECONDS; docs/benchmarks.md)
	@echo "machine: $$(nproc) CPUs, $$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | xargs), $$(awk '/MemTotal/ {printf "%.1f GiB", $$2/1048576}' /proc/meminfo 2>/dev/null), $$($(GO) env GOVERSION), $$(date -u +%FT%TZ)"
	$(GO) test ./internal/bench -run '^$$' -bench . -benchtime 1x -timeout 60m -v
	$(GO) test ./internal/catalog -run '^$$' -bench CreateLive -benchtime 1x
	$(GO) test ./internal/connector -run '^$$' -bench . -benchtime 1x -timeout 20m -v
	$(GO) test ./internal/resolve -run '^$$' -bench . -benchtime 1x -timeout 20m -v

fuzz: ## run each fuzzer for FUZZTIME (default 30s)
	$(GO) test ./internal/events -run '^$$' -fuzz FuzzDecode -fuzztime $${FUZZTIME:-30s}
	$(GO) test ./internal/events -run '^$$' -fuzz FuzzValidObject -fuzztime $${FUZZTIME:-30s}
	$(GO) test ./internal/storages -run '^$$' -fuzz FuzzParse -fuzztime $${FUZZTIME:-30s}
	$(GO) test ./internal/taskbus -run '^$$' -fuzz FuzzParsePubAck -fuzztime $${FUZZTIME:-30s}
	$(GO) test ./internal/taskfile -run '^$$' -fuzz 'FuzzRead$$' -fuzztime $${FUZZTIME:-30s}
	$(GO) test ./internal/taskfile -run '^$$' -fuzz FuzzReadParquet -fuzztime $${FUZZTIME:-30s}
	$(GO) test ./internal/annotation -run '^$$' -fuzz FuzzDecode -fuzztime $${FUZZTIME:-30s}
	$(GO) test ./internal/annotation -run '^$$' -fuzz FuzzValid -fuzztime $${FUZZTIME:-30s}
	$(GO) test ./internal/storages -run '^$$' -fuzz FuzzDecodeBody -fuzztime $${FUZZTIME:-30s}
	$(GO) test ./internal/labelstudio -run '^$$' -fuzz FuzzDecoders -fuzztime $${FUZZTIME:-30s}
	$(GO) test ./internal/labelstudio -run '^$$' -fuzz FuzzImportTask -fuzztime $${FUZZTIME:-30s}
	$(GO) test ./internal/resolve -run '^$$' -fuzz FuzzParseFileURI -fuzztime $${FUZZTIME:-30s} -fuzzminimizetime 200x
	$(GO) test ./internal/resolve -run '^$$' -fuzz FuzzServeRange -fuzztime $${FUZZTIME:-30s}
