variable "name" {
  description = "Prefix of every resource name."
  type        = string
  default     = "geoturn"
}

variable "region_name" {
  description = "geoturn region name (GEOTURN_REGION), as the credential API ranks and reports it, e.g. eu-central."
  type        = string
  validation {
    condition     = can(regex("^[A-Za-z0-9._-]{1,64}$", var.region_name))
    error_message = "1-64 of A-Z a-z 0-9 . _ - (the relay refuses anything else)."
  }
}

variable "latitude" {
  description = "Latitude of the region's relays (GEOTURN_LAT), for geo routing."
  type        = number
}

variable "longitude" {
  description = "Longitude of the region's relays (GEOTURN_LON), for geo routing."
  type        = number
}

variable "vpc_cidr" {
  description = "CIDR of this region's VPC. Regions must not overlap: they are peered to reach the registry."
  type        = string
}

variable "availability_zones" {
  description = "Availability zones for the public subnets (one /20 each, carved from vpc_cidr) and the API load balancer's (one /26 each, from the VPC's last /20)."
  type        = list(string)
  validation {
    condition     = length(var.availability_zones) >= 1 && length(var.availability_zones) <= 15
    error_message = "Between 1 and 15 zones: the VPC's last /20 holds the load balancer's subnets."
  }
}

variable "instance_type" {
  description = "Relay instance type; network-optimised types carry the most relayed traffic per dollar."
  type        = string
  default     = "c6in.large"
}

variable "ami_id" {
  description = "AMI for the relays; null takes the latest Amazon Linux 2023 (its aws CLI and curl are used at boot)."
  type        = string
  default     = null
}

variable "geoturn_url" {
  description = "HTTPS (or S3 presigned) URL of the geoturn Linux binary for the instance architecture, fetched at boot."
  type        = string
}

variable "geoturn_sha256" {
  description = "SHA-256 of that binary: boot fails rather than run anything else."
  type        = string
  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.geoturn_sha256))
    error_message = "64 lowercase hex digits."
  }
}

variable "secret_arn" {
  description = <<-EOT
    ARN of this region's copy of the Secrets Manager secret (modules/global creates it and its
    replicas): JSON with secrets_key, admin_token, registry_url, and optionally tls_cert, tls_key
    (PEM) and api_config_toml. Instances read it at every relay start; its values never pass
    through Terraform variables or user data.
  EOT
  type        = string
}

variable "secret_kms_key_arn" {
  description = "Customer-managed KMS key of that secret, if any (the instances then need kms:Decrypt on it)."
  type        = string
  default     = null
}

variable "realm" {
  description = "TURN realm (GEOTURN_REALM)."
  type        = string
  default     = "geoturn"
}

variable "relay_port_min" {
  description = "Lowest relayed port (GEOTURN_RELAY_PORTS); opened to the internet, UDP and TCP."
  type        = number
  default     = 49152
}

variable "relay_port_max" {
  description = "Highest relayed port (GEOTURN_RELAY_PORTS)."
  type        = number
  default     = 65535
}

variable "capacity_allocations" {
  description = "Allocations one relay instance is sized for (GEOTURN_CAPACITY_ALLOCATIONS)."
  type        = number
  default     = 10000
}

variable "capacity_mbps" {
  description = "Relayed bandwidth one instance is sized for, Mbit/s (GEOTURN_CAPACITY_MBPS)."
  type        = number
  default     = 1000
}

variable "drain_timeout" {
  description = "Longest drain of a relay, seconds (GEOTURN_DRAIN_TIMEOUT). Scale-in waits for it."
  type        = number
  default     = 3600
  validation {
    # The lifecycle hook's heartbeat timeout (this + 300) may be at most 7200 s.
    condition     = var.drain_timeout >= 60 && var.drain_timeout <= 6900
    error_message = "Between 60 and 6900 seconds."
  }
}

variable "min_size" {
  description = "Fewest relay instances in the region."
  type        = number
  default     = 2
}

variable "max_size" {
  description = "Most relay instances in the region."
  type        = number
  default     = 10
}

variable "target_cpu_utilization" {
  description = "Average CPU the Auto Scaling group keeps the relays at (target tracking)."
  type        = number
  default     = 60
}

variable "ops_cidrs" {
  description = "Extra CIDRs allowed to reach the relays' ops port 9641 (Prometheus); the VPC always is."
  type        = list(string)
  default     = []
}

variable "api" {
  description = "The credential API on ECS Fargate behind an HTTPS load balancer in this region; null runs none here."
  type = object({
    image           = string
    certificate_arn = string
    desired_count   = optional(number, 2)
    max_count       = optional(number, 10)
    cpu             = optional(number, 512)
    memory          = optional(number, 1024)
    # .mmdb files inside the image (a derived image adds them: GeoLite2 and DB-IP licences).
    geoip_paths = optional(list(string), [])
    # The accelerator's TURN URLs (modules/global output anycast_urls), offered last in every
    # answer (GEOTURN_ANYCAST_URLS): the fallback that always reaches a live region.
    anycast_urls = optional(list(string), [])
  })
  default = null
}

variable "registry_replica" {
  description = "Global datastore (modules/global output) to add a read replica of in this region, for failover; null adds none."
  # An object rather than a nullable string: the ID is unknown until the datastore exists, and
  # count must be known at plan time.
  type = object({
    global_replication_group_id = string
  })
  default = null
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}

variable "first_contact_port" {
  description = <<-EOT
    Anycast first-contact port, UDP and TCP (GEOTURN_ANYCAST_LISTEN): Global Accelerator's 3478
    is forwarded here (a load balancer listener, and the relays' anycast listener behind it).
    Allocates on it get 300 Try Alternate to a relay's unicast 3478. Must differ from the
    unicast ports (3478, 5349, 443), the ops port (9641), the other first-contact ports and the
    relayed range; an accelerator also refuses endpoint ports that are among its listener ports.
  EOT
  type        = number
  default     = 3479
  validation {
    condition     = var.first_contact_port >= 1 && var.first_contact_port <= 65535 && floor(var.first_contact_port) == var.first_contact_port
    error_message = "A port number, 1-65535."
  }
}

variable "first_contact_tls_port" {
  description = "Anycast first-contact TLS port (GEOTURN_ANYCAST_TLS_LISTEN) behind the accelerator's TCP 5349; the relay certificate must cover the anycast name. Same rules as first_contact_port."
  type        = number
  default     = 5350
  validation {
    condition     = var.first_contact_tls_port >= 1 && var.first_contact_tls_port <= 65535 && floor(var.first_contact_tls_port) == var.first_contact_tls_port
    error_message = "A port number, 1-65535."
  }
}

variable "first_contact_tls_alt_port" {
  description = "Anycast first-contact TLS port behind the accelerator's TCP 443 (an accelerator cannot send two listener ports to one endpoint port, so 443 needs its own). Same rules as first_contact_port."
  type        = number
  default     = 8443
  validation {
    condition     = var.first_contact_tls_alt_port >= 1 && var.first_contact_tls_alt_port <= 65535 && floor(var.first_contact_tls_alt_port) == var.first_contact_tls_alt_port
    error_message = "A port number, 1-65535."
  }
}

variable "relay_names" {
  description = "A DNS name per relay for its turn:/turns: URLs (browsers verify a turns: certificate against the URL's host): at boot each relay publishes INSTANCE_ID.<domain> -> its public IPv4 address in Route 53 zone zone_id and uses it as --public-host; scale-in removes the record after the drain. The TLS certificate in the secret must cover *.<domain>. Null: relays are named by IP, and browsers refuse their turns: URLs."
  type = object({
    domain  = string
    zone_id = string
  })
  default = null
}

variable "mesh_peer_cidrs" {
  description = "Public addresses (CIDRs, e.g. each other region's relay Elastic IPs as /32) allowed to reach this region's relays on the mesh port (UDP 9643). This region's relays always are; nothing else should be."
  type        = list(string)
  default     = []
}
