# An example root module: labelsync for one Label Studio project, its
# images in gs://<project>-labelsync-raw/incoming and its annotations in
# gs://<project>-labelsync-labels/annotations.
#
#   terraform init && terraform apply -var project_id=my-project -var label_studio_project=7
#   terraform output -json worker_environment
#   terraform output -raw storages_json > storages.json

terraform {
  required_version = ">= 1.5.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.50.0, < 8.0.0"
    }
  }
}

provider "google" {
  project = var.project_id
  region  = var.region
}

module "labelsync" {
  source = "../"

  project_id           = var.project_id
  label_studio_project = var.label_studio_project
  source_bucket        = "${var.project_id}-labelsync-raw"
  source_prefix        = "incoming"
  regex_filter         = ".*\\.(jpe?g|png)$"
  target_bucket        = "${var.project_id}-labelsync-labels"
  target_prefix        = "annotations"
  location             = var.region
  cors_origins         = var.label_studio_origins
  ip_filter            = var.ip_filter
}
