#!/usr/bin/env bash
# make run: the local stack on fixed loopback ports (SPEC §7).
#   devstack: Pub/Sub emulator (pstest) 127.0.0.1:8085, fake GCS http://127.0.0.1:4443,
#             notifications for every bucket on topic labelsync-uploads
#   worker:   embedded NATS with JetStream on 127.0.0.1:4222, HTTP on :8080
#   exporter: Label Studio's webhook on :8081, annotations into target storages
# It seeds demo buckets and storages, uploads one file and prints the task it
# becomes, posts an annotation webhook and prints the object it becomes, then
# keeps running until Ctrl-C. LABELSYNC_DEMO_ONESHOT=1 exits after the demo
# (CI uses it).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=./bin
work=$(mktemp -d "${TMPDIR:-/tmp}/labelsync-run.XXXXXX")
pids=()
# Stop in reverse order, each before the next: the exporter drains while the
# worker's NATS still runs, the worker drains and acks its in-flight messages
# while the Pub/Sub emulator still runs.
cleanup() {
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

for port in 8085 4443 4222 8080 8081; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is in use: stop what runs there (an earlier make run?) and try again" >&2
    exit 1
  fi
done

cat >"$work/storages.json" <<'JSON'
{"import": [{"id": 1, "project": 7, "title": "raw images", "bucket": "acme-raw",
             "prefix": "incoming", "regex_filter": ".*\\.(jpe?g|png)$",
             "use_blob_urls": true, "recursive_scan": true}],
 "export": [{"id": 2, "project": 7, "title": "labels", "bucket": "acme-labels",
             "prefix": "annotations", "can_delete_objects": true}]}
JSON

echo "==> starting devstack (Pub/Sub emulator 127.0.0.1:8085, fake GCS http://127.0.0.1:4443)"
"$bin/devstack" -bucket acme-raw -bucket acme-labels >"$work/devstack.out" 2>"$work/devstack.log" &
pids+=($!)
for _ in $(seq 1 100); do [ -s "$work/devstack.out" ] && break; sleep 0.1; done
[ -s "$work/devstack.out" ] || { echo "devstack did not start:"; cat "$work/devstack.log"; exit 1; }

export PUBSUB_EMULATOR_HOST=127.0.0.1:8085 STORAGE_EMULATOR_HOST=http://127.0.0.1:4443
export LABELSYNC_NATS_URL=nats://127.0.0.1:4222
# The bearer secret of the exporter's webhook; lsctl annotate sends it.
export LABELSYNC_WEBHOOK_SECRET=demo-webhook-secret

echo "==> starting worker (embedded NATS with JetStream on 127.0.0.1:4222, HTTP :8080)"
LABELSYNC_NATS_URL= LABELSYNC_DATA_DIR="$work/data" LABELSYNC_HTTP_ADDR=127.0.0.1:8080 \
LABELSYNC_PUBSUB_PROJECT=labelsync-dev LABELSYNC_PUBSUB_SUBSCRIPTION=labelsync-worker \
LABELSYNC_PUBSUB_TOPIC=labelsync-uploads LABELSYNC_STORAGES_FILE="$work/storages.json" \
LABELSYNC_LOG_FORMAT=text "$bin/worker" 2>"$work/worker.log" &
pids+=($!)
ready=""
for _ in $(seq 1 300); do
  if curl -fsS http://127.0.0.1:8080/readyz >/dev/null 2>&1; then ready=1; break; fi
  sleep 0.1
done
[ -n "$ready" ] || { echo "worker not ready:"; cat "$work/worker.log"; exit 1; }
echo "    ready: $(curl -fsS http://127.0.0.1:8080/readyz)"

echo "==> starting exporter (webhook http://127.0.0.1:8081/webhooks/label-studio, NATS of the worker)"
LABELSYNC_HTTP_ADDR=127.0.0.1:8081 LABELSYNC_STORAGES_FILE="$work/storages.json" \
LABELSYNC_LOG_FORMAT=text "$bin/exporter" 2>"$work/exporter.log" &
pids+=($!)
ready=""
for _ in $(seq 1 300); do
  if curl -fsS http://127.0.0.1:8081/readyz >/dev/null 2>&1; then ready=1; break; fi
  sleep 0.1
done
[ -n "$ready" ] || { echo "exporter not ready:"; cat "$work/exporter.log"; exit 1; }
echo "    ready: $(curl -fsS http://127.0.0.1:8081/readyz)"

echo "==> uploading gs://acme-raw/incoming/cat 1.jpg"
"$bin/lsctl" upload acme-raw "incoming/cat 1.jpg" README.md
echo "==> the task event it became, from stream LABELSYNC_TASKS:"
"$bin/lsctl" watch -count 1 -timeout 30s

echo "==> a Label Studio ANNOTATION_CREATED webhook (annotation 1 of task 1, project 7) to the exporter"
"$bin/lsctl" annotate --project 7 --task 1 --id 1 --label cat
echo "==> the object it became, gs://acme-labels/annotations/1:"
"$bin/lsctl" cat acme-labels annotations/1 -wait 30s

cat <<MSG

==> labelsync is running. In another shell:
  export PUBSUB_EMULATOR_HOST=$PUBSUB_EMULATOR_HOST STORAGE_EMULATOR_HOST=$STORAGE_EMULATOR_HOST LABELSYNC_NATS_URL=$LABELSYNC_NATS_URL LABELSYNC_WEBHOOK_SECRET=$LABELSYNC_WEBHOOK_SECRET
  bin/lsctl upload acme-raw incoming/dog.png some-file.png     # becomes a task
  bin/lsctl upload acme-raw "incoming/cat 1.jpg" README.md      # an update of the same task
  bin/lsctl rm acme-raw incoming/dog.png                        # a deleted event
  bin/lsctl watch                                               # every task event, then new ones as they come
  bin/lsctl watch -subjects 'labelsync.deadletter.>'            # the dead-letter stream
  bin/lsctl annotate --project 7 --task 1 --id 1 --label dog --action updated
  bin/lsctl cat acme-labels annotations/1                       # the annotation's object, now "dog"
  bin/lsctl annotate --project 7 --id 1 --action deleted        # deletes it (can_delete_objects)
  bin/lsctl ls acme-labels annotations/                         # the annotation objects left
  curl -s localhost:8080/metrics | grep ^labelsync_             # metrics (exporter: localhost:8081/metrics)
Logs: $work/worker.log, $work/exporter.log, $work/devstack.log. Ctrl-C stops everything.
MSG

if [ "${LABELSYNC_DEMO_ONESHOT:-}" = 1 ]; then
  echo "==> LABELSYNC_DEMO_ONESHOT=1: stopping"
  exit 0
fi
wait "${pids[0]}"
