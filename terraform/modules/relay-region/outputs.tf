output "vpc_id" {
  description = "This region's VPC."
  value       = aws_vpc.this.id
}

output "vpc_cidr" {
  description = "CIDR of this region's VPC (for peering routes and registry firewall rules)."
  value       = var.vpc_cidr
}

output "subnet_ids" {
  description = "Public subnets of this region."
  value       = aws_subnet.public[*].id
}

output "route_table_id" {
  description = "Route table of the public subnets, for peering routes."
  value       = aws_route_table.public.id
}

output "relay_security_group_id" {
  description = "Security group of the relays."
  value       = aws_security_group.relay.id
}

output "autoscaling_group_name" {
  description = "Auto Scaling group of the relays."
  value       = aws_autoscaling_group.relays.name
}

output "nlb_arn" {
  description = "The relays' Network Load Balancer (a Global Accelerator endpoint)."
  value       = aws_lb.relays.arn
}

output "nlb_dns_name" {
  description = "DNS name of that load balancer (latency-record alias target)."
  value       = aws_lb.relays.dns_name
}

output "nlb_zone_id" {
  description = "Hosted zone of that load balancer."
  value       = aws_lb.relays.zone_id
}

output "first_contact_ports" {
  description = "Client-facing TURN port -> the first-contact port behind it (load balancer listener and the relays' anycast listener), as { udp = { \"3478\" = 3479 }, tcp = { ... } }: modules/global's regions[*].first_contact_ports, its accelerator's port overrides."
  value       = local.first_contact_ports
}

output "api_alb_dns_name" {
  description = "DNS name of the credential API's load balancer; null without var.api."
  value       = one(aws_lb.api[*].dns_name)
}

output "api_alb_zone_id" {
  description = "Hosted zone of the credential API's load balancer; null without var.api."
  value       = one(aws_lb.api[*].zone_id)
}

output "redis_replica_id" {
  description = "The regional registry replica; null without one."
  value       = one(aws_elasticache_replication_group.secondary[*].id)
}
