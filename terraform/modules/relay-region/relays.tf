data "aws_ssm_parameter" "al2023" {
  count = var.ami_id == null ? 1 : 0
  name  = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
}

resource "aws_launch_template" "relay" {
  name_prefix            = "${local.name}-relay-"
  image_id               = var.ami_id != null ? var.ami_id : data.aws_ssm_parameter.al2023[0].insecure_value
  instance_type          = var.instance_type
  update_default_version = true

  iam_instance_profile {
    arn = aws_iam_instance_profile.relay.arn
  }

  network_interfaces {
    device_index                = 0
    associate_public_ip_address = true
    security_groups             = [aws_security_group.relay.id]
    delete_on_termination       = true
  }

  # IMDSv2 only, one hop: a relayed peer can never reach it (the relay refuses 169.254.0.0/16
  # peers anyway), and containers on the host cannot either.
  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  # No secret in here: the instance reads them from Secrets Manager at every relay start.
  user_data = base64encode(templatefile("${path.module}/cloud-init.yaml.tftpl", {
    geoturn_url                = var.geoturn_url
    geoturn_sha256             = var.geoturn_sha256
    secret_arn                 = var.secret_arn
    region_name                = var.region_name
    latitude                   = var.latitude
    longitude                  = var.longitude
    realm                      = var.realm
    turn_port                  = local.turn_port
    turns_port                 = local.turns_port
    turns_alt_port             = local.turns_alt_port
    first_contact_port         = local.first_contact_port
    first_contact_tls_port     = local.first_contact_tls_port
    first_contact_tls_alt_port = local.first_contact_tls_alt_port
    ops_port                   = local.ops_port
    mesh_port                  = local.mesh_port
    relay_port_min             = var.relay_port_min
    relay_port_max             = var.relay_port_max
    capacity_allocations       = var.capacity_allocations
    capacity_mbps              = var.capacity_mbps
    drain_timeout              = var.drain_timeout
    asg_name                   = local.asg_name
    lifecycle_hook_name        = local.lifecycle_hook_name
    relay_domain               = var.relay_names == null ? "" : var.relay_names.domain
    relay_zone_id              = var.relay_names == null ? "" : var.relay_names.zone_id
    # The same files as a hand-made install (deploy/): one unit, one drain script.
    relay_unit = file("${path.module}/../../../deploy/systemd/geoturn-relay.service")
    sysusers   = file("${path.module}/../../../deploy/systemd/geoturn.sysusers")
    prestop    = file("${path.module}/../../../deploy/kubernetes/prestop.sh")
  }))

  tag_specifications {
    resource_type = "instance"
    tags          = merge(local.tags, { Name = "${local.name}-relay" })
  }

  tags = local.tags

  lifecycle {
    # The relay refuses an anycast address that is also a unicast one; a port shared by two
    # listeners, or inside the relayed range, could not work either.
    precondition {
      condition = length(distinct([
        local.turn_port, local.turns_port, local.turns_alt_port, local.ops_port,
        local.first_contact_port, local.first_contact_tls_port, local.first_contact_tls_alt_port,
      ])) == 7
      error_message = "first_contact_port, first_contact_tls_port and first_contact_tls_alt_port must differ from each other and from 3478, 5349, 443 and 9641."
    }
    precondition {
      condition = alltrue([
        for p in [local.first_contact_port, local.first_contact_tls_port, local.first_contact_tls_alt_port] :
        p < var.relay_port_min || p > var.relay_port_max
      ])
      error_message = "The first-contact ports must lie outside the relayed range (relay_port_min-relay_port_max)."
    }
  }
}

resource "aws_autoscaling_group" "relays" {
  name                = local.asg_name
  min_size            = var.min_size
  max_size            = var.max_size
  vpc_zone_identifier = aws_subnet.public[*].id
  target_group_arns   = [for tg in aws_lb_target_group.relays : tg.arn]
  # EC2 health, not the load balancer's: a draining relay answers 503 on /readyz and must not
  # be replaced for it.
  health_check_type         = "EC2"
  health_check_grace_period = 120
  termination_policies      = ["OldestLaunchTemplate", "OldestInstance"]

  launch_template {
    id      = aws_launch_template.relay.id
    version = aws_launch_template.relay.latest_version
  }

  # Scale-in (and instance refresh) waits here while the instance's handler drains the relay,
  # then completes the action; if the handler never does, the timeout lets termination go on.
  initial_lifecycle_hook {
    name                 = local.lifecycle_hook_name
    lifecycle_transition = "autoscaling:EC2_INSTANCE_TERMINATING"
    heartbeat_timeout    = var.drain_timeout + 300
    default_result       = "CONTINUE"
  }

  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 90
    }
  }

  dynamic "tag" {
    for_each = merge(local.tags, { Name = "${local.name}-relay" })
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }
}

resource "aws_autoscaling_policy" "cpu" {
  name                   = "${local.name}-cpu"
  autoscaling_group_name = aws_autoscaling_group.relays.name
  policy_type            = "TargetTrackingScaling"

  target_tracking_configuration {
    predefined_metric_specification {
      predefined_metric_type = "ASGAverageCPUUtilization"
    }
    target_value = var.target_cpu_utilization
  }
}
