variable "name" {
  description = "Prefix of every resource name."
  type        = string
  default     = "geoturn"
}

variable "primary_region" {
  description = "AWS region of this module's provider: the registry's primary and the secret's home."
  type        = string
}

variable "regions" {
  description = <<-EOT
    Every relay region, keyed by geoturn region name, from modules/relay-region outputs:
    aws_region, nlb_arn, nlb_dns_name, nlb_zone_id, first_contact_ports (the accelerator's
    port overrides: { udp = { "3478" = 3479 }, tcp = { "3478" = 3479, "5349" = 5350,
    "443" = 8443 } }, every accelerator port mapped), and with_api = true with
    api_alb_dns_name / api_alb_zone_id where the region runs the credential API (a flag,
    because the names are unknown until the load balancers exist and for_each keys must be
    known at plan time).
  EOT
  type = map(object({
    aws_region       = string
    nlb_arn          = string
    nlb_dns_name     = string
    nlb_zone_id      = string
    with_api         = optional(bool, false)
    api_alb_dns_name = optional(string)
    api_alb_zone_id  = optional(string)
    first_contact_ports = object({
      udp = map(number)
      tcp = map(number)
    })
  }))
}

variable "zone_id" {
  description = "Route 53 hosted zone of var.domain."
  type        = string
}

variable "domain" {
  description = "Domain the service's names go under, e.g. example.org."
  type        = string
}

variable "turn_hostname" {
  description = "Latency-routed TURN name: turn.<domain>; each region also gets <region>.turn.<domain>."
  type        = string
  default     = "turn"
}

variable "api_hostname" {
  description = "Latency-routed credential API name: api.<domain>."
  type        = string
  default     = "api"
}

variable "redis_vpc_id" {
  description = "VPC of the primary region, where the registry's primary lives."
  type        = string
}

variable "redis_subnet_ids" {
  description = "Subnets of that VPC for the registry."
  type        = list(string)
}

variable "redis_client_cidrs" {
  description = "CIDRs of every region's VPC (peered to the primary's): relays and API reach the registry from there."
  type        = list(string)
}

variable "redis_node_type" {
  description = "Registry node type (global datastores need r/m families). Heartbeats are small: the smallest fits a large fleet."
  type        = string
  default     = "cache.r7g.large"
}

variable "secret_replica_regions" {
  description = "Regions other than the primary that get a replica of the relay secret (every relay region)."
  type        = list(string)
}

variable "secret_kms_key_id" {
  description = "Customer-managed KMS key for the secret; null uses the AWS-managed key."
  type        = string
  default     = null
}

variable "api_config_toml" {
  description = "Credential API config (hashed API keys from `geoturn api-key`, JWT keys): stored in the secret, not secret itself."
  type        = string
  default     = ""
}
