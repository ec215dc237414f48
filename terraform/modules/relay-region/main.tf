locals {
  name = "${var.name}-${var.region_name}"
  tags = merge({ "geoturn:region" = var.region_name }, var.tags)

  # Ports the relay listens on; cloud-init.yaml.tftpl configures it with these very values.
  # Unicast: each relay's own public address on these is what clients allocate on (the
  # credential API's answers, the registry, the targets of the relays' 300 Try Alternate).
  turn_port      = 3478
  turns_port     = 5349
  turns_alt_port = 443
  ops_port       = 9641
  # The relay mesh (GEOTURN_MESH_LISTEN): QUIC between relays only (firewall.tf).
  mesh_port = 9643

  # First contact (GEOTURN_ANYCAST_LISTEN / GEOTURN_ANYCAST_TLS_LISTEN): what Global
  # Accelerator's 3478, 5349 and 443 reach through the load balancer. An Allocate there is
  # answered with a signed 300 Try Alternate to a relay's unicast address above, so nothing
  # that arrives over the accelerator's anycast path ever holds an allocation.
  first_contact_port         = var.first_contact_port
  first_contact_tls_port     = var.first_contact_tls_port
  first_contact_tls_alt_port = var.first_contact_tls_alt_port
  # Client-facing port -> the first-contact port behind it, per protocol (output
  # first_contact_ports: modules/global's port overrides). A TLS port maps to a TLS one.
  first_contact_ports = {
    udp = {
      "${local.turn_port}" = local.first_contact_port
    }
    tcp = {
      "${local.turn_port}"      = local.first_contact_port
      "${local.turns_port}"     = local.first_contact_tls_port
      "${local.turns_alt_port}" = local.first_contact_tls_alt_port
    }
  }

  # Fixed names, because the instances need them (user data) and the group needs the user data.
  asg_name            = "${local.name}-relays"
  lifecycle_hook_name = "drain"
}

data "aws_region" "current" {}
