#!/usr/bin/env bash
# offload-side-by-side.sh — the kernel fast path (issue 18) measured side by side, over veth.
#
# Where bench/side-by-side.sh runs everything on 127.0.0.1, this runs the relay in a network
# namespace of its own and the load generator (`geoturn bench`, with its echo peers) in another,
# joined by two veth pairs, so every system sees the same non-loopback path:
#
#   namespace <NS>g (generator)                 namespace <NS>r (relay)
#   clients 10.77.1.2  ── veth <NS>gc ─ <NS>rc ── 10.77.1.1:PORT  listening address
#   echo peers 10.77.2.2 ─ veth <NS>gp ─ <NS>rp ── 10.77.2.1       relayed address
#
# Systems (each started fresh for every measurement, one relay thread, stopped by PID):
#   geoturn-offload  geoturn relay --offload on --workers 1: established channels relayed by
#                    the eBPF TC program (relay/bpf/channel_relay.bpf.c)
#   geoturn          the same relay with --offload off: the socket path
#   coturn           turnserver (Debian coturn) --relay-threads=1, UDP only, TURN REST secret
#   raw              raw-forwarder --threads 1 --relay-ip 10.77.2.1: recvmmsg/sendmmsg, no TURN
# The generator's veth ends have transmit checksum offload off (ethtool -K tx off), so its
# datagrams carry full checksums as on a wire: the eBPF program leaves datagrams whose
# checksum is still to be computed to the sockets (README, "Kernel fast path"). The relay's
# ends keep it on, as a NIC would compute them. Forwarding is on in the relay's namespace for
# every system (the program's route lookup needs it; it changes nothing for a socket relay).
#
# CPU accounting. With the offload the relay's work is softirq, not the relay process, and on
# veth a datagram's receive processing (the TC program included) runs in the *sender's*
# context unless steered: utime+stime of the relay's PID would show almost nothing. So:
#   * the relay process (all its threads) is pinned to RELAY_CPU (taskset) and the generator to
#     GEN_CPU;
#   * RPS on every veth end steers receive processing to the CPU of that end's namespace:
#     everything arriving in the relay's namespace (socket delivery, the TC program, its
#     redirect and the transmit onto the generator's veth) runs on RELAY_CPU, everything
#     arriving in the generator's namespace on GEN_CPU;
#   * relay CPU = busy time of RELAY_CPU during a step (wall time less idle, I/O wait and steal
#     in /proc/stat: this tickless kernel measures idle time, so the figure is exact to its 10 ms
#     unit however short the bursts; the user/system/softirq columns are tick samples and are not
#     used) divided by the packets relayed in that step (`geoturn bench --cpus RELAY_CPU`).
# The same method for all four systems. What else runs on RELAY_CPU (other jobs of this shared
# machine) is counted too: the "background" row is RELAY_CPU's busy time while no relay runs
# (during the direct run at the reference load), given per relayed packet at that load so it
# can be compared; the per-process figure (utime+stime of the relay's PID) is kept beside it.
#
# Load and metrics as in side-by-side.sh: ALLOCS allocations (channels; flows for raw) sending
# timestamped packets to the echo peers, echoed back through the relay. Per payload and system:
#   * step test over RATES (packets/s per allocation), STEP_SECONDS each, ending after two steps
#     in a row lose more than 0.1 %; max = highest step with loss <= 0.1 %, as relayed
#     packets/s (both directions); GEN_CPU's busy % at the first failing step says whether the
#     generator was the limit;
#   * relay CPU per relayed packet at REF_RATE and at the highest step every system sustained
#     in that rep ("common max");
#   * added p99 / p50 latency: round trip through the relay at REF_RATE minus the same load sent
#     straight to the echo peers in the generator's namespace (`--target direct`, same rep: no
#     veth on that path, so the two veth hops count as added latency for every system alike).
# Every measurement REPS times, systems rotated each rep; medians, with every run listed.
# After each geoturn run the relay's /metrics is saved: geoturn_offload_relayed_packets_total
# against geoturn_relayed_packets_total shows the kernel relayed the traffic (the summary prints
# the kernel's share for the offload runs).
# PROFILE=1 adds one `perf record -a -g` of the offload at PROFILE_RATE (not in the tables).
#
# Usage (root: namespaces, eBPF, RPS; the script builds nothing)
#   CARGO_TARGET_DIR=... cargo build --release --locked -p geoturn -p geoturn-bench
#   GEOTURN_BIN=.../release/geoturn FORWARDER_BIN=.../release/raw-forwarder bench/offload-side-by-side.sh
#   QUICK=1 bench/offload-side-by-side.sh        # one rep, 160 B, fewer steps (about 1 min)
#   (the default settings take about 13 minutes on a 2-core VM)
#
# Environment (all optional)
#   REPS=3  PAYLOADS="160 1200"  ALLOCS=20  STEP_SECONDS=3  REF_RATE=1000
#   RATES="1000,2000,3000,4000,5000,6000,7000,8000,10000,12000,14000"
#   SYSTEMS="geoturn-offload geoturn coturn raw"  RELAY_CPU=1  GEN_CPU=0
#   GEN_GSO=true (the generator's own sends with UDP GSO; each datagram still reaches the relay
#   on its own, segmented before the veth, with its payload in page fragments)
#   RELAY_USO=1: the relay's veth ends keep UDP segmentation offload, so a socket relay's GSO
#   send crosses the veth as one buffer and is split only at the generator's sockets (cheaper
#   for the generator than the separate datagrams a wire delivers; the eBPF path always sends
#   separate datagrams); RELAY_USO=0 turns it off: the relay's own CPU splits them, as for a
#   NIC without USO
#   PROFILE=0  PROFILE_RATE=8000 (per allocation)  PROFILE_SECONDS=5
#   BOOST=1  OUT=bench/results/offload-side-by-side-latest.json  LOG_DIR=<mktemp -d>
#   GEOTURN_BIN=<repo>/target/release/geoturn  FORWARDER_BIN=<repo>/target/release/raw-forwarder
#   NS=gtb-<pid> (prefix of the namespaces and interfaces this script makes and deletes)
#   SUMMARY_ONLY=1 with LOG_DIR of an earlier run: print its tables again, run nothing
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ "${QUICK:-0}" == 1 ]]; then
    REPS="${REPS:-1}"
    PAYLOADS="${PAYLOADS:-160}"
    RATES="${RATES:-1000,2000,4000,6000,8000,10000,12000,14000}"
    STEP_SECONDS="${STEP_SECONDS:-2}"
fi
REPS="${REPS:-3}"
PAYLOADS="${PAYLOADS:-160 1200}"
ALLOCS="${ALLOCS:-20}"
STEP_SECONDS="${STEP_SECONDS:-3}"
RATES="${RATES:-1000,2000,3000,4000,5000,6000,7000,8000,10000,12000,14000}"
REF_RATE="${REF_RATE:-1000}"
SYSTEMS="${SYSTEMS:-geoturn-offload geoturn coturn raw}"
RELAY_CPU="${RELAY_CPU:-1}"
GEN_CPU="${GEN_CPU:-0}"
PROFILE="${PROFILE:-0}"
GEN_GSO="${GEN_GSO:-true}"
RELAY_USO="${RELAY_USO:-1}"
PROFILE_RATE="${PROFILE_RATE:-8000}"
PROFILE_SECONDS="${PROFILE_SECONDS:-5}"
BOOST="${BOOST:-1}"
OUT="${OUT:-$ROOT/bench/results/offload-side-by-side-latest.json}"
GEOTURN_BIN="${GEOTURN_BIN:-$ROOT/target/release/geoturn}"
FORWARDER_BIN="${FORWARDER_BIN:-$ROOT/target/release/raw-forwarder}"
NS="${NS:-gtb-$$}"
RELAY_PORTS=40000-49999
GEN_IP=10.77.1.2
LISTEN_IP=10.77.1.1
RELAY_IP=10.77.2.1
PEER_IP=10.77.2.2
REALM=geoturn

die() { echo "offload-side-by-side: $*" >&2; exit 1; }

for sys in $SYSTEMS; do
    case "$sys" in geoturn-offload | geoturn | coturn | raw) ;; *) die "unknown system '$sys' in SYSTEMS" ;; esac
done
for v in REPS ALLOCS REF_RATE RELAY_CPU GEN_CPU PROFILE_RATE PROFILE_SECONDS; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done
[[ ",$RATES," == *",$REF_RATE,"* ]] || die "REF_RATE ($REF_RATE) must be one of RATES ($RATES)"
[[ "$RELAY_CPU" != "$GEN_CPU" ]] || die "RELAY_CPU and GEN_CPU must differ"
# Interface names: at most 15 bytes, and the suffixes below add 2.
[[ "$NS" =~ ^[a-z0-9-]{1,13}$ ]] || die "NS must be 1-13 of a-z 0-9 - (got '$NS')"

if [[ "${SUMMARY_ONLY:-0}" != 1 ]]; then
    [[ "$(id -u)" == 0 ]] || die "needs root (network namespaces, eBPF, RPS)"
    for b in "$GEOTURN_BIN" "$FORWARDER_BIN"; do
        [[ -x "$b" ]] || die "$b not found; build with \`cargo build --release --locked -p geoturn -p geoturn-bench\` and set GEOTURN_BIN / FORWARDER_BIN"
    done
    for tool in ip ethtool taskset turnserver timeout ss python3 curl; do
        command -v "$tool" >/dev/null 2>&1 ||
            die "$tool not found (apt-get install -y --no-install-recommends iproute2 ethtool util-linux coturn curl)"
    done
    [[ "$PROFILE" != 1 ]] || command -v perf >/dev/null 2>&1 || die "PROFILE=1 needs perf"
    [[ -d "/sys/devices/system/cpu/cpu$RELAY_CPU" && -d "/sys/devices/system/cpu/cpu$GEN_CPU" ]] ||
        die "CPU $RELAY_CPU or $GEN_CPU does not exist"
    if [[ "$BOOST" == 1 ]]; then
        echo -10 >/proc/self/autogroup 2>/dev/null || echo "offload-side-by-side: could not raise priority (BOOST=0 to silence)" >&2
    fi
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
SECRET="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"

LOG_DIR="${LOG_DIR:-$(mktemp -d /tmp/geoturn-offload-side-by-side.XXXXXX)}"
mkdir -p "$LOG_DIR" "$(dirname "$OUT")"
RUNS="$LOG_DIR/runs.jsonl"

# ---- our own processes and namespaces only ----------------------------------------------------
OWN_PIDS=()
NSG="${NS}g"
NSR="${NS}r"
MADE_NS=()
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
cleanup() {
    local p n
    for p in "${OWN_PIDS[@]}"; do stop_pid "$p"; done
    # Deleting a namespace deletes the veth ends in it (and so their peers).
    for n in "${MADE_NS[@]}"; do ip netns del "$n" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

in_g() { ip netns exec "$NSG" "$@"; }
in_r() { ip netns exec "$NSR" "$@"; }

rps_to() { # ns dev cpu: steer the receive processing of every rx queue of dev to cpu
    local ns="$1" dev="$2" cpu="$3" mask q
    mask="$(printf '%x' $((1 << cpu)))"
    # ip netns exec mounts the namespace's own /sys, where dev is visible.
    for q in $(ip netns exec "$ns" sh -c "ls -d /sys/class/net/$dev/queues/rx-*"); do
        ip netns exec "$ns" sh -c "echo $mask > $q/rps_cpus"
    done
}

make_namespaces() {
    local n
    for n in "$NSG" "$NSR"; do
        ! ip netns list | grep -qw "$n" || die "namespace $n exists already (NS=... another prefix)"
        ip netns add "$n"
        MADE_NS+=("$n")
        ip netns exec "$n" ip link set lo up
    done
    ip link add "${NS}gc" netns "$NSG" type veth peer name "${NS}rc" netns "$NSR"
    ip link add "${NS}gp" netns "$NSG" type veth peer name "${NS}rp" netns "$NSR"
    in_g ip addr add "$GEN_IP/24" dev "${NS}gc"
    in_g ip addr add "$PEER_IP/24" dev "${NS}gp"
    in_r ip addr add "$LISTEN_IP/24" dev "${NS}rc"
    in_r ip addr add "$RELAY_IP/24" dev "${NS}rp"
    for n in gc gp; do in_g ip link set "${NS}$n" up; done
    for n in rc rp; do in_r ip link set "${NS}$n" up; done
    # Full checksums from the generator, as from a wire (see the header).
    in_g ethtool -K "${NS}gc" tx off >/dev/null
    in_g ethtool -K "${NS}gp" tx off >/dev/null
    if [[ "$RELAY_USO" == 0 ]]; then
        in_r ethtool -K "${NS}rc" tx-udp-segmentation off >/dev/null
        in_r ethtool -K "${NS}rp" tx-udp-segmentation off >/dev/null
    fi
    in_r sysctl -qw net.ipv4.ip_forward=1
    rps_to "$NSG" "${NS}gc" "$GEN_CPU"
    rps_to "$NSG" "${NS}gp" "$GEN_CPU"
    rps_to "$NSR" "${NS}rc" "$RELAY_CPU"
    rps_to "$NSR" "${NS}rp" "$RELAY_CPU"
}

port_busy() { [[ -n "$(in_r ss -Hlnu "( sport = :$1 )" 2>/dev/null)$(in_r ss -Hlnt "( sport = :$1 )" 2>/dev/null)" ]]; }
pick_port() {
    local p i
    for ((i = 0; i < 200; i++)); do
        p=$((30000 + RANDOM % 9000))
        port_busy "$p" || { echo "$p"; return 0; }
    done
    die "no free port"
}
wait_udp_listen() { # pid port
    local i
    for ((i = 0; i < 150; i++)); do
        kill -0 "$1" 2>/dev/null || return 1
        [[ -n "$(in_r ss -Hlnu "( sport = :$2 )" 2>/dev/null)" ]] && return 0
        sleep 0.1
    done
    return 1
}

start_system() { # system port log -> SYS_PID, HTTP_PORT
    local sys="$1" port="$2" log="$3"
    HTTP_PORT="$(pick_port)"
    case "$sys" in
    geoturn | geoturn-offload)
        local offload=off
        [[ "$sys" == geoturn-offload ]] && offload=on
        # `ip netns exec` and taskset both exec: $! is the relay's own PID.
        GEOTURN_USER_QUOTA=0 GEOTURN_ALLOCATIONS_PER_IP=0 GEOTURN_MAX_BPS=0 GEOTURN_MAX_PPS=0 \
        GEOTURN_AUTH_SECRETS="$SECRET" GEOTURN_LOG=info GEOTURN_HTTP="127.0.0.1:$HTTP_PORT" GEOTURN_DRAIN_TIMEOUT=1 \
            ip netns exec "$NSR" taskset -c "$RELAY_CPU" "$GEOTURN_BIN" relay \
            --listen "$LISTEN_IP:$port" --relay-ip "$RELAY_IP" --allow-peer 10.77.0.0/16 \
            --relay-ports "$RELAY_PORTS" --workers 1 --unauth-rate 0 --offload "$offload" >"$log" 2>&1 &
        ;;
    coturn)
        ip netns exec "$NSR" taskset -c "$RELAY_CPU" turnserver -n --listening-ip="$LISTEN_IP" \
            --listening-port="$port" --relay-ip="$RELAY_IP" \
            --use-auth-secret --static-auth-secret="$SECRET" --realm="$REALM" \
            --no-tls --no-dtls --no-cli --no-tcp-relay \
            --min-port="${RELAY_PORTS%-*}" --max-port="${RELAY_PORTS#*-}" --relay-threads=1 \
            --log-file=stdout --simple-log --no-stun-backward-compatibility \
            --pidfile="$LOG_DIR/turnserver.pid" --userdb="$LOG_DIR/turndb" >"$log" 2>&1 &
        ;;
    raw)
        ip netns exec "$NSR" taskset -c "$RELAY_CPU" "$FORWARDER_BIN" --listen "$LISTEN_IP:$port" \
            --relay-ip "$RELAY_IP" --threads 1 >"$log" 2>&1 &
        ;;
    esac
    SYS_PID=$!
    OWN_PIDS+=("$SYS_PID")
    wait_udp_listen "$SYS_PID" "$port" || { cat "$log" >&2; die "$sys did not listen on udp $port"; }
    sleep 0.5
}

bench() { # tag system port extra-args... -> appends {"tag","system",...,"report"} to RUNS
    local tag="$1" sys="$2" port="$3"; shift 3
    local target=turn pidarg=()
    [[ "$sys" == raw ]] && target=raw
    [[ "$sys" == direct ]] && target=direct
    [[ "$sys" != direct ]] && pidarg=(--server-pid "$SYS_PID")
    if ! timeout -k 5 600 ip netns exec "$NSG" taskset -c "$GEN_CPU" "$GEOTURN_BIN" bench --json \
        --target "$target" --server "$LISTEN_IP:$port" --client-ip "$GEN_IP" --peer-ip "$PEER_IP" \
        --secret "$SECRET" --cpus "$RELAY_CPU" --generator-cpus "$GEN_CPU" --gso "$GEN_GSO" "${pidarg[@]}" "$@" \
        >"$LOG_DIR/$tag.json" 2>"$LOG_DIR/$tag.err"; then
        echo "offload-side-by-side: $tag: bench failed: $(tail -3 "$LOG_DIR/$tag.err")" >&2
        return 0
    fi
    local metrics=""
    if [[ "$sys" == geoturn* ]]; then
        in_r curl -sf --max-time 2 "http://127.0.0.1:$HTTP_PORT/metrics" >"$LOG_DIR/$tag.metrics" || true
        metrics="$LOG_DIR/$tag.metrics"
    fi
    python3 - "$LOG_DIR/$tag.json" "$tag" "$sys" "$metrics" >>"$RUNS" <<'PY'
import json, sys
rep = json.load(open(sys.argv[1]))
# Packets relayed in all (sockets and kernel) and by the kernel, from the relay's /metrics.
totals = None
if sys.argv[4]:
    totals = {"relayed": 0.0, "kernel": 0.0}
    try:
        for line in open(sys.argv[4]):
            name = line.split("{", 1)[0].split(" ", 1)[0]
            if name == "geoturn_relayed_packets_total":
                totals["relayed"] += float(line.rsplit(" ", 1)[1])
            elif name == "geoturn_offload_relayed_packets_total":
                totals["kernel"] += float(line.rsplit(" ", 1)[1])
    except (OSError, ValueError):
        totals = None
print(json.dumps({"tag": sys.argv[2], "system": sys.argv[3], "report": rep, "relay_totals": totals}))
PY
}

rotate() { # rep -> SYSTEMS rotated by rep - 1
    local list n k i
    read -ra list <<<"$SYSTEMS"
    n=${#list[@]}
    k=$((($1 - 1) % n))
    for ((i = 0; i < n; i++)); do printf '%s ' "${list[$(((i + k) % n))]}"; done
}

if [[ "${SUMMARY_ONLY:-0}" == 1 ]]; then
    [[ -s "$RUNS" ]] || die "SUMMARY_ONLY=1 needs LOG_DIR of an earlier run"
    REPS=0
else
    : >"$RUNS"
    make_namespaces
fi
echo "offload-side-by-side: REPS=$REPS PAYLOADS='$PAYLOADS' ALLOCS=$ALLOCS RATES=$RATES REF_RATE=$REF_RATE RELAY_CPU=$RELAY_CPU GEN_CPU=$GEN_CPU; namespaces $NSG $NSR; logs in $LOG_DIR" >&2
GIT_HEAD="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
for ((rep = 1; rep <= REPS; rep++)); do
    for len in $PAYLOADS; do
        bench "direct-l$len-r$rep" direct 9 --allocations "$ALLOCS" --payload "$len" \
            --rate "$REF_RATE" --duration "$STEP_SECONDS"
        for sys in $(rotate "$rep"); do
            port="$(pick_port)"
            start_system "$sys" "$port" "$LOG_DIR/steps-$sys-l$len-r$rep.relay.log"
            bench "steps-$sys-l$len-r$rep" "$sys" "$port" --allocations "$ALLOCS" --payload "$len" \
                --rate "$RATES" --duration "$STEP_SECONDS" --warmup 1
            stop_pid "$SYS_PID"
            echo "  rep $rep l=$len $sys: done" >&2
        done
    done
done

if [[ "$PROFILE" == 1 && "${SUMMARY_ONLY:-0}" != 1 ]]; then
    port="$(pick_port)"
    start_system geoturn-offload "$port" "$LOG_DIR/profile.relay.log"
    ip netns exec "$NSG" taskset -c "$GEN_CPU" "$GEOTURN_BIN" bench --json --target turn \
        --server "$LISTEN_IP:$port" --client-ip "$GEN_IP" --peer-ip "$PEER_IP" --secret "$SECRET" \
        --cpus "$RELAY_CPU" --generator-cpus "$GEN_CPU" --allocations "$ALLOCS" --payload 160 \
        --rate "$PROFILE_RATE" --duration $((PROFILE_SECONDS + 2)) --warmup 1 \
        >"$LOG_DIR/profile.json" 2>"$LOG_DIR/profile.err" &
    gen_pid=$!
    OWN_PIDS+=("$gen_pid")
    sleep 3
    perf record -a -g -o "$LOG_DIR/offload.perf.data" -- sleep "$PROFILE_SECONDS" 2>"$LOG_DIR/perf-record.err" || true
    wait "$gen_pid" || true
    stop_pid "$SYS_PID"
    for cpu in "$RELAY_CPU" "$GEN_CPU"; do
        perf report -i "$LOG_DIR/offload.perf.data" --stdio --no-children --cpu "$cpu" \
            --sort sym --percent-limit 1 -g none 2>/dev/null |
            grep -v '^$' | head -45 >"$LOG_DIR/offload.perf.cpu$cpu.txt" || true
    done
    echo "  profile: $LOG_DIR/offload.perf.cpu$RELAY_CPU.txt (relay CPU), offload.perf.cpu$GEN_CPU.txt (generator CPU)" >&2
fi

export RUNS OUT REF_RATE ALLOCS LOG_DIR GIT_HEAD SYSTEMS RELAY_CPU GEN_CPU
python3 - <<'PY'
import json, os, statistics, platform, datetime

runs = [json.loads(l) for l in open(os.environ["RUNS"])]
ref = float(os.environ["REF_RATE"])
systems = [s for s in ["geoturn-offload", "geoturn", "coturn", "raw"] if s in os.environ["SYSTEMS"].split()]

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

def step_at(rep, rate):
    for s in rep["steps"]:
        if abs(s["rate_per_allocation"] - rate) < 1e-9:
            return s
    return None

def rep_no(tag):
    return tag.rsplit("-r", 1)[1]

payloads = sorted({r["report"]["payload"] for r in runs if r["tag"].startswith("steps-")})
table = {}
background = {}
for p in payloads:
    direct = [(r, step_at(r["report"], ref)) for r in runs if r["tag"].startswith(f"direct-l{p}-")]
    direct_p99 = {rep_no(r["tag"]): s["rtt_us"]["p99"] for r, s in direct if s}
    direct_p50 = {rep_no(r["tag"]): s["rtt_us"]["p50"] for r, s in direct if s}
    bg = [s["cpus_busy_percent"] for _, s in direct if s]
    background[p] = {"busy_percent_runs": bg, "busy_percent": med(bg),
                     # as µs per relayed packet at the reference load (2 × offered packets)
                     "us_per_packet_at_ref": (med(bg) * 1e4 / (2 * ref * float(os.environ["ALLOCS"]))) if bg else None}
    common = {}
    for r in runs:
        if r["tag"].startswith("steps-") and f"-l{p}-r" in r["tag"]:
            m = (r["report"]["max_sustained"] or {}).get("rate_per_allocation", 0.0)
            common[rep_no(r["tag"])] = min(common.get(rep_no(r["tag"]), m), m)
    for sys in systems:
        rs = [r for r in runs if r["tag"].startswith(f"steps-{sys}-l{p}-r")]
        reps = [r["report"] for r in rs]
        nos = [rep_no(r["tag"]) for r in rs]
        at_common = [step_at(r, common.get(n, 0.0)) for r, n in zip(reps, nos)]
        refs = [step_at(r, ref) for r in reps]
        maxes = [(r["max_sustained"] or {}).get("relayed_pps", 0.0) for r in reps]
        top = [r["steps"][-1]["rate_per_allocation"] if r["steps"] else None for r in reps]
        tops_all = [all(s["sustained"] for s in r["steps"]) for r in reps]
        # The generator's CPU at the first step past the max: was it the limit?
        gen_fail, behind_fail, loss_fail = [], [], []
        for r in reps:
            fails = [s for s in r["steps"] if not s["sustained"]]
            gen_fail.append(fails[0]["generator_cpus_busy_percent"] if fails else None)
            # Packets the generator skipped because it was over 20 ms behind its schedule: when
            # many, the generator, not the relay, ended the step test.
            behind_fail.append(fails[0]["behind"] if fails else None)
            loss_fail.append(round(fails[0]["loss"], 4) if fails else None)
        # Both CPUs at the highest sustained step: the relay's headroom and the generator's.
        at_max = [step_at(r, (r["max_sustained"] or {}).get("rate_per_allocation", -1.0)) for r in reps]
        relay_pct_at_max = [s["cpus_busy_percent"] if s else None for s in at_max]
        gen_pct_at_max = [s["generator_cpus_busy_percent"] if s else None for s in at_max]
        add99 = [s["rtt_us"]["p99"] - direct_p99[n] for s, n in zip(refs, nos) if s and n in direct_p99]
        add50 = [s["rtt_us"]["p50"] - direct_p50[n] for s, n in zip(refs, nos) if s and n in direct_p50]
        kernel_share = []
        for r in rs:
            t = r.get("relay_totals")
            if t and t["relayed"]:
                kernel_share.append(round(t["kernel"] / t["relayed"], 4))
        table[(sys, p)] = {
            "max_relayed_pps": med(maxes), "max_relayed_pps_runs": maxes,
            "top_step_sustained_runs": tops_all,
            "relay_cpu_percent_at_max": med(relay_pct_at_max), "relay_cpu_percent_at_max_runs": relay_pct_at_max,
            "generator_cpu_percent_at_max": med(gen_pct_at_max), "generator_cpu_percent_at_max_runs": gen_pct_at_max,
            "generator_cpu_percent_at_first_failing_step": gen_fail,
            "generator_behind_at_first_failing_step": behind_fail,
            "loss_at_first_failing_step": loss_fail,
            "cpu_us_per_packet_at_ref": med([s["cpus_busy_us_per_packet"] for s in refs if s]),
            "cpu_ref_runs": [s["cpus_busy_us_per_packet"] for s in refs if s],
            "process_cpu_us_per_packet_at_ref": med([s["server_cpu_us_per_packet"] for s in refs if s]),
            "cpu_us_per_packet_at_common_max": med([s["cpus_busy_us_per_packet"] for s in at_common if s]),
            "cpu_common_runs": [s["cpus_busy_us_per_packet"] for s in at_common if s],
            "process_cpu_us_per_packet_at_common_max": med([s["server_cpu_us_per_packet"] for s in at_common if s]),
            "common_max_rates": [common.get(n) for n in nos],
            "p99_added_us": med(add99), "p99_added_runs": add99,
            "p50_added_us": med(add50), "p50_added_runs": add50,
            "ref_loss": [s["loss"] for s in refs if s],
            "kernel_share_runs": kernel_share,
        }

def f(x, spec="{:,.0f}"):
    return spec.format(x).replace(",", " ") if x is not None else "n/a"

def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b else "n/a"

names = {"geoturn-offload": "geoturn --offload on", "geoturn": "geoturn --offload off", "coturn": "coturn", "raw": "raw forwarder"}
n_runs = max([len(v["max_relayed_pps_runs"]) for v in table.values()] or [0])
lines = [f"Median of {n_runs} run(s); {os.environ['ALLOCS']} allocations (channels); reference load {ref:.0f} packets/s per allocation; relay CPU = busy time of CPU {os.environ['RELAY_CPU']} (relay pinned there, its namespace's receive processing steered there)."]
lines.append("")
hdr = "| metric | payload | " + " | ".join(names[s] for s in systems) + " | offload / coturn | offload / raw | offload / off |"
lines.append(hdr)
lines.append("|" + "---|" * (len(systems) + 5))
def row(label, p, key, spec):
    vals = {s: table[(s, p)][key] for s in systems}
    o = vals.get("geoturn-offload")
    lines.append(f"| {label} | {p} B | " + " | ".join(f(vals[s], spec) for s in systems)
                 + f" | {ratio(o, vals.get('coturn'))} | {ratio(o, vals.get('raw'))} | {ratio(o, vals.get('geoturn'))} |")
for p in payloads:
    row("max relayed packets/s at ≤ 0.1 % loss", p, "max_relayed_pps", "{:,.0f}")
for p in payloads:
    row("relay CPU busy % at that max", p, "relay_cpu_percent_at_max", "{:.0f}")
for p in payloads:
    row("generator CPU busy % at that max", p, "generator_cpu_percent_at_max", "{:.0f}")
for p in payloads:
    row("relay CPU µs per relayed packet, reference load", p, "cpu_us_per_packet_at_ref", "{:.2f}")
for p in payloads:
    rates = sorted({x for s in systems for x in table[(s, p)]["common_max_rates"] if x})
    row(f"relay CPU µs per relayed packet, highest common load ({'/'.join(f'{x:.0f}' for x in rates)} per allocation)", p, "cpu_us_per_packet_at_common_max", "{:.2f}")
for p in payloads:
    row("(relay process only, utime+stime, reference load)", p, "process_cpu_us_per_packet_at_ref", "{:.2f}")
for p in payloads:
    row("p99 added latency, µs (reference load)", p, "p99_added_us", "{:,.0f}")
for p in payloads:
    row("p50 added latency, µs (reference load)", p, "p50_added_us", "{:,.0f}")
for p in payloads:
    b = background[p]
    lines.append(f"| background: CPU {os.environ['RELAY_CPU']} busy with no relay (direct run), as µs per packet at the reference load | {p} B | {f(b['us_per_packet_at_ref'], '{:.2f}')} ({f(b['busy_percent'], '{:.1f}')} % of the CPU) | | | | | | |")
text = "\n".join(lines)
print(text)
print()
print("per run:")
for (s, p), v in sorted(table.items()):
    rnd = lambda xs: [None if x is None else round(x) for x in xs]
    print(f"  {s:<16} {p:>5} B: max {rnd(v['max_relayed_pps_runs'])} (every step sustained: {v['top_step_sustained_runs']}; relay / generator CPU % at max {rnd(v['relay_cpu_percent_at_max_runs'])} / {rnd(v['generator_cpu_percent_at_max_runs'])}; first failing step: loss {v['loss_at_first_failing_step']}, packets the generator skipped behind schedule {v['generator_behind_at_first_failing_step']})")
    print(f"  {'':<16} {'':>5}   CPU µs/packet at ref {[round(x, 2) for x in v['cpu_ref_runs']]}, at common max {[round(x, 2) for x in v['cpu_common_runs']]} (rates {v['common_max_rates']}); p99 added {[round(x) for x in v['p99_added_runs']]}; p50 added {[round(x) for x in v['p50_added_runs']]}; loss at ref {v['ref_loss']}")
    if s == "geoturn-offload":
        print(f"  {'':<16} {'':>5}   share of the relay's packets relayed in the kernel (/metrics): {v['kernel_share_runs']}")
for p, b in background.items():
    print(f"  background CPU {os.environ['RELAY_CPU']} busy % during the direct runs, {p} B: {[round(x, 1) for x in b['busy_percent_runs']]}")

targets = []
for p in payloads:
    g = lambda s, k: table.get((s, p), {}).get(k)
    o_ref, c_ref = g("geoturn-offload", "cpu_us_per_packet_at_ref"), g("coturn", "cpu_us_per_packet_at_ref")
    o_cm, c_cm = g("geoturn-offload", "cpu_us_per_packet_at_common_max"), g("coturn", "cpu_us_per_packet_at_common_max")
    o_max, c_max, r_max = g("geoturn-offload", "max_relayed_pps"), g("coturn", "max_relayed_pps"), g("raw", "max_relayed_pps")
    o99, n99 = g("geoturn-offload", "p99_added_us"), g("geoturn", "p99_added_us")
    def met(b):
        return "met" if b else "NOT met"
    if None not in (o_ref, c_ref):
        targets.append(f"{p} B: CPU/packet ≤ 0.3 × coturn at the reference load: {o_ref / c_ref:.2f} × → {met(o_ref <= 0.3 * c_ref)}")
    if None not in (o_cm, c_cm):
        targets.append(f"{p} B: CPU/packet ≤ 0.3 × coturn at the highest common load: {o_cm / c_cm:.2f} × → {met(o_cm <= 0.3 * c_cm)}")
    if None not in (o_max, c_max, r_max) and c_max and r_max:
        targets.append(f"{p} B: max ≥ 3 × coturn and > raw: {o_max / c_max:.2f} × coturn, {o_max / r_max:.2f} × raw → {met(o_max >= 3 * c_max and o_max > r_max)}")
    if None not in (o99, n99):
        targets.append(f"{p} B: p99 added latency no worse than without offload: {o99:.0f} vs {n99:.0f} µs → {met(o99 <= n99)}")
print()
print("targets (medians):")
for t in targets:
    print("  " + t)

doc = {
    "benchmark": "geoturn with and without the eBPF offload vs coturn vs raw forwarder, across veth between namespaces (geoturn bench)",
    "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                "cpu_model": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), None)},
    "git_head": os.environ["GIT_HEAD"],
    "relay_cpu": int(os.environ["RELAY_CPU"]), "generator_cpu": int(os.environ["GEN_CPU"]),
    "table_markdown": text,
    "targets": targets,
    "steps": {f"{s}/{p}": v for (s, p), v in table.items()},
    "background": {str(p): v for p, v in background.items()},
    "log_dir": os.environ["LOG_DIR"],
}
json.dump(doc, open(os.environ["OUT"], "w"), indent=2)
print()
print(f"raw figures: {os.environ['OUT']}; logs and every run's JSON: {os.environ['LOG_DIR']}")
PY
