# Optional read replica of the global registry in this region (var.registry_replica; the
# primary and the global datastore come from modules/global). Relays and API instances keep
# writing to the primary endpoint; the replica is there to be promoted if the primary region
# fails (then open it to the other regions' CIDRs as modules/global does for the primary).

locals {
  redis_count = var.registry_replica == null ? 0 : 1
}

resource "aws_elasticache_subnet_group" "redis" {
  count      = local.redis_count
  name       = "${local.name}-registry"
  subnet_ids = aws_subnet.public[*].id
  tags       = local.tags
}

resource "aws_security_group" "redis" {
  count       = local.redis_count
  name_prefix = "${local.name}-registry-"
  description = "geoturn registry replica"
  vpc_id      = aws_vpc.this.id
  tags        = merge(local.tags, { Name = "${local.name}-registry" })
}

resource "aws_vpc_security_group_ingress_rule" "redis" {
  count             = local.redis_count
  security_group_id = aws_security_group.redis[0].id
  cidr_ipv4         = var.vpc_cidr
  ip_protocol       = "tcp"
  from_port         = 6379
  to_port           = 6379
}

# Engine, node type, TLS and auth come from the global datastore.
resource "aws_elasticache_replication_group" "secondary" {
  count                       = local.redis_count
  replication_group_id        = "${local.name}-registry"
  description                 = "geoturn registry replica (${var.region_name})"
  global_replication_group_id = var.registry_replica.global_replication_group_id
  num_cache_clusters          = 1
  subnet_group_name           = aws_elasticache_subnet_group.redis[0].name
  security_group_ids          = [aws_security_group.redis[0].id]
  tags                        = local.tags
}
