variable "project_id" {
  description = "Google Cloud project that holds the Pub/Sub topics and subscriptions and the service accounts (and the buckets, when manage_buckets is true)."
  type        = string
}

variable "name" {
  description = "Prefix of every resource name: topic <name>-uploads, subscription <name>-worker, service accounts <name>-worker and <name>-exporter."
  type        = string
  default     = "labelsync"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,20}$", var.name))
    error_message = "The name must be 5 to 21 lower-case letters, digits and hyphens, starting with a letter (service account ids are at most 30 characters)."
  }
}

variable "source_bucket" {
  description = "Source bucket: the objects that become Label Studio tasks (the import storage's bucket)."
  type        = string
}

variable "source_prefix" {
  description = "Object prefix of the import storage, and of the bucket notification config (only objects under it are published). Empty: the whole bucket."
  type        = string
  default     = ""
}

variable "target_bucket" {
  description = "Target bucket: where the exporter writes annotations (the export storage's bucket)."
  type        = string
}

variable "target_prefix" {
  description = "Object prefix of the export storage. When set, the exporter may create and delete objects only under it (an IAM condition; the bucket needs uniform bucket-level access)."
  type        = string
  default     = ""
}

variable "manage_buckets" {
  description = "Create and manage both buckets here (uniform bucket-level access, public access prevention, CORS, IP filtering). False: the buckets exist already; set CORS with `worker gcs cors` and IP filtering where the buckets are managed."
  type        = bool
  default     = true
}

variable "location" {
  description = "Location of the buckets when manage_buckets is true."
  type        = string
  default     = "US"
}

variable "cors_origins" {
  description = "Origins allowed to GET pre-signed URLs of the source bucket from a browser (Label Studio's host, e.g. https://label-studio.example.com), with Label Studio's policy: GET, response headers Content-Type and Access-Control-Allow-Origin, max age 3600. Empty: no CORS rule (use the worker's resolver proxy, presign off)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for o in var.cors_origins : o == "*" || can(regex("^https?://[^/]+$", o))])
    error_message = "Each CORS origin must be \"*\" or a scheme and host without a path, such as https://label-studio.example.com."
  }
}

variable "ip_filter" {
  description = "Bucket IP filtering on both managed buckets: public CIDR ranges (including the browsers that open pre-signed URLs) and VPC networks (projects/P/global/networks/N with their CIDR ranges) allowed to reach them. GCS allows at most 200 CIDR ranges in all and 25 VPC networks. Null: no IP filtering."
  type = object({
    public_cidrs = optional(list(string), [])
    vpc_networks = optional(list(object({
      network = string
      cidrs   = list(string)
    })), [])
  })
  default = null

  validation {
    condition     = var.ip_filter == null ? true : length(concat(var.ip_filter.public_cidrs, flatten([for n in var.ip_filter.vpc_networks : n.cidrs]))) <= 200
    error_message = "Bucket IP filtering allows at most 200 CIDR ranges, public and VPC together."
  }

  validation {
    condition     = var.ip_filter == null ? true : length(var.ip_filter.vpc_networks) <= 25
    error_message = "Bucket IP filtering allows at most 25 VPC networks."
  }

  validation {
    condition     = var.ip_filter == null ? true : alltrue([for c in concat(var.ip_filter.public_cidrs, flatten([for n in var.ip_filter.vpc_networks : n.cidrs])) : can(cidrhost(c, 0))])
    error_message = "Every IP filter range must be a CIDR range, such as 203.0.113.0/24 or 2001:db8::/32."
  }

  validation {
    condition     = var.ip_filter == null ? true : alltrue([for n in var.ip_filter.vpc_networks : can(regex("^projects/[^/]+/global/networks/[^/]+$", n.network))])
    error_message = "Every VPC network must be named projects/PROJECT/global/networks/NETWORK."
  }
}

variable "ack_deadline_seconds" {
  description = "Ack deadline of the worker's subscription. The worker extends leases while a message is handled, so this is how soon a crashed worker's messages go to another one."
  type        = number
  default     = 60

  validation {
    condition     = var.ack_deadline_seconds >= 10 && var.ack_deadline_seconds <= 600
    error_message = "The ack deadline must be between 10 and 600 seconds."
  }
}

variable "max_delivery_attempts" {
  description = "Deliveries of a notification before Pub/Sub moves it to the dead-letter topic. labelsync dead-letters inputs that can never succeed itself; this catches what keeps failing (a worker crashing on it)."
  type        = number
  default     = 10

  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
    error_message = "Pub/Sub allows between 5 and 100 delivery attempts."
  }
}

variable "minimum_backoff" {
  description = "Retry policy of the worker's subscription: the shortest delay before a nacked notification is delivered again."
  type        = string
  default     = "10s"

  validation {
    condition     = can(regex("^[0-9]+(\\.[0-9]+)?s$", var.minimum_backoff))
    error_message = "The minimum backoff must be a duration in seconds, such as \"10s\"."
  }
}

variable "maximum_backoff" {
  description = "Retry policy of the worker's subscription: the longest delay before a nacked notification is delivered again (at most 600s)."
  type        = string
  default     = "600s"

  validation {
    condition     = can(regex("^[0-9]+(\\.[0-9]+)?s$", var.maximum_backoff))
    error_message = "The maximum backoff must be a duration in seconds, such as \"600s\"."
  }
}

variable "message_retention_duration" {
  description = "How long the subscriptions keep undelivered notifications (10 minutes to 7 days): how long the workers may be down without losing one."
  type        = string
  default     = "604800s"

  validation {
    condition     = can(regex("^[0-9]+s$", var.message_retention_duration))
    error_message = "The retention must be a duration in whole seconds, such as \"604800s\"."
  }
}

variable "label_studio_project" {
  description = "Label Studio project id of the import and export storages (the storages_json output)."
  type        = number
}

variable "source_storage_id" {
  description = "Id of the import storage in storages_json."
  type        = number
  default     = 1
}

variable "target_storage_id" {
  description = "Id of the export storage in storages_json."
  type        = number
  default     = 2
}

variable "regex_filter" {
  description = "regex_filter of the import storage: RE2, anchored at the start of the key. Empty: every object under the prefix."
  type        = string
  default     = ""
}

variable "use_blob_urls" {
  description = "use_blob_urls of the import storage: true makes one task per object (Label Studio's Files method), false reads each object as JSON, JSONL or Parquet tasks."
  type        = bool
  default     = true
}

variable "recursive_scan" {
  description = "recursive_scan of the import storage: true imports the whole subtree under the prefix, false only its direct children."
  type        = bool
  default     = true
}

variable "presign" {
  description = "presign of the import storage: true redirects viewers to V4 signed URLs (needs cors_origins), false streams objects through the worker."
  type        = bool
  default     = true
}

variable "can_delete_objects" {
  description = "can_delete_objects of the export storage: deleting an annotation in Label Studio deletes its object."
  type        = bool
  default     = false
}
