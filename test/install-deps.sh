#!/usr/bin/env bash
# Install what building and testing walnut needs, from Debian 12's packages.
# Idempotent: does nothing when everything is already there. Needs root.
set -euo pipefail

packages=(
  build-essential cmake pkg-config clang libclang-rt-14-dev
  libuv1-dev libcyaml-dev libyaml-dev libcmocka-dev libmd-dev libsystemd-dev systemd libjansson-dev libhttp-parser-dev
  prometheus  # promtool (check metrics) and the server test_stats.py starts; its service is stopped below
  curl        # test_stats.py: keep-alive, HEAD, 431 with a real HTTP client
  iproute2    # ip: loopback up in the network namespaces of the wildcard-address tests
  memcached redis-server redis-tools nutcracker libmemcached-tools
  python3 python3-pymemcache python3-redis
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}; run as root or install them" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts the packaged services; walnut's tests start their own on
# ephemeral ports, and the quick start wants 11211 free, so stop them.
for svc in memcached redis-server nutcracker prometheus; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
    systemctl stop "$svc" || true
  fi
done
