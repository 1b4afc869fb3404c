#!/usr/bin/env bash
# Build walnut and run its whole test suite (unit, integration, fuzz smoke).
#   bash test/run.sh               plain build in build/
#   WALNUT_SANITIZE=asan bash test/run.sh   ASan+UBSan build in build-asan/
#   WALNUT_SANITIZE=tsan bash test/run.sh   ThreadSanitizer build in build-tsan/
# Installs missing Debian packages first (needs root for that).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
bash "$top/test/install-deps.sh"
# memtier_benchmark drives test_mc_binary (and bench/); it is not a Debian
# package, so it is not installed here: say so now, not after the build.
if ! PATH="$PATH:/usr/local/bin:/usr/local/sbin" command -v memtier_benchmark >/dev/null; then
  echo "run.sh: memtier_benchmark is not on PATH (it is not a Debian package): build it from" \
       "https://github.com/RedisLabs/memtier_benchmark (see README.md, Quick start)" >&2
  exit 1
fi

sanitize=${WALNUT_SANITIZE:-}
args=(-DCMAKE_BUILD_TYPE=RelWithDebInfo)
case "$sanitize" in
  "") build="$top/build" ;;
  asan) build="$top/build-asan"; args+=(-DWALNUT_ASAN=ON) ;;
  tsan) build="$top/build-tsan"; args+=(-DWALNUT_TSAN=ON) ;;
  fuzz) build="$top/build-fuzz"; args+=(-DWALNUT_FUZZ=ON); export CC=clang ;;
  *) echo "run.sh: WALNUT_SANITIZE must be asan, tsan or fuzz, not '$sanitize'" >&2; exit 2 ;;
esac
[ "${CI:-}" = true ] && args+=(-DWALNUT_WERROR=ON)

cmake -S "$top" -B "$build" "${args[@]}" >/dev/null
cmake --build "$build" -j "$(nproc)"
label=()
# The integration tests mostly wait on their servers, clients and timers
# (the plain suite used 179 CPU-s in 435 s of two at a time on 2 CPUs), so
# twice as many as there are CPUs run side by side; the fuzzers use a CPU
# each.
jobs=$(( $(nproc) * 2 ))
[ "$sanitize" = fuzz ] && label=(-L fuzz) && jobs=$(nproc)
rc=0
ctest --test-dir "$build" --output-on-failure -j "$jobs" "${label[@]}" || rc=$?
if [ "$rc" -ne 0 ]; then
  # Side by side, a failed test's output lands mid-log, far from the end a
  # CI summary shows: repeat each unittest failure (its header, traceback
  # and assertion, cut to 60 lines) last.
  echo "=== run.sh: why the failed tests failed (from $build/Testing/Temporary/LastTest.log) ==="
  awk '/^(FAIL|ERROR): |^\[  (FAILED|ERROR) /{n=60} n>0{print; n--} /^Ran [0-9]+ tests? in/{n=0}' \
    "$build/Testing/Temporary/LastTest.log" || true
  exit "$rc"
fi
