output "worker_environment" {
  description = "The worker's Pub/Sub variables."
  value       = module.labelsync.worker_environment
}

output "storages_json" {
  description = "The storages file of the worker and the exporter."
  value       = module.labelsync.storages_json
}

output "worker_service_account" {
  description = "Run the worker as this service account."
  value       = module.labelsync.worker_service_account
}

output "exporter_service_account" {
  description = "Run the exporter as this service account."
  value       = module.labelsync.exporter_service_account
}
