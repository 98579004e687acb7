output "worker_environment" {
  description = "The worker's variables for this infrastructure (README, SPEC section 5), to merge into its environment. The exporter needs none from here: it reaches GCS as exporter_service_account and NATS as configured."
  value = {
    LABELSYNC_PUBSUB_PROJECT      = var.project_id
    LABELSYNC_PUBSUB_SUBSCRIPTION = google_pubsub_subscription.worker.name
  }
}

output "storages_json" {
  description = "A storages file (LABELSYNC_STORAGES_FILE of the worker and the exporter) with the import storage on the source bucket and the export storage on the target bucket."
  value = jsonencode({
    import = [{
      id             = var.source_storage_id
      project        = var.label_studio_project
      title          = "gs://${var.source_bucket}/${var.source_prefix}"
      bucket         = var.source_bucket
      prefix         = var.source_prefix
      regex_filter   = var.regex_filter
      use_blob_urls  = var.use_blob_urls
      recursive_scan = var.recursive_scan
      presign        = var.presign
    }]
    export = [{
      id                 = var.target_storage_id
      project            = var.label_studio_project
      title              = "gs://${var.target_bucket}/${var.target_prefix}"
      bucket             = var.target_bucket
      prefix             = var.target_prefix
      can_delete_objects = var.can_delete_objects
    }]
  })
}

output "worker_service_account" {
  description = "Email of the worker's service account: run the worker as it (Workload Identity, the VM's account, or a key in GOOGLE_APPLICATION_CREDENTIALS)."
  value       = google_service_account.worker.email
}

output "exporter_service_account" {
  description = "Email of the exporter's service account: run the exporter as it."
  value       = google_service_account.exporter.email
}

output "topic" {
  description = "The topic the source bucket's notifications go to."
  value       = google_pubsub_topic.uploads.id
}

output "dead_letter_subscription" {
  description = "Subscription of the dead-letter topic: notifications Pub/Sub gave up on after max_delivery_attempts."
  value       = google_pubsub_subscription.dead_letter.id
}
