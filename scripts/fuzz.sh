#!/usr/bin/env bash
# Builds the libFuzzer targets (preset `fuzz`: clang++-14, whole tree with
# fuzzer-no-link + ASan + UBSan) and runs each tests/fuzz/<name>_fuzz.cc
# target for SECONDS (default 20) on a scratch copy of its seed corpus
# tests/fuzz/corpus/<name>/ (the committed corpus never grows here).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]   e.g. scripts/fuzz.sh 600 frame_codec
#
# Prints execs and execs/s per target; exits non-zero when any target finds
# a crash, leak or timeout (the reproducer is kept in build/fuzz/artifacts/
# and printed). A target that was not built (its example protocol library
# is missing) fails the run too: all five exist, so a missing one is a
# broken build, not work in progress.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
shift || true
root=$PWD

buildlog=$(mktemp /tmp/keel-fuzz-build.XXXXXX)
if ! { flock /tmp/keel-fuzz.lock cmake --preset fuzz && \
       flock /tmp/keel-fuzz.lock cmake --build build/fuzz -j "${JOBS:-2}" --target keel_fuzz_all; } >"$buildlog" 2>&1; then
  cat "$buildlog"
  rm -f "$buildlog"
  echo "fuzz: build failed"
  exit 1
fi
grep -E '^-- keel fuzz:' "$buildlog" || true
rm -f "$buildlog"

if [ $# -gt 0 ]; then
  names=("$@")
else
  names=()
  for src in tests/fuzz/*_fuzz.cc; do
    n=$(basename "$src" .cc)
    names+=("${n%_fuzz}")
  done
fi

scratch=$(mktemp -d /tmp/keel-fuzz.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
mkdir -p build/fuzz/artifacts
failed=0
printf '%-14s %8s %12s %10s %s\n' target seconds execs execs/s result
for name in "${names[@]}"; do
  bin=build/fuzz/bin/${name}_fuzz
  if [ ! -x "$bin" ]; then
    printf '%-14s %8s %12s %10s %s\n' "$name" - - - "FAILED: not built (no keel_${name}_proto target?)"
    failed=1
    continue
  fi
  work=$scratch/$name
  mkdir -p "$work/corpus" "$work/artifacts"
  if [ -d "tests/fuzz/corpus/$name" ]; then cp -r "tests/fuzz/corpus/$name/." "$work/corpus/"; fi
  log=$work/log
  set +e
  # -timeout: one input taking this long is a hang finding; -rss_limit_mb
  # keeps a runaway allocation a finding rather than an OOM kill.
  "$root/$bin" -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$work/artifacts/" "$work/corpus" >"$log" 2>&1
  rc=$?
  set -e
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  took=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)
  execs=${execs:-0}
  rate=$(( took > 0 ? execs / took : execs ))
  if [ "$rc" -eq 0 ]; then
    printf '%-14s %8s %12s %10s %s\n' "$name" "${took:-?}" "$execs" "$rate" ok
  else
    failed=1
    printf '%-14s %8s %12s %10s %s\n' "$name" "${took:-?}" "$execs" "$rate" "FAILED (exit $rc)"
    grep -E 'ERROR|invariant failed|SUMMARY|^    #[0-9] ' "$log" | head -n 20 | sed 's/^/    /'
    for a in "$work"/artifacts/*; do
      [ -e "$a" ] || continue
      cp "$a" "build/fuzz/artifacts/${name}-$(basename "$a")"
      echo "    reproducer: build/fuzz/artifacts/${name}-$(basename "$a")  (run: $bin <file>)"
    done
  fi
done
exit "$failed"
