#!/usr/bin/env bash
# A/B latency of two keel-echo builds against the floor, for judging a change
# to the library's hot path: scripts/ab-echo.sh OLD_KEEL_ECHO [SIZE] [ROUNDS] [COUNT]
#
# This VM's latency is bimodal (about 7 us, or about 100 us, switching every
# second or so), so one long run per server compares phases, not servers.
# Many short interleaved rounds are used instead, and only the rounds in
# which all three servers ran in the fast phase (p50 under 20 us) are
# compared: medians of the per-round ratios new/old, new/floor, old/floor.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${BIN:-$root/build/release/bin}
old=${1:?usage: ab-echo.sh OLD_KEEL_ECHO [SIZE] [ROUNDS] [COUNT]}
size=${2:-64}
rounds=${3:-40}
count=${4:-3000}
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT

declare -A port
for name in floor new old; do
  case $name in
    floor) cmd=("$bin/floor-echo") ;;
    new) cmd=("$bin/keel-echo" --threads 0) ;;
    old) cmd=("$old" --threads 0) ;;
  esac
  "${cmd[@]}" --port 0 >"$work/$name.out" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do grep -q "listening on" "$work/$name.out" && break; sleep 0.05; done
  port[$name]=$(grep -o 'listening on [0-9.]*:[0-9]*' "$work/$name.out" | head -1 | sed 's/.*://')
  [ -n "${port[$name]}" ] || { echo "ab-echo: $name did not start: $(cat "$work/$name.out")" >&2; exit 1; }
done

for r in $(seq "$rounds"); do
  line="$r"
  names=(floor new old)
  for i in 0 1 2; do  # the order rotates from round to round
    name=${names[$(((i + r) % 3))]}
    p50=$("$bin/keel-pingpong" --port "${port[$name]}" --size "$size" --count "$count" --warmup 200 \
      --nodelay 1 --mode echo --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["p50_us"])')
    line="$line $name=$p50"
  done
  echo "$line"
done >"$work/rounds.txt"

python3 - "$work/rounds.txt" "$size" <<'PY'
import statistics as st, sys
rows = [dict(kv.split("=") for kv in l.split()[1:]) for l in open(sys.argv[1])]
fast = [{k: float(v) for k, v in r.items()} for r in rows if max(float(v) for v in r.values()) < 20]
print(f"{sys.argv[2]} B: {len(fast)} of {len(rows)} rounds with all three in the fast phase")
if fast:
    m = lambda f: st.median(f(r) for r in fast)
    print(f"  median p50 us: floor {m(lambda r: r['floor']):.2f}  new {m(lambda r: r['new']):.2f}  old {m(lambda r: r['old']):.2f}")
    print(f"  median ratios: new/old {m(lambda r: r['new'] / r['old']):.3f}  new/floor {m(lambda r: r['new'] / r['floor']):.3f}"
          f"  old/floor {m(lambda r: r['old'] / r['floor']):.3f}")
PY
