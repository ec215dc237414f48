#!/usr/bin/env bash
# callgrind.sh — instructions per relayed packet in the sans-IO core (no sockets, no kernel).
#
# Builds relay/proto/benches/forward.rs (release) and runs it under
# `valgrind --tool=callgrind`, collecting only inside the four loops it times (one function per
# path, --toggle-collect), N packets each. Instruction counts do not depend on the machine's load,
# so a regression shows the same on any run; the kernel's share of a relayed packet (most of it,
# see BENCHMARKS.md) is not in these figures.
#
# Usage: bench/callgrind.sh [N]          (N = packets per path, default 100000)
# Output: one line per path, "<path> <instructions per packet>", and the callgrind file's path.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
N="${1:-100000}"
[[ "$N" =~ ^[0-9]+$ && "$N" -gt 0 ]] || { echo "callgrind: N must be a positive integer" >&2; exit 1; }
command -v valgrind >/dev/null || { echo "callgrind: valgrind not found (apt-get install -y valgrind)" >&2; exit 1; }
cd "$ROOT"
exe="$(cargo bench -p geoturn-relay-proto --bench forward --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "forward" and m.get("executable"):
        print(m["executable"])')"
[[ -x "$exe" ]] || { echo "callgrind: could not build the forward bench" >&2; exit 1; }
out="$(mktemp /tmp/geoturn-callgrind.XXXXXX)"
paths=(client_channel_data peer_to_channel_data client_send_indication peer_to_data_indication)
toggles=()
for p in "${paths[@]}"; do toggles+=("--toggle-collect=*forward::$p*"); done
valgrind --tool=callgrind --callgrind-out-file="$out" "${toggles[@]}" "$exe" "$N" >/dev/null 2>&1
callgrind_annotate --inclusive=yes "$out" >"$out.txt" 2>/dev/null
for p in "${paths[@]}"; do
    ir="$(awk -v f="forward::$p " '{ line = $0; gsub(",", "", $1) }
        index(line, f) && index(line, "benches/forward.rs") && !done { print $1; done = 1 }' "$out.txt")"
    [[ -n "$ir" ]] || { echo "callgrind: no count for $p" >&2; exit 1; }
    awk -v p="$p" -v ir="$ir" -v n="$N" 'BEGIN { printf "%-24s %6.0f instructions/packet\n", p, ir / n }'
done
echo "callgrind file: $out (annotated: $out.txt)"
