# The source and target buckets, when this module manages them
# (manage_buckets): Label Studio's CORS policy for pre-signed URLs on the
# source, and optional IP filtering on both.

locals {
  source_bucket = var.manage_buckets ? google_storage_bucket.source[0].name : var.source_bucket
  target_bucket = var.manage_buckets ? google_storage_bucket.target[0].name : var.target_bucket
}

resource "google_storage_bucket" "source" {
  count = var.manage_buckets ? 1 : 0

  project                     = var.project_id
  name                        = var.source_bucket
  location                    = var.location
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  dynamic "cors" {
    for_each = length(var.cors_origins) > 0 ? [var.cors_origins] : []
    content {
      origin          = cors.value
      method          = ["GET"]
      response_header = ["Content-Type", "Access-Control-Allow-Origin"]
      max_age_seconds = 3600
    }
  }

  dynamic "ip_filter" {
    for_each = var.ip_filter == null ? [] : [var.ip_filter]
    content {
      mode = "Enabled"
      # Google's service agents (the notifications' publisher among them)
      # reach the bucket whatever the filter says.
      allow_all_service_agent_access = true

      dynamic "public_network_source" {
        for_each = length(ip_filter.value.public_cidrs) > 0 ? [ip_filter.value.public_cidrs] : []
        content {
          allowed_ip_cidr_ranges = public_network_source.value
        }
      }

      dynamic "vpc_network_sources" {
        for_each = ip_filter.value.vpc_networks
        content {
          network                = vpc_network_sources.value.network
          allowed_ip_cidr_ranges = vpc_network_sources.value.cidrs
        }
      }
    }
  }
}

resource "google_storage_bucket" "target" {
  count = var.manage_buckets ? 1 : 0

  project                     = var.project_id
  name                        = var.target_bucket
  location                    = var.location
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  dynamic "ip_filter" {
    for_each = var.ip_filter == null ? [] : [var.ip_filter]
    content {
      mode                           = "Enabled"
      allow_all_service_agent_access = true

      dynamic "public_network_source" {
        for_each = length(ip_filter.value.public_cidrs) > 0 ? [ip_filter.value.public_cidrs] : []
        content {
          allowed_ip_cidr_ranges = public_network_source.value
        }
      }

      dynamic "vpc_network_sources" {
        for_each = ip_filter.value.vpc_networks
        content {
          network                = vpc_network_sources.value.network
          allowed_ip_cidr_ranges = vpc_network_sources.value.cidrs
        }
      }
    }
  }
}
