#!/usr/bin/python3
"""Measure redis-server's command table for test_redis_cmd.c.

Usage: measure_command_info.py PORT > command_info.tsv

Asks a running redis-server (7.0.15 for the checked-in file) for COMMAND
INFO of every top-level command over a raw socket and prints one row per
command: name, arity, first key, last key, key step, the argument index of
a numkeys argument when a key spec is of type keynum (0 if none), and the
flags. Written for walnut; it only reads RESP2 replies.
"""
import socket
import sys


def send(sock, *args):
    out = b'*%d\r\n' % len(args)
    for a in args:
        a = a.encode() if isinstance(a, str) else a
        out += b'$%d\r\n%s\r\n' % (len(a), a)
    sock.sendall(out)


class Reader:
    def __init__(self, sock):
        self.sock, self.buf = sock, b''

    def line(self):
        while b'\r\n' not in self.buf:
            self.buf += self.sock.recv(65536)
        line, self.buf = self.buf.split(b'\r\n', 1)
        return line

    def exact(self, n):
        while len(self.buf) < n + 2:
            self.buf += self.sock.recv(65536)
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def reply(self):
        line = self.line()
        t, rest = line[:1], line[1:]
        if t in (b'+', b'-'):
            return rest.decode()
        if t == b':':
            return int(rest)
        if t == b'$':
            n = int(rest)
            return None if n < 0 else self.exact(n).decode()
        if t == b'*':
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise ValueError(line)


def numkeys_at(specs):
    for spec in specs or []:
        s = dict(zip(spec[::2], spec[1::2]))
        bs = dict(zip(s['begin_search'][::2], s['begin_search'][1::2]))
        fk = dict(zip(s['find_keys'][::2], s['find_keys'][1::2]))
        if bs.get('type') == 'index' and fk.get('type') == 'keynum':
            b = dict(zip(bs['spec'][::2], bs['spec'][1::2]))['index']
            k = dict(zip(fk['spec'][::2], fk['spec'][1::2]))
            return b + k['keynumidx']
    return 0


def main():
    sock = socket.create_connection(('127.0.0.1', int(sys.argv[1])))
    rd = Reader(sock)
    send(sock, 'COMMAND', 'LIST')
    names = sorted(n for n in rd.reply() if '|' not in n)
    print('# redis-server COMMAND INFO: name arity first last step numkeys_at flags')
    for name in names:
        send(sock, 'COMMAND', 'INFO', name)
        info = rd.reply()[0]
        arity, flags, first, last, step = info[1], info[2], info[3], info[4], info[5]
        specs = info[8] if len(info) > 8 else []
        print('\t'.join([name, str(arity), str(first), str(last), str(step),
                         str(numkeys_at(specs)), ','.join(flags) or '-']))


if __name__ == '__main__':
    main()
