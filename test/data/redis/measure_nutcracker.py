#!/usr/bin/python3
"""Measure which redis commands nutcracker (twemproxy 0.5.0) accepts.

Usage: measure_nutcracker.py NUTCRACKER_PORT < names > nutcracker_scan.txt

nutcracker must listen with a redis pool in front of a redis-server; names
are redis-server's top-level commands, one per line (COMMAND LIST). Each
name is sent with 0..4 extra args ("k0" "1" "1" "1"), each on a fresh
connection; a row says per arg count whether any reply came back ("fwd":
forwarded or answered) or the proxy closed the connection without one
("CLOSE"). Commands that would block, reconfigure or stop the backend are
not sent ("skip"); twemproxy refuses them all (see twemproxy-reference.md).
"""
import socket
import sys

SKIP = set('''shutdown debug monitor sync psync subscribe psubscribe ssubscribe flushall
flushdb replicaof slaveof failover save bgsave bgrewriteaof blpop brpop brpoplpush blmove
blmpop bzpopmin bzpopmax bzmpop wait xread xreadgroup client module migrate swapdb config
script function acl cluster quit'''.split())


def request(*args):
    out = b'*%d\r\n' % len(args)
    for a in args:
        a = a.encode()
        out += b'$%d\r\n%s\r\n' % (len(a), a)
    return out


def ask(port, data):
    s = socket.create_connection(('127.0.0.1', port))
    s.sendall(data)
    s.settimeout(0.3)
    out = b''
    try:
        while not out.endswith(b'\r\n'):
            d = s.recv(4096)
            if not d:
                break
            out += d
    except (socket.timeout, ConnectionResetError):
        pass
    s.close()
    return out


def main():
    port = int(sys.argv[1])
    print('# nutcracker 0.5.0: name, then per extra-arg count 0..4: fwd | CLOSE | skip')
    for name in (l.strip() for l in sys.stdin if l.strip()):
        res = []
        for k in range(5):
            if name in SKIP:
                res.append('skip')
                continue
            args = [name] + ['k0' if i == 0 else '1' for i in range(k)]
            res.append('fwd' if ask(port, request(*args)) else 'CLOSE')
        print(name, ' '.join(res))


if __name__ == '__main__':
    main()
