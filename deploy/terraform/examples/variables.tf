variable "project_id" {
  description = "Google Cloud project to deploy into."
  type        = string
}

variable "region" {
  description = "Region of the buckets and the provider's default."
  type        = string
  default     = "us-central1"
}

variable "label_studio_project" {
  description = "Label Studio project id of the storages."
  type        = number
}

variable "label_studio_origins" {
  description = "Origins of Label Studio, allowed to load pre-signed URLs of the source bucket (CORS)."
  type        = list(string)
  default     = ["https://label-studio.example.com"]
}

variable "ip_filter" {
  description = "Bucket IP filtering (the module's ip_filter). Null: none."
  type = object({
    public_cidrs = optional(list(string), [])
    vpc_networks = optional(list(object({
      network = string
      cidrs   = list(string)
    })), [])
  })
  default = null
}
