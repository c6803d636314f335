#!/usr/bin/env bash
# Installs what keel needs on Debian 12, with apt-get, only when something is
# missing. With everything present it checks dpkg and exits in well under a second.
set -euo pipefail

# Build and test: compilers and libraries.
build_pkgs=(g++ cmake make pkg-config libspdlog-dev libssl-dev openssl libgtest-dev libgmock-dev libbenchmark-dev
  clang-14 libclang-rt-14-dev liburing-dev)  # liburing: the io_uring loop backend (core/UringPoller)
# Bench peers and the real clients the tests and examples talk to.
peer_pkgs=(libevent-dev libuv1-dev libasio-dev sockperf socat netcat-openbsd wrk curl
  redis-server redis-tools nginx-light gnuplot-nox nlohmann-json3-dev libcli11-dev iproute2 procps python3
  valgrind prometheus)  # prometheus: promtool checks the /metrics text (tests/metrics)

all=("${build_pkgs[@]}" "${peer_pkgs[@]}")
# One dpkg-query for all of them; a package dpkg has never heard of is not listed.
installed=$(dpkg-query -W -f='${Package} ${Status}\n' "${all[@]}" 2>/dev/null | awk '/install ok installed/ {print $1}' || true)
missing=()
for p in "${all[@]}"; do
  grep -qx "$p" <<<"$installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: need root to apt-get install: ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
