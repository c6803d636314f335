#!/usr/bin/env bash
# A long soak: every byte of random-sized messages on many connections comes
# back in order and intact through a keel echo server; RSS must stay flat.
#   scripts/soak.sh [--duration SECONDS] [--connections N] [--build DIR]
# Defaults: 600 s, 1000 connections, build/release (falls back to build/debug).
# Prints the test's "[soak]" summary line; exits non-zero on any loss.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=600
connections=1000
build=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --duration) duration="$2"; shift 2 ;;
    --connections) connections="$2"; shift 2 ;;
    --build) build="$2"; shift 2 ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
if [[ -z "$build" ]]; then
  if [[ -x build/release/bin/soak_test ]]; then build=build/release; else build=build/debug; fi
fi
bin="$build/bin/soak_test"
if [[ ! -x "$bin" ]]; then
  echo "$bin not built: cmake --build $build --target soak_test" >&2
  exit 2
fi
echo "soak: $connections connections for $duration s with $bin"
KEEL_SOAK_SECONDS="$duration" KEEL_SOAK_CONNECTIONS="$connections" \
  "$bin" --gtest_filter='Soak.EveryByteComesBackInOrderAndRssStaysFlat'
