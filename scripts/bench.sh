#!/usr/bin/env bash
# The bench suite behind `make bench`. Usage: scripts/bench.sh BUILD_DIR
# QUICK=1 runs a shortened version (CI uses it so the suite never rots).
set -euo pipefail
build=${1:-build/release}
bin="$build/bin"
quick=${QUICK:-}

if [ ! -x "$bin/timer_bench" ]; then
  echo "bench: $bin/timer_bench is missing; build the release preset first" >&2
  exit 1
fi

echo "== micro-benchmarks: timer wheel vs std::multimap timer queue"
if [ -n "$quick" ]; then
  "$bin/timer_bench" --benchmark_min_time=0.05 --benchmark_filter='/1000$|/100000$'
else
  "$bin/timer_bench" --benchmark_min_time=0.5
fi
