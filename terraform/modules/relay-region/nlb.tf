# The region's entry point for clients that have no ICE-server answer from the credential API
# yet: a Network Load Balancer over the relays. The API itself hands out each relay's own
# address. The target groups' health check is the relays' /readyz, so a draining relay stops
# receiving new clients at once.
#
# Two kinds of listener:
# - unicast ports (3478, 5349, 443) for latency DNS (turn.<domain>, <region>.turn.<domain>);
# - first-contact ports, where Global Accelerator sends its 3478/5349/443 (modules/global port
#   overrides). Behind them the relays' anycast listeners answer Allocate with 300 Try Alternate
#   to a relay's own public address, so no allocation lives on the accelerator's path, which a
#   routing or endpoint-group change would cut.

locals {
  nlb_listeners = {
    turn                  = { port = local.turn_port, protocol = "TCP_UDP" }
    turns                 = { port = local.turns_port, protocol = "TCP" }
    turns_alt             = { port = local.turns_alt_port, protocol = "TCP" }
    first_contact         = { port = local.first_contact_port, protocol = "TCP_UDP" }
    first_contact_tls     = { port = local.first_contact_tls_port, protocol = "TCP" }
    first_contact_tls_alt = { port = local.first_contact_tls_alt_port, protocol = "TCP" }
  }
}

resource "aws_lb" "relays" {
  name_prefix                      = "gturn-"
  load_balancer_type               = "network"
  internal                         = false
  subnets                          = aws_subnet.public[*].id
  security_groups                  = [aws_security_group.nlb.id]
  enable_cross_zone_load_balancing = true
  tags                             = merge(local.tags, { Name = "${local.name}-relays" })
}

resource "aws_lb_target_group" "relays" {
  for_each    = local.nlb_listeners
  name_prefix = "gturn-"
  vpc_id      = aws_vpc.this.id
  port        = each.value.port
  protocol    = each.value.protocol
  target_type = "instance"
  # Instance targets see the client's own address: nonces and XOR-MAPPED-ADDRESS depend on it.
  preserve_client_ip = true
  # Flows of a deregistered (scaling-in) relay continue while it drains.
  deregistration_delay   = min(var.drain_timeout, 3600)
  connection_termination = false

  health_check {
    protocol            = "HTTP"
    port                = tostring(local.ops_port)
    path                = "/readyz"
    matcher             = "200"
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }

  tags = local.tags

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_lb_listener" "relays" {
  for_each          = local.nlb_listeners
  load_balancer_arn = aws_lb.relays.arn
  port              = each.value.port
  protocol          = each.value.protocol

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.relays[each.key].arn
  }
}
