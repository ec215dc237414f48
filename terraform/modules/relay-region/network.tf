# One VPC per region with public subnets only: relays need public addresses (the relayed ones),
# and nothing here needs a NAT gateway.

resource "aws_vpc" "this" {
  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = merge(local.tags, { Name = local.name })
}

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id
  tags   = merge(local.tags, { Name = local.name })
}

resource "aws_subnet" "public" {
  count                   = length(var.availability_zones)
  vpc_id                  = aws_vpc.this.id
  availability_zone       = var.availability_zones[count.index]
  cidr_block              = cidrsubnet(var.vpc_cidr, 4, count.index)
  map_public_ip_on_launch = true
  tags                    = merge(local.tags, { Name = "${local.name}-${var.availability_zones[count.index]}" })
}

# Routes are separate resources (not inline) so a root module can add peering routes to it.
resource "aws_route_table" "public" {
  vpc_id = aws_vpc.this.id
  tags   = merge(local.tags, { Name = local.name })
}

resource "aws_route" "internet" {
  route_table_id         = aws_route_table.public.id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.this.id
}

resource "aws_route_table_association" "public" {
  count          = length(aws_subnet.public)
  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public.id
}

# Subnets for the API's load balancer and nothing else, so the API can believe X-Forwarded-For
# from exactly these addresses: any instance in the VPC could otherwise claim any client
# address (and with it another region's relays, or another caller's rate limit). One /26 per
# zone (an ALB needs a /27 or larger), carved from the last /20 of the VPC, which the /20s of
# the public subnets leave free up to 15 zones.
locals {
  lb_cidrs = [for i, zone in var.availability_zones : cidrsubnet(cidrsubnet(var.vpc_cidr, 4, 15), 6, i)]
}

resource "aws_subnet" "lb" {
  count             = length(var.availability_zones)
  vpc_id            = aws_vpc.this.id
  availability_zone = var.availability_zones[count.index]
  cidr_block        = local.lb_cidrs[count.index]
  tags              = merge(local.tags, { Name = "${local.name}-lb-${var.availability_zones[count.index]}" })
}

resource "aws_route_table_association" "lb" {
  count          = length(aws_subnet.lb)
  subnet_id      = aws_subnet.lb[count.index].id
  route_table_id = aws_route_table.public.id
}
