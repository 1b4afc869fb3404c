#!/usr/bin/env bash
# walnut vs nutcracker vs memcached (memcached ASCII and binary) with memtier_benchmark. See bench/README.md.
# Usage: bench/memcached.sh [--test-time 5] [--rounds 3] [--keys 100000] [--protocols memcache_text,memcache_binary] [--walnut PATH] [--out DIR]
set -euo pipefail
if ! command -v memtier_benchmark >/dev/null 2>&1; then
    echo "memcached.sh: memtier_benchmark is not on PATH (it is not a Debian package);" \
         "build it from https://github.com/RedisLabs/memtier_benchmark and put it on PATH, see bench/README.md" >&2
    exit 2
fi
exec /usr/bin/python3 "$(dirname "$(readlink -f "$0")")/memcached.py" "$@"
