# What every region shares: the registry (Redis with TLS and auth), the secret that carries its
# URL and the TURN secrets' encryption key, the anycast entry point, and the DNS names.

# --- Secrets -----------------------------------------------------------------------------
# Generated here so no one has to pass them in. They end up in the Terraform state as well as
# in Secrets Manager: keep the state encrypted and access-controlled (e.g. S3 + KMS).

resource "random_id" "secrets_key" {
  byte_length = 32
}

resource "random_password" "admin_token" {
  length  = 48
  special = false
}

# ElastiCache auth tokens refuse some punctuation; letters and digits are always accepted.
resource "random_password" "redis_auth" {
  length  = 64
  special = false
}

resource "aws_secretsmanager_secret" "relay" {
  name_prefix = "${var.name}/relay-"
  description = "geoturn relays and credential API: registry URL, secrets key, admin token, TLS certificate"
  kms_key_id  = var.secret_kms_key_id

  # A copy in every relay region: instances read their own region's.
  dynamic "replica" {
    for_each = toset(var.secret_replica_regions)
    content {
      region = replica.value
    }
  }
}

# The first value only. Operators (or a certificate job) later add tls_cert and tls_key (PEM)
# with put-secret-value; Terraform leaves those changes alone.
resource "aws_secretsmanager_secret_version" "relay" {
  secret_id = aws_secretsmanager_secret.relay.id
  secret_string = jsonencode({
    secrets_key     = random_id.secrets_key.b64_std
    admin_token     = random_password.admin_token.result
    registry_url    = "rediss://:${random_password.redis_auth.result}@${aws_elasticache_replication_group.primary.primary_endpoint_address}:6379/0"
    api_config_toml = var.api_config_toml
  })

  lifecycle {
    ignore_changes = [secret_string]
  }
}

# --- Registry ----------------------------------------------------------------------------

resource "aws_security_group" "redis" {
  name_prefix = "${var.name}-registry-"
  description = "geoturn registry: Redis from the relay regions"
  vpc_id      = var.redis_vpc_id

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "redis" {
  for_each          = toset(var.redis_client_cidrs)
  security_group_id = aws_security_group.redis.id
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 6379
  to_port           = 6379
}

resource "aws_elasticache_subnet_group" "redis" {
  name       = "${var.name}-registry"
  subnet_ids = var.redis_subnet_ids
}

# Relays heartbeat into the primary from every region (a few hundred small writes a second
# even at a thousand relays); pub/sub carries rotations and drains. TLS (rediss://) and an
# auth token, since the traffic crosses regions.
resource "aws_elasticache_replication_group" "primary" {
  replication_group_id       = "${var.name}-registry"
  description                = "geoturn registry (primary)"
  engine                     = "redis"
  engine_version             = "7.1"
  node_type                  = var.redis_node_type
  num_cache_clusters         = 2
  automatic_failover_enabled = true
  multi_az_enabled           = true
  port                       = 6379
  subnet_group_name          = aws_elasticache_subnet_group.redis.name
  security_group_ids         = [aws_security_group.redis.id]
  at_rest_encryption_enabled = true
  transit_encryption_enabled = true
  auth_token                 = random_password.redis_auth.result

  # Once in a global datastore, these change through the global datastore.
  lifecycle {
    ignore_changes = [engine_version, node_type]
  }
}

# Regions add read replicas to it (modules/relay-region: redis_global_replication_group_id),
# one of which can be promoted if the primary region fails.
resource "aws_elasticache_global_replication_group" "registry" {
  global_replication_group_id_suffix = var.name
  primary_replication_group_id       = aws_elasticache_replication_group.primary.id
}

# --- Anycast first contact ---------------------------------------------------------------
# Global Accelerator's two static addresses reach the nearest healthy region. They are for
# first contact only: every listener port is overridden to the region's first-contact port
# (modules/relay-region output first_contact_ports: 3478 -> 3479, 5349 -> 5350, 443 -> 8443 by
# default), where the relays' anycast listeners answer an Allocate with a signed 300 Try
# Alternate to a relay's own public address (the least loaded live relay of that region). No
# allocation lives on the accelerator's path, so moving a client to another region (a routing
# change, a region failing /readyz, an endpoint group edited) strands nothing: the client's
# session is on a unicast address the accelerator never touches. Client addresses are
# preserved (NLBs with security groups), which TURN needs.

locals {
  accelerator_listeners = {
    udp = { protocol = "UDP", ports = [3478] }
    tcp = { protocol = "TCP", ports = [3478, 5349, 443] }
  }
  accelerator_ports = distinct(flatten([for l in values(local.accelerator_listeners) : l.ports]))
  # One endpoint group per listener and region (an endpoint group belongs to one listener).
  accelerator_endpoint_groups = {
    for pair in setproduct(keys(local.accelerator_listeners), keys(var.regions)) :
    "${pair[0]}-${pair[1]}" => { listener = pair[0], region = pair[1] }
  }
  # Endpoint port -> the listener ports sent to it, over every region and listener: an
  # accelerator refuses one endpoint port reached from two listener ports.
  first_contact_sources = {
    for o in flatten([
      for r in values(var.regions) : [
        for proto, ports in r.first_contact_ports : [
          for listener_port, endpoint_port in ports : { listener_port = listener_port, endpoint_port = endpoint_port }
        ]
      ]
    ]) : tostring(o.endpoint_port) => o.listener_port...
  }

  anycast_fqdn = "anycast.${var.turn_hostname}.${var.domain}"
  # For the credential API (modules/relay-region api.anycast_urls -> GEOTURN_ANYCAST_URLS): the
  # last ICE server of every answer. TLS on 443 for networks that allow nothing else; the
  # relays' certificate must cover anycast_fqdn.
  anycast_urls = [
    "turn:${local.anycast_fqdn}:3478?transport=udp",
    "turn:${local.anycast_fqdn}:3478?transport=tcp",
    "turns:${local.anycast_fqdn}:443?transport=tcp",
  ]
}

resource "aws_globalaccelerator_accelerator" "turn" {
  name            = "${var.name}-turn"
  ip_address_type = "IPV4"
  enabled         = true
}

resource "aws_globalaccelerator_listener" "turn" {
  for_each        = local.accelerator_listeners
  accelerator_arn = aws_globalaccelerator_accelerator.turn.id
  protocol        = each.value.protocol
  # A client's flows (UDP and its TCP/TLS fallbacks) land in the same region.
  client_affinity = "SOURCE_IP"

  dynamic "port_range" {
    for_each = each.value.ports
    content {
      from_port = port_range.value
      to_port   = port_range.value
    }
  }
}

# Health comes from the load balancer's target health: the first-contact target groups check
# the relays' /readyz on the ops port, so a region whose relays all drain or fail leaves the
# accelerator (the endpoint group's own health check settings apply only to EC2 and Elastic IP
# endpoints, never to load balancers).
resource "aws_globalaccelerator_endpoint_group" "turn" {
  for_each              = local.accelerator_endpoint_groups
  listener_arn          = aws_globalaccelerator_listener.turn[each.value.listener].id
  endpoint_group_region = var.regions[each.value.region].aws_region

  endpoint_configuration {
    endpoint_id                    = var.regions[each.value.region].nlb_arn
    weight                         = 100
    client_ip_preservation_enabled = true
  }

  # Every listener port goes to the region's first-contact port, never to the same-numbered
  # unicast listener (where an Allocate would succeed and live on the anycast path). A port
  # the region does not map fails the plan here.
  dynamic "port_override" {
    for_each = local.accelerator_listeners[each.value.listener].ports
    content {
      listener_port = port_override.value
      endpoint_port = var.regions[each.value.region].first_contact_ports[each.value.listener][tostring(port_override.value)]
    }
  }

  lifecycle {
    precondition {
      condition = alltrue([
        for p in values(var.regions[each.value.region].first_contact_ports[each.value.listener]) :
        !contains(local.accelerator_ports, p)
      ])
      error_message = "A first-contact port of region ${each.value.region} is also an accelerator listener port; Global Accelerator refuses such port overrides."
    }
    precondition {
      condition     = alltrue([for ep, lps in local.first_contact_sources : length(distinct(lps)) == 1])
      error_message = "Two different accelerator ports map to one first-contact port (in some region); Global Accelerator refuses that."
    }
  }
}

# --- DNS ---------------------------------------------------------------------------------
# Latency records alias each region's load balancer with evaluate_target_health: a region
# whose relays all fail /readyz (checked by its load balancer from inside the VPC, on the ops
# port 9641) leaves the answers. A standalone Route 53 HTTP health check would need 9641 open
# to Route 53's public checkers, which the ops listener must never be.

resource "aws_route53_record" "turn" {
  for_each       = var.regions
  zone_id        = var.zone_id
  name           = "${var.turn_hostname}.${var.domain}"
  type           = "A"
  set_identifier = each.key

  latency_routing_policy {
    region = each.value.aws_region
  }

  alias {
    name                   = each.value.nlb_dns_name
    zone_id                = each.value.nlb_zone_id
    evaluate_target_health = true
  }
}

# <region>.turn.<domain>: a name per region, for TLS certificates and pinned clients.
resource "aws_route53_record" "turn_regional" {
  for_each = var.regions
  zone_id  = var.zone_id
  name     = "${each.key}.${var.turn_hostname}.${var.domain}"
  type     = "A"

  alias {
    name                   = each.value.nlb_dns_name
    zone_id                = each.value.nlb_zone_id
    evaluate_target_health = true
  }
}

# anycast.turn.<domain>: the accelerator's static addresses (first contact only, see above).
resource "aws_route53_record" "turn_anycast" {
  zone_id = var.zone_id
  name    = local.anycast_fqdn
  type    = "A"
  ttl     = 300
  records = aws_globalaccelerator_accelerator.turn.ip_sets[0].ip_addresses
}

resource "aws_route53_record" "api" {
  for_each       = { for k, r in var.regions : k => r if r.with_api }
  zone_id        = var.zone_id
  name           = "${var.api_hostname}.${var.domain}"
  type           = "A"
  set_identifier = each.key

  latency_routing_policy {
    region = each.value.aws_region
  }

  alias {
    name                   = each.value.api_alb_dns_name
    zone_id                = each.value.api_alb_zone_id
    evaluate_target_health = true
  }
}
