# Service accounts for the worker and the exporter, each with only what it
# uses (Label Studio's GCS guide, made least-privilege):
#   worker:   receive from its subscription; Storage Object Viewer and
#             storage.buckets.get on the source; sign V4 URLs as itself
#             (Service Account Token Creator); storage.buckets.get on the
#             target, to validate export storages created through its API.
#   exporter: storage.buckets.get on the target; object create, read and
#             delete on the target, only under target_prefix when set.

resource "google_service_account" "worker" {
  project      = var.project_id
  account_id   = "${var.name}-worker"
  display_name = "labelsync worker"
  description  = "Consumes ${google_pubsub_subscription.worker.name}, reads gs://${var.source_bucket}, signs URLs."
}

resource "google_service_account" "exporter" {
  project      = var.project_id
  account_id   = "${var.name}-exporter"
  display_name = "labelsync exporter"
  description  = "Writes annotations to gs://${var.target_bucket}/${var.target_prefix}."
}

locals {
  worker   = "serviceAccount:${google_service_account.worker.email}"
  exporter = "serviceAccount:${google_service_account.exporter.email}"
  # The exporter's objects: the prefix as the export storage normalises it.
  target_objects = "projects/_/buckets/${local.target_bucket}/objects/${trimsuffix(var.target_prefix, "/")}/"
}

# Worker: the subscription (receive, and read it: the worker checks it exists at start).

resource "google_pubsub_subscription_iam_member" "worker_subscriber" {
  project      = var.project_id
  subscription = google_pubsub_subscription.worker.name
  role         = "roles/pubsub.subscriber"
  member       = local.worker
}

resource "google_pubsub_subscription_iam_member" "worker_viewer" {
  project      = var.project_id
  subscription = google_pubsub_subscription.worker.name
  role         = "roles/pubsub.viewer"
  member       = local.worker
}

# Worker: the source bucket.

resource "google_storage_bucket_iam_member" "worker_reads_source" {
  bucket = local.source_bucket
  role   = "roles/storage.objectViewer"
  member = local.worker
}

# storage.buckets.get (and storage.objects.list, which Object Viewer has too).
resource "google_storage_bucket_iam_member" "worker_gets_source" {
  bucket = local.source_bucket
  role   = "roles/storage.legacyBucketReader"
  member = local.worker
}

resource "google_storage_bucket_iam_member" "worker_gets_target" {
  bucket = local.target_bucket
  role   = "roles/storage.legacyBucketReader"
  member = local.worker
}

# Pre-signed URLs: the worker signs with IAM signBlob as its own account.
resource "google_service_account_iam_member" "worker_signs_urls" {
  service_account_id = google_service_account.worker.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.worker
}

# Exporter: the target bucket.

resource "google_storage_bucket_iam_member" "exporter_gets_target" {
  bucket = local.target_bucket
  role   = "roles/storage.legacyBucketReader"
  member = local.exporter
}

resource "google_storage_bucket_iam_member" "exporter_writes_target" {
  bucket = local.target_bucket
  role   = "roles/storage.objectUser"
  member = local.exporter

  dynamic "condition" {
    for_each = var.target_prefix == "" ? [] : [local.target_objects]
    content {
      title       = "labelsync-export-prefix"
      description = "Objects under the export storage's prefix only."
      expression  = "resource.name.startsWith(\"${condition.value}\")"
    }
  }
}
