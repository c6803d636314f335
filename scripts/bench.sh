#!/usr/bin/env bash
# The bench suite behind `make bench`. Usage: scripts/bench.sh BUILD_DIR
# QUICK=1 runs a shortened version (CI uses it so the suite never rots).
# bench/run.py does the work: latency, the Nagle matrix, throughput and the
# micro-benchmarks, with a "not built" row for any server binary missing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(realpath -m "${1:-$root/build/release}")
bin="$build/bin"
cd "$root"

# A missing binary is reported here and becomes a "not built" row, never a
# failure. keel-echo needs KEEL_BUILD_EXAMPLES=ON.
missing=()
for b in keel-pingpong floor-echo keel-echo keel-rr keel-tput micro_bench timer_bench libevent-echo libuv-echo asio-echo asio-coro-echo \
  keel-http keel-http-close keel-sws; do
  [ -x "$bin/$b" ] || missing+=("$b")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench: not built in $bin: ${missing[*]} (their rows will say so)" >&2
  if grep -qs '^KEEL_BUILD_EXAMPLES:BOOL=OFF' "$build/CMakeCache.txt"; then
    echo "bench: $build has examples off; for keel-echo: cmake -S . -B $build -DKEEL_BUILD_EXAMPLES=ON && cmake --build $build" >&2
  fi
fi

QUICK=${QUICK:-} python3 bench/run.py --build "$build"
echo "bench: latest results: bench/results/latest.json, bench/results/{latency,nagle,throughput}-latest.png"
