#!/usr/bin/env bash
# side-by-side.sh — relay CPU time per relayed packet, geoturn vs coturn, same load.
#
# Method
#   * Load: coturn's own client, `turnutils_uclient` (UDP, channels, TURN REST auth with -W),
#     M sessions x N messages of L bytes, one allocation per session (-c: no RTCP allocations),
#     each message sent to an echo peer (`turnutils_peer`) and echoed back through the relay.
#   * Relays: geoturn (`target/release/geoturn relay --workers 1`) and coturn 4.6.1
#     (`turnserver --relay-threads=1`), both on 127.0.0.1 only, same secret and realm, UDP only,
#     each started fresh for every run and stopped by PID (SIGTERM) afterwards.
#   * Relay CPU = delta of utime+stime (fields 14+15 of /proc/PID/stat, all threads of the relay
#     process only, in clock ticks of `getconf CLK_TCK`), read after the relay is up and idle and
#     just before the client starts, and again right after the client exits. Startup and
#     shutdown are not counted; the client's idle tail (it waits up to ~10 s for lost replies)
#     is counted for both relays alike.
#   * Relayed packets (primary definition) = tot_send_msgs + tot_recv_msgs from the client's final
#     summary: every sent message crosses the relay client->peer once, every echoed one crosses
#     peer->client once; with no loss this is 2 x echoed messages. A message lost before the
#     relay read it is still counted, so with loss this over-counts; the JSON therefore also gives
#     cpu/(2 x tot_recv_msgs) ("delivered" definition), which only counts full round trips.
#   * Each payload size is run REPS times, alternating geoturn, coturn, geoturn, coturn...;
#     the table shows medians and the ratio geoturn/coturn of the medians.
#   * Loss is taken from the client ("Total lost packets") and cross-checked with the kernel's
#     UDP RcvbufErrors counter (/proc/net/snmp, system-wide delta) and an approximate
#     per-socket attribution from the `drops` column of /proc/net/udp sampled during the run.
#
# Usage
#   cargo build --release -p geoturn      # this script builds nothing
#   bench/side-by-side.sh                 # or: PAYLOADS="160 1200" M=20 N=2000 Z=0 REPS=3 bench/side-by-side.sh
#
# Environment (all optional)
#   M=20  N=2000  Z=0        uclient -m (sessions), -n (messages per session), -z (ms between
#                            messages per session; 0 = as fast as its 1 ms timer allows, up to 50
#                            per session per tick)
#   PAYLOADS="160 1200"      uclient -l values, space separated
#   REPS=3                   runs per relay and payload
#   OUT=bench/results/side-by-side-latest.json
#   GEOTURN_BIN=<repo>/target/release/geoturn
#   SECRET=<random>          shared TURN REST secret (>= 16 bytes)
#   GEOTURN_RELAY_PORTS=50000-50999  COTURN_MIN_PORT=51000  COTURN_MAX_PORT=51999
#   RUN_TIMEOUT=120          seconds one client run may take before it is killed
#   LOG_DIR=<mktemp -d>      where server/client/peer logs of every run are kept
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
M="${M:-20}"
N="${N:-2000}"
Z="${Z:-0}"
PAYLOADS="${PAYLOADS:-160 1200}"
REPS="${REPS:-3}"
OUT="${OUT:-$ROOT/bench/results/side-by-side-latest.json}"
GEOTURN_BIN="${GEOTURN_BIN:-$ROOT/target/release/geoturn}"
GEOTURN_RELAY_PORTS="${GEOTURN_RELAY_PORTS:-50000-50999}"
COTURN_MIN_PORT="${COTURN_MIN_PORT:-51000}"
COTURN_MAX_PORT="${COTURN_MAX_PORT:-51999}"
RUN_TIMEOUT="${RUN_TIMEOUT:-120}"
REALM=geoturn
HOST=127.0.0.1

die() { echo "side-by-side: $*" >&2; exit 1; }

# ---- prerequisites -------------------------------------------------------------------------
if [[ ! -x "$GEOTURN_BIN" ]]; then
    die "$GEOTURN_BIN not found; run \`cargo build --release -p geoturn\` in $ROOT first"
fi
for tool in turnserver turnutils_uclient turnutils_peer timeout ss awk python3 getconf; do
    command -v "$tool" >/dev/null 2>&1 ||
        die "$tool not found (coturn: apt-get install -y --no-install-recommends coturn)"
done
for v in M N Z REPS RUN_TIMEOUT COTURN_MIN_PORT COTURN_MAX_PORT; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer (got '${!v}')"
done
for l in $PAYLOADS; do [[ "$l" =~ ^[0-9]+$ ]] || die "PAYLOADS must be integers (got '$l')"; done
CLK_TCK="$(getconf CLK_TCK)"
if [[ -z "${SECRET:-}" ]]; then
    SECRET="$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
fi
(( ${#SECRET} >= 16 )) || die "SECRET must be at least 16 bytes"

# Warn (do not fail) when sources look newer than the binary: others edit the tree concurrently.
newer_src="$(find "$ROOT/src" "$ROOT/relay" "$ROOT/shared" -name '*.rs' -newer "$GEOTURN_BIN" 2>/dev/null | head -3 || true)"
if [[ -n "$newer_src" ]]; then
    echo "side-by-side: warning: sources newer than $GEOTURN_BIN (rebuild?):" >&2
    echo "$newer_src" | sed 's/^/    /' >&2
fi

# The tree moves under us (concurrent edits): record what it was when the runs started.
GIT_HEAD="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
GIT_DIRTY="$(git -C "$ROOT" status --porcelain 2>/dev/null | wc -l || echo 0)"

LOG_DIR="${LOG_DIR:-$(mktemp -d /tmp/geoturn-side-by-side.XXXXXX)}"
mkdir -p "$LOG_DIR" "$(dirname "$OUT")"
RUNS_TSV="$LOG_DIR/runs.tsv"
: > "$RUNS_TSV"

# ---- process bookkeeping: only our own PIDs, stopped by PID --------------------------------
OWN_PIDS=()
stop_pid() { # pid [signal]
    local pid="$1" sig="${2:-TERM}" i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -s "$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do # up to 5 s
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    echo "side-by-side: pid $pid ignored SIG$sig for 5 s, sending KILL" >&2
    kill -s KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local pid
    for pid in "${OWN_PIDS[@]}"; do stop_pid "$pid"; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- helpers --------------------------------------------------------------------------------
port_busy() { # port -> 0 if something listens on it (udp or tcp) on any address
    [[ -n "$(ss -Hlnu "( sport = :$1 )" 2>/dev/null)$(ss -Hlnt "( sport = :$1 )" 2>/dev/null)" ]]
}
pick_port() { # a free port in 20000-32767 not in the list given as arguments
    local p i
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + RANDOM % 12768))
        [[ " $* " == *" $p "* ]] && continue
        port_busy "$p" || { echo "$p"; return 0; }
    done
    die "no free port found"
}
range_busy() { # lo hi -> 0 if any udp socket is bound in the range
    ss -Hlnu 2>/dev/null | awk -v lo="$1" -v hi="$2" '{n=split($4,a,":"); p=a[n]+0; if (p>=lo && p<=hi) f=1} END{exit f?0:1}'
}
cpu_ticks() { # pid -> utime+stime (fields 14 and 15 of /proc/PID/stat; parsed after the ")")
    local s
    s="$(cat "/proc/$1/stat")" || return 1
    s="${s##*) }"
    # after "comm) ", field 1 is state (field 3 overall): utime is 12, stime 13.
    awk '{print $12 + $13}' <<<"$s"
}
rcvbuf_errors() { awk '/^Udp:/ {n++} /^Udp:/ && n==2 {print $6}' /proc/net/snmp; }
wait_udp_listen() { # pid port seconds
    local pid="$1" port="$2" secs="$3" i
    for ((i = 0; i < secs * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 1
        [[ -n "$(ss -Hlnu "( sport = :$port )" 2>/dev/null)" ]] && return 0
        sleep 0.1
    done
    return 1
}
wait_cpu_idle() { # pid: until two reads 0.5 s apart match (init threads done), at most 5 s
    local pid="$1" a b i
    a="$(cpu_ticks "$pid")"
    for ((i = 0; i < 10; i++)); do
        sleep 0.5
        b="$(cpu_ticks "$pid")"
        [[ "$a" == "$b" ]] && return 0
        a="$b"
    done
}
start_sampler() { # file: snapshot /proc/net/udp every 0.2 s (bounded by RUN_TIMEOUT+30 s)
    local f="$1"
    (
        end=$((SECONDS + RUN_TIMEOUT + 30))
        while ((SECONDS < end)); do
            echo "# $(date +%s.%N)"
            cat /proc/net/udp
            sleep 0.2
        done
    ) >"$f" 2>/dev/null &
    SAMPLER_PID=$!
    OWN_PIDS+=("$SAMPLER_PID")
}
attribute_drops() { # file listen_port relay_lo relay_hi peer_port -> "listener relayed peer other"
    awk -v lp="$2" -v lo="$3" -v hi="$4" -v pp="$5" '
        function hex(h,   i, v) { v = 0; h = toupper(h)
            for (i = 1; i <= length(h); i++) v = v * 16 + index("0123456789ABCDEF", substr(h, i, 1)) - 1
            return v }
        $1 ~ /^[0-9]+:$/ {
            split($2, la, ":"); port = hex(la[2]); key = $2 " " $10
            d = $NF + 0; if (!(key in mx) || d > mx[key]) { mx[key] = d; pt[key] = port }
        }
        END {
            for (k in mx) {
                p = pt[k]
                if (p == lp) L += mx[k]; else if (p >= lo && p <= hi) R += mx[k]
                else if (p == pp) P += mx[k]; else O += mx[k]
            }
            printf "%d %d %d %d\n", L, R, P, O
        }' "$1"
}

GEO_LO="${GEOTURN_RELAY_PORTS%-*}"
GEO_HI="${GEOTURN_RELAY_PORTS#*-}"
range_busy "$GEO_LO" "$GEO_HI" && die "udp ports $GEOTURN_RELAY_PORTS already in use (set GEOTURN_RELAY_PORTS)"
range_busy "$COTURN_MIN_PORT" "$COTURN_MAX_PORT" &&
    die "udp ports $COTURN_MIN_PORT-$COTURN_MAX_PORT already in use (set COTURN_MIN_PORT/COTURN_MAX_PORT)"

start_relay() { # server port logfile -> sets RELAY_PID
    local server="$1" port="$2" log="$3"
    if [[ "$server" == geoturn ]]; then
        # GEOTURN_HTTP / GEOTURN_DRAIN_TIMEOUT only matter to builds that have an ops HTTP
        # listener and drain-on-SIGTERM: keep the listener off the fixed default port and do not
        # wait for the allocations turnutils_uclient leaves behind (they would live 600 s).
        GEOTURN_AUTH_SECRETS="$SECRET" GEOTURN_LOG=warn GEOTURN_HTTP="$HOST:$GEO_HTTP_PORT" \
            GEOTURN_DRAIN_TIMEOUT=1 "$GEOTURN_BIN" relay --listen "$HOST:$port" --allow-peer 127.0.0.0/8 \
            --relay-ports "$GEOTURN_RELAY_PORTS" --workers 1 >"$log" 2>&1 &
    else
        turnserver -n --listening-ip="$HOST" --listening-port="$port" --relay-ip="$HOST" \
            --use-auth-secret --static-auth-secret="$SECRET" --realm="$REALM" \
            --no-tls --no-dtls --no-cli --no-tcp-relay --allow-loopback-peers \
            --min-port="$COTURN_MIN_PORT" --max-port="$COTURN_MAX_PORT" --relay-threads=1 \
            --log-file=stdout --simple-log --no-stun-backward-compatibility \
            --pidfile="$LOG_DIR/turnserver.pid" --userdb="$LOG_DIR/turndb" >"$log" 2>&1 &
    fi
    RELAY_PID=$!
    OWN_PIDS+=("$RELAY_PID")
}

# ---- one run --------------------------------------------------------------------------------
run_one() { # server payload rep
    local server="$1" len="$2" rep="$3"
    local tag="${server}-l${len}-r${rep}"
    local rport pport
    rport="$(pick_port)"
    pport="$(pick_port "$rport")"
    GEO_HTTP_PORT="$(pick_port "$rport" "$pport")"

    turnutils_peer -L "$HOST" -p "$pport" >"$LOG_DIR/$tag.peer.log" 2>&1 &
    local peer_pid=$!
    OWN_PIDS+=("$peer_pid")
    start_relay "$server" "$rport" "$LOG_DIR/$tag.relay.log"
    local relay_pid="$RELAY_PID"
    wait_udp_listen "$relay_pid" "$rport" 15 || { cat "$LOG_DIR/$tag.relay.log" >&2; die "$server did not listen on udp $rport"; }
    wait_udp_listen "$peer_pid" "$pport" 5 || die "turnutils_peer did not listen on udp $pport"
    wait_cpu_idle "$relay_pid"

    local lo hi
    if [[ "$server" == geoturn ]]; then lo="$GEO_LO"; hi="$GEO_HI"; else lo="$COTURN_MIN_PORT"; hi="$COTURN_MAX_PORT"; fi
    start_sampler "$LOG_DIR/$tag.udp-samples"
    local sampler_pid="$SAMPLER_PID"

    local t0 t1 e0 e1 w0 w1 rc=0
    e0="$(rcvbuf_errors)"
    t0="$(cpu_ticks "$relay_pid")"
    w0="$(date +%s.%N)"
    timeout -k 5 "$RUN_TIMEOUT" turnutils_uclient -W "$SECRET" -u benchuser -e "$HOST" -r "$pport" \
        -p "$rport" -m "$M" -n "$N" -l "$len" -z "$Z" -c "$HOST" >"$LOG_DIR/$tag.uclient.log" 2>&1 || rc=$?
    w1="$(date +%s.%N)"
    t1="$(cpu_ticks "$relay_pid")" || die "$server (pid $relay_pid) died during the run; see $LOG_DIR/$tag.relay.log"
    e1="$(rcvbuf_errors)"
    stop_pid "$sampler_pid"
    stop_pid "$relay_pid"
    stop_pid "$peer_pid"

    local ul="$LOG_DIR/$tag.uclient.log" send recv lost sdrop ttime rtt
    send="$(sed -nE 's/.*start_mclient: tot_send_msgs=([0-9]+), tot_recv_msgs=([0-9]+)$/\1/p' "$ul" | tail -1)"
    recv="$(sed -nE 's/.*start_mclient: tot_send_msgs=([0-9]+), tot_recv_msgs=([0-9]+)$/\2/p' "$ul" | tail -1)"
    lost="$(sed -nE 's/.*Total lost packets ([0-9]+) .*/\1/p' "$ul" | tail -1)"
    sdrop="$(sed -nE 's/.*total send dropped ([0-9]+) .*/\1/p' "$ul" | tail -1)"
    ttime="$(sed -nE 's/.*Total transmit time is ([0-9]+).*/\1/p' "$ul" | tail -1)"
    rtt="$(sed -nE 's/.*Average round trip delay ([0-9.]+) ms.*/\1/p' "$ul" | tail -1)"
    if [[ -z "$send" || -z "$recv" ]]; then
        echo "side-by-side: $tag: no final summary from turnutils_uclient (rc=$rc); last lines:" >&2
        tail -5 "$ul" >&2
        send="${send:-0}"; recv="${recv:-0}"
    fi
    local drops
    drops="$(attribute_drops "$LOG_DIR/$tag.udp-samples" "$rport" "$lo" "$hi" "$pport")"
    # uclient lines that look like failures (it exits 0 even then).
    local errlines
    errlines="$(grep -ciE 'error|fail|cannot|wrong|refused|timed out|unauthori|forbidden' "$ul" || true)"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$server" "$len" "$rep" "$((t1 - t0))" "$send" "$recv" "${lost:-}" "${sdrop:-}" \
        "${ttime:-}" "${rtt:-}" "$((e1 - e0))" "$drops" "$rc" "$errlines" \
        "$(awk -v a="$w0" -v b="$w1" 'BEGIN{printf "%.2f", b-a}')" "$tag" >>"$RUNS_TSV"
    printf '  %-8s l=%-5s rep %s: relay cpu %4d ticks, sent %s recv %s lost %s, kernel rcvbuf drops %d, %.0f s\n' \
        "$server" "$len" "$rep" "$((t1 - t0))" "$send" "$recv" "${lost:-?}" "$((e1 - e0))" \
        "$(awk -v a="$w0" -v b="$w1" 'BEGIN{print b-a}')" >&2
}

# ---- main -----------------------------------------------------------------------------------
echo "side-by-side: M=$M N=$N Z=$Z PAYLOADS='$PAYLOADS' REPS=$REPS CLK_TCK=$CLK_TCK logs in $LOG_DIR" >&2
for len in $PAYLOADS; do
    for ((rep = 1; rep <= REPS; rep++)); do
        run_one geoturn "$len" "$rep"
        run_one coturn "$len" "$rep"
    done
done

# ---- summary: table + JSON --------------------------------------------------------------------
COTURN_VERSION="$(turnserver --version 2>/dev/null | tail -1 || true)"
GEOTURN_SHA="$(sha256sum "$GEOTURN_BIN" | cut -d' ' -f1)"
GEOTURN_MTIME="$(date -u -r "$GEOTURN_BIN" +%Y-%m-%dT%H:%M:%SZ)"
WARN_FILE="$LOG_DIR/server-warnings.txt"
{
    for f in "$LOG_DIR"/*.relay.log; do
        s="$(basename "$f" | cut -d- -f1)"
        sed -E $'s/\x1b\\[[0-9;]*m//g' "$f" | grep -iE 'warn|error|cannot|fail|not supported|panick' |
            grep -v 'MongoDB is not supported' |
            sed -E "s/^[0-9]+: //; s/^[0-9]{4}-[0-9-]+T[0-9:.]+Z +//; s/^/$s\t/" || true
    done
} | sort | uniq -c | sed -E 's/^ *([0-9]+) /\1\t/' >"$WARN_FILE"

export M N Z PAYLOADS REPS CLK_TCK OUT LOG_DIR RUNS_TSV WARN_FILE COTURN_VERSION GEOTURN_BIN \
    GEOTURN_SHA GEOTURN_MTIME GIT_HEAD GIT_DIRTY
python3 - <<'PY'
import json, os, statistics, datetime, platform

env = os.environ
tck = int(env["CLK_TCK"])
runs = []
with open(env["RUNS_TSV"]) as f:
    for line in f:
        c = line.rstrip("\n").split("\t")
        dl, dr, dp, do = (int(x) for x in c[11].split())
        ticks, send, recv = int(c[3]), int(c[4]), int(c[5])
        cpu_us = ticks * 1e6 / tck
        relayed = send + recv
        def num(s, t=int):
            return t(s) if s != "" else None
        runs.append({
            "server": c[0], "payload": int(c[1]), "rep": int(c[2]),
            "relay_cpu_ticks": ticks, "relay_cpu_us": cpu_us,
            "tot_send_msgs": send, "tot_recv_msgs": recv,
            "lost_packets": num(c[6]), "send_dropped": num(c[7]),
            "transmit_time_s": num(c[8]), "avg_rtt_ms": num(c[9], float),
            "relayed_packets": relayed,
            "cpu_us_per_relayed_packet": cpu_us / relayed if relayed else None,
            "cpu_us_per_delivered_packet": cpu_us / (2 * recv) if recv else None,
            "kernel_udp_rcvbuf_errors_delta": int(c[10]),
            "socket_drops_approx": {"relay_listener": dl, "relay_relayed_sockets": dr,
                                    "peer": dp, "other_client": do},
            "uclient_exit_code": int(c[12]), "uclient_error_like_lines": int(c[13]),
            "wall_s": float(c[14]), "logs": os.path.join(env["LOG_DIR"], c[15] + ".*"),
        })

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

payloads = [int(p) for p in env["PAYLOADS"].split()]
summary = []
for p in payloads:
    row = {"payload": p}
    for s in ("geoturn", "coturn"):
        rs = [r for r in runs if r["server"] == s and r["payload"] == p]
        row[s] = {
            "runs": len(rs),
            "median_cpu_us_per_relayed_packet": med([r["cpu_us_per_relayed_packet"] for r in rs]),
            "median_cpu_us_per_delivered_packet": med([r["cpu_us_per_delivered_packet"] for r in rs]),
            "per_run_cpu_us_per_relayed_packet": [r["cpu_us_per_relayed_packet"] for r in rs],
            "median_relay_cpu_ticks": med([r["relay_cpu_ticks"] for r in rs]),
            "median_relayed_packets": med([r["relayed_packets"] for r in rs]),
            "total_lost_packets": sum(r["lost_packets"] or 0 for r in rs),
            "total_sent": sum(r["tot_send_msgs"] for r in rs),
        }
    g, c = row["geoturn"], row["coturn"]
    def ratio(k):
        a, b = g[k], c[k]
        return a / b if a is not None and b else None
    row["ratio_geoturn_over_coturn"] = ratio("median_cpu_us_per_relayed_packet")
    row["ratio_geoturn_over_coturn_delivered"] = ratio("median_cpu_us_per_delivered_packet")
    summary.append(row)

warnings = []
with open(env["WARN_FILE"]) as f:
    for line in f:
        n, s, text = line.rstrip("\n").split("\t", 2)
        warnings.append({"server": s, "count": int(n), "line": text})

doc = {
    "benchmark": "geoturn vs coturn: relay CPU per relayed packet under turnutils_uclient load",
    "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    "machine": {"cpus": os.cpu_count(), "kernel": platform.release(), "clk_tck": tck},
    "load": {"tool": "turnutils_uclient", "sessions_m": int(env["M"]), "messages_n": int(env["N"]),
             "interval_z_ms": int(env["Z"]), "payloads": payloads, "reps": int(env["REPS"]),
             "flags": "-c (no RTCP allocations), channels (no -s), UDP, TURN REST secret (-W)"},
    "definitions": {
        "relay_cpu": "delta of utime+stime (fields 14,15 of /proc/PID/stat) of the relay process, "
                     "all threads, from just before the client starts to just after it exits",
        "relayed_packets": "tot_send_msgs + tot_recv_msgs (client->peer and peer->client "
                           "crossings; = 2 x echoed messages when there is no loss)",
        "delivered_packets": "2 x tot_recv_msgs (only complete round trips)",
        "median": "median over reps; ratio = median geoturn / median coturn",
    },
    "geoturn": {"binary": env["GEOTURN_BIN"], "sha256": env["GEOTURN_SHA"],
                "mtime_utc": env["GEOTURN_MTIME"], "git_head_at_run_start": env["GIT_HEAD"],
                "git_dirty_paths_at_run_start": int(env["GIT_DIRTY"]), "flags": "--workers 1"},
    "coturn": {"version": env["COTURN_VERSION"], "flags": "--relay-threads=1"},
    "summary": summary,
    "runs": runs,
    "server_log_warnings": warnings,
    "log_dir": env["LOG_DIR"],
}
with open(env["OUT"], "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")

def fmt(x, spec="{:.2f}"):
    return spec.format(x) if x is not None else "n/a"

print(f"relay CPU per relayed packet (µs), median of {env['REPS']} runs; "
      f"M={env['M']} sessions x N={env['N']} msgs, z={env['Z']} ms, CLK_TCK={tck}")
hdr = f"{'payload':>7} | {'geoturn µs/pkt':>14} | {'coturn µs/pkt':>13} | {'geo/cot':>7} | {'geoturn lost/sent':>17} | {'coturn lost/sent':>17} | {'geo/cot (delivered)':>19}"
print(hdr)
print("-" * len(hdr))
for row in summary:
    g, c = row["geoturn"], row["coturn"]
    gl = f"{g['total_lost_packets']}/{g['total_sent']}"
    cl = f"{c['total_lost_packets']}/{c['total_sent']}"
    print(f"{row['payload']:>7} | {fmt(g['median_cpu_us_per_relayed_packet']):>14} | "
          f"{fmt(c['median_cpu_us_per_relayed_packet']):>13} | {fmt(row['ratio_geoturn_over_coturn'], '{:.3f}'):>7} | "
          f"{gl:>17} | {cl:>17} | {fmt(row['ratio_geoturn_over_coturn_delivered'], '{:.3f}'):>19}")
print()
print("per run (µs/relayed pkt):")
for row in summary:
    for s in ("geoturn", "coturn"):
        vals = ", ".join(fmt(v) for v in row[s]["per_run_cpu_us_per_relayed_packet"])
        print(f"  l={row['payload']:<5} {s:<8} {vals}")
low = [r for r in runs if r["relay_cpu_ticks"] < 50]
if low:
    print()
    print(f"note: {len(low)} run(s) used < 50 clock ticks of relay CPU; at 1 tick = {1e6 / tck:.0f} µs "
          "the figures are coarse: raise N or M")
if warnings:
    print()
    print("server log warnings/errors (count, server, line):")
    for w in warnings:
        print(f"  {w['count']:>3} {w['server']:<8} {w['line']}")
print()
print(f"raw figures: {env['OUT']}")
print(f"logs: {env['LOG_DIR']}")
PY
