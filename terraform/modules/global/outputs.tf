output "secret_arns" {
  description = "The relay secret's ARN in each region (its replicas share the name and suffix): modules/relay-region's secret_arn."
  value = {
    for r in concat([var.primary_region], var.secret_replica_regions) :
    r => replace(aws_secretsmanager_secret.relay.arn, ":${var.primary_region}:", ":${r}:")
  }
}

output "redis_primary_endpoint" {
  description = "The registry's primary endpoint (TLS, auth token in the secret's registry_url)."
  value       = aws_elasticache_replication_group.primary.primary_endpoint_address
}

output "redis_global_replication_group_id" {
  description = "The global datastore, for regional replicas."
  value       = aws_elasticache_global_replication_group.registry.global_replication_group_id
}

output "anycast_ips" {
  description = "Global Accelerator's static addresses (anycast.<turn_hostname>.<domain>, first contact only)."
  value       = aws_globalaccelerator_accelerator.turn.ip_sets[0].ip_addresses
}

output "anycast_fqdn" {
  description = "The accelerator's name, anycast.<turn_hostname>.<domain> (first contact only)."
  value       = local.anycast_fqdn
}

output "anycast_urls" {
  description = "TURN URLs of the accelerator, for the credential API (modules/relay-region api.anycast_urls, GEOTURN_ANYCAST_URLS)."
  value       = local.anycast_urls
}

output "turn_fqdn" {
  description = "The latency-routed TURN name."
  value       = "${var.turn_hostname}.${var.domain}"
}

output "api_fqdn" {
  description = "The latency-routed credential API name; null when no region runs the API."
  value       = anytrue([for r in values(var.regions) : r.with_api]) ? "${var.api_hostname}.${var.domain}" : null
}
