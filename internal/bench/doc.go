// Package bench holds labelsync's speed benchmarks. It has no non-test code:
// everything lives in _test.go files and runs only with -bench, so `go test
// ./...` compiles it and finishes at once.
//
//	make bench
//	go test ./internal/bench -run '^$' -bench . -benchtime 1x -timeout 60m -v
//
// Three benchmarks of the notification path, each run against pstest
// (in-process) and against Google's Pub/Sub emulator (skipped with a message
// when it is not installed, failed when LABELSYNC_REQUIRE_PUBSUB_EMULATOR=1):
//
//   - BenchmarkThroughput drains the same backlog of real-format
//     OBJECT_FINALIZE notifications (payloadFormat JSON_API_V1) three times,
//     one contender at a time, with identical receive settings: labelsync's
//     worker (decode, match, ledger-conditioned JetStream append, ack), a raw
//     pipeline (bare pubsub/v2 subscriber, synchronous JetStream publish,
//     ack) and a raw ack ceiling (a subscriber that only acks). It reports
//     each rate and labelsync's share of both baselines.
//   - BenchmarkLatency publishes at a steady rate and reports the p50/p99
//     time from the producer's Publish call to the task event's arrival on a
//     JetStream ordered consumer in the same process.
//   - BenchmarkWorkerRSS runs cmd/worker as its own process over a large run
//     and reports its resident set size at fixed points of progress.
//
// Every contender gets its own NATS server (natsembed, file storage in a
// fresh temporary directory), embedded in the benchmark process as a worker
// with LABELSYNC_NATS_URL empty embeds it. LABELSYNC_BENCH_NATS=process runs
// the throughput drains' servers in infra processes of their own (see
// below) instead, as a separate nats-server runs in production.
//
// Each throughput contender drains a fresh topic and subscription seeded
// just before its drain with the same notifications (a server holding other
// contenders' backlogs slows down), in LABELSYNC_BENCH_ROUNDS rounds (default
// 2) whose order alternates, after every contender drained a throwaway
// backlog once.
//
// Sizes come from the environment: LABELSYNC_BENCH_N (backlog, default
// 100000), LABELSYNC_BENCH_RSS_N (default 200000),
// LABELSYNC_BENCH_LATENCY_SECONDS (default 20, after
// LABELSYNC_BENCH_LATENCY_WARMUP_SECONDS, default 5) and
// LABELSYNC_BENCH_LATENCY_RATE (default 1000 per second). Receive settings:
// LABELSYNC_BENCH_PSTEST_STREAMS (default 128),
// LABELSYNC_BENCH_EMULATOR_STREAMS (default 32) and
// LABELSYNC_BENCH_MAX_OUTSTANDING (default 1000). LABELSYNC_BENCH_CONTENDERS
// (default "labelsync,raw_pipeline,raw_ack") chooses which contenders drain,
// in that order.
//
// BenchmarkNotificationPath measures the worker's handler path without
// Pub/Sub (handler and middleware against an embedded NATS server, 256
// notifications in flight) next to a raw JetStream publish of the same
// payloads: steadier than the emulator drains, for comparing changes.
//
// Two benchmarks of the bulk paths need no Pub/Sub server (Linux only: they
// seed fake-gcs-server's filesystem layout and read /proc):
//
//   - BenchmarkSync seeds a fake-gcs-server bucket with N Files-mode objects
//     and times syncer.RunNow over it (list, match, ledger-conditioned
//     append, checkpoints) against the raw ceiling of listing the same
//     prefix with the storage client (gcs.List, same page size) in the same
//     run. It checks that every object produced exactly one created event
//     and reports both rates, their ratio, CPU per object and this process's
//     peak RSS and Go heap during the sync, at each size in
//     LABELSYNC_BENCH_SYNC_SIZES (default "10000,100000").
//   - BenchmarkJSONLImport imports a LABELSYNC_BENCH_JSONL_LINES-line JSONL
//     task file (default 1,000,000) through ingest.Pipeline.Apply for a
//     Tasks-mode storage and reports tasks/s and peak RSS, next to two raw
//     baselines from the same run: taskfile.Read over the file, and as many
//     JetStream async publishes of row-event-sized messages.
//
// They measure memory, so NATS and fake-gcs-server run in separate "infra"
// processes (this test binary re-run as TestBenchInfra), whose RSS and CPU
// are reported apart. fake-gcs-server re-lists its whole bucket for every
// page, so the storage client's pages are cut from one whole listing of it
// (LABELSYNC_BENCH_SYNC_PAGING=fake lists page by page from
// fake-gcs-server instead); LABELSYNC_BENCH_SYNC_PAGE_DELAY (e.g. 100ms)
// holds each page as a remote server would, and
// LABELSYNC_BENCH_SYNC_CONCURRENCY overrides Syncer.Concurrency.
// LABELSYNC_BENCH_INFRA_CPUPROFILE=path writes each infra process's CPU
// profile to path.<pid>. docs/benchmarks.md records the figures and the
// method.
package bench
