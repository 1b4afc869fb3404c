#!/usr/bin/env bash
# The quick start: install what is missing, build walnut, start two local
# memcached (127.0.0.1:11211 and :11212, the classic twemproxy demo) and run
# walnut in the foreground in front of them with config/walnut.yml.
# Ctrl-C stops walnut; the memcached started here are stopped with it.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
bash "$top/test/install-deps.sh"
cmake -S "$top" -B "$top/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$top/build" -j "$(nproc)"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

port_busy() {
  /usr/bin/python3 - "$1" <<'PY'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(0)
sys.exit(1)
PY
}

for port in 11211 11212; do
  if port_busy "$port"; then
    echo "quickstart: 127.0.0.1:$port is already in use; using what listens there"
    continue
  fi
  memcached -u nobody -l 127.0.0.1 -p "$port" -U 0 -m 64 &
  pids+=($!)
done
echo "quickstart: memcached on 127.0.0.1:11211 and :11212; walnut listens on 127.0.0.1:22121, stats on http://127.0.0.1:22222/"
"$top/build/walnut" -c "$top/config/walnut.yml" -a 127.0.0.1 "$@"
