#!/usr/bin/env bash
# walnut's memcached throughput with and without a /metrics scrape every 100 ms. See bench/README.md.
# Usage: bench/stats_scrape.sh [--rounds 5] [--test-time 5] [--interval-ms 100] [--walnut PATH] [--out DIR]
set -euo pipefail
if ! command -v memtier_benchmark >/dev/null 2>&1; then
    echo "stats_scrape.sh: memtier_benchmark is not on PATH, so nothing was measured (it is not a" \
         "Debian package); build it from https://github.com/RedisLabs/memtier_benchmark and put it on PATH," \
         "see bench/README.md" >&2
    exit 2
fi
exec /usr/bin/python3 "$(dirname "$(readlink -f "$0")")/stats_scrape.py" "$@"
