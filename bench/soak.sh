#!/usr/bin/env bash
# soak.sh — one relay under churn for a long while: does anything grow?
#
# A geoturn relay (release build, on 127.0.0.1, stopped by PID on exit) and `geoturn bench`
# run in rounds until DURATION is over: each round sets up ALLOCS allocations (401 challenge,
# Allocate, ChannelBind), relays RATE packets/s through each for STEP seconds, and deletes them
# all (Refresh with LIFETIME 0). Every SAMPLE seconds the relay's resident memory, open file
# descriptors (every allocation is one relayed socket) and live allocations are written down.
# A flat line between rounds is the pass: after each round the relay must be back where it was.
#
# Not run in CI (it takes DURATION). Figures in BENCHMARKS.md come from a run of this script.
#
# Usage: bench/soak.sh            (DURATION=600 ALLOCS=10000 RATE=2 STEP=5 SAMPLE=10)
# Output: one line per sample, "elapsed_s rss_kib fds allocations", then a summary;
#         the relay's and the generator's logs in a temporary directory it names.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DURATION="${DURATION:-600}"
ALLOCS="${ALLOCS:-10000}"
RATE="${RATE:-2}"
STEP="${STEP:-5}"
SAMPLE="${SAMPLE:-10}"
for v in DURATION ALLOCS RATE STEP SAMPLE; do
    [[ "${!v}" =~ ^[0-9]+$ && "${!v}" -gt 0 ]] || { echo "soak: $v must be a positive integer" >&2; exit 1; }
done
BIN="${GEOTURN_BIN:-$ROOT/target/release/geoturn}"
[[ -x "$BIN" ]] || { echo "soak: $BIN not found: cargo build --release --locked" >&2; exit 1; }
LOG_DIR="$(mktemp -d /tmp/geoturn-soak.XXXXXX)"
SECRET="soak-secret-0123456789abcdef"
PORT="$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
HTTP_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"

RELAY_PID=""
SAMPLER_PID=""
cleanup() {
    [[ -n "$SAMPLER_PID" ]] && kill "$SAMPLER_PID" 2>/dev/null || true
    [[ -n "$RELAY_PID" ]] && kill "$RELAY_PID" 2>/dev/null || true
    wait 2>/dev/null || true
}
trap cleanup EXIT

# One user from one address holds all ALLOCS allocations: quotas off for this run (they are
# what the abuse tests check); everything else at its default.
GEOTURN_USER_QUOTA=0 GEOTURN_ALLOCATIONS_PER_IP=0 GEOTURN_AUTH_SECRETS="$SECRET" \
    GEOTURN_LOG=warn GEOTURN_HTTP="127.0.0.1:$HTTP_PORT" GEOTURN_DRAIN_TIMEOUT=1 \
    "$BIN" relay --listen "127.0.0.1:$PORT" --allow-peer 127.0.0.0/8 --unauth-rate 0 \
    >"$LOG_DIR/relay.log" 2>&1 &
RELAY_PID=$!
for _ in $(seq 1 50); do
    curl -fsS "http://127.0.0.1:$HTTP_PORT/healthz" >/dev/null 2>&1 && break
    sleep 0.1
done
kill -0 "$RELAY_PID" || { echo "soak: the relay did not start; see $LOG_DIR/relay.log" >&2; exit 1; }

sample() { # elapsed -> "elapsed rss_kib fds allocations"
    local rss fds allocs
    rss="$(awk '/^VmRSS:/ {print $2}' "/proc/$RELAY_PID/status")"
    fds="$(find "/proc/$RELAY_PID/fd" -mindepth 1 -maxdepth 1 | wc -l)"
    allocs="$(curl -fsS "http://127.0.0.1:$HTTP_PORT/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["allocations"])')"
    echo "$1 $rss $fds $allocs"
}

START="$(date +%s)"
echo "soak: relay PID $RELAY_PID on 127.0.0.1:$PORT; DURATION=$DURATION ALLOCS=$ALLOCS RATE=$RATE STEP=$STEP; logs in $LOG_DIR" >&2
echo "elapsed_s rss_kib fds allocations"
sample 0 | tee "$LOG_DIR/samples.txt"
(
    while kill -0 "$RELAY_PID" 2>/dev/null; do
        sleep "$SAMPLE"
        sample "$(($(date +%s) - START))" | tee -a "$LOG_DIR/samples.txt"
    done
) &
SAMPLER_PID=$!

ROUNDS=0
while (($(date +%s) - START < DURATION)); do
    "$BIN" bench --server "127.0.0.1:$PORT" --secret "$SECRET" --allocations "$ALLOCS" \
        --rate "$RATE" --duration "$STEP" --client-ip 127.0.0.2 --server-pid "$RELAY_PID" --json \
        >"$LOG_DIR/round-$ROUNDS.json" 2>"$LOG_DIR/round-$ROUNDS.log" ||
        { echo "soak: round $ROUNDS failed; see $LOG_DIR/round-$ROUNDS.log" >&2; exit 1; }
    ROUNDS=$((ROUNDS + 1))
    # Between rounds: every allocation deleted, so the relay should be back at its idle size
    # (its workers publish their counts every 500 ms).
    sleep 1
    sample "$(($(date +%s) - START))" >>"$LOG_DIR/between-rounds.txt"
done
kill "$SAMPLER_PID" 2>/dev/null || true
SAMPLER_PID=""
echo "soak: $ROUNDS rounds of $ALLOCS allocations in $(($(date +%s) - START)) s" >&2
echo "between rounds (elapsed_s rss_kib fds allocations):" >&2
cat "$LOG_DIR/between-rounds.txt" >&2
