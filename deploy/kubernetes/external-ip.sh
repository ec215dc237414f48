#!/bin/sh
# Init container of the relay pod: finds the node's public IPv4 address and writes it, with the
# node's private address, into the relay's config file as `external-ip = ["PUBLIC/PRIVATE"]`.
# On AWS, GCP and Azure a node's public address is 1:1 NAT and on no interface, so without this
# the relay would tell clients a private relayed address (and host networking alone cannot fix
# that). Relayed sockets then bind to PRIVATE and clients are told PUBLIC.
#
# Environment:
#   GEOTURN_CONFIG  file to write (the relay container reads the same variable) [required]
#   HOST_IP         the node's private address (downward API: status.hostIP)
#   EXTERNAL_IP     the public address; set it to skip the metadata services
# Otherwise asks, in order, AWS IMDSv2, GCP and Azure instance metadata (2 s each). When none
# answers (bare metal with the public address on an interface), it writes no external-ip and the
# relay advertises the address it binds to. Needs curl only when EXTERNAL_IP is unset.

set -eu

say() { echo "external-ip: $*" >&2; }

out=${GEOTURN_CONFIG:?set GEOTURN_CONFIG to the relay config file to write}
private=${HOST_IP:-}
public=${EXTERNAL_IP:-}

metadata() { curl -fsS -m 2 "$@" 2>/dev/null; }

if [ -z "$public" ]; then
	command -v curl >/dev/null 2>&1 || { say "needs curl (or set EXTERNAL_IP)"; exit 1; }
	imds=http://169.254.169.254
	if token=$(metadata -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 60' "$imds/latest/api/token"); then
		public=$(metadata -H "X-aws-ec2-metadata-token: $token" "$imds/latest/meta-data/public-ipv4") || public=
	elif public=$(metadata -H 'Metadata-Flavor: Google' \
		"$imds/computeMetadata/v1/instance/network-interfaces/0/access-configs/0/external-ip"); then
		:
	else
		public=$(metadata -H 'Metadata: true' \
			"$imds/metadata/instance/network/interface/0/ipv4/ipAddress/0/publicIpAddress?api-version=2021-02-01&format=text") ||
			public=
	fi
fi

# Whatever answered, only a dotted IPv4 address goes into the file (an error page must not).
case $public in
'' | *[!0-9.]* | .* | *. | *..*) [ -z "$public" ] || say "ignoring '$public': not an IPv4 address"; public= ;;
esac
case $private in
*[!0-9a-fA-F.:]*) say "ignoring HOST_IP '$private'"; private= ;;
esac

mkdir -p "$(dirname "$out")"
{
	echo "# Written by external-ip.sh when the pod started."
	if [ -n "$public" ] && [ "$public" != "$private" ]; then
		echo "external-ip = [\"$public${private:+/$private}\"]"
		say "public $public${private:+, private $private}"
	else
		echo "# No public address found: the relay advertises the address it binds to."
		say "no public address found: the relay advertises its own"
	fi
} >"$out.tmp"
mv "$out.tmp" "$out"
