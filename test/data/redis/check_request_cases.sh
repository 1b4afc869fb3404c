#!/bin/sh
# Replay the request golden table of test/unit/test_proto_resp.c against a
# live redis-server and compare its answers with the table's `redis` column.
#
#   test/data/redis/check_request_cases.sh BUILD_DIR REDIS_PORT
#
# BUILD_DIR is a configured and built walnut tree (for libwalnut.a). Each
# row is sent on a fresh connection; the answer is read until the server
# closes or is quiet for 0.3 s. Rows whose column is NULL are skipped.
set -eu
build=$1
port=$2
src=$(cd "$(dirname "$0")/../../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/dump.c" <<'C'
#define main test_main
#include "unit/test_proto_resp.c"
#undef main
static void hex(const char *s, size_t n)
{
    for (size_t k = 0; k < n; k++)
        printf("%02x", (unsigned char)s[k]);
}
int main(void)
{
    for (size_t i = 0; i < WN_ARRAY_SIZE(req_cases); i++) {
        const req_case_t *c = &req_cases[i];
        if (c->redis == NULL)
            continue;
        hex(c->in, c->len);
        printf(" ");
        hex(c->redis, strlen(c->redis));
        printf("\n");
    }
    return 0;
}
C
cc -I"$src/include" -I"$src/test" -o "$tmp/dump" "$tmp/dump.c" "$build/libwalnut.a" -lcmocka
"$tmp/dump" > "$tmp/cases"
/usr/bin/python3 - "$port" "$tmp/cases" <<'PY'
import socket, sys
port, bad, n = int(sys.argv[1]), 0, 0
for line in open(sys.argv[2]):
    inp, want = (bytes.fromhex(x) for x in line.rstrip('\n').split(' '))
    s = socket.create_connection(('127.0.0.1', port))
    s.sendall(inp)
    s.settimeout(0.3)
    out = b''
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            out += d
    except (socket.timeout, ConnectionResetError):
        pass
    s.close()
    n += 1
    # strlen() stopped the expected text at a NUL: compare that much
    if out[:len(want)] != want or ((b'\0' not in out) and out != want):
        bad += 1
        print('MISMATCH', repr(inp)[:70], 'got', repr(out)[:100], 'want', repr(want)[:100])
print('%d rows, %d mismatches' % (n, bad))
sys.exit(1 if bad else 0)
PY
