locals {
  name = "${var.name}-${var.region_name}"
  tags = merge({ "geoturn:region" = var.region_name }, var.tags)

  # Ports the relay listens on; cloud-init.yaml.tftpl configures it with these very values.
  turn_port      = 3478
  turns_port     = 5349
  turns_alt_port = 443
  ops_port       = 9641

  # Fixed names, because the instances need them (user data) and the group needs the user data.
  asg_name            = "${local.name}-relays"
  lifecycle_hook_name = "drain"
}

data "aws_region" "current" {}
