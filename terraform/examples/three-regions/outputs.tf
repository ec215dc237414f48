output "turn_fqdn" {
  description = "Latency-routed TURN name for static configurations."
  value       = module.global.turn_fqdn
}

output "anycast_ips" {
  description = "Global Accelerator's static TURN addresses."
  value       = module.global.anycast_ips
}

output "anycast_urls" {
  description = "TURN URLs of the accelerator (first contact, redirected to a unicast relay); the credential API already offers them last in every answer."
  value       = module.global.anycast_urls
}

output "api_fqdn" {
  description = "Latency-routed credential API name."
  value       = module.global.api_fqdn
}

output "relay_groups" {
  description = "Auto Scaling group of each region's relays."
  value = {
    us-east      = module.us_east.autoscaling_group_name
    eu-central   = module.eu_central.autoscaling_group_name
    ap-southeast = module.ap_southeast.autoscaling_group_name
  }
}
