#!/usr/bin/env bash
# The TIME_WAIT churn experiment (docs/time-wait.md): two network namespaces
# joined by a veth pair (198.18.0.1 server, 198.18.0.2 client, the
# benchmarking range), the client's ephemeral range cut to 1,000 ports, and
# 3,000 short connections per run, for {client closes first, server closes
# first} x {tcp_tw_reuse 0, 1}. Loopback is no good here: tcp_tw_reuse's
# default of 2 applies to loopback only.
#
# Usage (root): scripts/tw-churn.sh [BUILD_DIR] [COUNT]
# Prints one JSON line per run; the namespaces are removed afterwards.
set -euo pipefail
build=${1:-build/release}
count=${2:-3000}
churn="$build/bin/keel-churn"
[ -x "$churn" ] || { echo "tw-churn: $churn not built" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "tw-churn: needs root for network namespaces" >&2; exit 1; }

tag=$$
srv=keel-tw-s-$tag
cli=keel-tw-c-$tag
cleanup() {
  ip netns pids "$srv" 2>/dev/null | xargs -r kill 2>/dev/null || true
  ip netns del "$srv" 2>/dev/null || true
  ip netns del "$cli" 2>/dev/null || true
}
trap cleanup EXIT

setup() {
  cleanup
  ip netns add "$srv"
  ip netns add "$cli"
  ip link add "tws$tag" type veth peer name "twc$tag"
  ip link set "tws$tag" netns "$srv"
  ip link set "twc$tag" netns "$cli"
  ip -n "$srv" addr add 198.18.0.1/24 dev "tws$tag"
  ip -n "$cli" addr add 198.18.0.2/24 dev "twc$tag"
  ip -n "$srv" link set "tws$tag" up
  ip -n "$cli" link set "twc$tag" up
  ip -n "$srv" link set lo up
  ip -n "$cli" link set lo up
  ip netns exec "$cli" sysctl -qw net.ipv4.ip_local_port_range="40000 40999"
}

for reuse in 0 1; do
  for mode in client-first server-first; do
    setup  # fresh namespaces: no TIME_WAIT left over from the previous run
    ip netns exec "$cli" sysctl -qw net.ipv4.tcp_tw_reuse=$reuse
    ip netns exec "$srv" "$churn" server --host 198.18.0.1 --port 9000 --close "$mode" >/dev/null &
    for _ in $(seq 50); do
      ip netns exec "$srv" ss -ltn 2>/dev/null | grep -q ':9000 ' && break
      sleep 0.1
    done
    result=$(ip netns exec "$cli" "$churn" client --host 198.18.0.1 --port 9000 --count "$count" --close "$mode")
    server_tw=$(ip netns exec "$srv" ss -Htan state time-wait 2>/dev/null | wc -l)
    echo "{\"tcp_tw_reuse\":$reuse,\"server_time_wait\":$server_tw,${result#\{}"
  done
done
