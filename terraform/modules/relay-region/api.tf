# The credential API in this region (optional): ECS Fargate tasks behind an HTTPS Application
# Load Balancer. The API is stateless; every region's instances read the same registry.

locals {
  api_count = var.api == null ? 0 : 1
  api_port  = 8080
}

resource "aws_security_group" "api_alb" {
  count       = local.api_count
  name_prefix = "${local.name}-api-alb-"
  description = "geoturn credential API load balancer"
  vpc_id      = aws_vpc.this.id
  tags        = merge(local.tags, { Name = "${local.name}-api-alb" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "api_alb_https" {
  count             = local.api_count
  security_group_id = aws_security_group.api_alb[0].id
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_egress_rule" "api_alb_to_tasks" {
  count                        = local.api_count
  security_group_id            = aws_security_group.api_alb[0].id
  referenced_security_group_id = aws_security_group.api_tasks[0].id
  ip_protocol                  = "tcp"
  from_port                    = local.api_port
  to_port                      = local.api_port
}

resource "aws_security_group" "api_tasks" {
  count       = local.api_count
  name_prefix = "${local.name}-api-"
  description = "geoturn credential API tasks"
  vpc_id      = aws_vpc.this.id
  tags        = merge(local.tags, { Name = "${local.name}-api" })

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "api_tasks_from_alb" {
  count                        = local.api_count
  security_group_id            = aws_security_group.api_tasks[0].id
  referenced_security_group_id = aws_security_group.api_alb[0].id
  ip_protocol                  = "tcp"
  from_port                    = local.api_port
  to_port                      = local.api_port
}

# Image pulls, Secrets Manager, and the registry (Redis, possibly in a peered region).
resource "aws_vpc_security_group_egress_rule" "api_tasks_all" {
  count             = local.api_count
  security_group_id = aws_security_group.api_tasks[0].id
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "-1"
}

resource "aws_lb" "api" {
  count              = local.api_count
  name_prefix        = "gtapi-"
  load_balancer_type = "application"
  internal           = false
  subnets            = aws_subnet.lb[*].id
  security_groups    = [aws_security_group.api_alb[0].id]
  # Below the API's own 30 s idle timeout, so the ALB never reuses a connection the API is
  # closing (which would surface as a 502).
  idle_timeout = 25
  tags         = merge(local.tags, { Name = "${local.name}-api" })
}

resource "aws_lb_target_group" "api" {
  count                = local.api_count
  name_prefix          = "gtapi-"
  vpc_id               = aws_vpc.this.id
  port                 = local.api_port
  protocol             = "HTTP"
  target_type          = "ip"
  deregistration_delay = 30

  health_check {
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

resource "aws_lb_listener" "api" {
  count             = local.api_count
  load_balancer_arn = aws_lb.api[0].arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.api.certificate_arn

  # Only the API's own endpoints (/v1/...: ICE servers, the TURN REST and Cloudflare shapes,
  # relays and admin, each authenticated) and its description reach the internet; /metrics,
  # /readyz and the dashboard stay inside the VPC (the target group's health checks reach the
  # tasks directly).
  default_action {
    type = "fixed-response"
    fixed_response {
      content_type = "application/json"
      status_code  = "404"
      message_body = jsonencode({ error = { code = "not_found", message = "no such endpoint" } })
    }
  }
}

resource "aws_lb_listener_rule" "api_public" {
  count        = local.api_count
  listener_arn = aws_lb_listener.api[0].arn
  priority     = 10

  condition {
    path_pattern {
      values = ["/v1/*", "/openapi.json"]
    }
  }

  action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.api[0].arn
  }
}

resource "aws_ecs_cluster" "api" {
  count = local.api_count
  name  = "${local.name}-api"
  tags  = local.tags
}

resource "aws_cloudwatch_log_group" "api" {
  count             = local.api_count
  name              = "/${var.name}/${var.region_name}/api"
  retention_in_days = 30
  tags              = local.tags
}

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

# ECS itself reads the secret's fields into the task's environment; the task has no role.
resource "aws_iam_role" "api_execution" {
  count              = local.api_count
  name_prefix        = "${var.name}-api-"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = local.tags
}

resource "aws_iam_role_policy_attachment" "api_execution" {
  count      = local.api_count
  role       = aws_iam_role.api_execution[0].name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

data "aws_iam_policy_document" "api_secret" {
  statement {
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.secret_arn]
  }

  dynamic "statement" {
    for_each = var.secret_kms_key_arn == null ? [] : [var.secret_kms_key_arn]
    content {
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_role_policy" "api_secret" {
  count       = local.api_count
  name_prefix = "${var.name}-api-secret-"
  role        = aws_iam_role.api_execution[0].id
  policy      = data.aws_iam_policy_document.api_secret.json
}

resource "aws_ecs_task_definition" "api" {
  count                    = local.api_count
  family                   = "${local.name}-api"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = tostring(var.api.cpu)
  memory                   = tostring(var.api.memory)
  execution_role_arn       = aws_iam_role.api_execution[0].arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }

  # The image's default capabilities are kept: its binary carries cap_net_bind_service, and
  # exec refuses it when the bounding set lacks that capability (deploy/Dockerfile).
  container_definitions = jsonencode([{
    name      = "api"
    image     = var.api.image
    essential = true
    # API keys (hashed) come as a config file; ECS gives secrets only as variables.
    entryPoint = ["/bin/sh", "-c"]
    command    = ["umask 077 && printf '%s' \"$API_CONFIG_TOML\" > /tmp/api.toml && exec geoturn api --config /tmp/api.toml"]
    portMappings = [{
      containerPort = local.api_port
      protocol      = "tcp"
    }]
    environment = concat(
      [
        { name = "GEOTURN_API_LISTEN", value = "0.0.0.0:${local.api_port}" },
        { name = "GEOTURN_DEFAULT_REGION", value = var.region_name },
        # X-Forwarded-For is believed from the load balancer's own subnets only (network.tf).
        { name = "GEOTURN_TRUSTED_PROXIES", value = join(",", local.lb_cidrs) },
        { name = "GEOTURN_LOG_JSON", value = "true" },
      ],
      length(var.api.geoip_paths) == 0 ? [] : [{ name = "GEOTURN_GEOIP", value = join(",", var.api.geoip_paths) }],
      # Anycast URLs last in every answer; their first contact is redirected to a unicast relay.
      length(var.api.anycast_urls) == 0 ? [] : [{ name = "GEOTURN_ANYCAST_URLS", value = join(",", var.api.anycast_urls) }],
    )
    secrets = [
      { name = "GEOTURN_REGISTRY", valueFrom = "${var.secret_arn}:registry_url::" },
      { name = "GEOTURN_SECRETS_KEY", valueFrom = "${var.secret_arn}:secrets_key::" },
      { name = "API_CONFIG_TOML", valueFrom = "${var.secret_arn}:api_config_toml::" },
    ]
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.api[0].name
        awslogs-region        = data.aws_region.current.name
        awslogs-stream-prefix = "api"
      }
    }
  }])

  tags = local.tags
}

resource "aws_ecs_service" "api" {
  count           = local.api_count
  name            = "geoturn-api"
  cluster         = aws_ecs_cluster.api[0].id
  task_definition = aws_ecs_task_definition.api[0].arn
  desired_count   = var.api.desired_count
  launch_type     = "FARGATE"

  # Public subnets without a NAT gateway: the task's public address pulls the image.
  network_configuration {
    subnets          = aws_subnet.public[*].id
    security_groups  = [aws_security_group.api_tasks[0].id]
    assign_public_ip = true
  }

  load_balancer {
    target_group_arn = aws_lb_target_group.api[0].arn
    container_name   = "api"
    container_port   = local.api_port
  }

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  # Application Auto Scaling owns the count.
  lifecycle {
    ignore_changes = [desired_count]
  }

  depends_on = [aws_lb_listener.api]
  tags       = local.tags
}

resource "aws_appautoscaling_target" "api" {
  count              = local.api_count
  service_namespace  = "ecs"
  resource_id        = "service/${aws_ecs_cluster.api[0].name}/${aws_ecs_service.api[0].name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.api.desired_count
  max_capacity       = var.api.max_count
}

resource "aws_appautoscaling_policy" "api_cpu" {
  count              = local.api_count
  name               = "${local.name}-api-cpu"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.api[0].service_namespace
  resource_id        = aws_appautoscaling_target.api[0].resource_id
  scalable_dimension = aws_appautoscaling_target.api[0].scalable_dimension

  target_tracking_scaling_policy_configuration {
    predefined_metric_specification {
      predefined_metric_type = "ECSServiceAverageCPUUtilization"
    }
    target_value = 70
  }
}
