#!/usr/bin/env bash
# Says, after `make test`, whether the end-to-end scenarios also ran against
# Google's Pub/Sub emulator or were skipped. Same lookup as internal/pubsubemu.
set -u
bin="${LABELSYNC_PUBSUB_EMULATOR_BIN:-}"
if [ -z "$bin" ]; then
  for root in "$HOME/google-cloud-sdk" /usr/lib/google-cloud-sdk /usr/share/google-cloud-sdk /google-cloud-sdk /opt/google-cloud-sdk; do
    if [ -f "$root/platform/pubsub-emulator/bin/cloud-pubsub-emulator" ]; then
      bin="$root/platform/pubsub-emulator/bin/cloud-pubsub-emulator"; break
    fi
  done
fi
if [ -z "$bin" ] && command -v gcloud >/dev/null 2>&1; then
  root=$(gcloud info --format='value(installation.sdk_root)' 2>/dev/null)
  [ -f "$root/platform/pubsub-emulator/bin/cloud-pubsub-emulator" ] && bin="$root/platform/pubsub-emulator/bin/cloud-pubsub-emulator"
fi
if [ -n "$bin" ] && command -v java >/dev/null 2>&1; then
  echo "Google Pub/Sub emulator: $bin — the end-to-end scenarios ran against it and against pstest."
else
  echo "NOTE: Google Pub/Sub emulator not installed (gcloud pubsub-emulator component + Java) —"
  echo "      the end-to-end scenarios against it were SKIPPED; they ran against pstest only. CI runs both."
fi
