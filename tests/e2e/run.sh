#!/usr/bin/env bash
# Runs the end-to-end scenario by hand with its figures shown: three regions of relays on
# 127.0.0.11/12/21/31, Redis, the credential API on 127.0.0.2, a live call, and the faults
# (rotation, drain, SIGKILL, Redis loss, garbage). Also the NAT and anycast scenarios, which
# build network namespaces and need root, iproute2 and iptables.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v redis-server >/dev/null || { echo "needs redis-server (apt-get install redis-server)"; exit 1; }
cargo test -p geoturn-tests --locked --test e2e --test nat --test anycast -- --nocapture --test-threads 1 2>&1 |
    grep -E '^(e2e:|unicast session|allocation on the anycast|test |test result)'
