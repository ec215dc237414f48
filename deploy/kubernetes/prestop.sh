#!/bin/sh
# Kubernetes preStop hook for a geoturn relay container: starts a graceful drain (POST /drain
# on the ops listener), then waits while allocations remain, so calls in progress end on their
# own instead of being cut. While draining, /readyz answers 503 and new Allocates get
# 300 Try Alternate (a sibling from the registry) or 403.
#
# Timing: terminationGracePeriodSeconds counts from the start of this hook. When the hook
# returns, the kubelet sends SIGTERM; when the grace period is over, SIGKILL. So:
# - PRESTOP_TIMEOUT (default 3500) stays below terminationGracePeriodSeconds (e.g. 3600), so
#   the SIGTERM that follows the hook stops the relay cleanly (a signal during a drain stops
#   it at once, closing what is left) before any SIGKILL.
# - --drain-timeout (default 3600) bounds the drain on the relay's side: at that deadline, or
#   once the last allocation is gone, the relay exits by itself and the pod with it. Keep
#   terminationGracePeriodSeconds >= --drain-timeout.
# If this hook fails, the kubelet still sends SIGTERM, which starts the same drain.
#
# Environment (an exec hook sees the container's own, so these match what the relay reads):
#   GEOTURN_ADMIN_TOKEN or GEOTURN_ADMIN_TOKEN_FILE  the relay's --admin-token (never printed)
#   GEOTURN_HTTP     ops address [127.0.0.1:9641]; a wildcard (0.0.0.0, [::]) means loopback
#   PRESTOP_POLL     seconds between GET /status [2]; fractions work with GNU and busybox sleep
#   PRESTOP_TIMEOUT  seconds to wait for allocations to end [3500]
# Needs curl or wget in the image.

set -u

say() { echo "prestop: $*" >&2; }

addr=${GEOTURN_HTTP:-127.0.0.1:9641}
case $addr in
0.0.0.0:*) addr=127.0.0.1:${addr#0.0.0.0:} ;;
'[::]:'*) addr="[::1]:${addr#'[::]:'}" ;;
esac
url=http://$addr
poll=${PRESTOP_POLL:-2}
timeout=${PRESTOP_TIMEOUT:-3500}

if [ -n "${GEOTURN_ADMIN_TOKEN_FILE:-}" ]; then
	token=$(cat "$GEOTURN_ADMIN_TOKEN_FILE") || { say "cannot read GEOTURN_ADMIN_TOKEN_FILE"; exit 1; }
else
	token=${GEOTURN_ADMIN_TOKEN:-}
fi
[ -n "$token" ] || { say "set GEOTURN_ADMIN_TOKEN or GEOTURN_ADMIN_TOKEN_FILE"; exit 1; }

if command -v curl >/dev/null 2>&1; then
	# The header comes from stdin (printf is a shell builtin): the token never shows in `ps`.
	drain() { printf 'Authorization: Bearer %s\n' "$token" | curl -sSf -m 10 -H @- -d '' "$url/drain"; }
	status() { curl -sSf -m 10 "$url/status"; }
elif command -v wget >/dev/null 2>&1; then
	# wget has no header-from-stdin: here the token is in wget's arguments while it runs.
	# Not -q: on a refusal its report (status line, never request headers) is the message.
	drain() { wget -O - -T 10 --header "Authorization: Bearer $token" --post-data '' "$url/drain"; }
	status() { wget -q -O - -T 10 "$url/status"; }
else
	say "needs curl or wget in the container image"
	exit 1
fi

deadline=$(($(date +%s) + ${timeout%.*}))
if ! reply=$(drain); then
	say "POST $url/drain failed. A 401 means the token does not match the relay's" \
		"--admin-token; a 403, that the relay has no --admin-token (SIGTERM still drains it)"
	exit 1
fi
say "drain started: $reply"
# Workers publish their counts every 500 ms: give a just-made allocation time to be counted.
sleep 2
while :; do
	if ! body=$(status 2>/dev/null); then
		say "the relay has stopped answering: it exits once the drain is done"
		exit 0
	fi
	case $body in
	*'"allocations":0'[,'}']*)
		say "no allocations left"
		exit 0
		;;
	esac
	if [ "$(date +%s)" -ge "$deadline" ]; then
		say "PRESTOP_TIMEOUT passed with allocations left; SIGTERM follows and ends them"
		exit 0
	fi
	sleep "$poll"
done
