#!/usr/bin/env bash
# api-wrk.sh — HTTP throughput and latency of `geoturn api`'s GET /v1/ice-servers under wrk,
# side by side with an axum hello-world on the same machine, same run, same wrk settings.
#
# Method
#   * Servers, all on 127.0.0.1 only, started fresh by this script and stopped by PID on exit:
#       - redis-server on a free port (no persistence) as the registry;
#       - two relays (`geoturn relay --workers 1`), regions `bench` and `bench-b`, heartbeating
#         into that Redis; they only register, no TURN traffic is sent to them;
#       - `geoturn api --registry redis://… --rate-limit 0` (the limiter off, so wrk is never
#         answered 429), one API key given with GEOTURN_API_KEYS, the TURN secret with
#         GEOTURN_AUTH_SECRETS; no GeoIP database, so a loopback client is an unknown location
#         (GeoIP lookup finds nothing, ranking takes its unknown-location path) and every answer
#         holds both relays;
#       - the baseline `credential-api/examples/hello.rs`: axum `GET /` → 200 "hello", tokio
#         multi-thread runtime with the default worker count, like `geoturn api`.
#   * Load: `wrk -t$THREADS -c$CONNS -d$DURATION --latency` with keep-alive connections and the
#     same `Authorization: Bearer KEY` header sent to every target. Targets per round:
#     hello `/`, api `/v1/ice-servers`, and (HEALTHZ=1) api `/healthz` — the API's router and
#     middleware with a trivial handler, which separates framework cost from handler cost.
#     Each target gets one short warm-up run first; then ROUNDS rounds interleave the targets
#     (hello, api, healthz, hello, api, healthz, …) so machine noise hits all of them. Tables
#     show the median over rounds, the ratio of those medians, and the "paired" ratio: the
#     median over rounds of each round's own ratio.
#   * Parsed from wrk: Requests/sec, the 50 % and 99 % latency lines, total requests, socket
#     errors and "Non-2xx or 3xx responses". Any non-2xx response or socket error makes the run
#     invalid (exit status 2, "valid": false in the JSON).
#   * Server CPU per request: utime+stime of the server process (/proc/PID/stat) across each
#     wrk run divided by its requests. On a 2-core machine wrk -t1 keeps one core busy, so the
#     server effectively has the other one (its runtime still has one worker per core); req/s is
#     bounded by that, CPU µs per request is not.
#   * Cross-check from the API itself: after the runs, /metrics is scraped for
#     geoturn_api_requests_total by route and status (every /v1/ice-servers request must be 200)
#     and the mean in-router time per route (geoturn_api_request_duration_seconds sum/count: the
#     handler plus inner middleware, without hyper's parsing and writing).
#
# Usage
#   bench/api-wrk.sh [--json FILE] [--no-build]
#   Installs wrk with apt-get when it is missing, then builds `geoturn` and the `hello` example
#   in release (--no-build skips that), runs, prints a table; --json also writes the numbers.
#   Exit status 2 when the run is invalid. Takes about 3 minutes after the build.
#
# Environment (all optional)
#   THREADS=1 CONNS=32 DURATION=10s     wrk -t, -c, -d for measured runs
#   WARMUP=3s                           wrk -d of the warm-up run per target
#   ROUNDS=5                            interleaved rounds (medians over these)
#   HEALTHZ=1                           also measure the API's /healthz (0: only hello and api)
#   GEOTURN_BIN=<repo>/target/release/geoturn
#   HELLO_BIN=<repo>/target/release/examples/hello
#   LOG_DIR=<mktemp -d>                 server logs and raw wrk output of every run
#   GEOTURN_LOG                         passed through to the servers (default info, as in
#                                       production: the API's per-request info span is then
#                                       recorded by the log layer; GEOTURN_LOG=warn measures
#                                       the API without it)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
THREADS="${THREADS:-1}"
CONNS="${CONNS:-32}"
DURATION="${DURATION:-10s}"
WARMUP="${WARMUP:-3s}"
ROUNDS="${ROUNDS:-5}"
HEALTHZ="${HEALTHZ:-1}"
GEOTURN_BIN="${GEOTURN_BIN:-$ROOT/target/release/geoturn}"
HELLO_BIN="${HELLO_BIN:-$ROOT/target/release/examples/hello}"
HOST=127.0.0.1
JSON_OUT=""
BUILD=1

die() { echo "api-wrk: $*" >&2; exit 1; }

while (($#)); do
    case "$1" in
        --json) (($# >= 2)) || die "--json needs a file"; JSON_OUT="$2"; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done
for v in THREADS CONNS ROUNDS HEALTHZ; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done
((THREADS >= 1 && CONNS >= THREADS && ROUNDS >= 1)) || die "need THREADS >= 1, CONNS >= THREADS, ROUNDS >= 1"
for v in DURATION WARMUP; do
    # Bounded durations only: at most 3 digits of seconds or minutes.
    [[ "${!v}" =~ ^[0-9]{1,3}[sm]?$ ]] || die "$v must look like 10s or 1m (got '${!v}')"
done

# ---- prerequisites -------------------------------------------------------------------------
if ! command -v wrk >/dev/null 2>&1; then
    echo "api-wrk: installing wrk" >&2
    if ! apt-get install -y --no-install-recommends wrk >&2; then
        apt-get update >&2
        apt-get install -y --no-install-recommends wrk >&2
    fi
fi
for tool in wrk redis-server redis-cli curl ss awk python3 getconf timeout; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found"
done

if ((BUILD)); then
    echo "api-wrk: cargo build --release (geoturn, example hello)" >&2
    (cd "$ROOT" && cargo build --release --locked -p geoturn --bin geoturn >&2)
    (cd "$ROOT" && cargo build --release --locked -p geoturn-api --example hello >&2)
fi
[[ -x "$GEOTURN_BIN" ]] || die "$GEOTURN_BIN not found (run without --no-build)"
[[ -x "$HELLO_BIN" ]] || die "$HELLO_BIN not found (run without --no-build)"

CLK_TCK="$(getconf CLK_TCK)"
SECRET="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
API_KEY="bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
AUTH_HEADER="Authorization: Bearer $API_KEY"
GIT_HEAD="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
GIT_DIRTY="$(git -C "$ROOT" status --porcelain 2>/dev/null | wc -l || echo 0)"
LOG_DIR="${LOG_DIR:-$(mktemp -d /tmp/geoturn-api-wrk.XXXXXX)}"
mkdir -p "$LOG_DIR"
RUNS_TSV="$LOG_DIR/runs.tsv"
: >"$RUNS_TSV"

# ---- process bookkeeping: only our own PIDs, stopped by PID --------------------------------
OWN_PIDS=()
stop_pid() { # pid
    local pid="$1" i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -s TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do # up to 5 s
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    echo "api-wrk: pid $pid ignored SIGTERM for 5 s, sending KILL" >&2
    kill -s KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local i
    # Newest first: the API and relays before the Redis they talk to.
    for ((i = ${#OWN_PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${OWN_PIDS[i]}"; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- helpers --------------------------------------------------------------------------------
PICKED=()
port_busy() { # port -> 0 if anything listens on it (tcp or udp)
    [[ -n "$(ss -Hlnt "( sport = :$1 )" 2>/dev/null)$(ss -Hlnu "( sport = :$1 )" 2>/dev/null)" ]]
}
pick_port() { # sets PORT: a port in 20000-32767 free for tcp and udp, not handed out before
    local p i
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + RANDOM % 12768))
        [[ " ${PICKED[*]-} " == *" $p "* ]] && continue
        port_busy "$p" && continue
        PICKED+=("$p")
        PORT="$p"
        return 0
    done
    die "no free port found"
}
cpu_ticks() { # pid -> utime+stime of the whole process, in clock ticks
    local s
    s="$(cat "/proc/$1/stat")" || return 1
    s="${s##*) }"
    awk '{print $12 + $13}' <<<"$s"
}
wait_tcp() { # pid port seconds
    local pid="$1" port="$2" secs="$3" i
    for ((i = 0; i < secs * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 1
        [[ -n "$(ss -Hlnt "( sport = :$port )" 2>/dev/null)" ]] && return 0
        sleep 0.1
    done
    return 1
}
start() { # name cmd... ; starts in the background, logs to LOG_DIR/name.log, sets LAST_PID
    local name="$1"
    shift
    "$@" >"$LOG_DIR/$name.log" 2>&1 &
    LAST_PID=$!
    OWN_PIDS+=("$LAST_PID")
}
fail_with_log() { # name message
    echo "api-wrk: $2; last lines of $LOG_DIR/$1.log:" >&2
    tail -n 20 "$LOG_DIR/$1.log" >&2 || true
    exit 1
}

# ---- servers --------------------------------------------------------------------------------
pick_port; REDIS_PORT="$PORT"
start redis redis-server --port "$REDIS_PORT" --bind "$HOST" --save "" --appendonly no
REDIS_PID=$LAST_PID
for ((i = 0; i < 50; i++)); do
    [[ "$(redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null || true)" == PONG ]] && break
    kill -0 "$REDIS_PID" 2>/dev/null || fail_with_log redis "redis-server exited"
    sleep 0.1
done
((i < 50)) || fail_with_log redis "redis-server did not answer PING within 5 s"
REGISTRY="redis://$HOST:$REDIS_PORT"

# Two relays in two regions (different places), so ranking has a choice to make.
RELAY_PORTS=()
relay_n=0
for spec in "bench-1 bench 50.1 8.7" "bench-2 bench-b 40.7 -74.0"; do
    read -r node region lat lon <<<"$spec"
    pick_port; relay_port="$PORT"
    pick_port; relay_http="$PORT"
    relay_n=$((relay_n + 1))
    start "relay-$relay_n" env GEOTURN_AUTH_SECRETS="$SECRET" "$GEOTURN_BIN" relay \
        --listen "$HOST:$relay_port" --http "$HOST:$relay_http" --workers 1 \
        --registry "$REGISTRY" --node-id "$node" --region "$region" --lat "$lat" --lon "$lon"
    wait_tcp "$LAST_PID" "$relay_http" 15 || fail_with_log "relay-$relay_n" "relay $node did not start"
    RELAY_PORTS+=("$relay_port")
done

pick_port; API_PORT="$PORT"
API="http://$HOST:$API_PORT"
start api env GEOTURN_AUTH_SECRETS="$SECRET" GEOTURN_API_KEYS="bench:$API_KEY" \
    "$GEOTURN_BIN" api --listen "$HOST:$API_PORT" --registry "$REGISTRY" --rate-limit 0
API_PID=$LAST_PID
wait_tcp "$API_PID" "$API_PORT" 15 || fail_with_log api "geoturn api did not start"

# Ready means: 200 with iceServers naming every relay (registration and the API's snapshot
# refresh take a heartbeat or two).
ready=0
for ((i = 0; i < 100; i++)); do # up to ~20 s
    code="$(curl -s -o "$LOG_DIR/ice.json" -w '%{http_code}' --max-time 2 -H "$AUTH_HEADER" \
        "$API/v1/ice-servers" || true)"
    if [[ "$code" == 200 ]] && grep -q '"iceServers"' "$LOG_DIR/ice.json"; then
        ready=1
        for p in "${RELAY_PORTS[@]}"; do grep -q ":$p" "$LOG_DIR/ice.json" || ready=0; done
        ((ready)) && break
    fi
    kill -0 "$API_PID" 2>/dev/null || fail_with_log api "geoturn api exited"
    sleep 0.2
done
((ready)) || fail_with_log api "/v1/ice-servers never answered 200 with both relays (last: $code $(head -c 300 "$LOG_DIR/ice.json"))"
ICE_BYTES="$(wc -c <"$LOG_DIR/ice.json")"

pick_port; HELLO_PORT="$PORT"
HELLO="http://$HOST:$HELLO_PORT"
start hello "$HELLO_BIN" "$HOST:$HELLO_PORT"
HELLO_PID=$LAST_PID
wait_tcp "$HELLO_PID" "$HELLO_PORT" 10 || fail_with_log hello "hello did not start"
[[ "$(curl -s --max-time 2 "$HELLO/")" == hello ]] || fail_with_log hello "GET / did not answer hello"
[[ "$(curl -s --max-time 2 "$API/healthz")" == ok ]] || fail_with_log api "/healthz did not answer ok"

# ---- wrk runs -------------------------------------------------------------------------------
TARGETS=(hello api)
((HEALTHZ)) && TARGETS+=(healthz)
url_of() { case "$1" in hello) echo "$HELLO/" ;; api) echo "$API/v1/ice-servers" ;; healthz) echo "$API/healthz" ;; esac; }
pid_of() { case "$1" in hello) echo "$HELLO_PID" ;; *) echo "$API_PID" ;; esac; }
to_ms() { # wrk latency like 812.00us, 1.23ms, 1.01s -> ms
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        printf "%.3f", n }'
}
# Generous bound on one wrk run: its duration plus 30 s.
secs_of() { local d="$1"; [[ "$d" == *m ]] && echo $((${d%m} * 60)) || echo "${d%s}"; }

run_wrk() { # target round duration -> appends a line to RUNS_TSV (unless round is "warmup")
    local target="$1" round="$2" dur="$3" url pid out c0 c1 rps p50 p99 reqs non2xx sockerr
    url="$(url_of "$target")"
    pid="$(pid_of "$target")"
    out="$LOG_DIR/wrk-$target-$round.txt"
    c0="$(cpu_ticks "$pid")"
    timeout $(($(secs_of "$dur") + 30)) \
        wrk -t"$THREADS" -c"$CONNS" -d"$dur" --latency -H "$AUTH_HEADER" "$url" >"$out" 2>&1 ||
        { cat "$out" >&2; die "wrk failed against $url"; }
    c1="$(cpu_ticks "$pid")"
    [[ "$round" == warmup ]] && return 0
    rps="$(awk '/^Requests\/sec:/ {print $2}' "$out")"
    p50="$(to_ms "$(awk '$1 == "50%" {print $2}' "$out")")"
    p99="$(to_ms "$(awk '$1 == "99%" {print $2}' "$out")")"
    reqs="$(awk '/ requests in / {print $1}' "$out")"
    non2xx="$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$out")"
    sockerr="$(awk '/Socket errors:/ {for (i = 3; i <= NF; i++) s += $i + 0} END {print s + 0}' "$out")"
    [[ -n "$rps" && -n "$reqs" ]] || { cat "$out" >&2; die "cannot parse wrk output ($out)"; }
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$round" "$rps" "$p50" "$p99" \
        "$reqs" "${non2xx:-0}" "${sockerr:-0}" "$((c1 - c0))" >>"$RUNS_TSV"
    printf 'api-wrk: round %s %-7s %10.0f req/s  p50 %7.3f ms  p99 %7.3f ms  non-2xx %s  socket errors %s\n' \
        "$round" "$target" "$rps" "$p50" "$p99" "${non2xx:-0}" "${sockerr:-0}" >&2
}

# How busy the machine is (other work on a shared VM moves every figure): load average and,
# where the kernel has PSI, the share of time some task waited for a CPU over the last 60 s.
cpu_pressure() { awk '/^some/ {sub("avg60=", "", $3); print $3}' /proc/pressure/cpu 2>/dev/null || true; }
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
PSI_BEFORE="$(cpu_pressure)"
echo "api-wrk: wrk -t$THREADS -c$CONNS -d$DURATION --latency, $ROUNDS rounds of: ${TARGETS[*]} (logs: $LOG_DIR)" >&2
for t in "${TARGETS[@]}"; do run_wrk "$t" warmup "$WARMUP"; done
for ((r = 1; r <= ROUNDS; r++)); do
    for t in "${TARGETS[@]}"; do run_wrk "$t" "$r" "$DURATION"; done
done

LOAD_AFTER="$(cut -d' ' -f1-3 /proc/loadavg)"
PSI_AFTER="$(cpu_pressure)"

# The API's own view: status codes per route and mean in-router time.
curl -s --max-time 5 "$API/metrics" >"$LOG_DIR/api-metrics.txt" || die "cannot scrape $API/metrics"
ICE_NON200="$(awk '/^geoturn_api_requests_total\{route="\/v1\/ice-servers"/ && !/status="200"/ {n += $NF} END {print n + 0}' "$LOG_DIR/api-metrics.txt")"
router_us() { # route -> mean µs inside the router
    awk -v r="$1" '
        index($0, "geoturn_api_request_duration_seconds_sum{route=\"" r "\"}") == 1 {s = $NF}
        index($0, "geoturn_api_request_duration_seconds_count{route=\"" r "\"}") == 1 {c = $NF}
        END {if (c > 0) printf "%.2f", s / c * 1e6; else print "null"}' "$LOG_DIR/api-metrics.txt"
}
ICE_ROUTER_US="$(router_us /v1/ice-servers)"
HEALTHZ_ROUTER_US="$(router_us /healthz)"

# ---- summary --------------------------------------------------------------------------------
CPU_MODEL="$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
NPROC="$(nproc)"
WRK_VERSION="$(wrk -v 2>&1 | head -1 || true)"
export RUNS_TSV CLK_TCK JSON_OUT THREADS CONNS DURATION WARMUP ROUNDS CPU_MODEL NPROC WRK_VERSION \
    GIT_HEAD GIT_DIRTY LOAD_BEFORE LOAD_AFTER PSI_BEFORE PSI_AFTER ICE_BYTES ICE_NON200 ICE_ROUTER_US HEALTHZ_ROUTER_US LOG_DIR
python3 - <<'EOF'
import json, os, statistics, sys, time

env = os.environ
tick_us = 1e6 / int(env["CLK_TCK"])
runs = []
with open(env["RUNS_TSV"]) as f:
    for line in f:
        t, rnd, rps, p50, p99, reqs, non2xx, sockerr, ticks = line.rstrip("\n").split("\t")
        runs.append({
            "target": t, "round": int(rnd), "req_per_s": float(rps), "p50_ms": float(p50),
            "p99_ms": float(p99), "requests": int(reqs), "non_2xx": int(non2xx),
            "socket_errors": int(sockerr),
            "server_cpu_us_per_req": round(int(ticks) * tick_us / max(int(reqs), 1), 2),
        })
targets = [t for t in ("hello", "api", "healthz") if any(r["target"] == t for r in runs)]
med = {}
for t in targets:
    rs = [r for r in runs if r["target"] == t]
    med[t] = {k: round(statistics.median(r[k] for r in rs), 3)
              for k in ("req_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_req")}
def ratio(a, b, k):
    return round(med[a][k] / med[b][k], 3) if med[b][k] else None
KEYS = ("req_per_s", "p50_ms", "p99_ms", "server_cpu_us_per_req")
ratios = {f"{t}/hello": {k: ratio(t, "hello", k) for k in KEYS} for t in targets if t != "hello"}
# Paired: the ratio within each round (targets of one round ran back to back), then the median;
# steadier than the ratio of medians when the machine's load moves between rounds.
by = {(r["target"], r["round"]): r for r in runs}
def paired(t, k):
    xs = [by[(t, n)][k] / by[("hello", n)][k] for n in sorted({r["round"] for r in runs})
          if (t, n) in by and ("hello", n) in by and by[("hello", n)][k]]
    return round(statistics.median(xs), 3) if xs else None
paired_ratios = {f"{t}/hello": {k: paired(t, k) for k in KEYS} for t in targets if t != "hello"}
bad = [r for r in runs if r["non_2xx"] or r["socket_errors"]]
ice_non200 = int(env["ICE_NON200"])
valid = not bad and ice_non200 == 0
names = {"hello": "hello GET /", "api": "api GET /v1/ice-servers", "healthz": "api GET /healthz"}

print(f"\nwrk -t{env['THREADS']} -c{env['CONNS']} -d{env['DURATION']} --latency, "
      f"median of {env['ROUNDS']} interleaved rounds; {env['NPROC']} x {env['CPU_MODEL']}")
print(f"{'target':<26} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'CPU µs/req':>11}")
for t in targets:
    m = med[t]
    print(f"{names[t]:<26} {m['req_per_s']:>10.0f} {m['p50_ms']:>8.3f} {m['p99_ms']:>8.3f} "
          f"{m['server_cpu_us_per_req']:>11.1f}")
for label, rs in (("ratio", ratios), ("paired", paired_ratios)):
    for k, v in rs.items():
        print(f"{k + ' ' + label:<26} {v['req_per_s']:>10.3f} {v['p50_ms']:>8.3f} "
              f"{v['p99_ms']:>8.3f} {v['server_cpu_us_per_req']:>11.3f}")
print(f"API in-router mean: /v1/ice-servers {env['ICE_ROUTER_US']} µs, /healthz "
      f"{env['HEALTHZ_ROUTER_US']} µs; answer {env['ICE_BYTES']} bytes")
print(f"load average before {env['LOAD_BEFORE']}, after {env['LOAD_AFTER']}; CPU pressure "
      f"(some, avg60 %) before {env['PSI_BEFORE'] or '-'}, after {env['PSI_AFTER'] or '-'}; "
      f"GEOTURN_LOG={env.get('GEOTURN_LOG', 'info (default)')}")
if not valid:
    print(f"INVALID: {len(bad)} wrk runs with non-2xx or socket errors; "
          f"{ice_non200} non-200 /v1/ice-servers answers counted by the API", file=sys.stderr)

if env.get("JSON_OUT"):
    num = lambda s: None if s == "null" else float(s)
    doc = {
        "benchmark": "bench/api-wrk.sh",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git_head": env["GIT_HEAD"], "git_dirty_files": int(env["GIT_DIRTY"]),
        "machine": {"nproc": int(env["NPROC"]), "cpu_model": env["CPU_MODEL"],
                    "loadavg_before": env["LOAD_BEFORE"], "loadavg_after": env["LOAD_AFTER"],
                    "cpu_pressure_some_avg60_before": env["PSI_BEFORE"] or None,
                    "cpu_pressure_some_avg60_after": env["PSI_AFTER"] or None},
        "geoturn_log": env.get("GEOTURN_LOG", "info (default)"),
        "wrk": {"version": env["WRK_VERSION"], "threads": int(env["THREADS"]),
                "connections": int(env["CONNS"]), "duration": env["DURATION"],
                "warmup": env["WARMUP"], "rounds": int(env["ROUNDS"]), "latency": True},
        "valid": valid,
        "median": med, "ratios": ratios, "paired_ratios_median": paired_ratios,
        "api_metrics": {"ice_servers_non_200": ice_non200,
                        "ice_servers_router_mean_us": num(env["ICE_ROUTER_US"]),
                        "healthz_router_mean_us": num(env["HEALTHZ_ROUTER_US"]),
                        "ice_servers_answer_bytes": int(env["ICE_BYTES"])},
        "runs": runs,
    }
    with open(env["JSON_OUT"], "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    print(f"JSON: {env['JSON_OUT']}")
sys.exit(0 if valid else 2)
EOF
