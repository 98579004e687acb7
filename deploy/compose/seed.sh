#!/bin/sh
# docker-compose.yml's one-shot seeder: the demo of `make run`
# (scripts/run.sh) against the compose stack. It creates the demo buckets
# in fake-gcs-server, uploads incoming/cat 1.jpg and prints the task event
# it became, posts a Label Studio ANNOTATION_CREATED webhook to the exporter
# and prints the object the exporter wrote. Runs again harmlessly.
set -eu
: "${STORAGE_EMULATOR_HOST:?}" "${LABELSYNC_NATS_URL:?}" "${LABELSYNC_WEBHOOK_SECRET:?}"
project="${SEED_GCS_PROJECT:-labelsync-dev}"
exporter="${SEED_EXPORTER_URL:-http://exporter:8081}"

for bucket in acme-raw acme-labels; do
  if wget -q -O /dev/null --header 'Content-Type: application/json' \
    --post-data "{\"name\": \"$bucket\"}" "$STORAGE_EMULATOR_HOST/storage/v1/b?project=$project"; then
    echo "==> created bucket gs://$bucket"
  else
    echo "==> bucket gs://$bucket exists"
  fi
done

echo "==> uploading gs://acme-raw/incoming/cat 1.jpg"
lsctl upload acme-raw "incoming/cat 1.jpg" /usr/share/labelsync/README.md
echo "==> the task event it became, from stream LABELSYNC_TASKS:"
lsctl watch -count 1 -timeout 60s

echo "==> a Label Studio ANNOTATION_CREATED webhook (annotation 1 of task 1, project 7) to the exporter"
lsctl annotate --project 7 --task 1 --id 1 --label cat --url "$exporter"
echo "==> the object it became, gs://acme-labels/annotations/1:"
lsctl cat acme-labels annotations/1 -wait 60s

cat <<MSG

==> labelsync is running. From the host (docker-compose.yml publishes the ports):
  export STORAGE_EMULATOR_HOST=http://127.0.0.1:4443 LABELSYNC_NATS_URL=nats://127.0.0.1:4222 LABELSYNC_WEBHOOK_SECRET=$LABELSYNC_WEBHOOK_SECRET
  bin/lsctl upload acme-raw incoming/dog.png some-file.png     # becomes a task
  bin/lsctl watch                                               # every task event
  bin/lsctl annotate --project 7 --task 1 --id 1 --label dog --action updated
  Prometheus http://127.0.0.1:9090/alerts   Grafana http://127.0.0.1:3000 (dashboard "labelsync")
MSG
