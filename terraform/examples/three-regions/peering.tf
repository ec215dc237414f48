# The registry lives in eu-central-1's VPC and ElastiCache has no public endpoint: the other
# regions reach it over inter-region VPC peering (hub and spoke). Transit Gateway peering does
# the same for larger networks.

resource "aws_vpc_peering_connection" "us_east" {
  provider    = aws.us_east
  vpc_id      = module.us_east.vpc_id
  peer_vpc_id = module.eu_central.vpc_id
  peer_region = local.primary_region
  tags        = { Name = "geoturn-us-east-to-eu-central" }
}

resource "aws_vpc_peering_connection_accepter" "us_east" {
  provider                  = aws.eu_central
  vpc_peering_connection_id = aws_vpc_peering_connection.us_east.id
  auto_accept               = true
}

resource "aws_route" "us_east_to_primary" {
  provider                  = aws.us_east
  route_table_id            = module.us_east.route_table_id
  destination_cidr_block    = module.eu_central.vpc_cidr
  vpc_peering_connection_id = aws_vpc_peering_connection.us_east.id
}

resource "aws_route" "primary_to_us_east" {
  provider                  = aws.eu_central
  route_table_id            = module.eu_central.route_table_id
  destination_cidr_block    = module.us_east.vpc_cidr
  vpc_peering_connection_id = aws_vpc_peering_connection.us_east.id
}

resource "aws_vpc_peering_connection" "ap_southeast" {
  provider    = aws.ap_southeast
  vpc_id      = module.ap_southeast.vpc_id
  peer_vpc_id = module.eu_central.vpc_id
  peer_region = local.primary_region
  tags        = { Name = "geoturn-ap-southeast-to-eu-central" }
}

resource "aws_vpc_peering_connection_accepter" "ap_southeast" {
  provider                  = aws.eu_central
  vpc_peering_connection_id = aws_vpc_peering_connection.ap_southeast.id
  auto_accept               = true
}

resource "aws_route" "ap_southeast_to_primary" {
  provider                  = aws.ap_southeast
  route_table_id            = module.ap_southeast.route_table_id
  destination_cidr_block    = module.eu_central.vpc_cidr
  vpc_peering_connection_id = aws_vpc_peering_connection.ap_southeast.id
}

resource "aws_route" "primary_to_ap_southeast" {
  provider                  = aws.eu_central
  route_table_id            = module.eu_central.route_table_id
  destination_cidr_block    = module.ap_southeast.vpc_cidr
  vpc_peering_connection_id = aws_vpc_peering_connection.ap_southeast.id
}
