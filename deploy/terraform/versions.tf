terraform {
  required_version = ">= 1.5.0"

  required_providers {
    google = {
      source = "hashicorp/google"
      # ip_filter (with allow_all_service_agent_access) on google_storage_bucket.
      version = ">= 6.50.0, < 8.0.0"
    }
  }
}
