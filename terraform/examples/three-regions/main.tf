# geoturn in three AWS regions: relays (and the credential API) in us-east-1, eu-central-1 and
# ap-southeast-1, one registry whose primary is in eu-central-1, anycast (first contact only:
# the relays redirect an Allocate to their unicast addresses) and latency DNS in front.
# terraform/README.md walks through it.

terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.60"
    }
    random = {
      source  = "hashicorp/random"
      version = ">= 3.5"
    }
  }
}

provider "aws" {
  alias  = "us_east"
  region = "us-east-1"
}

provider "aws" {
  alias  = "eu_central"
  region = "eu-central-1"
}

provider "aws" {
  alias  = "ap_southeast"
  region = "ap-southeast-1"
}

locals {
  primary_region = "eu-central-1"
  # Every relay is INSTANCE_ID.relays.<domain>; the certificate in the secret covers the
  # wildcard (terraform/README.md).
  relay_names = { domain = "relays.${var.domain}", zone_id = var.zone_id }
  relay_common = {
    geoturn_url    = var.geoturn_url
    geoturn_sha256 = var.geoturn_sha256
  }
}

module "us_east" {
  source    = "../../modules/relay-region"
  providers = { aws = aws.us_east }

  region_name        = "us-east"
  latitude           = 38.9
  longitude          = -77.4
  vpc_cidr           = "10.10.0.0/16"
  availability_zones = ["us-east-1a", "us-east-1b", "us-east-1c"]
  geoturn_url        = local.relay_common.geoturn_url
  geoturn_sha256     = local.relay_common.geoturn_sha256
  secret_arn         = module.global.secret_arns["us-east-1"]
  realm              = var.domain
  relay_names        = local.relay_names
  api = {
    image           = var.api_image
    certificate_arn = var.api_certificate_arns["us-east-1"]
    anycast_urls    = module.global.anycast_urls
  }
  registry_replica = {
    global_replication_group_id = module.global.redis_global_replication_group_id
  }
}

module "eu_central" {
  source    = "../../modules/relay-region"
  providers = { aws = aws.eu_central }

  region_name        = "eu-central"
  latitude           = 50.1
  longitude          = 8.7
  vpc_cidr           = "10.20.0.0/16"
  availability_zones = ["eu-central-1a", "eu-central-1b", "eu-central-1c"]
  geoturn_url        = local.relay_common.geoturn_url
  geoturn_sha256     = local.relay_common.geoturn_sha256
  secret_arn         = module.global.secret_arns["eu-central-1"]
  realm              = var.domain
  relay_names        = local.relay_names
  api = {
    image           = var.api_image
    certificate_arn = var.api_certificate_arns["eu-central-1"]
    anycast_urls    = module.global.anycast_urls
  }
}

module "ap_southeast" {
  source    = "../../modules/relay-region"
  providers = { aws = aws.ap_southeast }

  region_name        = "ap-southeast"
  latitude           = 1.35
  longitude          = 103.8
  vpc_cidr           = "10.30.0.0/16"
  availability_zones = ["ap-southeast-1a", "ap-southeast-1b", "ap-southeast-1c"]
  geoturn_url        = local.relay_common.geoturn_url
  geoturn_sha256     = local.relay_common.geoturn_sha256
  secret_arn         = module.global.secret_arns["ap-southeast-1"]
  realm              = var.domain
  relay_names        = local.relay_names
  api = {
    image           = var.api_image
    certificate_arn = var.api_certificate_arns["ap-southeast-1"]
    anycast_urls    = module.global.anycast_urls
  }
  registry_replica = {
    global_replication_group_id = module.global.redis_global_replication_group_id
  }
}

module "global" {
  source    = "../../modules/global"
  providers = { aws = aws.eu_central }

  primary_region         = local.primary_region
  secret_replica_regions = ["us-east-1", "ap-southeast-1"]
  zone_id                = var.zone_id
  domain                 = var.domain
  api_config_toml        = var.api_config_toml

  redis_vpc_id       = module.eu_central.vpc_id
  redis_subnet_ids   = module.eu_central.subnet_ids
  redis_client_cidrs = [module.us_east.vpc_cidr, module.eu_central.vpc_cidr, module.ap_southeast.vpc_cidr]

  # first_contact_ports: the accelerator sends its 3478/5349/443 to each region's first-contact
  # listeners (3479/5350/8443 by default), which redirect an Allocate to a unicast relay.
  regions = {
    us-east = {
      aws_region          = "us-east-1"
      nlb_arn             = module.us_east.nlb_arn
      nlb_dns_name        = module.us_east.nlb_dns_name
      nlb_zone_id         = module.us_east.nlb_zone_id
      with_api            = true
      api_alb_dns_name    = module.us_east.api_alb_dns_name
      api_alb_zone_id     = module.us_east.api_alb_zone_id
      first_contact_ports = module.us_east.first_contact_ports
    }
    eu-central = {
      aws_region          = "eu-central-1"
      nlb_arn             = module.eu_central.nlb_arn
      nlb_dns_name        = module.eu_central.nlb_dns_name
      nlb_zone_id         = module.eu_central.nlb_zone_id
      with_api            = true
      api_alb_dns_name    = module.eu_central.api_alb_dns_name
      api_alb_zone_id     = module.eu_central.api_alb_zone_id
      first_contact_ports = module.eu_central.first_contact_ports
    }
    ap-southeast = {
      aws_region          = "ap-southeast-1"
      nlb_arn             = module.ap_southeast.nlb_arn
      nlb_dns_name        = module.ap_southeast.nlb_dns_name
      nlb_zone_id         = module.ap_southeast.nlb_zone_id
      with_api            = true
      api_alb_dns_name    = module.ap_southeast.api_alb_dns_name
      api_alb_zone_id     = module.ap_southeast.api_alb_zone_id
      first_contact_ports = module.ap_southeast.first_contact_ports
    }
  }
}
