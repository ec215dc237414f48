variable "domain" {
  description = "Domain of the service (a Route 53 hosted zone), e.g. example.org; also the TURN realm."
  type        = string
}

variable "zone_id" {
  description = "Route 53 hosted zone ID of var.domain."
  type        = string
}

variable "geoturn_url" {
  description = "URL of the geoturn x86_64 Linux binary (a release asset, or an S3 presigned URL)."
  type        = string
}

variable "geoturn_sha256" {
  description = "SHA-256 of that binary."
  type        = string
}

variable "api_image" {
  description = "Container image of geoturn for the credential API (deploy/Dockerfile), with GeoIP databases if used."
  type        = string
}

variable "api_certificate_arns" {
  description = "ACM certificate for api.<domain> in each region (ACM certificates are regional)."
  type        = map(string)
}

variable "api_config_toml" {
  description = "Credential API config: hashed API keys (`geoturn api-key --name NAME`) and JWT keys."
  type        = string
}
