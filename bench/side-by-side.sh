#!/usr/bin/env bash
# side-by-side.sh — geoturn, coturn and a raw UDP forwarder under the same load, in one run.
#
# Systems (each started fresh for every measurement, one relay thread each, stopped by PID):
#   geoturn   target/release/geoturn relay --workers 1 --unauth-rate 0
#             (--unauth-rate 0: the 10 000 allocations of the memory test all come from
#             127.0.0.x, and the default 100 unsigned responses/s per source IP would pace them)
#   coturn    turnserver (Debian coturn) --relay-threads=1, UDP only, TURN REST secret
#   raw       target/release/raw-forwarder --threads 1: recvmmsg/sendmmsg between a listening
#             socket and one socket per client flow, no TURN logic — this machine's limit; it
#             sends through the relay's own batched send code, with UDP GSO as geoturn does
# and, when SYSTEMS names them, the same two without UDP GSO on their sends:
#   geoturn-nogso  geoturn relay ... --udp-gso false
#   raw-nogso      raw-forwarder ... --gso false
# and geoturn-base: the geoturn relay of another build (BASE_GEOTURN_BIN, e.g. the last
# release's), to compare a change with what it changes in one run.
# all on 127.0.0.1, with echo peers on 127.0.0.3 inside the load generator (geoturn refuses its own
# address as a peer except at its relayed ports).
#
# Load: `geoturn bench` (target/release/geoturn bench): ALLOCS allocations (channels), each
# sending timestamped packets to its echo peer, which echoes them back through the relay. The
# generator's own sends use UDP GSO (its default), which only makes it cheaper: every system
# still receives separate datagrams.
# Per payload size (PAYLOADS) and system:
#   * step test: RATES packets/s per allocation, STEP_SECONDS each, ending after two steps in a
#     row lose more than 0.1 %; "max pps" is the highest step with loss <= 0.1 % (and the
#     generator keeping its schedule), given as relayed packets/s: both directions, i.e.
#     datagrams delivered to the peers + echoes delivered back to the clients;
#   * CPU: utime+stime of the relay process (/proc/PID/stat) during the step at REF_RATE per
#     allocation (the same offered load for every system), divided by the packets it relayed;
#     and the same at the highest step every system sustained in that rep ("common max");
#   * added p99 latency: p99 round trip through the relay at REF_RATE minus p99 of the same
#     load sent straight to the echo peers (`--target direct`), measured in the same rep;
# and per system (payload 160 B):
#   * memory: relay RSS (/proc/PID/status VmRSS) after MEM_ALLOCS allocations minus before,
#     per allocation (clients bind 127.0.0.2 so they leave the relay's port range alone);
#   * allocations/s: the same setup (401 challenge, Allocate, ChannelBind each; 128 in flight);
# and, for the CPU comparison with coturn's own client, turnutils_uclient (M sessions x N
# messages, -z 0) against geoturn and coturn: relay CPU per relayed message.
# Every measurement is repeated REPS times; systems are alternated (rotating the order each
# rep); the tables show medians. The generator, relay and echo peers share the machine's cores
# (2 on the CI VMs, shared with other jobs): with BOOST=1 (default) the script raises its own
# autogroup's priority (echo -10 > /proc/self/autogroup) so other jobs disturb less.
#
# Usage
#   cargo build --release -p geoturn -p geoturn-bench     # this script builds nothing
#   bench/side-by-side.sh                                 # or e.g. REPS=1 PAYLOADS=160 bench/side-by-side.sh
#
# Environment (all optional)
#   REPS=3  PAYLOADS="160 1200"  ALLOCS=20  STEP_SECONDS=3  SYSTEMS="geoturn coturn raw"
#   RATES="500,1000,1500,2000,2500,3000,3500,4000,5000,6000,7000,8000"  REF_RATE=1000
#   MEM_ALLOCS=10000  UCLIENT=1 (0 skips uclient)  M=20 N=2000
#   BOOST=1  OUT=bench/results/side-by-side-latest.json  LOG_DIR=<mktemp -d>
#   GEOTURN_BIN=<repo>/target/release/geoturn  FORWARDER_BIN=<repo>/target/release/raw-forwarder
#   BASE_GEOTURN_BIN (needed with geoturn-base; the load generator stays GEOTURN_BIN)
#   RELAY_PORTS=10000-29999 (relayed ports of geoturn and coturn; below the ephemeral range)
#   SUMMARY_ONLY=1 with LOG_DIR of an earlier run: print its tables again, run nothing
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPS="${REPS:-3}"
PAYLOADS="${PAYLOADS:-160 1200}"
ALLOCS="${ALLOCS:-20}"
STEP_SECONDS="${STEP_SECONDS:-3}"
RATES="${RATES:-500,1000,1500,2000,2500,3000,3500,4000,5000,6000,7000,8000}"
SYSTEMS="${SYSTEMS:-geoturn coturn raw}"
for sys in $SYSTEMS; do
    case "$sys" in geoturn | coturn | raw | geoturn-nogso | raw-nogso | geoturn-base) ;; *) echo "side-by-side: unknown system '$sys' in SYSTEMS" >&2; exit 1 ;; esac
done
for sys in geoturn coturn raw; do
    [[ " $SYSTEMS " == *" $sys "* ]] || { echo "side-by-side: SYSTEMS must include $sys" >&2; exit 1; }
done
REF_RATE="${REF_RATE:-1000}"
MEM_ALLOCS="${MEM_ALLOCS:-10000}"
UCLIENT="${UCLIENT:-1}"
M="${M:-20}"
N="${N:-2000}"
BOOST="${BOOST:-1}"
OUT="${OUT:-$ROOT/bench/results/side-by-side-latest.json}"
GEOTURN_BIN="${GEOTURN_BIN:-$ROOT/target/release/geoturn}"
FORWARDER_BIN="${FORWARDER_BIN:-$ROOT/target/release/raw-forwarder}"
RELAY_PORTS="${RELAY_PORTS:-10000-29999}"
HOST=127.0.0.1
REALM=geoturn

die() { echo "side-by-side: $*" >&2; exit 1; }

BASE_GEOTURN_BIN="${BASE_GEOTURN_BIN:-}"
if [[ " $SYSTEMS " == *" geoturn-base "* ]]; then
    [[ -x "$BASE_GEOTURN_BIN" ]] || die "geoturn-base needs BASE_GEOTURN_BIN, an executable geoturn of the build to compare with"
fi
for b in "$GEOTURN_BIN" "$FORWARDER_BIN"; do
    [[ -x "$b" ]] || die "$b not found; run \`cargo build --release -p geoturn -p geoturn-bench\` in $ROOT first"
done
for tool in turnserver turnutils_uclient turnutils_peer timeout ss python3 getconf; do
    command -v "$tool" >/dev/null 2>&1 ||
        die "$tool not found (coturn: apt-get install -y --no-install-recommends coturn)"
done
for v in REPS ALLOCS REF_RATE MEM_ALLOCS M N; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done
[[ ",$RATES," == *",$REF_RATE,"* ]] || die "REF_RATE ($REF_RATE) must be one of RATES ($RATES)"
PORT_LO="${RELAY_PORTS%-*}"
PORT_HI="${RELAY_PORTS#*-}"
SECRET="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
CLK_TCK="$(getconf CLK_TCK)"
if [[ "$BOOST" == 1 ]]; then
    echo -10 >/proc/self/autogroup 2>/dev/null || echo "side-by-side: could not raise priority (BOOST=0 to silence)" >&2
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

LOG_DIR="${LOG_DIR:-$(mktemp -d /tmp/geoturn-side-by-side.XXXXXX)}"
mkdir -p "$LOG_DIR" "$(dirname "$OUT")"
[[ "${SUMMARY_ONLY:-0}" == 1 ]] || : >"$LOG_DIR/runs.jsonl"

# ---- our own processes only, stopped by PID --------------------------------------------------
OWN_PIDS=()
stop_pid() {
    local pid="$1" i
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() { local p; for p in "${OWN_PIDS[@]}"; do stop_pid "$p"; done; }
trap cleanup EXIT
trap 'exit 130' INT TERM

port_busy() { [[ -n "$(ss -Hlnu "( sport = :$1 )" 2>/dev/null)$(ss -Hlnt "( sport = :$1 )" 2>/dev/null)" ]]; }
pick_port() {
    local p i
    for ((i = 0; i < 200; i++)); do
        p=$((30000 + RANDOM % 2700))
        port_busy "$p" || { echo "$p"; return 0; }
    done
    die "no free port"
}
wait_udp_listen() { # pid port
    local i
    for ((i = 0; i < 150; i++)); do
        kill -0 "$1" 2>/dev/null || return 1
        [[ -n "$(ss -Hlnu "( sport = :$2 )" 2>/dev/null)" ]] && return 0
        sleep 0.1
    done
    return 1
}
cpu_ticks() { local s; s="$(cat "/proc/$1/stat")" || return 1; s="${s##*) }"; awk '{print $12 + $13}' <<<"$s"; }

start_system() { # system port log -> SYS_PID
    local sys="$1" port="$2" log="$3"
    case "$sys" in
    geoturn | geoturn-nogso | geoturn-base)
        local gso=true bin="$GEOTURN_BIN"
        [[ "$sys" == geoturn-nogso ]] && gso=false
        [[ "$sys" == geoturn-base ]] && bin="$BASE_GEOTURN_BIN"
        # The memory test's 10 000 allocations are one user from 127.0.0.x, and the steps push
        # tens of thousands of packets/s through each allocation: no quotas, no per-allocation
        # limits (variables, which an older geoturn-base build ignores).
        GEOTURN_USER_QUOTA=0 GEOTURN_ALLOCATIONS_PER_IP=0 GEOTURN_MAX_BPS=0 GEOTURN_MAX_PPS=0 \
        GEOTURN_AUTH_SECRETS="$SECRET" GEOTURN_LOG=warn GEOTURN_HTTP="$HOST:$(pick_port)" GEOTURN_DRAIN_TIMEOUT=1 \
            "$bin" relay --listen "$HOST:$port" --allow-peer 127.0.0.0/8 --relay-ports "$RELAY_PORTS" \
            --workers 1 --unauth-rate 0 --udp-gso "$gso" >"$log" 2>&1 &
        ;;
    coturn)
        turnserver -n --listening-ip="$HOST" --listening-port="$port" --relay-ip="$HOST" \
            --use-auth-secret --static-auth-secret="$SECRET" --realm="$REALM" \
            --no-tls --no-dtls --no-cli --no-tcp-relay --allow-loopback-peers \
            --min-port="$PORT_LO" --max-port="$PORT_HI" --relay-threads=1 \
            --log-file=stdout --simple-log --no-stun-backward-compatibility \
            --pidfile="$LOG_DIR/turnserver.pid" --userdb="$LOG_DIR/turndb" >"$log" 2>&1 &
        ;;
    raw | raw-nogso)
        local gso=true
        [[ "$sys" == raw-nogso ]] && gso=false
        "$FORWARDER_BIN" --listen "$HOST:$port" --threads 1 --gso "$gso" >"$log" 2>&1 &
        ;;
    esac
    SYS_PID=$!
    OWN_PIDS+=("$SYS_PID")
    wait_udp_listen "$SYS_PID" "$port" || { cat "$log" >&2; die "$sys did not listen on udp $port"; }
    sleep 0.5
}

bench() { # tag system port extra-args... -> appends {"tag","system",...,"report"} to RUNS
    local tag="$1" sys="$2" port="$3"; shift 3
    local target=turn
    [[ "$sys" == raw* ]] && target=raw
    [[ "$sys" == direct ]] && target=direct
    local pidarg=()
    [[ -n "${SYS_PID:-}" && "$sys" != direct ]] && pidarg=(--server-pid "$SYS_PID")
    if ! timeout -k 5 600 "$GEOTURN_BIN" bench --json --target "$target" --server "$HOST:$port" \
        --secret "$SECRET" "${pidarg[@]}" "$@" >"$LOG_DIR/$tag.json" 2>"$LOG_DIR/$tag.err"; then
        echo "side-by-side: $tag: bench failed: $(tail -3 "$LOG_DIR/$tag.err")" >&2
        return 0
    fi
    python3 - "$LOG_DIR/$tag.json" "$tag" "$sys" >>"$RUNS" <<'PY'
import json, sys
rep = json.load(open(sys.argv[1]))
print(json.dumps({"tag": sys.argv[2], "system": sys.argv[3], "report": rep}))
PY
}

uclient_run() { # tag system payload
    local tag="$1" sys="$2" len="$3" port pport
    port="$(pick_port)"; pport="$(pick_port)"
    turnutils_peer -L "$HOST" -p "$pport" >"$LOG_DIR/$tag.peer.log" 2>&1 &
    local peer_pid=$!
    OWN_PIDS+=("$peer_pid")
    start_system "$sys" "$port" "$LOG_DIR/$tag.relay.log"
    local t0 t1
    t0="$(cpu_ticks "$SYS_PID")"
    timeout -k 5 120 turnutils_uclient -W "$SECRET" -u benchuser -e "$HOST" -r "$pport" -p "$port" \
        -m "$M" -n "$N" -l "$len" -z 0 -c "$HOST" >"$LOG_DIR/$tag.uclient.log" 2>&1 || true
    t1="$(cpu_ticks "$SYS_PID")"
    stop_pid "$SYS_PID"; SYS_PID=""
    stop_pid "$peer_pid"
    local send recv lost
    send="$(sed -nE 's/.*tot_send_msgs=([0-9]+), tot_recv_msgs=([0-9]+)$/\1/p' "$LOG_DIR/$tag.uclient.log" | tail -1)"
    recv="$(sed -nE 's/.*tot_send_msgs=([0-9]+), tot_recv_msgs=([0-9]+)$/\2/p' "$LOG_DIR/$tag.uclient.log" | tail -1)"
    lost="$(sed -nE 's/.*Total lost packets ([0-9]+) .*/\1/p' "$LOG_DIR/$tag.uclient.log" | tail -1)"
    printf '{"tag":"%s","system":"%s","uclient":{"payload":%s,"cpu_ticks":%s,"clk_tck":%s,"sent":%s,"received":%s,"lost":%s}}\n' \
        "$tag" "$sys" "$len" "$((t1 - t0))" "$CLK_TCK" "${send:-0}" "${recv:-0}" "${lost:-0}" >>"$RUNS"
}

rotate() { # rep -> SYSTEMS rotated by rep - 1
    local list=($SYSTEMS) n k i
    n=${#list[@]}
    k=$((($1 - 1) % n))
    for ((i = 0; i < n; i++)); do printf '%s ' "${list[$(((i + k) % n))]}"; done
}

if [[ "${SUMMARY_ONLY:-0}" == 1 ]]; then
    [[ -s "$LOG_DIR/runs.jsonl" ]] || die "SUMMARY_ONLY=1 needs LOG_DIR of an earlier run"
    mv "$LOG_DIR/runs.jsonl" "$LOG_DIR/runs.jsonl.keep"
fi
RUNS="$LOG_DIR/runs.jsonl"
if [[ -f "$RUNS.keep" ]]; then mv "$RUNS.keep" "$RUNS"; REPS=0; fi
echo "side-by-side: REPS=$REPS PAYLOADS='$PAYLOADS' ALLOCS=$ALLOCS RATES=$RATES REF_RATE=$REF_RATE MEM_ALLOCS=$MEM_ALLOCS; logs in $LOG_DIR" >&2
GIT_HEAD="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
for ((rep = 1; rep <= REPS; rep++)); do
    for len in $PAYLOADS; do
        # The generator's own round trip at the reference load: what a relay adds is on top.
        SYS_PID=""
        bench "direct-l$len-r$rep" direct 9 --allocations "$ALLOCS" --payload "$len" \
            --rate "$REF_RATE" --duration "$STEP_SECONDS"
        for sys in $(rotate "$rep"); do
            port="$(pick_port)"
            start_system "$sys" "$port" "$LOG_DIR/steps-$sys-l$len-r$rep.relay.log"
            bench "steps-$sys-l$len-r$rep" "$sys" "$port" --allocations "$ALLOCS" --payload "$len" \
                --rate "$RATES" --duration "$STEP_SECONDS" --warmup 1
            stop_pid "$SYS_PID"; SYS_PID=""
            echo "  rep $rep l=$len $sys: done" >&2
        done
    done
    for sys in $(rotate "$rep"); do
        # Memory and setup do not depend on how datagrams are sent.
        [[ "$sys" == *-nogso ]] && continue
        port="$(pick_port)"
        start_system "$sys" "$port" "$LOG_DIR/mem-$sys-r$rep.relay.log"
        bench "mem-$sys-r$rep" "$sys" "$port" --allocations "$MEM_ALLOCS" --client-ip 127.0.0.2 \
            --setup-window 128 --rate 1 --duration 2 --warmup 0
        stop_pid "$SYS_PID"; SYS_PID=""
        echo "  rep $rep memory $sys: done" >&2
    done
    if [[ "$UCLIENT" == 1 ]]; then
        for len in $PAYLOADS; do
            for sys in $(rotate "$rep"); do
                [[ "$sys" == raw* ]] && continue
                uclient_run "uclient-$sys-l$len-r$rep" "$sys" "$len"
            done
        done
        echo "  rep $rep uclient: done" >&2
    fi
done

export RUNS OUT REF_RATE ALLOCS LOG_DIR GIT_HEAD GEOTURN_BIN REPS SYSTEMS
python3 - <<'PY'
import json, os, statistics, platform, datetime, subprocess

runs = [json.loads(l) for l in open(os.environ["RUNS"])]
ref = float(os.environ["REF_RATE"])
systems = ["geoturn", "coturn", "raw"]
variants = [s for s in os.environ["SYSTEMS"].split() if s not in systems]

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

def step_at(rep, rate):
    for s in rep["steps"]:
        if abs(s["rate_per_allocation"] - rate) < 1e-9:
            return s
    return None

payloads = sorted({r["report"]["payload"] for r in runs if "report" in r and r["tag"].startswith("steps-")})
table = {}
for p in payloads:
    direct = [step_at(r["report"], ref) for r in runs if r["tag"].startswith(f"direct-l{p}-")]
    direct_p99 = med([s["rtt_us"]["p99"] for s in direct if s])
    direct_p50 = med([s["rtt_us"]["p50"] for s in direct if s])
    # CPU at the highest step every system (variants too) sustained in the same rep.
    common = {}
    for r in runs:
        if r["tag"].startswith("steps-") and f"-l{p}-r" in r["tag"]:
            rep_no = r["tag"].rsplit("-r", 1)[1]
            m = (r["report"]["max_sustained"] or {}).get("rate_per_allocation", 0.0)
            common[rep_no] = min(common.get(rep_no, m), m)
    for sys in systems + variants:
        reps = [r["report"] for r in runs if r["tag"].startswith(f"steps-{sys}-l{p}-r")]
        rep_nos = [r["tag"].rsplit("-r", 1)[1] for r in runs if r["tag"].startswith(f"steps-{sys}-l{p}-r")]
        at_common = [step_at(r, common.get(n, 0.0)) for r, n in zip(reps, rep_nos)]
        cpu_common = [s["server_cpu_us_per_packet"] for s in at_common if s]
        maxes = [(r["max_sustained"] or {}).get("relayed_pps", 0.0) for r in reps]
        refs = [step_at(r, ref) for r in reps]
        cpu = [s["server_cpu_us_per_packet"] for s in refs if s]
        p99 = [s["rtt_us"]["p99"] for s in refs if s]
        p50 = [s["rtt_us"]["p50"] for s in refs if s]
        gen_at_max = [(r["max_sustained"] or {}).get("generator_cpu_percent") for r in reps]
        srv_at_max = [(r["max_sustained"] or {}).get("server_cpu_percent") for r in reps]
        table[(sys, p)] = {
            "max_relayed_pps": med(maxes), "max_relayed_pps_runs": maxes,
            "cpu_us_per_packet_at_ref": med(cpu), "cpu_runs": cpu,
            "p99_rtt_us_at_ref": med(p99), "p99_added_us": (med(p99) - direct_p99) if p99 and direct_p99 is not None else None,
            "direct_p99_us": direct_p99,
            "p50_added_us": (med(p50) - direct_p50) if p50 and direct_p50 is not None else None,
            "direct_p50_us": direct_p50, "p50_runs": p50, "p99_runs": p99,
            "generator_cpu_percent_at_max": med(gen_at_max), "server_cpu_percent_at_max": med(srv_at_max),
            "ref_loss": [s["loss"] for s in refs if s],
            "cpu_us_per_packet_at_common_max": med(cpu_common), "cpu_common_runs": cpu_common,
            "common_max_rates": [common.get(n) for n in rep_nos],
        }
mem = {}
for sys in systems:
    reps = [r["report"] for r in runs if r["tag"].startswith(f"mem-{sys}-")]
    mem[sys] = {
        "bytes_per_allocation": med([r["setup"]["server_rss_per_allocation"] for r in reps]),
        "bytes_per_allocation_after_traffic": med([r["server_rss_per_allocation_after_traffic"] for r in reps]),
        "allocations_per_second": med([r["setup"]["per_second"] for r in reps]),
        "runs": [{"ok": r["setup"]["ok"], "failed": r["setup"]["failed"], "per_second": r["setup"]["per_second"],
                  "rss_per_allocation": r["setup"]["server_rss_per_allocation"],
                  "loss_at_1pps": r["steps"][0]["loss"] if r["steps"] else None} for r in reps],
    }
ucl = {}
for r in runs:
    if "uclient" in r:
        u = r["uclient"]
        pk = u["sent"] + u["received"]
        us = u["cpu_ticks"] * 1e6 / u["clk_tck"]
        ucl.setdefault((r["system"], u["payload"]), []).append({"us_per_packet": us / pk if pk else None, "lost": u["lost"], "sent": u["sent"]})

def f(x, spec="{:,.0f}"):
    return spec.format(x) if x is not None else "n/a"

lines = []
n_runs = max([len(v["max_relayed_pps_runs"]) for v in table.values()] or [0])
lines.append(f"Median of {n_runs} runs; {os.environ['ALLOCS']} allocations, channels; reference load {ref:.0f} packets/s per allocation.")
lines.append("")
lines.append("| metric | payload | geoturn | coturn | raw forwarder | geoturn / coturn | geoturn / raw |")
lines.append("|---|---|---|---|---|---|---|")
def ratio(a, b, spec="{:.2f}"):
    return spec.format(a / b) if a is not None and b else "n/a"
for p in payloads:
    g, c, r = (table[(s, p)] for s in systems)
    lines.append(f"| max relayed packets/s at ≤ 0.1 % loss | {p} B | {f(g['max_relayed_pps'])} | {f(c['max_relayed_pps'])} | {f(r['max_relayed_pps'])} | {ratio(g['max_relayed_pps'], c['max_relayed_pps'])} | {ratio(g['max_relayed_pps'], r['max_relayed_pps'])} |")
for p in payloads:
    g, c, r = (table[(s, p)] for s in systems)
    lines.append(f"| relay CPU µs per relayed packet (geoturn bench, reference load) | {p} B | {f(g['cpu_us_per_packet_at_ref'], '{:.2f}')} | {f(c['cpu_us_per_packet_at_ref'], '{:.2f}')} | {f(r['cpu_us_per_packet_at_ref'], '{:.2f}')} | {ratio(g['cpu_us_per_packet_at_ref'], c['cpu_us_per_packet_at_ref'])} | {ratio(g['cpu_us_per_packet_at_ref'], r['cpu_us_per_packet_at_ref'])} |")
for p in payloads:
    g, c, r = (table[(s, p)] for s in systems)
    rates = sorted({x for x in g["common_max_rates"] if x})
    lines.append(f"| relay CPU µs per relayed packet (geoturn bench, highest load all sustained: {'/'.join(f'{x:.0f}' for x in rates)} per allocation) | {p} B | {f(g['cpu_us_per_packet_at_common_max'], '{:.2f}')} | {f(c['cpu_us_per_packet_at_common_max'], '{:.2f}')} | {f(r['cpu_us_per_packet_at_common_max'], '{:.2f}')} | {ratio(g['cpu_us_per_packet_at_common_max'], c['cpu_us_per_packet_at_common_max'])} | {ratio(g['cpu_us_per_packet_at_common_max'], r['cpu_us_per_packet_at_common_max'])} |")
for p in payloads:
    gu = med([x["us_per_packet"] for x in ucl.get(("geoturn", p), [])])
    cu = med([x["us_per_packet"] for x in ucl.get(("coturn", p), [])])
    if gu is not None or cu is not None:
        lines.append(f"| relay CPU µs per relayed packet (turnutils_uclient, -z 0) | {p} B | {f(gu, '{:.2f}')} | {f(cu, '{:.2f}')} | — | {ratio(gu, cu)} | — |")
for p in payloads:
    g, c, r = (table[(s, p)] for s in systems)
    lines.append(f"| p99 added latency, µs (reference load; direct p99 {f(g['direct_p99_us'])} µs) | {p} B | {f(g['p99_added_us'])} | {f(c['p99_added_us'])} | {f(r['p99_added_us'])} | {ratio(g['p99_added_us'], c['p99_added_us'])} | {ratio(g['p99_added_us'], r['p99_added_us'])} |")
for p in payloads:
    g, c, r = (table[(s, p)] for s in systems)
    lines.append(f"| p50 added latency, µs (reference load; direct p50 {f(g['direct_p50_us'])} µs) | {p} B | {f(g['p50_added_us'])} | {f(c['p50_added_us'])} | {f(r['p50_added_us'])} | {ratio(g['p50_added_us'], c['p50_added_us'])} | {ratio(g['p50_added_us'], r['p50_added_us'])} |")
g, c, r = (mem[s] for s in systems)
lines.append(f"| memory per allocation, bytes (RSS growth over {os.environ.get('MEM_ALLOCS', '10000')}) | 160 B | {f(g['bytes_per_allocation'])} | {f(c['bytes_per_allocation'])} | {f(r['bytes_per_allocation'])} | {ratio(g['bytes_per_allocation'], c['bytes_per_allocation'])} | {ratio(g['bytes_per_allocation'], r['bytes_per_allocation'])} |")
lines.append(f"| allocations per second | 160 B | {f(g['allocations_per_second'])} | {f(c['allocations_per_second'])} | {f(r['allocations_per_second'])} | {ratio(g['allocations_per_second'], c['allocations_per_second'])} | {ratio(g['allocations_per_second'], r['allocations_per_second'])} |")
if variants:
    lines.append("")
    lines.append("| variant | payload | max relayed packets/s | CPU µs/packet, reference load | CPU µs/packet, common max | uclient CPU µs/packet | max vs GSO on |")
    lines.append("|---|---|---|---|---|---|---|")
    for v in variants:
        base = v.split("-")[0]
        for p in payloads:
            t, b = table[(v, p)], table[(base, p)]
            vu = med([x["us_per_packet"] for x in ucl.get((v, p), [])])
            lines.append(f"| {v} | {p} B | {f(t['max_relayed_pps'])} | {f(t['cpu_us_per_packet_at_ref'], '{:.2f}')} | {f(t['cpu_us_per_packet_at_common_max'], '{:.2f}')} | {f(vu, '{:.2f}')} | {ratio(t['max_relayed_pps'], b['max_relayed_pps'])} |")
text = "\n".join(lines)
print(text)
print()
print("per-run max relayed packets/s:")
for (s, p), v in sorted(table.items()):
    print(f"  {s:<13} {p:>5} B: {[round(x) for x in v['max_relayed_pps_runs']]}  (server CPU % at max {f(v['server_cpu_percent_at_max'])}, generator CPU % {f(v['generator_cpu_percent_at_max'])}; loss at ref {v['ref_loss']}; p50/p99 µs at ref {[round(x) for x in v['p50_runs']]} / {[round(x) for x in v['p99_runs']]})")
for s in systems:
    print(f"  memory {s}: {mem[s]['runs']}")
for k, v in sorted(ucl.items()):
    print(f"  uclient {k}: {v}")

doc = {
    "benchmark": "geoturn vs coturn vs raw UDP forwarder, same load (geoturn bench; turnutils_uclient for CPU)",
    "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                "cpu_model": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), None)},
    "git_head": os.environ["GIT_HEAD"],
    "table_markdown": text,
    "steps": {f"{s}/{p}": v for (s, p), v in table.items()},
    "memory": mem,
    "uclient": {f"{s}/{p}": v for (s, p), v in ucl.items()},
    "log_dir": os.environ["LOG_DIR"],
}
json.dump(doc, open(os.environ["OUT"], "w"), indent=2)
print()
print(f"raw figures: {os.environ['OUT']}; logs and every run's JSON: {os.environ['LOG_DIR']}")
PY
