locals {
  # What clients reach, on the relays and on the region's load balancer: the unicast listeners
  # and the first-contact ones (Global Accelerator preserves client addresses, so both the load
  # balancer's group and the relays' see the client's own address, from anywhere).
  listener_ingress = {
    turn_udp              = { protocol = "udp", from = local.turn_port, to = local.turn_port }
    turn_tcp              = { protocol = "tcp", from = local.turn_port, to = local.turn_port }
    turns                 = { protocol = "tcp", from = local.turns_port, to = local.turns_port }
    turns_alt             = { protocol = "tcp", from = local.turns_alt_port, to = local.turns_alt_port }
    first_contact_udp     = { protocol = "udp", from = local.first_contact_port, to = local.first_contact_port }
    first_contact_tcp     = { protocol = "tcp", from = local.first_contact_port, to = local.first_contact_port }
    first_contact_tls     = { protocol = "tcp", from = local.first_contact_tls_port, to = local.first_contact_tls_port }
    first_contact_tls_alt = { protocol = "tcp", from = local.first_contact_tls_alt_port, to = local.first_contact_tls_alt_port }
  }
  # Plus the relayed addresses, which peers reach directly: UDP, and TCP for RFC 6062 TCP
  # allocations, which listen in the same range.
  relay_ingress = merge(local.listener_ingress, {
    relayed_udp = { protocol = "udp", from = var.relay_port_min, to = var.relay_port_max }
    relayed_tcp = { protocol = "tcp", from = var.relay_port_min, to = var.relay_port_max }
  })
}

resource "aws_security_group" "relay" {
  name_prefix = "${local.name}-relay-"
  description = "geoturn relays: TURN from anywhere, ops from the VPC"
  vpc_id      = aws_vpc.this.id
  tags        = merge(local.tags, { Name = "${local.name}-relay" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "relay_public" {
  for_each          = local.relay_ingress
  security_group_id = aws_security_group.relay.id
  description       = each.key
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = each.value.protocol
  from_port         = each.value.from
  to_port           = each.value.to
}

# /metrics, /readyz (load balancer health checks come from inside the VPC) and POST /drain:
# never from the internet.
resource "aws_vpc_security_group_ingress_rule" "relay_ops" {
  for_each          = toset(concat([var.vpc_cidr], var.ops_cidrs))
  security_group_id = aws_security_group.relay.id
  description       = "ops HTTP"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = local.ops_port
  to_port           = local.ops_port
}

# The relay mesh (QUIC, UDP 9643): other relays only. This region's relays by their security
# group; other regions' relays (other VPCs, reached over their public addresses) by
# var.mesh_peer_cidrs. Peers are also pinned by certificate through the registry, so an
# address here that is not a relay gets nothing but a refused handshake.
resource "aws_vpc_security_group_ingress_rule" "relay_mesh_region" {
  security_group_id            = aws_security_group.relay.id
  description                  = "relay mesh from this region's relays"
  referenced_security_group_id = aws_security_group.relay.id
  ip_protocol                  = "udp"
  from_port                    = local.mesh_port
  to_port                      = local.mesh_port
}

resource "aws_vpc_security_group_ingress_rule" "relay_mesh_peers" {
  for_each          = toset(var.mesh_peer_cidrs)
  security_group_id = aws_security_group.relay.id
  description       = "relay mesh from other regions' relays"
  cidr_ipv4         = each.value
  ip_protocol       = "udp"
  from_port         = local.mesh_port
  to_port           = local.mesh_port
}

# Relays send to any peer, on any port.
resource "aws_vpc_security_group_egress_rule" "relay_all" {
  security_group_id = aws_security_group.relay.id
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "-1"
}

# The load balancer has its own group: Global Accelerator preserves client addresses only for
# Network Load Balancers that have one.
resource "aws_security_group" "nlb" {
  name_prefix = "${local.name}-nlb-"
  description = "geoturn relay load balancer: TURN listeners"
  vpc_id      = aws_vpc.this.id
  tags        = merge(local.tags, { Name = "${local.name}-nlb" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "nlb_public" {
  for_each          = local.listener_ingress
  security_group_id = aws_security_group.nlb.id
  description       = each.key
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = each.value.protocol
  from_port         = each.value.from
  to_port           = each.value.to
}

resource "aws_vpc_security_group_egress_rule" "nlb_to_relays" {
  security_group_id            = aws_security_group.nlb.id
  referenced_security_group_id = aws_security_group.relay.id
  ip_protocol                  = "-1"
}
