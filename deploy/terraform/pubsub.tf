# Bucket notifications -> topic -> the workers' subscription, with a
# dead-letter topic for what keeps failing.

data "google_project" "this" {
  project_id = var.project_id
}

# The Cloud Storage service agent publishes the bucket's notifications.
data "google_storage_project_service_account" "gcs" {
  project = var.project_id
}

locals {
  # Pub/Sub's service agent forwards messages to the dead-letter topic.
  pubsub_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

resource "google_pubsub_topic" "uploads" {
  project = var.project_id
  name    = "${var.name}-uploads"
}

resource "google_pubsub_topic_iam_member" "gcs_publishes_uploads" {
  project = var.project_id
  topic   = google_pubsub_topic.uploads.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}

resource "google_storage_notification" "source" {
  bucket             = local.source_bucket
  payload_format     = "JSON_API_V1"
  topic              = google_pubsub_topic.uploads.id
  event_types        = ["OBJECT_FINALIZE", "OBJECT_DELETE"]
  object_name_prefix = var.source_prefix == "" ? null : var.source_prefix

  depends_on = [google_pubsub_topic_iam_member.gcs_publishes_uploads]
}

resource "google_pubsub_topic" "dead_letter" {
  project = var.project_id
  name    = "${var.name}-uploads-dead-letter"
}

# Without a subscription, a topic drops what it receives.
resource "google_pubsub_subscription" "dead_letter" {
  project                    = var.project_id
  name                       = "${var.name}-uploads-dead-letter"
  topic                      = google_pubsub_topic.dead_letter.id
  message_retention_duration = var.message_retention_duration
  ack_deadline_seconds       = 60

  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_subscription" "worker" {
  project                    = var.project_id
  name                       = "${var.name}-worker"
  topic                      = google_pubsub_topic.uploads.id
  ack_deadline_seconds       = var.ack_deadline_seconds
  message_retention_duration = var.message_retention_duration
  retain_acked_messages      = false

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  retry_policy {
    minimum_backoff = var.minimum_backoff
    maximum_backoff = var.maximum_backoff
  }

  # Never expire for inactivity: a stopped deployment keeps its subscription.
  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_topic_iam_member" "agent_publishes_dead_letters" {
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "agent_forwards_dead_letters" {
  project      = var.project_id
  subscription = google_pubsub_subscription.worker.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}
