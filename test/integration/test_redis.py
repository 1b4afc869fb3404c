#!/usr/bin/python3
"""Redis pools, end to end: real redis-servers behind the real walnut binary,
raw sockets where exact bytes matter, redis-server asked directly (and watched
with MONITOR) to see what walnut sent where.

What walnut promises for `redis: true` pools (README, src/worker/redis_*.c):
twemproxy's placement and routing, RESP2 relayed byte for byte, redis-server's
own error texts for protocol errors, unknown commands and wrong arity (in
order, the connection kept where redis-server keeps it), multi-key commands
split per server and merged (EXISTS summed correctly, unlike twemproxy), local
PING/ECHO/QUIT/SELECT/HELLO/CLIENT/AUTH, server errors (-OOM, -BUSY,
-LOADING) relayed as the server said them, misbehaving servers cut off
without leaking one client's data to another.

Where the real nutcracker (measured: test/data/placement/redis_routing.json)
answers differently on purpose, the test says so next to the assertion.
Clients (redis-py, redis-cli, redis-benchmark) are in test_redis_clients.py,
the byte-for-byte comparison with redis-server in test_redis_differential.py,
failover in test_redis_failover.py.

Run with Debian's /usr/bin/python3; WALNUT_BIN names the binary.
"""

import hashlib
import json
import os
import random
import re
import signal
import socket
import sys
import threading
import time
import unittest

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fakes  # noqa: E402
import harness as h  # noqa: E402

# twemproxy closes the connection at most of what these tests send (unknown
# commands, wrong arity, PING <msg>, ECHO, SELECT, HELLO, ...): see
# test/data/placement/redis_routing.json and twemproxy-reference.md section 4.
NC_SKIP = "walnut's Redis behaviour, far beyond twemproxy's"

HOST = h.HOST
resp = h.resp
RespError = h.RespError
DATA = os.path.join(h.source_dir(), "test", "data")

# walnut's error for a request it could not complete (twemproxy's strerror texts)
RX_FAIL = rb"^-ERR (Connection refused|Connection reset by peer|Connection timed out|" \
          rb"Invalid argument|Broken pipe|Host is down)\r\n$"

# A reply of every RESP2 type, nested 20 arrays deep (twemproxy measured 20 levels via EVAL).
NESTED_SCRIPT = ("local t = {KEYS[1], 0, {ok='fine'}, false, ARGV[1]} "
                 "for i = 1, 19 do t = {i, 'lvl' .. i, t, {err='E' .. i}, {}} end return t")


def spread_keys(port, backends, prefix, per_backend, rng, db=None, auth=None):
    """Keys on each backend: [[keys on backends[0]], ...], found by SET through
    walnut and EXISTS on each backend directly. The keys are deleted again."""
    buckets = [[] for _ in backends]
    with h.Raw(port) as c:
        if auth is not None:
            c.request(resp("AUTH", auth), b"+OK\r\n")
        for _round in range(40):
            if all(len(b) >= per_backend for b in buckets):
                break
            batch = [b"%s:%08x" % (prefix, rng.getrandbits(32)) for _ in range(60)]
            c.send(b"".join(resp("SET", k, "x") for k in batch))
            c.expect(b"+OK\r\n" * len(batch), what="placing probe keys")
            where = h.redis_placement(backends, batch, db=db)
            for k in batch:
                i = backends.index(where[k])
                if len(buckets[i]) < per_backend:
                    buckets[i].append(k)
            c.send(b"".join(resp("DEL", k) for k in batch))
            c.expect(b":1\r\n" * len(batch), what="deleting probe keys")
    if not all(len(b) >= per_backend for b in buckets):
        raise AssertionError("some backend has fewer than %d keys: %s" % (
            per_backend, [len(b) for b in buckets]))
    return buckets


class RedisCase(h.ProxyTestCase):
    """Helpers shared by the Redis test classes."""

    def raw(self, port, timeout=h.IO_TIMEOUT):
        c = h.Raw(port, timeout=timeout)
        self.addCleanup(c.close)
        return c

    def start_redis(self, tmp, n, prefix="r", **kw):
        out = []
        for i in range(n):
            r = h.RedisServer(tmp, name="%s%d" % (prefix, i), **kw).start()
            self.addCleanup(r.stop)
            out.append(r)
        return out

    def fake(self, cls, *args, **kw):
        f = cls(*args, **kw)
        self.addCleanup(f.stop)
        return f

    def exchange(self, port, data, timeout=h.IO_TIMEOUT):
        """Replies to data (complete requests) on a fresh connection: (bytes, closed)."""
        with h.Raw(port, timeout=timeout) as c:
            return replies_to(c, data, timeout)

    def assertSameAsDirect(self, proxy_port, direct_port, data, what="", flush=()):
        """data through walnut and to redis-server directly: the same bytes, the
        connection closed (or kept) alike. The servers in flush are emptied
        before each pass (the keys must all live on the direct one)."""
        for b in flush:
            b.call("FLUSHALL")
        got = self.exchange(proxy_port, data)
        for b in flush:
            b.call("FLUSHALL")
        want = self.exchange(direct_port, data)
        if got != want:
            self.fail("%s%s\n  redis-server: %s closed=%s\n  walnut:       %s closed=%s" % (
                what + ": " if what else "", h.show(data, 200), h.show(want[0], 400), want[1],
                h.show(got[0], 400), got[1]))
        return got[0]


SENTINEL = b"--walnut-test-sentinel--"


def replies_to(c, data, timeout=h.IO_TIMEOUT):
    """Send data and an ECHO sentinel; return (the bytes before the sentinel's
    reply, False), or (everything, True) if the connection closes first."""
    mark = resp_bulk(SENTINEL)
    try:
        c.send(data + resp("ECHO", SENTINEL))
    except OSError:
        pass
    end = time.monotonic() + timeout
    while not c.buf.endswith(mark):
        try:
            if not c._fill(end):
                out, c.buf = c.buf, b""
                return out, True
        except ConnectionResetError:
            out, c.buf = c.buf, b""
            return out, True
        except socket.timeout:
            raise AssertionError("no sentinel within %.1fs after %s; got %s" % (
                timeout, h.show(data, 120), h.show(c.buf))) from None
    out, c.buf = c.buf[:-len(mark)], b""
    return out, False


def kernel_can_buffer():
    """Bytes the two TCP hops client -> walnut -> server can hold in the kernel
    at most (each: the sender's tcp_wmem and the receiver's tcp_rmem maximum)."""
    def most(name):
        try:
            with open("/proc/sys/net/ipv4/%s" % name) as f:
                return int(f.read().split()[2])
        except (OSError, ValueError, IndexError):
            return 0
    return 2 * (most("tcp_rmem") + most("tcp_wmem"))


def metric(px, sample):
    """The value of one sample of walnut's /metrics ("name" or "name{labels}")."""
    for line in px.metrics().splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("no %s in /metrics" % sample)


def recv_exactly(sock, n):
    """n bytes from sock (its timeout applies to each read), or what came before EOF."""
    got = b""
    while len(got) < n:
        d = sock.recv(n - len(got))
        if not d:
            break
        got += d
    return got


def out_queue(px, server):
    """Requests queued for server and not answered, written or not yet
    (walnut_server_out_queue and walnut_server_in_queue)."""
    found, total = 0, 0
    for line in px.metrics().splitlines():
        if line.startswith(("walnut_server_out_queue{", "walnut_server_in_queue{")) and \
                server.addr in line:
            found += 1
            total += int(float(line.rsplit(" ", 1)[1]))
    if found != 2:
        raise AssertionError("no walnut_server_out_queue/in_queue for %s" % server.addr)
    return total


def resp_bulk(v):
    return b"$%d\r\n%s\r\n" % (len(v), v)


def resp_int(n):
    return b":%d\r\n" % n


def resp_array(items):
    return b"*%d\r\n" % len(items) + b"".join(items)


@unittest.skipIf(h.UNDER_NUTCRACKER, NC_SKIP)
class TestRedis(RedisCase, h.SharedProxyCase):
    """One walnut (--workers 2) over three redis-servers: pool `alpha`
    (defaults, timeout 10 s) and pool `tagged` (hash_tag "{}")."""

    WORKERS = 2
    NBACKENDS = 3
    EXTRA_ARGS = ()

    @classmethod
    def start_shared(cls):
        cls.backends = cls.shared_servers(h.RedisServer, cls.NBACKENDS, "r")
        cls.pools = {"alpha": h.pool(cls.backends, redis=True, timeout=10000),
                     "tagged": h.pool(cls.backends, redis=True, timeout=10000,
                                      hash_tag="{}")}
        cls.proxy = cls.shared_proxy(cls.pools, workers=cls.WORKERS, extra=cls.EXTRA_ARGS)
        cls.port = cls.proxy.port("alpha")
        cls.tport = cls.proxy.port("tagged")
        cls.rng = random.Random(4321)
        cls.keys_on = spread_keys(cls.port, cls.backends, b"sp", 30, cls.rng)

    def setUp(self):
        self.watch_shared()
        for b in self.backends:
            if not b.running():
                b.start()
            b.call("FLUSHALL")

    def tearDown(self):
        self.assertProxyAlive()

    def key_per_backend(self, n=1, offset=0):
        """n keys on every backend, interleaved: [b0k0, b1k0, b2k0, b0k1, ...]."""
        return [bucket[j] for j in range(offset, offset + n) for bucket in self.keys_on]

    def on(self, key):
        """The backend (index) that holds key, asked directly."""
        where = h.redis_placement(self.backends, [key])
        return self.backends.index(where[h.resp_arg(key)])

    # ------------------------------------------------------------- protocol

    def test_inline_and_multibulk_requests(self):
        """Inline requests (telnet style, quoted args, escapes) and multibulk
        ones get the bytes redis-server sends."""
        cases = [
            b"PING\r\n", b"PING\n", b"ping hello\r\n", b"*1\r\n$4\r\nPING\r\n",
            b"SET {k}1 \"a b\\x41\\n\"\r\nGET {k}1\r\n",
            b"SET {k}2 'it''s'\r\n",             # unbalanced: closing quote not followed by space
            b"SET {k}3 'it\\'s'\r\nGET {k}3\r\n",
            b"SET {k}4 \"unterminated\r\n",
            b"  \r\n\r\nPING\r\n",                # blank lines are no requests
            b"ECHO \"\\t\\r\\x00\\xff\"\r\n",
            b"set {k}5 v\r\n*2\r\n$3\r\nget\r\n$4\r\n{k}5\r\nGET {k}5\n",
            b"\"GET\" '{k}5'\r\n",
        ]
        for data in cases:
            self.assertSameAsDirect(self.tport, self.backends[self.on_tag(b"k")].port, data,
                                    flush=self.backends)

    def on_tag(self, tag):
        """The backend index of hash tag `tag` in pool tagged (SET and look)."""
        key = b"{%s}probe" % tag
        with self.raw(self.tport) as c:
            c.request(resp("SET", key, "1"), b"+OK\r\n")
        i = self.on(key)
        self.backends[i].call("DEL", key)
        return i

    def test_every_reply_type_relayed_byte_for_byte(self):
        """+ - : $ $-1 $0 * *0 *-1 and 20 nested arrays, as redis-server sent them."""
        k = b"{rt}k"
        b = self.backends[self.on_tag(b"rt")].port
        data = b"".join([
            resp("SET", k, "v"), resp("GET", k), resp("GET", k + b"x"), resp("SET", k, ""),
            resp("GET", k), resp("INCR", k + b"n"), resp("LRANGE", k + b"l", 0, -1),
            resp("LPOP", k + b"l", 2), resp("HGET", k, "f"), resp("RPUSH", k + b"L", "a", "", "c"),
            resp("LRANGE", k + b"L", 0, -1), resp("EVAL", NESTED_SCRIPT, 1, k, "argv"),
            resp("EVAL", "return redis.error_reply('MYERR custom')", 1, k),
            resp("EVAL", "return {1, {2, {3, {}}}, false}", 1, k),
            resp("EVAL", "return redis.status_reply('STATUS')", 1, k),
        ])
        got = self.assertSameAsDirect(self.tport, b, data, flush=self.backends)
        # sanity: the 20-level reply really is nested 20 deep
        replies = h.resp_parse_all(got)
        depth, v = 0, replies[11]
        while isinstance(v, list):
            depth += 1
            v = v[2] if len(v) > 2 and isinstance(v[2], list) else None
        self.assertEqual(depth, 20, "EVAL reply nesting")
        self.assertIn(b"*-1\r\n", got)

    def test_pipeline_one_byte_per_write(self):
        """A pipeline of every kind of request, one byte per write: the same
        replies as sent whole (and as redis-server answers)."""
        keys = self.key_per_backend(2)
        data = b"".join([
            b"PING\r\n", resp("SET", keys[0], "v0"), resp("MSET", keys[1], "v1", keys[2], "v2"),
            b"SET " + keys[3] + b" \"v 3\"\r\n",
            resp("MGET", *keys[:4]), resp("DEL", keys[1], keys[2], keys[5]), resp("NOSUCH", "a"),
            resp("GET"), resp("EXISTS", *keys), resp("ECHO", "x" * 300), resp("GET", keys[3]),
        ])
        whole, closed = self.exchange(self.port, data)
        self.assertFalse(closed)
        for b in self.backends:
            b.call("FLUSHALL")
        with self.raw(self.port) as c:
            c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for i in range(len(data)):
                c.send(data[i:i + 1])
                if i % 7 == 0:
                    time.sleep(0.0005)  # let walnut see most bytes on their own
            got, closed = replies_to(c, b"")
        self.assertFalse(closed)
        self.assertEqual(got, whole, h.describe_mismatch(whole, got))
        self.assertEqual(h.resp_parse_all(got)[4], [b"v0", b"v1", b"v2", b"v 3"])

    def test_split_at_every_point(self):
        """A split MGET and a SET with a value, cut in two at every byte."""
        keys = self.key_per_backend(1)
        for b in self.backends:
            b.call("FLUSHALL")
        data = resp("SET", keys[0], "value\r\nwith crlf") + resp("MGET", keys[0], keys[1], keys[2])
        want = b"+OK\r\n" + resp_array([resp_bulk(b"value\r\nwith crlf"), b"$-1\r\n", b"$-1\r\n"])
        for i in range(1, len(data)):
            with h.Raw(self.port) as c:
                c.send(data[:i])
                time.sleep(0.002)
                c.send(data[i:])
                c.expect(want, what="split at %d" % i)

    def test_malformed_multibulk_same_error_then_close(self):
        """Protocol errors: redis-server's text, then the connection closes; the
        replies to earlier requests come first."""
        d = self.backends[0].port
        cases = [
            b"*abc\r\n", b"*1\r\n$abc\r\n", b"*1\r\n$-1\r\n", b"*2\r\n$3\r\nGET\r\n$-1\r\n",
            b"*1\r\nGET\r\n", b"*1\r\n:3\r\n", b"*2\r\n$3\r\nGET\r\n+x\r\n",
            b"*1\r\n$4294967296\r\n", b"*1\r\n$536870913\r\n",  # over proto-max-bulk-len
            b"*99999999999\r\n", b"*+1\r\n", b"*01\r\n", b"*1\r\n$04\r\n",
            b"PING\r\n*1\r\n$x\r\n",   # the PONG first
            b"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n*\r\n",
            b"SET a \"b\r\n",         # unbalanced quotes (inline)
        ]
        for data in cases:
            with self.subTest(data=h.show(data, 60)):
                self.assertSameAsDirect(self.port, d, data)
                # and what redis-server sends is an error and a close
                got, closed = self.exchange(self.port, data)
                self.assertTrue(closed, h.show(data))
                self.assertRegex(got, rb"-ERR Protocol error: [^\r\n]+\r\n$")

    def test_oversized_lines_same_error_then_close(self):
        """Lines over 64 KiB with no end yet (inline, *N, $N): redis-server's
        "too big" errors, then the connection closes."""
        d = self.backends[0].port
        for data in (b"A" * 70000, b"*1" + b"1" * 70000, b"*1\r\n$1" + b"1" * 70000,
                     b"PING\r\n" + b"B" * 70000):
            with self.subTest(data=h.show(data, 40)):
                got = []
                for port in (self.port, d):
                    with h.Raw(port) as c:
                        c.send(data)
                        got.append(c.recv_until_closed())
                self.assertEqual(got[0], got[1], "walnut, redis-server")
                self.assertRegex(got[0], rb"-ERR Protocol error: too big [^\r\n]+\r\n$")

    def test_empty_multibulk_is_no_request(self):
        """*0, *-1 and *-5 are skipped (no reply), as redis-server does."""
        d = self.backends[0].port
        for data in (b"*0\r\nPING\r\n", b"*-1\r\n*1\r\n$4\r\nPING\r\n", b"*-5\r\nPING\r\n"):
            self.assertEqual(self.assertSameAsDirect(self.port, d, data), b"+PONG\r\n")

    def test_bulk_without_crlf_closes(self):
        """A bulk not followed by CRLF: walnut answers its own protocol error and
        closes (redis-server skips the two bytes unseen; documented difference,
        see test_redis_differential.ALLOWED)."""
        got, closed = self.exchange(self.port, b"*1\r\n$4\r\nPINGxx*1\r\n$4\r\nPING\r\n")
        self.assertTrue(closed)
        self.assertEqual(got, b"-ERR Protocol error: bulk data not followed by CRLF\r\n")

    def _mid_bulk_disconnect(self, how):
        # one hash tag: the three keys share a server (pool tagged)
        before, half, marker = b"{mb}before", b"{mb}half", b"{mb}marker"
        mons = [b.monitor() for b in self.backends]
        for m in mons:
            self.addCleanup(m.stop)
        c = h.Raw(self.tport)
        # a whole SET, then a SET whose value stops half way
        c.send(resp("SET", before, "whole") + b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$100\r\n%s" % (
            len(half), half, b"x" * 40))
        c.expect(b"+OK\r\n")
        time.sleep(0.1)
        if how == "rst":
            c.reset()
        else:
            c.sock.shutdown(socket.SHUT_WR)
            c.expect_closed(what="walnut closes a client gone mid-bulk")
            c.close()
        # a marker through walnut to the same server: all before it has arrived
        with self.raw(self.tport) as m:
            m.request(resp("SET", marker, "1"), b"+OK\r\n")
        i = self.on(before)
        self.assertEqual(self.on(marker), i)
        mons[i].wait_for(lambda e: e[2][:2] == [b"SET", marker])
        seen = [e[2] for m in mons for e in m.commands()]
        self.assertIn([b"SET", before, b"whole"], seen)
        self.assertFalse([a for a in seen if half in a], "the half request reached a server")
        for b in self.backends:
            self.assertEqual(b.call("EXISTS", half), 0)

    def test_client_gone_mid_bulk_fin(self):
        self._mid_bulk_disconnect("fin")

    def test_client_gone_mid_bulk_rst(self):
        self._mid_bulk_disconnect("rst")

    # -------------------------------------------------------------- routing

    def routing_proxy(self):
        """walnut on redis_routing.yml's pools (servers named r1 r2 r3, so
        placement does not depend on ports) over this class's backends."""
        names = ("r1", "r2", "r3")
        servers = ["%s:1 %s" % (b.addr, n) for b, n in zip(self.backends, names)]
        pools = {"routing": h.pool(servers, redis=True, timeout=10000),
                 "routing_tag": h.pool(servers, redis=True, timeout=10000, hash_tag="{}")}
        for p in pools.values():  # as nutcracker ran them: its defaults
            p.pop("hash")
            p.pop("distribution")
        px = self.start_proxy(self.tmp, pools, workers=self.WORKERS, name="routing")
        self.addCleanup(px.stop, check=False)
        return px, dict(zip(names, self.backends))

    def test_routing_matches_nutcracker(self):
        """Every request of redis_routing.json (measured on nutcracker 0.5.0 with
        MONITOR on each backend): the same reply and the same commands on the
        same servers; where nutcracker closes the connection (EVAL numkeys 0,
        MSET odd, MSETNX), walnut answers as a redis-server would. EXISTS is
        split (nutcracker sends it whole to the first key's server)."""
        with open(os.path.join(DATA, "placement", "redis_routing.json")) as f:
            spec = json.load(f)
        px, by_name = self.routing_proxy()
        name_of = {b.port: n for n, b in by_name.items()}
        # placement of every key the cases use, through walnut, read directly
        for pool_name, where in spec["placement"].items():
            with self.raw(px.port(pool_name)) as c:
                for k in where:
                    c.request(resp("SET", k, "p"), b"+OK\r\n")
            got = h.redis_placement(self.backends, list(where))
            for k, n in where.items():
                self.assertEqual(name_of[got[k.encode()].port], n,
                                 "pool %s key %r: walnut put it on %s, nutcracker on %s" % (
                                     pool_name, k, name_of[got[k.encode()].port], n))
            for b in self.backends:
                b.call("FLUSHALL")
        mons = {n: b.monitor() for n, b in by_name.items()}
        for m in mons.values():
            self.addCleanup(m.stop)
        for case in spec["cases"]:
            with self.subTest(note=case["note"]):
                self.check_routing_case(spec, case, px, by_name, mons)

    # nutcracker's behaviour walnut changes on purpose (note -> why)
    ROUTING_DIFFS = {
        "EVAL, numkeys 0": "closes; walnut refuses a script without keys in a pool of "
                           "several servers",
        "EVAL, numkeys 0 with an ARGV": "closes; walnut refuses a script without keys in a "
                                        "pool of several servers",
        "EVAL, numkeys negative": "closes; walnut forwards, the server answers the error",
        "EVAL, numkeys not a number": "closes; walnut forwards, the server answers the error",
        "EVAL, no numkeys": "closes; walnut answers redis-server's arity error",
        "EVALSHA, numkeys 0": "closes; walnut refuses a script without keys in a pool of "
                              "several servers",
        "MSET, odd number of arguments": "closes; walnut answers redis-server's arity error",
        "EXISTS is not split: all to the first key's server": "walnut splits EXISTS and sums",
        "MSETNX is not supported": "closes; walnut refuses keys on several servers clearly",
    }

    def check_routing_case(self, spec, case, px, by_name, mons):
        pool_name, req = case["pool"], [a.encode() for a in case["request"]]
        for n, b in by_name.items():
            b.call("FLUSHALL")
            b.call("SCRIPT", "LOAD", spec["script"])
            b.pipeline([("SET", k, n) for k in spec["placement"][pool_name]])
        for m in mons.values():
            m.clear()
        got, closed = self.exchange(px.port(pool_name), resp(*req))
        # everything the servers ran for it has reached MONITOR once a marker has
        for n, b in by_name.items():
            b.call("ECHO", "routing-marker")
            mons[n].wait_for(lambda e: e[2] == [b"ECHO", b"routing-marker"])
        seen = {}
        for n, m in mons.items():
            # leave out walnut's probes and the harness's own set-up
            cmds = [e[2] for e in m.commands()
                    if e[2] and e[2][0].upper() not in (b"PING", b"ECHO", b"SET", b"SCRIPT",
                                                       b"FLUSHALL")]
            if cmds:
                seen[n] = [[c[0].lower()] + c[1:] for c in cmds]
        nc_servers = {n: [[c[0].lower().encode()] + [a.encode() for a in c[1:]] for c in cmds]
                      for n, cmds in case["servers"].items()}
        why = self.ROUTING_DIFFS.get(case["note"])
        if why is None:
            self.assertFalse(closed, "walnut closed the connection")
            self.assertEqual(got, case["reply"].encode(), "reply differs from nutcracker's")
            self.assertEqual(seen, nc_servers, "commands per server differ from nutcracker's")
            return
        self.assertFalse(closed, "walnut closed the connection (nutcracker: %s)" % why)
        if req[0].upper() == b"EXISTS":
            self.assertEqual(got, case["reply"].encode())
            place = spec["placement"][pool_name]
            want = {}
            for k in req[1:]:
                want.setdefault(place[k.decode()], []).append(k)
            self.assertEqual(seen, {n: [[b"exists"] + ks] for n, ks in want.items()})
        elif "numkeys 0" in case["note"]:
            self.assertRegex(got, rb"^-ERR walnut routes '%s' by its keys: with numkeys 0 its "
                             rb"server cannot be known[^\r\n]*\r\n$" % req[0].lower())
            self.assertEqual(seen, {})
        elif req[0].upper() == b"MSETNX":
            self.assertRegex(got, rb"^-ERR walnut cannot run 'msetnx' across servers[^\r\n]*\r\n$")
            self.assertEqual(seen, {})
        else:
            # what a redis-server answers to the same request, asked directly
            want, _ = self.exchange(by_name["r1"].port, resp(*req))
            self.assertEqual(got, want, "walnut should answer as redis-server does")
            self.assertLessEqual(len(seen), 1, "at most one server ran it: %r" % seen)

    def test_placement_matches_nutcracker(self):
        """redis_named (five servers with explicit names): a few hundred keys
        (empty, binary, CR/LF, NUL, long) SET through walnut in 4 pools land on
        the server nutcracker chose (test/data/placement/redis_named.tsv)."""
        names = ["redis-10", "alpha", "redis-2", "zz", "b"]
        tmp = self.tmpdir()
        backends = self.start_redis(tmp, len(names), prefix="n")
        servers = ["%s:1 %s" % (b.addr, n) for b, n in zip(backends, names)]
        wanted = {"fnv1a_64_ketama": {}, "murmur_modula": {"hash": "murmur",
                                                           "distribution": "modula"},
                  "md5_ketama": {"hash": "md5", "distribution": "ketama"},
                  "crc16_ketama": {"hash": "crc16", "distribution": "ketama"}}
        pools = {}
        for name, settings in wanted.items():
            p = h.pool(servers, redis=True, timeout=10000)
            p.pop("hash")
            p.pop("distribution")
            p.update(settings)
            pools[name] = p
        px = self.start_proxy(tmp, pools, workers=self.WORKERS, name="named")
        table = {}
        with open(os.path.join(DATA, "placement", "redis_named.tsv"), "rb") as f:
            for line in f.read().split(b"\n"):
                if line:
                    pool_name, key_hex, server = line.split(b"\t")
                    table.setdefault(pool_name.decode(), {})[bytes.fromhex(
                        key_hex.decode())] = server.decode()
        by_port = {b.port: n for b, n in zip(backends, names)}
        checked = 0
        for pool_name in wanted:
            for b in backends:
                b.call("FLUSHALL")
            keys = list(table[pool_name])
            self.assertIn(b"", keys)
            with self.raw(px.port(pool_name)) as c:
                c.send(b"".join(resp("SET", k, "v") for k in keys))
                c.expect(b"+OK\r\n" * len(keys), what="SET through " + pool_name)
            where = h.redis_placement(backends, keys)
            bad = [(k, by_port[where[k].port], n) for k, n in table[pool_name].items()
                   if by_port[where[k].port] != n]
            self.assertEqual(bad[:5], [], "pool %s: %d of %d keys elsewhere than nutcracker "
                             "put them (key, walnut, nutcracker)" % (pool_name, len(bad), len(keys)))
            checked += len(keys)
        self.assertGreater(checked, 700)
        px.stop()

    def test_long_keys(self):
        """Keys of 16335 bytes (nutcracker's longest with its default buffers),
        16336 (nutcracker resets the connection) and up to 65536 bytes (walnut's
        bound) are routed as `walnut --locate` says; longer ones get a clear
        -ERR and the connection stays usable."""
        rng = random.Random(12)
        keys = [bytes(rng.choice(b"abcdefghij") for _ in range(n))
                for n in (1000, 16335, 16336, 40000, 65536)]
        with self.raw(self.port) as c:
            for k in keys:
                c.request(resp("SET", k, b"len%d" % len(k)), b"+OK\r\n")
            c.request(resp("MGET", *keys), resp_array([resp_bulk(b"len%d" % len(k))
                                                      for k in keys]))
            too_long = b"k" * 65537
            for cmd in (("SET", too_long, "v"), ("GET", too_long), ("MGET", "a", too_long),
                        ("EVAL", "return 1", 1, too_long)):
                c.request(resp(*cmd), b"-ERR key too long: walnut routes keys of up to 65536 "
                          b"bytes\r\n", what=cmd[0])
            c.request(resp("CLIENT", "SETNAME", b"n" * 65537),
                      b"-ERR walnut keeps client names of up to 65536 bytes\r\n")
            c.request(resp("CLIENT", "SETNAME", b"n" * 65536), b"+OK\r\n")
            c.request(resp("CLIENT", "GETNAME"), resp_bulk(b"n" * 65536))
            c.request(resp("PING"), b"+PONG\r\n")
        where = h.redis_placement(self.backends, keys)
        located = h.walnut_locate(self.proxy.conf_path, keys)
        for k in keys:
            self.assertEqual(where[k].addr, located[("alpha", k)][1], "key of %d bytes" % len(k))

    def test_empty_key(self):
        """The empty key is a key like any other (nutcracker: hashes to 0)."""
        with self.raw(self.port) as c:
            c.request(resp("SET", "", "empty"), b"+OK\r\n")
            c.request(resp("GET", ""), resp_bulk(b"empty"))
            c.request(resp("MGET", "", self.keys_on[0][0], ""),
                      resp_array([resp_bulk(b"empty"), b"$-1\r\n", resp_bulk(b"empty")]))
            c.request(resp("EXISTS", "", ""), b":2\r\n")
            c.request(resp("DEL", ""), b":1\r\n")
        self.assertEqual(sum(b.call("EXISTS", "") for b in self.backends), 0)

    def test_eval_routes_by_first_key(self):
        """EVAL/EVALSHA go to the server of the first key after numkeys,
        whatever ARGV holds; in the tagged pool, by the first key's tag."""
        keys = self.key_per_backend(1)
        script = "return redis.call('SET', KEYS[1], ARGV[1])"
        sha = self.backends[0].call("SCRIPT", "LOAD", script).decode()
        for b in self.backends[1:]:
            b.call("SCRIPT", "LOAD", script)
        with self.raw(self.port) as c:
            for i, k in enumerate(keys):
                other = keys[(i + 1) % 3]
                c.request(resp("EVAL", script, 1, k, other), b"+OK\r\n")
                c.request(resp("EVALSHA", sha, 2, k, other, b"sha:" + other), b"+OK\r\n")
        where = h.redis_placement(self.backends, keys)
        for i, k in enumerate(keys):
            self.assertIs(where[k], self.backends[i])
            self.assertEqual(self.backends[i].call("GET", k), b"sha:" + keys[(i + 1) % 3])
        with self.raw(self.tport) as c:
            c.request(resp("EVAL", script, 1, "{tg}a", "1"), b"+OK\r\n")
            c.request(resp("EVAL", "return redis.call('SET', KEYS[2], ARGV[1])", 2, "{tg}a",
                           "{tg}b", "2"), b"+OK\r\n")
        w = h.redis_placement(self.backends, [b"{tg}a", b"{tg}b"])
        self.assertIs(w[b"{tg}a"], w[b"{tg}b"])

    def test_eval_without_keys(self):
        """A script with numkeys 0 may touch any key (named in ARGV), so in a
        pool of several servers walnut cannot know where it belongs: refused
        (it ran on the server of the key "placeholder": a GET of ARGV[1] read
        nil, a SET landed on the wrong server), "00" too. A count that is no
        number is forwarded for the server's own error; in a pool of one
        server a keyless script runs."""
        k = self.keys_on[0][0]
        self.backends[0].call("SET", k, "orig")
        get = "return redis.call('GET', ARGV[1])"
        with self.raw(self.port) as c:
            for cmd, first, nk in (("EVAL", get, "0"), ("EVALSHA", "a" * 40, "0"),
                                   ("FCALL", "f", "0"), ("EVAL_RO", get, "0"),
                                   ("FCALL_RO", "f", "0"), ("EVAL", get, "00")):
                c.send(resp(cmd, first, nk, k))
                self.assertEqual(c.recv_line(), (
                    "-ERR walnut routes '%s' by its keys: with numkeys 0 its server cannot be "
                    "known (pass the keys the script uses as keys, under one hash tag)\r\n"
                    % cmd.lower()).encode())
            c.send(resp("EVAL", "return redis.call('SET', ARGV[1], 'new')", 0, k))
            self.assertTrue(c.recv_line().startswith(b"-ERR walnut routes 'eval' by its keys"))
            c.request(resp("PING"), b"+PONG\r\n")
        self.assertEqual(self.backends[0].call("GET", k), b"orig")
        for b in self.backends[1:]:
            self.assertIsNone(b.call("GET", k))
        direct = self.backends[0].port
        for nk in ("-1", "+1", " 1", "1x", "3", "99999999999"):
            self.assertSameAsDirect(self.port, direct, resp("EVAL", get, nk, k, "x"),
                                    what="numkeys %r" % nk)
        tmp = h.TempDir()
        self.addCleanup(tmp.cleanup)
        one = self.start_redis(tmp, 1, prefix="one")[0]
        px = self.start_proxy(tmp, {"one": h.pool([one], redis=True)}, workers=1, name="one")
        self.addCleanup(px.stop, check=False)
        one.call("SET", k, "solo")
        self.assertSameAsDirect(px.port("one"), one.port, resp("EVAL", get, 0, k))

    def test_script_load_and_flush_reach_every_server(self):
        """SCRIPT LOAD goes to every live server and is answered with the SHA1
        they all gave, so EVALSHA finds the script whichever server its key is
        on (SCRIPT was refused: redis-py's Lock could acquire but neither extend
        nor release, and register_script failed). SCRIPT EXISTS says 1 for a
        script every server has; SCRIPT FLUSH empties every server's cache;
        KILL and DEBUG are refused (they are about one server); HELP, an
        unknown subcommand or a wrong count get a server's own answer, and a
        FLUSH every server refuses its error."""
        script = "return redis.call('GET', KEYS[1])"
        sha = hashlib.sha1(script.encode()).hexdigest().encode()
        for b in self.backends:
            b.call("SCRIPT", "FLUSH")
        keys = [self.keys_on[i][0] for i in range(3)]
        with self.raw(self.port) as c:
            c.request(resp("SCRIPT", "LOAD", script), resp_bulk(sha))
            for k in keys:
                c.request(resp("SET", k, b"v" + k), b"+OK\r\n")
                c.request(resp("EVALSHA", sha, 1, k), resp_bulk(b"v" + k))
        for b in self.backends:
            self.assertEqual(b.call("SCRIPT", "EXISTS", sha), [1], b.name)
        # EXISTS: 1 for a script every server has (redis-py's pipelines ask it)
        only_one = "return 'one'"
        one = self.backends[1].call("SCRIPT", "LOAD", only_one)
        with self.raw(self.port) as c:
            c.request(resp("SCRIPT", "EXISTS", sha, one, "f" * 40, sha),
                      resp_array([b":1\r\n", b":0\r\n", b":0\r\n", b":1\r\n"]))
            c.request(resp("SCRIPT", "LOAD", only_one), resp_bulk(one))
            c.request(resp("SCRIPT", "EXISTS", one), resp_array([b":1\r\n"]))
        with self.raw(self.port) as c:
            c.request(resp("SCRIPT", "FLUSH"), b"+OK\r\n")
            c.request(resp("SCRIPT", "FLUSH", "ASYNC"), b"+OK\r\n")
            c.request(resp("EVALSHA", sha, 1, keys[1]), b"-NOSCRIPT")
            c.recv_line()
            for sub, args in (("KILL", ()), ("DEBUG", ("NO",))):
                c.send(resp("SCRIPT", sub, *args))
                self.assertEqual(c.recv_line(), (
                    "-ERR unsupported command 'script %s': it is about one server (walnut "
                    "sends SCRIPT LOAD, EXISTS and FLUSH to every server)\r\n"
                    % sub.lower()).encode())
            c.request(resp("PING"), b"+PONG\r\n")
        for b in self.backends:
            self.assertEqual(b.call("SCRIPT", "EXISTS", sha), [0], b.name)
        direct = self.backends[0].port
        for req in (("SCRIPT", "HELP"), ("SCRIPT", "NOSUCH"), ("SCRIPT", "LOAD"), ("SCRIPT", "EXISTS"),
                    ("SCRIPT", "LOAD", "a", "b"), ("SCRIPT", "FLUSH", "NOSUCH"),
                    ("SCRIPT", "LOAD", "return {")):
            self.assertSameAsDirect(self.port, direct, resp(*req), what=" ".join(req))

    def test_split_and_copied_requests_count_their_bytes_once(self):
        """A request split per server (MSET) or sent to every server (SCRIPT
        LOAD) holds its bytes once, however many servers it goes to: the parts
        reference the client's buffers. They were counted against
        client_buffer_limit by the whole request and again by each part (MSET
        twice; SCRIPT LOAD once more per server, then, at 9031aee, twice while
        its copies were made): under a 4 MiB limit an MSET of 3 MB across two
        servers, or a 3 MB script for three, got the client disconnected while
        a 3 MB SET passed."""
        tmp = h.TempDir()
        self.addCleanup(tmp.cleanup)
        px = self.start_proxy(tmp, {"lim": h.pool(self.backends, redis=True, timeout=10000,
                                                  client_buffer_limit=4 << 20)},
                              workers=1, name="limit-once")
        self.addCleanup(px.stop, check=False)
        big = b"v" * (1500 << 10)
        k0, k1 = self.keys_on[0][0], self.keys_on[1][0]
        script = b"-- " + b"x" * (3000 << 10) + b"\nreturn 1"
        sha = hashlib.sha1(script).hexdigest().encode()
        with self.raw(px.port("lim")) as c:
            c.request(resp("SET", k0, big + big), b"+OK\r\n")
            c.request(resp("MSET", k0, big, k1, big), b"+OK\r\n")
            c.request(resp("SCRIPT", "LOAD", script), resp_bulk(sha))
            c.request(resp("PING"), b"+PONG\r\n")
        self.assertEqual(self.backends[1].call("STRLEN", k1), len(big))
        for b in self.backends:
            self.assertEqual(b.call("SCRIPT", "EXISTS", sha), [1], b.name)
        self.assertNotIn("over client_buffer_limit", px.log())

    def test_request_over_the_buffer_limit_is_refused_not_cut(self):
        """A request larger than client_buffer_limit (a SET of 5 MB, an MSET of
        two 3 MB values, under 4 MiB) got its client disconnected as its bytes
        came in: redis-py, still writing, saw "Connection reset by peer" and no
        reason (a client-tool pass; redis-server stores it). Expected: the rest
        is read and dropped, the request answered with an error naming the
        limit, in order; nothing of it runs; the connection serves on."""
        tmp = h.TempDir()
        self.addCleanup(tmp.cleanup)
        px = self.start_proxy(tmp, {"lim": h.pool(self.backends, redis=True, timeout=10000,
                                                  client_buffer_limit=4 << 20)},
                              workers=1, name="over-limit")
        self.addCleanup(px.stop, check=False)
        k0, k1 = self.keys_on[0][0], self.keys_on[1][0]
        err = b"-ERR walnut: the request is larger than the pool's client_buffer_limit " \
              b"(4194304 bytes)\r\n"
        with self.raw(px.port("lim"), timeout=30) as c:
            c.send(resp("SET", k0, "before") + resp("SET", k0, b"x" * (5 << 20)) +
                   resp("MSET", k0, b"y" * (3 << 20), k1, b"z" * (3 << 20)) + resp("GET", k0))
            self.assertEqual(c.recv_until(b"before\r\n"),
                             b"+OK\r\n" + err + err + b"$6\r\nbefore\r\n")
            c.request(resp("SET", k1, b"w" * (2 << 20)), b"+OK\r\n")
            c.request(resp("PING"), b"+PONG\r\n")
            # Review: within the bytes of its own "$N" line and CRLF of the
            # limit, and past it by the argument array's growth or a split's
            # bookkeeping rather than by bytes, the client was still cut (and
            # the earlier PONG lost).
            edge = (4 << 20) - 40
            c.send(resp("PING") + resp("SET", k0, b"e" * edge) + resp("PING"))
            self.assertEqual(c.recv_until(b"+PONG\r\n" + err + b"+PONG\r\n"),
                             b"+PONG\r\n" + err + b"+PONG\r\n")
            for n in (200000, 85000):  # past it by the array; by the split
                c.send(resp("PING") + resp("DEL", *[b"%x" % i for i in range(n)]) + resp("PING"))
                self.assertEqual(c.recv_until(b"+PONG\r\n" + err + b"+PONG\r\n"),
                                 b"+PONG\r\n" + err + b"+PONG\r\n", n)
            # Answered here (unknown, wrong arity): read and dropped; their
            # argument arrays grew and counted, and took the client past the
            # limit (second review).
            many = [b"k"] * 200000
            c.send(resp("PING") + resp("NOSUCHCMD", *many) + resp("GET", *many) + resp("PING"))
            got = c.recv_until(b"command\r\n+PONG\r\n")
            self.assertRegex(got, rb"^\+PONG\r\n-ERR unknown command 'NOSUCHCMD', with args "
                             rb"beginning with: ('k' )+\r\n-ERR wrong number of arguments for "
                             rb"'get' command\r\n\+PONG\r\n$")
        with h.Raw(px.stats_port, timeout=10) as st:
            st.send(b"GET /stats HTTP/1.0\r\n\r\n")
            body = st.recv_until_closed().split(b"\r\n\r\n", 1)[1]
        self.assertEqual(json.loads(body)["lim"]["request_errors"], 7, "each refusal once")
        self.assertEqual(self.backends[1].call("STRLEN", k1), 2 << 20)
        self.assertNotIn("over client_buffer_limit", px.log())

    def test_echo_and_sets_up_to_the_limit(self):
        """An ECHO's (or PING's) argument is its reply, by reference: it was
        counted as the request and again as the reply, so one of over half
        of client_buffer_limit disconnected the client, its earlier replies
        lost (a review: 34 MB under 64 MiB; under 64 KiB, 32.7 KB). And a
        request's room was cut by a copy of any argument (up to 64 KiB) that
        only a key split over buffers needs: a SET of a 40,000-byte value
        was refused under 64 KiB."""
        tmp = h.TempDir()
        self.addCleanup(tmp.cleanup)
        px = self.start_proxy(tmp, {"lim": h.pool(self.backends, redis=True, timeout=10000,
                                                  client_buffer_limit=1 << 20),
                                    "small": h.pool(self.backends, redis=True, timeout=10000,
                                                    client_buffer_limit=65536)},
                              workers=1, name="echo-limit")
        self.addCleanup(px.stop, check=False)
        big = bytes(random.Random(5).getrandbits(8) for _ in range(256)) * 2800  # 700 KB
        with self.raw(px.port("lim"), timeout=30) as c:
            c.send(resp("PING") + resp("ECHO", big) + resp("PING", big) + resp("PING"))
            want = b"+PONG\r\n" + resp_bulk(big) * 2 + b"+PONG\r\n"
            self.assertEqual(c.recv_until(resp_bulk(big) * 2 + b"+PONG\r\n"), want)
        with self.raw(px.port("small"), timeout=30) as c:
            c.send(resp("PING") + resp("ECHO", big[:40000]) + resp("PING"))
            want = b"+PONG\r\n" + resp_bulk(big[:40000]) + b"+PONG\r\n"
            self.assertEqual(c.recv_until(resp_bulk(big[:40000]) + b"+PONG\r\n"), want)
            c.request(resp("SET", "k40", big[:40000]), b"+OK\r\n")
            c.request(resp("GET", "k40"), resp_bulk(big[:40000]))
            # QUIT takes any arguments, of any size, as redis-server's does
            # (it got the limit's error and the connection stayed open)
            c.send(resp("QUIT", big[:70000]) + resp("PING"))
            self.assertEqual(c.recv_until_closed(), b"+OK\r\n")
        self.assertNotIn("over client_buffer_limit", px.log())

    def test_script_exists_table_over_the_limit_is_refused(self):
        """SCRIPT EXISTS keeps one byte per SHA1 per server until every server
        has answered, and that table was made without a look at the client's
        limit: in a pool of 48 servers, 16,000 SHA1s (about 0.6 MB with their
        bookkeeping, under a 1 MiB limit) made a 0.77 MB table on top, and
        the client was disconnected. Refused now, in order, as a split
        command's bookkeeping is; the connection serves on."""
        tmp = h.TempDir()
        self.addCleanup(tmp.cleanup)
        servers = ["%s:1 s%d" % (self.backends[i % 2].addr, i) for i in range(48)]
        px = self.start_proxy(tmp, {"lim": h.pool(servers, redis=True, timeout=10000,
                                                  client_buffer_limit=1 << 20)},
                              workers=1, name="exists-table")
        self.addCleanup(px.stop, check=False)
        err = b"-ERR walnut: the request is larger than the pool's client_buffer_limit " \
              b"(1048576 bytes)\r\n"
        with self.raw(px.port("lim"), timeout=30) as c:
            c.send(resp("PING") + resp("SCRIPT", "EXISTS", *[b""] * 16000) + resp("PING"))
            self.assertEqual(c.recv_until(b"+PONG\r\n" + err + b"+PONG\r\n"),
                             b"+PONG\r\n" + err + b"+PONG\r\n")
            # Under the limit, every server asked: a 0 for each.
            c.send(resp("SCRIPT", "EXISTS", *[b""] * 1000))
            self.assertEqual(c.recv_until(b":0\r\n" * 1000), b"*1000\r\n" + b":0\r\n" * 1000)
        self.assertNotIn("over client_buffer_limit", px.log())

    def test_answers_near_the_limit_do_not_cut_the_client(self):
        """walnut's own answer to a request near client_buffer_limit (a split
        whose bookkeeping does not fit, MSETNX across servers, EVAL with
        numkeys 0 over two servers, a HELLO error showing its option) was
        counted on top of the request it answers, still counted itself: past
        the limit, the client was cut with no word, and the PING before it
        lost its reply too (a review: from about an error line under the
        limit; HELLO from a third of it). The request's bytes now stop
        counting first; each is answered in order and the connection serves
        on. (Each is sent alone: what a client holds besides, an earlier reply
        not yet written, counts too, and past the limit in all cuts it, as
        the README says.)"""
        tmp = h.TempDir()
        self.addCleanup(tmp.cleanup)
        limit = 65536
        px = self.start_proxy(tmp, {"small": h.pool(self.backends, redis=True, timeout=10000,
                                                    client_buffer_limit=limit)},
                              workers=1, name="near-limit")
        self.addCleanup(px.stop, check=False)
        over = b"-ERR walnut: the request is larger than the pool's client_buffer_limit " \
               b"(65536 bytes)\r\n"
        k0, k1 = self.keys_on[0][0], self.keys_on[1][0]
        cases = [
            (lambda v: resp("MSET", k0, v, k1, "y"), [b"+OK\r\n", over]),
            (lambda v: resp("MSETNX", k0, v, k1, "y"),
             [b"-ERR walnut cannot run 'msetnx' across servers", over]),
            (lambda v: resp("EVAL", "return 1", "0", v),
             [b"-ERR walnut routes 'eval' by its keys", over]),
        ]
        for mk, answers in cases:
            for slack in (300, 90, 40, 10, 1):
                req = mk(b"v" * (limit - slack - len(mk(b""))))
                with self.raw(px.port(), timeout=30) as c:
                    c.send(req + resp("PING"))
                    line = c.recv_line()
                    self.assertTrue(any(line.startswith(a) for a in answers),
                                    "%d bytes under the limit: %r" % (slack, line[:120]))
                    self.assertEqual(c.recv_line(), b"+PONG\r\n", "%d under" % slack)
        for n in (20000, 21500, 22000, 26000, 30000):
            with self.raw(px.port(), timeout=30) as c:
                c.send(resp("PING") + resp("HELLO", "2", b"x" * n) + resp("PING"))
                self.assertEqual(c.recv_line(), b"+PONG\r\n")
                line = c.recv_line()
                self.assertIn(line, (b"-ERR Syntax error in HELLO option '%s'\r\n" % (b"x" * n),
                                     over), "HELLO 2 <%d bytes>" % n)
                self.assertEqual(c.recv_line(), b"+PONG\r\n", "HELLO 2 <%d bytes>" % n)
        self.assertNotIn("over client_buffer_limit", px.log())

    def test_script_exists_beside_a_dead_server_is_answered(self):
        """A SCRIPT EXISTS copy for a server that refuses connections fails
        before it is written, and the request's bytes, shared by its copies,
        stayed counted until the answer: 1,550 SHA1s (4 bytes each in the
        answer) under a 64 KiB limit took the client past it, cut with no
        word (a review). The failed copy lets go of its share now."""
        tmp = h.TempDir()
        self.addCleanup(tmp.cleanup)
        dead = "%s:%d" % (h.HOST, h.free_port())
        servers = ["%s:1 live%d" % (b.addr, i) for i, b in enumerate(self.backends)]
        px = self.start_proxy(tmp, {"small": h.pool(servers + ["%s:1 dead" % dead], redis=True,
                                                    timeout=10000, client_buffer_limit=65536)},
                              workers=1, name="exists-dead")
        self.addCleanup(px.stop, check=False)
        for n in (1300, 1550):
            with self.raw(px.port(), timeout=30) as c:
                c.send(resp("SCRIPT", "EXISTS", *[b""] * n) + resp("PING"))
                want = b"*%d\r\n%s+PONG\r\n" % (n, b":0\r\n" * n)
                self.assertEqual(c.recv_until(b"+PONG\r\n"), want, "%d SHA1s" % n)
        self.assertNotIn("over client_buffer_limit", px.log())

    def test_client_names_count_in_what_clients_hold(self):
        """A CLIENT SETNAME name (up to 64 KiB) lives as long as its client
        and was counted nowhere: 200 clients named 60,000 bytes each showed
        client_bytes 0 (a review), out of --client-memory's sight. Counted
        now, and let go with a new name, an empty one, or the client."""
        tmp = h.TempDir()
        self.addCleanup(tmp.cleanup)
        px = self.start_proxy(tmp, {"p": h.pool(self.backends, redis=True, timeout=10000)},
                              workers=1, name="names")
        self.addCleanup(px.stop, check=False)

        def held():
            return int(px.http_json()["client_bytes"])

        clients = []
        for i in range(4):
            c = self.raw(px.port(), timeout=30)
            clients.append(c)
            c.request(resp("CLIENT", "SETNAME", b"n%d" % i * 20000), b"+OK\r\n")
        h.wait_until(lambda: held() >= 4 * 40000, deadline=10, what="the names counted")
        clients[0].request(resp("CLIENT", "SETNAME", b"short"), b"+OK\r\n")
        clients[1].request(resp("CLIENT", "SETNAME", b""), b"+OK\r\n")
        h.wait_until(lambda: 2 * 40000 <= held() < 2 * 40000 + 1000, deadline=10,
                     what="two names let go")
        for c in clients:
            c.close()
        h.wait_until(lambda: held() == 0, deadline=10, what="nothing held once the clients left")

    def test_zdiff_first_key_split_over_buffers(self):
        """ZDIFF, ZUNION and ZINTER go to the server of the argument after
        numkeys, whatever numkeys says. When numkeys read as 0 (or had 11
        digits) that argument was not kept, so one that came split over
        walnut's 16 KiB read buffers read as a key too long: the answer to
        the same request depended on where a read put a buffer's end (a
        review: 185 of 460 random cases). It is kept now, and the server
        answers, as redis-server direct does."""
        direct = self.backends[0].port
        cases = [(cmd, nk, klen, shift) for cmd in ("ZDIFF", "ZUNION", "ZINTER")
                 for nk, klen in (("0", 30), ("0", 20000), ("00000000001", 20000))
                 for shift in (range(0, 40, 4) if klen == 30 else (0,))]
        for cmd, nk, klen, shift in cases:
            req = resp(cmd, nk, b"k" * klen)
            with self.raw(direct) as d:
                d.send(req)
                want = d.recv_line()
            pad = resp("SET", "pad", b"v" * (16384 - 60 + shift))
            with self.raw(self.port) as c:
                c.send(pad + req)
                c.expect(b"+OK\r\n")
                self.assertEqual(c.recv_line(), want, "%s %s <%d bytes> after %d" % (
                    cmd, nk, klen, 16384 - 60 + shift))

    def test_batch_wait_answers_pipelines_and_a_lone_client(self):
        """--batch-wait=200 (a worker sleeps 200 usec after a busy turn: one
        that flushed eight clients, or two connections while eight clients
        wait for replies): 20 clients pipelining 300 SET and GET pairs at
        once (busy turns: the batch_waits counter moves) are each answered
        whole, in order, and a lone client's requests (quiet turns, no
        wait) too. The workers' timer slack is 1 usec (the sleep is not
        stretched by the default 50 usec); the control thread keeps the
        slack it inherited (this process's). Reading another process's
        thread's slack takes CAP_SYS_NICE (root has it)."""
        tmp = h.TempDir()
        self.addCleanup(tmp.cleanup)
        px = self.start_proxy(tmp, {"p": h.pool(self.backends, redis=True, timeout=10000)},
                              workers=2, name="batch-wait", extra=["--batch-wait=200"])
        self.addCleanup(px.stop, check=False)
        self.assertIn("each sleeping 200 usec (up to 5 times that for pipelines) after a busy "
                      "turn (--batch-wait)", px.log())
        slack = {}
        for tid in os.listdir("/proc/%d/task" % px.proc.pid):
            with open("/proc/%d/task/%s/comm" % (px.proc.pid, tid)) as f:
                comm = f.read().strip()
            # /proc/TID/...: the task directories do not list timerslack_ns
            try:
                with open("/proc/%s/timerslack_ns" % tid) as f:
                    slack[comm] = int(f.read())
            except PermissionError:
                self.skipTest("reading walnut's timer slack takes CAP_SYS_NICE")
        with open("/proc/self/timerslack_ns") as f:
            inherited = int(f.read())
        self.assertNotEqual(inherited, 1000)
        self.assertEqual(slack.get("wn-worker-0"), 1000, slack)
        self.assertEqual(slack.get("wn-worker-1"), 1000, slack)
        self.assertEqual(slack.get("walnut"), inherited, slack)
        socks = [self.raw(px.port(), timeout=30) for _ in range(20)]
        reqs = [b"".join(resp("SET", b"bp:%d:%d" % (i, j), b"v%d.%d" % (i, j)) +
                         resp("GET", b"bp:%d:%d" % (i, j)) for j in range(300))
                for i in range(len(socks))]
        # Each client's first bytes, a pause, then the rest of each in quick
        # succession: a worker reads several clients' rest in a turn and
        # answers them in one flush, eight clients or more (busy; 8-9 waits
        # a run in 6 runs, review). Sent whole one by one, each was
        # sometimes answered before the next came: no wait in 3 of 6 runs.
        # test_batch_wait_clients_on_a_silent_server_wait shows the other
        # half of the rule without timing.
        for c, r in zip(socks, reqs):
            c.send(r[:4])
        time.sleep(0.3)
        for c, r in zip(socks, reqs):
            c.send(r[4:])
        for i, c in enumerate(socks):
            want = b"".join(b"+OK\r\n" + resp_bulk(b"v%d.%d" % (i, j)) for j in range(300))
            self.assertEqual(c.recv_exact(len(want)), want, "client %d" % i)
        waits = px.http_json()["batch_waits"]
        self.assertGreater(waits, 0, "twenty clients pipelining at once made no turn busy")
        with self.raw(px.port(), timeout=30) as c:
            for j in range(20):
                c.request(resp("GET", b"bp:3:%d" % j), resp_bulk(b"v3.%d" % j))
        for c in socks:
            c.close()
        px.stop()

    def lone_mgets(self, port, keys, times=200, sets=True, absent=False):
        """Through port, each key SET to its name (unless not `sets`), then
        one MGET of them all, answered whole (all nil if `absent`), `times`
        times, one at a time."""
        with self.raw(port, timeout=30) as c:
            if sets:
                c.send(b"".join(resp("SET", k, k) for k in keys))
                c.recv_exact(5 * len(keys))
            want = b"*%d\r\n" % len(keys)
            want += b"$-1\r\n" * len(keys) if absent else b"".join(resp_bulk(k) for k in keys)
            for _ in range(times):
                c.request(resp("MGET", *keys), want)

    def test_batch_wait_not_for_a_lone_clients_fan_out(self):
        """A lone client's MGET over eight servers flushes nine connections
        in a turn, but one client: not a busy turn, so with
        --batch-wait=1000 it never waits. Under the rule before 02891a2
        (eight connections of any kind) each such MGET slept a millisecond
        (p50 232 usec -> 1,274 usec, review). Shown by the batch_waits
        counter staying 0, not by timing; that each MGET reached all eight
        servers, by their commandstats."""
        tmp = h.TempDir()
        self.addCleanup(tmp.cleanup)
        servers = []
        for i in range(8):
            servers.append(h.RedisServer(tmp, name="fan%d" % i).start())
            self.addCleanup(servers[-1].stop)
        px = self.start_proxy(tmp, {"p": h.pool(servers, redis=True, timeout=10000)},
                              workers=1, name="batch-fan", extra=["--batch-wait=1000"])
        self.addCleanup(px.stop, check=False)
        # Names that differ in more than their last bytes: fnv1a_64 puts
        # "fan:0" ... "fan:63" on one or two servers.
        keys = [hashlib.sha1(b"%d" % i).hexdigest().encode() for i in range(64)]
        self.lone_mgets(px.port(), keys)
        for s in servers:
            self.assertIn("cmdstat_mget:calls=200,", s.call("INFO", "commandstats").decode(),
                          "server %d" % s.port)
        self.assertEqual(px.http_json()["batch_waits"], 0)
        px.stop()

    def test_batch_wait_half_sent_requests_do_not_count(self):
        """Clients that send half a request and stop are not waiting for a
        reply: with ten of them, a lone client's MGETs over three servers
        (two connections flushed in a turn) must not wait. When a request
        being read counted (walnut queues one at its *N line), ten such
        clients made that MGET's every turn busy: 202 waits of a
        millisecond. The counter stays 0; once the ten send the rest, their
        replies come."""
        tmp = h.TempDir()
        self.addCleanup(tmp.cleanup)
        px = self.start_proxy(tmp, {"p": h.pool(self.backends, redis=True, timeout=10000)},
                              workers=1, name="batch-half", extra=["--batch-wait=1000"])
        self.addCleanup(px.stop, check=False)
        keys = [hashlib.sha1(b"half%d" % i).hexdigest().encode() for i in range(30)]
        half = [self.raw(px.port(), timeout=30) for _ in range(10)]
        for i, c in enumerate(half):
            c.send(b"*2\r\n$3\r\nGET\r\n$%d\r\nhalf" % (len(b"half%d" % i)))
        self.lone_mgets(px.port(), keys)
        self.assertEqual(px.http_json()["batch_waits"], 0)
        for i, c in enumerate(half):
            c.send(b"%d\r\n" % i)
        for c in half:
            c.expect(b"$-1\r\n")
            c.close()
        px.stop()

    def test_batch_wait_clients_on_a_silent_server_wait(self):
        """The busy rule's other half: ten clients, each with a GET that a
        silent server never answers, wait for replies, so a lone client's
        MGETs over three servers (two connections flushed in a turn or
        more) wait each time (--batch-wait=1000, one worker). The same when
        each of the ten has also sent the first bytes of its next request:
        an unfinished *N line is not a request queued, and once taking it
        off the GET's count left none waiting (review: 0 waits).

        How long each wait is follows the requests the waiting clients have
        unanswered, on average, each client's counted up to 8, and the bytes
        of the replies answered: one GET each (the lone client's MGET counts
        as one too), the option's 1,000 usec, whatever the replies; ten
        each, (10 x 8 + 1) / 11 = 7 on average, 4,428 usec with the MGET's
        1,415-byte replies (1 KiB or more: the longest; 2,285 before replies
        counted), 2,028 with 155-byte replies (an MGET of keys not there;
        2,610 while short replies waited 2.5 times, not 1.7);
        nine with one and one with 30, still 1,000 (uncapped, one such client
        made everyone's wait longer: review), as batch_wait_usec counts
        them. Before the window, 80 MGETs make the replies' average (41 reach
        1 KiB from the SETs' 5 bytes)."""
        class Silent(fakes.FakeRedis):
            def reply(self, cid, args):
                return b"" if args[:1] == [b"GET"] else super().reply(cid, args)

        keys = [hashlib.sha1(b"silent%d" % i).hexdigest().encode() for i in range(30)]
        absent = [hashlib.sha1(b"silent-absent%d" % i).hexdigest().encode() for i in range(30)]
        for gets, next_bytes, short, usec in (([1] * 10, b"", False, 1000),
                                              ([1] * 10, b"*2", False, 1000),
                                              ([10] * 10, b"", False, 4428),
                                              ([10] * 10, b"", True, 2028),
                                              ([1] * 9 + [30], b"", False, 1000)):
            with self.subTest(gets=gets, next_bytes=next_bytes, short=short):
                silent = Silent()
                px = self.start_with_silent_pool(self.backends, silent, "batch-silent",
                                                 ["--batch-wait=1000"], redis=True)
                stuck = [self.raw(px.port("slow"), timeout=30) for _ in range(10)]
                for c, n in zip(stuck, gets):
                    c.send(resp("GET", "stuck") * n + next_bytes)
                h.wait_until(lambda: sum(a[:1] == [b"GET"] for _, a in silent.requests()) == sum(gets),
                             what="the GETs at the silent server")
                mget = dict(keys=absent, sets=False, absent=True) if short else dict(keys=keys)
                self.lone_mgets(px.port("fast"), times=80, **mget)  # the SETs' replies too
                mget["sets"] = False
                before = px.http_json()
                self.lone_mgets(px.port("fast"), times=100, **mget)
                after = px.http_json()
                waits = after["batch_waits"] - before["batch_waits"]
                self.assertGreaterEqual(waits, 100, "ten clients waiting, %d waits" % waits)
                self.assertEqual(after["batch_wait_usec"] - before["batch_wait_usec"], waits * usec)
                for c in stuck:
                    c.close()
                px.stop()

    def test_batch_wait_holds_replies_a_turn_at_most(self):
        """With --batch-wait, a client with replies ready and more of its
        requests still at the servers is written a turn later, with what
        came meanwhile (a pipeline over two servers was written once per
        server), and a turn later only: SETs on a live server sent with a
        GET that a silent server never answers are answered, 20 times in
        a few milliseconds (unsanitized). Held until the pipeline's end they
        never were; with the loop left to sleep after holding them, each
        waited for a worker timer, about a second. The same while ten
        clients wait on that server, so that the turns are busy and the
        held replies wait out a sleep. batch_holds counts the holds (20 at
        least, one a pipeline); none for a client whose reply is over a
        quarter of its client_buffer_limit (5 when memory did not count)."""
        class Silent(fakes.FakeRedis):
            def reply(self, cid, args):
                return b"" if args[:1] == [b"GET"] else super().reply(cid, args)

        tmp = h.TempDir()
        self.addCleanup(tmp.cleanup)
        silent = Silent()
        self.addCleanup(silent.stop)
        live = self.backends[0]
        px = self.start_proxy(tmp, {"p": h.pool([live, silent], redis=True, timeout=60000),
                                    "small": h.pool([live, silent], redis=True, timeout=60000,
                                                    client_buffer_limit=64 << 10)},
                              workers=1, name="batch-hold", extra=["--batch-wait=1000"])
        self.addCleanup(px.stop, check=False)
        # names that differ in more than their last bytes (fnv1a_64)
        cand = [hashlib.sha1(b"hold%d" % i).hexdigest().encode() for i in range(200)]
        where = h.walnut_locate(px.conf_path, cand)
        on_live = [k for k in cand if where[("p", k)][1] == live.addr][:3]
        on_silent = [k for k in cand if where[("p", k)][1] == silent.addr][:1]
        self.assertEqual((len(on_live), len(on_silent)), (3, 1), where)
        for busy in (False, True):
            with self.subTest(busy_turns=busy):
                if busy:
                    for _ in range(10):
                        c = self.raw(px.port(), timeout=30)
                        self.addCleanup(c.close)
                        c.send(resp("GET", on_silent[0]))
                    # the first subtest's 20 and these ten
                    h.wait_until(lambda: sum(a[:1] == [b"GET"] for _, a in silent.requests())
                                 >= 30, what="the GETs at the silent server")
                before = px.http_json()
                t0 = time.monotonic()
                for _ in range(20):
                    with self.raw(px.port(), timeout=30) as c:
                        c.send(b"".join(resp("SET", k, b"v") for k in on_live) +
                               resp("GET", on_silent[0]))
                        c.expect(b"+OK\r\n" * len(on_live),
                                 what="the SETs' replies, with the GET after them unanswered")
                # A held client's turn comes at once: without the loop kept
                # from sleeping, each waited for a worker timer (~1 s).
                took = time.monotonic() - t0
                self.assertLess(took, 8.0, "20 pipelines answered in %.1f s" % took)
                after = px.http_json()
                # each pipeline's SET replies were held (once at least: the
                # three may come in more than one turn)
                self.assertGreaterEqual(after["batch_holds"] - before["batch_holds"], 20)
                if busy:
                    self.assertGreater(after["batch_waits"], before["batch_waits"],
                                       "ten clients waiting made no turn busy")
        # Short of memory, no hold: a 20 KiB reply is over a quarter of the
        # pool's 64 KiB client_buffer_limit (what the client reads while
        # it is held would take it towards the limit).
        with self.raw(px.port("small"), timeout=30) as c:
            c.request(resp("SET", on_live[0], b"x" * 20000), b"+OK\r\n")
        before = px.http_json()
        for _ in range(5):
            with self.raw(px.port("small"), timeout=30) as c:
                c.send(resp("GET", on_live[0]) + resp("GET", on_silent[0]))
                c.expect(resp_bulk(b"x" * 20000))
        after = px.http_json()
        self.assertEqual(after["batch_holds"], before["batch_holds"])
        px.stop()

    def never_reading_client(self, name, limit):
        """A redis-server, walnut in front of it (one server connection, the
        given client_buffer_limit) and a raw client with a small receive
        buffer; skips under sanitizers (RSS means little there)."""
        if h.sanitized():
            self.skipTest("RSS under a sanitizer means little, and the load is slow")
        tmp = h.TempDir()
        self.addCleanup(tmp.cleanup)
        r = h.RedisServer(tmp, name=name).start()
        self.addCleanup(r.stop)
        px = self.start_proxy(tmp, {"p": h.pool([r], redis=True, server_connections=1,
                                                client_buffer_limit=limit)},
                              workers=1, name=name)
        self.addCleanup(px.stop, check=False)
        a = socket.socket()
        a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        a.connect((h.HOST, px.port()))
        a.settimeout(0.5)
        self.addCleanup(a.close)
        return r, px, a

    def test_pipeline_written_whole_and_a_reader_that_never_reads(self):
        """Clients read on while their reply write does not move (9a8f0e0) held
        each completed reply with its request, pointing into the server's 16 KiB
        read buffer: a client that never reads, sending small GETs while another
        client's 8 KB replies filled the same server connection's buffers, kept
        a buffer alive for each 7-byte reply: +179 MiB of RSS under a 16 MiB
        limit (review), and 300,000 pipelined GETs were disconnected at the
        limit for their requests' own memory. Expected: replies copied to a
        compact backlog of the client's; RSS growth within a small multiple of
        the limit; 300,000 GETs of 100 bytes written whole before reading are
        answered."""
        limit = 16 << 20
        r, px, a = self.never_reading_client("pin", limit)
        r.call("SET", "big", "b" * 8000)
        r.call("SET", "mid", "m" * 65536)
        r.call("SET", "s", "v")
        r.call("SET", "h", "h" * 100)
        base = h.rss(px.pid)
        for _ in range(80):  # its write stalls; a second later it is read on
            a.sendall(resp("GET", "mid"))
        time.sleep(2.0)
        stop, done = threading.Event(), [0]

        def other():
            with socket.create_connection((h.HOST, px.port()), timeout=10) as b:
                need = len(b"$8000\r\n") + 8000 + 2
                while not stop.is_set():
                    b.sendall(resp("GET", "big"))
                    got = 0
                    while got < need:
                        d = b.recv(65536)
                        if not d:
                            return
                        got += len(d)
                    done[0] += 1
        t = threading.Thread(target=other, daemon=True)
        t.start()
        peak, end, one = 0, time.monotonic() + 15, resp("GET", "s")
        while time.monotonic() < end:
            try:
                a.send(one)
            except socket.timeout:
                continue
            except (ConnectionResetError, BrokenPipeError):
                break
            peak = max(peak, h.rss(px.pid))
            time.sleep(0.0003)
        stop.set()
        t.join(15)
        grew = peak - base
        sys.stderr.write("  [measured] RSS growth, a client never reading small GETs beside "
                         "%d 8 KB GETs, limit 16 MiB: %.1f MiB\n" % (done[0], grew / (1 << 20)))
        self.assertGreater(done[0], 1000)
        self.assertLess(grew, 3 * limit)
        a.close()
        # 300,000 GETs written whole before reading: all answered.
        n = 300000
        with socket.create_connection((h.HOST, px.port()), timeout=30) as c:
            c.sendall(resp("GET", "h") * n)
            want, got = (len(b"$100\r\n") + 102) * n, 0
            while got < want:
                d = c.recv(1 << 20)
                self.assertTrue(d, "closed after %d of %d bytes" % (got, want))
                got += len(d)
        self.assertNotIn("over client_buffer_limit", px.log())

    def test_backlog_counts_the_buffers_it_takes(self):
        """An unpaced client's backlog copies each reply whole into 16 KiB
        chunks, counting only the reply's bytes: replies just over half a
        chunk (GETs of 8,200 bytes) each took a chunk of their own, so a client
        that never reads held up to twice its limit before it was cut (peak RSS
        growth 14.2 MiB at an 8 MiB limit on 196e933; 7.4 MiB with the fix).
        Expected: what the backlog takes is what counts, so the client is cut near its limit (growth
        within 1.4x of it, as for small replies in test_hostile's test_04d)."""
        limit = 8 << 20
        r, px, a = self.never_reading_client("waste", limit)
        r.call("SET", "v", "w" * 8200)
        base = h.rss(px.pid)
        # Paused past a quarter of its limit; unpaced once its write has
        # stalled for a second; then a few requests at a time, so that what
        # it holds is its backlog, not a burst of replies with their requests.
        a.sendall(resp("GET", "v") * 300)
        time.sleep(2.0)
        batch = resp("GET", "v") * 4
        peak, cut, end = 0, False, time.monotonic() + 20
        while time.monotonic() < end:
            try:
                a.send(batch)
            except socket.timeout:
                pass
            except (ConnectionResetError, BrokenPipeError):
                cut = True
                break
            peak = max(peak, h.rss(px.pid))
            time.sleep(0.002)
        grew = peak - base
        sys.stderr.write("  [measured] RSS growth, a client never reading 8,200-byte GETs, "
                         "limit 8 MiB: %.1f MiB (cut: %s)\n" % (grew / (1 << 20), cut))
        self.assertTrue(cut or "over client_buffer_limit" in px.log(),
                        "the client was not cut at its limit in 20 s")
        self.assertLess(grew, 1.4 * limit)

    def test_a_server_that_reads_and_does_not_answer_is_bounded(self):
        """redis-server under CLIENT PAUSE (as in a failover) reads requests and
        answers none. One client at a time connects, pipelines 1,000 GETs of
        1 KB keys for it, and closes: a client's bounds hold only while it is
        there, the server's bound counted only bytes its socket had not taken,
        and a request written stayed held (its bookkeeping, ~0.6 KB) with
        nothing counting it, so walnut grew without bound (adversarial pass:
        RSS +400 MiB in 5 s; nutcracker the same). Expected: the server's
        bound counts its requests until answered; past it, requests for it
        are refused; others are served; it takes requests again once it
        answers."""
        tmp = h.TempDir()
        self.addCleanup(tmp.cleanup)
        two = self.start_redis(tmp, 2, prefix="pz")
        limit = 8 << 20
        px = self.start_proxy(tmp, {"p": h.pool(two, redis=True, client_buffer_limit=limit)},
                              workers=1, name="paused")
        cand = [b"k%d_" % i + b"x" * 1000 for i in range(4000)]
        where = h.walnut_locate(px.conf_path, cand)
        paused, live = two
        on_paused = [k for k in cand if where[("p", k)][1] == paused.addr]
        other = next(k for k in cand if where[("p", k)][1] == live.addr)
        self.assertGreaterEqual(len(on_paused), 1000)
        payload = b"".join(resp("GET", k) for k in on_paused[:1000])
        base = h.rss(px.pid)
        have_peak = h.reset_peak(px.pid)
        # Paused well past the flood: the checks after it must still find
        # the server paused on a loaded machine (once, 6 s was not enough
        # under ASan beside other work). Nothing ends a pause early: even
        # CLIENT UNPAUSE waits for it. Under a sanitizer walnut works through
        # the flood's clients for a long while after it (CI's TSan phase: the
        # GET below not refused within 10 s; here once not within 30 s, after
        # 665 clients): at most 150 clients (150,000 requests, nine times the
        # bound), a longer pause and wait.
        slow = h.sanitized()
        pause_s, wait_s = (40, 30) if slow else (20, 10)
        t_paused = time.monotonic()
        self.assertEqual(paused.call("CLIENT", "PAUSE", str(pause_s * 1000), "ALL"), b"OK")
        # One request left unanswered for longer than 100 ms first: until
        # then the server cannot be told from a healthy one given a burst
        # (test_hostile test_17k), and what comes may reach four times the
        # bound.
        first = socket.create_connection((h.HOST, px.port("p")), timeout=10)
        self.addCleanup(first.close)
        first.sendall(resp("GET", on_paused[0]))
        h.wait_until(lambda: out_queue(px, paused) >= 1, deadline=wait_s,
                     what="the first GET written to the paused server")
        time.sleep(0.3)
        t_end = time.monotonic() + 4
        clients, most = 0, 0

        def flood_client():
            # A short send timeout: once walnut stops reading a client (its
            # refused requests' replies unread), a blocked sendall would
            # otherwise hold the flood, and the checks after it, for 10 s,
            # past the pause (twice in CI's ASan phase).
            s = socket.create_connection((h.HOST, px.port("p")), timeout=10)
            h.warm_up(s, redis=True)  # 1,000 in flight: a client seen to have small replies
            s.settimeout(1)
            try:
                s.sendall(payload)
            except OSError:
                pass
            s.close()
        while time.monotonic() < t_end and (clients < 150 or not slow):
            flood_client()
            clients += 1
            if clients % 100 == 0:
                most = max(most, out_queue(px, paused))
        # Which bound it meets first depends on how fast the paused server
        # still reads: its socket's queue, or what it holds unanswered. The
        # first refuses much of the flood while it lasts (under TSan, once,
        # all but 21,161 of 150 clients' requests: the held bound never met
        # and the GET below queued behind the pause): more clients, one at a
        # time, until the bound this test is about is met.
        more_until = time.monotonic() + wait_s
        while "has not answered requests holding" not in px.log() and \
                time.monotonic() < more_until:
            flood_client()
            clients += 1
            time.sleep(0.2)
        h.wait_until(lambda: "has not answered requests holding" in px.log(),
                     deadline=wait_s, what="the held bound met")
        most = max(most, out_queue(px, paused))
        grew = (h.proc_status(px.pid, "VmHWM") if have_peak else h.rss(px.pid)) - base
        sys.stderr.write("  [measured] %d clients x 1,000 GETs for a paused server, each "
                         "closing (limit 8 MiB): at most %d requests held for it; RSS growth "
                         "%.1f MiB\n" % (clients, most, grew / (1 << 20)))
        self.assertGreater(clients, 20)
        # Each request held counts its slot (over 512 bytes) until answered,
        # up to the limit or 16 MiB, the larger (before: every request of
        # every client).
        self.assertLessEqual(most, max(limit, 16 << 20) // 512, "requests held for a paused server")
        with h.Raw(px.port("p"), timeout=wait_s) as c:
            # refused, not waiting for the server: the pause still holds
            c.request(resp("GET", on_paused[0]), b"-ERR ")
            c.recv_line()
            self.assertLess(time.monotonic() - t_paused, pause_s, "the pause ended first")
            c.request(resp("GET", other), b"$-1\r\n")  # the other server is served
        # What RSS adds beyond that is the clients walnut is still working
        # through (up to 1,024 requests each, their bookkeeping uncounted):
        # it depends on how fast this machine runs the flood, so it is only
        # reported (about 100 MiB here; 340 MiB before, the held requests).
        # The pause ends: what was sent is answered, and it takes requests again.
        def answered():
            with h.Raw(px.port("p"), timeout=10) as c:
                c.send(resp("GET", on_paused[1]))
                return c.recv_line() == b"$-1\r\n"
        h.wait_until(answered, deadline=pause_s + 20, interval=0.3,
                     what="the server taking requests again")
        self.assertRegex(px.log(), "(answers|reads) again")
        px.stop(check=True)

    def test_inline_requests_for_a_stopped_server_hold_what_they_count(self):
        """Inline requests (GET k, as typed into telnet) are rewritten in
        multibulk form into a buffer of their own. That buffer was a pooled
        16 KiB chunk, held until the request was written, of which only the
        request's ~20 bytes counted: while a server did not read (stopped,
        here with SIGSTOP, its socket filled first), 20 clients' 1,000 inline
        GETs each (140 KB sent, under a 1 MiB client_buffer_limit) held 329 MB
        of buffers (adversarial pass; RSS +94 MiB). Now each rewritten request
        holds a buffer of its own size. Then the server goes on, and every
        client gets its 1,000 replies in order."""
        tmp = h.TempDir()
        self.addCleanup(tmp.cleanup)
        (r,) = self.start_redis(tmp, 1, prefix="st")
        px = self.start_proxy(tmp, {"p": h.pool([r], redis=True, client_buffer_limit=1 << 20)},
                              workers=1, name="stopped")
        h.sigstop_and_wait(r.proc.pid)
        self.addCleanup(lambda: os.kill(r.proc.pid, signal.SIGCONT))
        # The stopped server's connection filled: 200 KB SETs, one a turn,
        # until the kernel takes no more (its buffers vary with the machine
        # and its load: fixed 4.5 MB of fills once left 1.06 MB in walnut,
        # over the limit, and the GETs below were refused).
        fills, before = [], h.in_kernel(r.port)
        for i in range(80):
            f = socket.create_connection((h.HOST, px.port("p")), timeout=10)
            self.addCleanup(f.close)
            f.sendall(resp("SET", "fill%d" % i, b"x" * 200000))
            fills.append(f)
            h.wait_until(lambda: metric(px, "walnut_pool_requests_total{pool=\"p\"}") > i,
                         deadline=20, what="fill %d read" % i)
            # and offered to the server's socket: its bytes in the kernel settle
            now = h.wait_until_still(lambda: h.in_kernel(r.port), still=0.3,
                                     what="the fill's bytes to settle")
            if now < before + 4096:
                break
            before = now
        else:
            self.fail("the stopped server's connection took 16 MB: never full")
        time.sleep(0.7)  # stalled: nothing taken for 500 ms
        clients = []
        for i in range(20):
            c = socket.create_connection((h.HOST, px.port("p")), timeout=30)
            self.addCleanup(c.close)
            h.warm_up(c, redis=True)  # 1000 in flight: a client seen to have small replies
            c.sendall(b"GET k\r\n" * 1000)
            clients.append(c)
        def buffers():
            return metric(px, "walnut_buffer_bytes")
        h.wait_until(lambda: metric(px, "walnut_pool_requests_total{pool=\"p\"}") >=
                     20000 + len(fills), deadline=20, what="every request read")
        held = buffers()
        sys.stderr.write("  [measured] 20 clients x 1,000 inline GETs for a stopped server "
                         "(after %d fills): %.1f MiB of buffers\n" % (len(fills), held / (1 << 20)))
        self.assertLess(h.in_kernel(r.port), before + 4096, "the GETs stayed in walnut")
        # the fills' 4.5 MB (and the read buffers); 329 MB before
        self.assertLess(held, 24 << 20, "buffers held for inline requests")
        os.kill(r.proc.pid, signal.SIGCONT)
        for f in fills:
            # stored, or (a slow machine read two in one turn) refused by the
            # server's bound on what one turn may queue for it
            line = f.makefile("rb").readline()
            self.assertTrue(line == b"+OK\r\n" or line.startswith(b"-ERR "), line)
        for c in clients:
            self.assertEqual(recv_exactly(c, 5 * 1000), b"$-1\r\n" * 1000)
        self.assertEqual(metric(px, "walnut_pool_client_overlimit_total{pool=\"p\"}"), 0)
        px.stop(check=True)

    def test_copies_for_a_stalled_server_stay_counted(self):
        """A SCRIPT LOAD's bytes count against its client until every server's
        copy is written. They stopped counting once the first server's copy was
        written (3db5891): with another server stopped, one client pipelining
        60 loads of 512 KB was read whole (30 MB, 15 held for the stopped
        server: over client_buffer_limit 16 MiB while the client counted 3 KB),
        until that server's bound refused every client's requests for it. Now
        the client is paused at its limit's quarter; all 60 are answered once
        the server runs again."""
        tmp = h.TempDir()
        self.addCleanup(tmp.cleanup)
        two = self.start_redis(tmp, 2, prefix="st")
        px = self.start_proxy(tmp, {"p": h.pool(two, redis=True, client_buffer_limit=16 << 20)},
                              workers=1, name="stalled-copies")
        self.addCleanup(px.stop, check=False)
        for n, stopped in enumerate(two):  # the server whose copy goes first, and the other
            scripts = [b"return %d -- " % i + b"x" * (512 << 10) for i in range(60 * n, 60 * n + 60)]
            c = self.raw(px.port("p"), timeout=60)
            stopped.sigstop()
            self.addCleanup(stopped.sigcont)
            sender = threading.Thread(target=lambda: c.send(b"".join(
                resp("SCRIPT", "LOAD", sc) for sc in scripts)), daemon=True)
            sender.start()
            time.sleep(2.0)
            self.assertNotIn("refusing requests for it", px.log())
            # The sender still blocked shows walnut paused it, but only where
            # the kernel cannot take the 30 MB itself: with tcp_rmem's
            # maximum at 32 MB (Linux 6.x), the stopped server's and walnut's
            # receive buffers may grow to hold it all in 2 s (seen once in CI).
            if kernel_can_buffer() < 30 << 20:
                self.assertTrue(sender.is_alive(), "walnut read all 30 MB for a stopped server")
            elif not sender.is_alive():
                sys.stderr.write("  [measured] the sender finished: the kernel's buffers (up "
                                 "to %d MB) took the 30 MB; the pause is not seen here\n"
                                 % (kernel_can_buffer() >> 20))
            stopped.sigcont()
            sender.join(60)
            for sc in scripts:
                c.expect(resp_bulk(hashlib.sha1(sc).hexdigest().encode()), timeout=60)
            c.close()
        self.assertNotIn("over client_buffer_limit", px.log())

    def test_script_load_with_a_server_down(self):
        """With auto_eject_hosts off a dead server stays in the ring: SCRIPT LOAD
        and EXISTS are answered by the servers that can be reached (the dead
        one's keys fail anyway, and once back it answers EVALSHA with NOSCRIPT,
        which redis-py's Script and Lock handle by loading again); FLUSH (the
        servers reached are flushed), and LOAD when no server answers, fail
        with one error; the connection stays
        usable; once the server is ejected the others take it too."""
        tmp = h.TempDir()
        self.addCleanup(tmp.cleanup)
        two = self.start_redis(tmp, 2, prefix="sl")
        px = self.start_proxy(tmp, {"p": h.pool(two, redis=True, timeout=2000)}, workers=1,
                              name="script-load")
        self.addCleanup(px.stop, check=False)
        port1 = two[1].port
        two[1].stop()
        sha = hashlib.sha1(b"return 1").hexdigest().encode()
        with self.raw(px.port("p")) as c:
            c.request(resp("SCRIPT", "LOAD", "return 1"), resp_bulk(sha))
            c.request(resp("SCRIPT", "EXISTS", sha, b"0" * 40), b"*2\r\n:1\r\n:0\r\n")
            self.assertEqual(two[0].call("SCRIPT", "EXISTS", sha), [1])
            # FLUSH says it did not reach every server (the others are flushed)
            c.send(resp("SCRIPT", "FLUSH"))
            self.assertEqual(c.recv_line(), b"-ERR Connection refused\r\n")
            c.request(resp("PING"), b"+PONG\r\n")
        self.assertEqual(two[0].call("SCRIPT", "EXISTS", sha), [0])
        # redis-py: a Lock on the live server's key is taken, extended and
        # released (its scripts loaded through walnut with the other dead);
        # the dead server comes back without them and NOSCRIPT makes redis-py
        # load them again
        # varied names: fnv1a_64's low bits barely move with a last digit
        where = h.walnut_locate(px.conf_path, [b"lock:" + hashlib.md5(b"%d" % i).hexdigest()[:10]
                                               .encode() for i in range(200)])
        live = [k for (_, k), (_, addr) in where.items() if addr.endswith(":%d" % two[0].port)]
        dead = [k for (_, k), (_, addr) in where.items() if addr.endswith(":%d" % port1)]
        import redis  # python3-redis (test/install-deps.sh)
        cl = redis.Redis(host="127.0.0.1", port=px.port("p"), socket_timeout=10)
        self.addCleanup(cl.close)
        self.assertTrue(live and dead, where)
        lk = cl.lock(live[0], timeout=30)
        self.assertTrue(lk.acquire(blocking=False))
        self.assertTrue(lk.extend(10))
        lk.release()
        two[1].start()
        lk = cl.lock(dead[0], timeout=30)
        h.wait_until(lambda: self._try_acquire(lk), deadline=10.0, what="the restarted server")
        self.assertTrue(lk.extend(10))
        lk.release()
        self.assertEqual(two[1].call("EXISTS", dead[0]), 0)
        # no server to answer: one error
        two[0].stop()
        two[1].stop()
        with self.raw(px.port("p")) as c:
            c.send(resp("SCRIPT", "LOAD", "return 3"))
            self.assertEqual(c.recv_line(), b"-ERR Connection refused\r\n")
            c.send(resp("SCRIPT", "EXISTS", sha))
            self.assertEqual(c.recv_line(), b"-ERR Connection refused\r\n")
            c.request(resp("PING"), b"+PONG\r\n")
        two[0].start()
        two[1].start()
        ejecting = {"p": h.pool(two, redis=True, timeout=2000, auto_eject_hosts=True,
                                server_failure_limit=1, server_retry_timeout=60000,
                                health_check_interval=100)}
        two[1].stop()
        px2 = self.start_proxy(tmp, ejecting, workers=1, name="script-load-eject")
        self.addCleanup(px2.stop, check=False)
        h.wait_until(lambda: "workers on ring epoch 2" in px2.log(), deadline=10.0,
                     what="the dead server out of the workers' ring")
        sha = hashlib.sha1(b"return 2").hexdigest().encode()
        with self.raw(px2.port("p")) as c:
            c.request(resp("SCRIPT", "LOAD", "return 2"), resp_bulk(sha))
        self.assertEqual(two[0].call("SCRIPT", "EXISTS", sha), [1])

    @staticmethod
    def _try_acquire(lk):
        import redis
        try:
            return lk.acquire(blocking=False)
        except redis.exceptions.ConnectionError:
            return False

    # ------------------------------------------------------------ multi-key

    def test_multikey_split_and_merged(self):
        """MGET in key order with nils; DEL, UNLINK, TOUCH, EXISTS summed across
        servers (EXISTS counts every server's keys: twemproxy sends it whole to
        the first key's server); MSET +OK; each key where it belongs."""
        keys = self.key_per_backend(3)
        missing = [k + b":missing" for k in keys[:3]]
        with self.raw(self.port) as c:
            c.request(resp("MSET", *[x for k in keys for x in (k, b"v=" + k)]), b"+OK\r\n")
            ask = [keys[0], missing[0], keys[4], keys[8], missing[2], keys[0]]
            c.request(resp("MGET", *ask), resp_array(
                [resp_bulk(b"v=" + k) if k in keys else b"$-1\r\n" for k in ask]))
            # twemproxy sends EXISTS whole to the first key's server
            c.request(resp("EXISTS", *(keys + missing)), resp_int(len(keys)))
            c.request(resp("EXISTS", keys[0], keys[0], keys[1]), b":3\r\n")
            c.request(resp("TOUCH", *(keys[:3] + missing)), b":3\r\n")
            c.request(resp("UNLINK", keys[0], keys[1], missing[1]), b":2\r\n")
            c.request(resp("DEL", *(keys + missing)), resp_int(len(keys) - 2))
            c.request(resp("MGET", *keys[:3]), resp_array([b"$-1\r\n"] * 3))
        for b in self.backends:
            self.assertEqual(b.call("DBSIZE"), 0)

    def test_mset_lands_on_each_keys_server(self):
        keys = self.key_per_backend(4)
        with self.raw(self.port) as c:
            c.request(resp("MSET", *[x for k in keys for x in (k, b"m" + k)]), b"+OK\r\n")
        where = h.redis_placement(self.backends, keys)
        for i, k in enumerate(keys):
            self.assertIs(where[k], self.backends[i % 3], k)
            self.assertEqual(where[k].call("GET", k), b"m" + k)

    def test_1000_keys_mget_mset(self):
        """MSET and MGET of 1,000 keys across three servers, pipelined twice,
        on a 100 KB-value mix; then DEL and EXISTS of all of them."""
        rng = random.Random(7)
        keys = [b"k1000:%d" % i for i in range(1000)]
        vals = [bytes(rng.getrandbits(8) for _ in range(rng.choice((0, 1, 10, 200)))) for _ in keys]
        vals[17] = b"x" * 100000
        with self.raw(self.port) as c:
            msetc = resp("MSET", *[x for kv in zip(keys, vals) for x in kv])
            c.send(msetc * 2)
            c.expect(b"+OK\r\n+OK\r\n")
            want = resp_array([resp_bulk(v) for v in vals])
            c.send(resp("MGET", *keys) * 2)
            c.expect(want + want, what="two 1000-key MGETs")
            c.request(resp("EXISTS", *keys), b":1000\r\n")
            c.request(resp("DEL", *(keys + keys[:10])), b":1000\r\n")
        counts = [b.call("DBSIZE") for b in self.backends]
        self.assertEqual(counts, [0, 0, 0])

    def test_one_server_commands_refused_across_servers(self):
        """MSETNX, RENAME, RENAMENX, BITOP, LCS (twemproxy refuses them) with keys on two
        servers: a clear -ERR and nothing sent; under one hash tag: they run."""
        a, b = self.key_per_backend(1)[:2]
        mons = [m for m in (x.monitor() for x in self.backends)]
        for m in mons:
            self.addCleanup(m.stop)
        with self.raw(self.port) as c:
            c.request(resp("SET", a, "1"), b"+OK\r\n")
            for cmd in (("MSETNX", a, "1", b, "2"), ("RENAME", a, b), ("RENAMENX", a, b),
                        ("BITOP", "AND", a, a, b), ("LCS", a, b)):
                c.send(resp(*cmd))
                line = c.recv_line()
                self.assertRegex(line, rb"^-ERR walnut cannot run '%s' across servers: "
                                 rb"[^\r\n]+hash tag[^\r\n]*\r\n$" % cmd[0].lower().encode(), cmd)
            c.request(resp("GET", a), resp_bulk(b"1"))
        time.sleep(0.2)
        for m in mons:
            self.assertFalse([e for e in m.commands() if e[2] and e[2][0].upper() in (
                b"MSETNX", b"RENAME", b"RENAMENX", b"BITOP", b"LCS")])
        with self.raw(self.tport) as c:
            c.request(resp("MSETNX", "{u1}a", "1", "{u1}b", "2"), b":1\r\n")
            c.request(resp("MSETNX", "{u1}a", "1", "{u1}c", "2"), b":0\r\n")
            c.request(resp("RENAME", "{u1}a", "{u1}z"), b"+OK\r\n")
            c.request(resp("RENAMENX", "{u1}b", "{u1}z"), b":0\r\n")
            c.request(resp("MGET", "{u1}a", "{u1}b", "{u1}z"),
                      resp_array([b"$-1\r\n", resp_bulk(b"2"), resp_bulk(b"1")]))
            c.request(resp("LCS", "{u1}b", "{u1}z"), resp_bulk(b""))

    def test_multikey_part_fails(self):
        """One server of three killed: a split MGET/DEL/MSET/EXISTS answers one
        error line naming the cause for the whole command, the connection stays
        usable, and concurrent clients only ever get their own keys' values."""
        tmp = self.tmpdir()
        backends = self.start_redis(tmp, 3, prefix="pf")
        px = self.start_proxy(tmp, {"p": h.pool(backends, redis=True, timeout=1000)},
                              workers=self.WORKERS, name="partfail")
        port = px.port()
        buckets = spread_keys(port, backends, b"pf", 4, random.Random(3))
        keys = [bk[j] for j in range(4) for bk in buckets]
        with h.Raw(port) as c:
            c.request(resp("MSET", *[x for k in keys for x in (k, b"v" + k)]), b"+OK\r\n")
        # readers: each its own keys on the two live servers, checking every reply
        stop = threading.Event()
        errors = []
        counts = [0] * 4

        def reader(n):
            mine = [k + b":%d" % n for k in keys]
            try:
                with h.Raw(port, timeout=10) as c:
                    c.request(resp("MSET", *[x for k in mine for x in (k, k)]), b"+OK\r\n")
                    while not stop.is_set() and counts[n] < 5000:
                        c.send(resp("MGET", *mine))
                        got = h.resp_parse(c.recv_resp())[0]
                        counts[n] += 1
                        if isinstance(got, RespError):
                            continue  # the dead server's part
                        if got != mine:
                            errors.append((n, got))
                            return
            except (AssertionError, OSError) as e:
                errors.append((n, repr(e)))

        threads = [threading.Thread(target=reader, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        # every reader's MSET done (and an MGET) before the kill: a late one's
        # MSET would rightly fail on the dead server's part
        h.wait_until(lambda: all(n > 0 for n in counts) or errors, deadline=30,
                     what="every reader started")
        backends[2].kill()
        with h.Raw(port) as c:
            for cmd in (("MGET",) + tuple(keys), ("DEL",) + tuple(keys[:3]),
                        ("MSET",) + tuple(x for k in keys for x in (k, "z")),
                        ("EXISTS",) + tuple(keys), ("UNLINK",) + tuple(keys[:3])):
                c.send(resp(*cmd))
                self.assertRegex(c.recv_resp(), RX_FAIL, cmd[0])
                c.request(resp("PING"), b"+PONG\r\n", what="still usable after " + cmd[0])
            # the live servers' parts of the MSET ran: keys[3] is on a live one
            c.request(resp("GET", keys[3]), resp_bulk(b"z"))
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join(30)
        self.assertEqual(errors, [], "a reader got something not its own (or lost its "
                         "connection); MGETs per reader: %s" % counts)
        self.assertTrue(all(n > 0 for n in counts), counts)
        backends[2].start()

    # --------------------------------------------------------- local answers

    def test_unknown_and_arity_errors_in_order(self):
        """Unknown commands and wrong arity: redis-server's exact texts, in
        order among forwarded replies, the connection kept (twemproxy closes)."""
        d = self.backends[self.on_tag(b"ua")].port
        data = b"".join([
            resp("SET", "{ua}a", "1"), resp("NOSUCHCMD", "x", "y"), resp("GET"),
            resp("GET", "{ua}a"), b"FOO \"bar baz\" 'q'\r\n", resp("X" * 60, "a" * 200, "b"),
            resp("nosuch", "a\r\nb", "c\x00d", "e" * 100, "f" * 30),
            resp("SET", "{ua}a"), resp("MSET", "{ua}a", "1", "{ua}b"), resp("get", "{ua}a", "x"),
            resp("GETX"), resp("MGET"), resp("EVAL", "return 1"),
            resp("ECHO"), resp("SELECT"), resp("CLIENT"), resp("COMMAND", "NOSUCH"),
            resp("PING"), resp("GET", "{ua}a"),
        ])
        # twemproxy closes the connection at an unknown command
        got = self.assertSameAsDirect(self.tport, d, data, flush=self.backends)
        self.assertTrue(got.endswith(b"+PONG\r\n$1\r\n1\r\n"))

    def test_unknown_command_long_name_many_args(self):
        """redis-server's unknown-command text shows up to 128 bytes of the name
        and every argument while the text so far is under 128 bytes."""
        d = self.backends[0].port
        for cmd in (("X" * 200, "a"), ("Y" * 100, "b"), ("nosuch",) + tuple("arg%d" % i for i in range(50)),
                    ("nosuch",) + tuple("%d" % i for i in range(12))):
            with self.subTest(name=cmd[0][:10], nargs=len(cmd)):
                self.assertSameAsDirect(self.port, d, resp(*cmd))

    def test_ping_echo(self):
        d = self.backends[0].port
        data = b"".join([resp("PING"), resp("PING", "hello world"), resp("PING", ""),
                         resp("ECHO", "x\r\n\x00\xff"), resp("ECHO", ""),
                         resp("ECHO", "e" * 60000), b"ping\r\necho inline\r\n"])
        # twemproxy rejects PING <msg> and ECHO
        self.assertSameAsDirect(self.port, d, data)

    def test_ping_extra_args_arity_error(self):
        """PING with two arguments: redis-server's arity error (its COMMAND INFO
        arity is -1, but pingCommand refuses more than one argument)."""
        self.assertSameAsDirect(self.port, self.backends[0].port,
                                resp("PING", "a", "b") + resp("PING", "a", "b", "c"))
        # after walnut has written a long error of its own (stack contents)
        with self.raw(self.port) as c:
            for before in (("SELECT", "1"), ("CLIENT", "LIST"), ("HELLO", "2", "X" * 60)):
                c.send(resp(*before))
                c.recv_line()
                c.request(resp("PING", "a", "b"),
                          b"-ERR wrong number of arguments for 'ping' command\r\n")
                c.request(resp("PING"), b"+PONG\r\n", what="after PING a b")

    def test_echo_ping_long_argument(self):
        """ECHO and PING of arguments over 64 KiB (walnut's key copy limit) and
        up to 8 MB: the argument back, as redis-server sends it."""
        tmp = self.tmpdir()
        backends = self.start_redis(tmp, 1, prefix="el")
        px = self.start_proxy(tmp, {"p": h.pool(backends, redis=True, timeout=5000)},
                              workers=1, name="echolong")
        for n in (65536, 65537, 100000, 8 << 20):
            for cmd in ("ECHO", "PING"):
                if not px.alive():
                    break
                with self.subTest(cmd=cmd, n=n):
                    v = bytes(random.Random(n).getrandbits(8) for _ in range(64)) * (n // 64) + \
                        b"z" * (n % 64)
                    with h.Raw(px.port()) as c:
                        c.send(resp(cmd, v))
                        got = c.recv_exact(len(resp_bulk(v)), timeout=10)
                    self.assertTrue(got == resp_bulk(v), "%s of %d bytes: got %d bytes, %s" % (
                        cmd, n, len(got), "same" if got == resp_bulk(v) else
                        "differ at %d: %r" % (h.first_diff(got, resp_bulk(v)),
                                              got[h.first_diff(got, resp_bulk(v)):][:40])))
                    self.assertTrue(px.alive(), "walnut died (exit status %s)" % (
                        px.proc.poll(),))

    def test_quit_after_earlier_replies(self):
        """QUIT: +OK after the earlier replies, then the connection closes, and
        nothing sent after it runs."""
        k = self.key_per_backend(1)
        with self.raw(self.port) as c:
            c.send(resp("SET", k[0], "1") + resp("MGET", *k) + resp("QUIT") +
                   resp("SET", k[1], "after") + b"PING\r\n")
            # twemproxy closes without +OK
            c.expect(b"+OK\r\n" + resp_array([resp_bulk(b"1"), b"$-1\r\n", b"$-1\r\n"]) +
                     b"+OK\r\n")
            c.expect_closed()
        time.sleep(0.1)
        self.assertEqual(sum(b.call("EXISTS", k[1]) for b in self.backends), 0)
        # as redis-server does
        self.assertSameAsDirect(self.port, self.backends[0].port, b"PING\r\nQUIT\r\nPING\r\n")

    def test_last_replies_arrive_whole_when_more_follows(self):
        """A client that sends more after QUIT, or after a request walnut
        cannot frame, than walnut read, and reads slowly, still gets every
        reply before it, then EOF: closing over unread bytes made the kernel
        reset the connection and drop what it had not delivered (got 1 of
        3.8 MB; redis-server 7.0 does that too)."""
        k = self.key_per_backend(1)[:2]  # on two servers
        size = 1900000
        vals = [bytes([65 + i]) * size for i in range(2)]
        h.redis_pipeline(self.port, [("SET", k[i], vals[i]) for i in range(2)])
        mget = resp_array([resp_bulk(v) for v in vals])
        for last, reply in ((resp("QUIT"), b"+OK\r\n"),
                            (b"*1\r\n$x\r\n", b"-ERR Protocol error: invalid bulk length\r\n")):
            for more in (resp("PING") * 10, b"x" * (4 << 20)):
                with self.subTest(last=last, more=more[:8], n=len(more)):
                    got, end = h.last_replies_then_more(
                        self.port, resp("MGET", *k) + resp("GET", k[0]) + last, more)
                    want = mget + resp_bulk(vals[0]) + reply
                    self.assertTrue(got == want and end == "EOF",
                                    "got %d of %d bytes, then %s; %s" % (
                                        len(got), len(want), end, h.describe_mismatch(want, got)))
        with self.raw(self.port) as c:  # walnut answers on
            c.request(resp("PING"), b"+PONG\r\n")

    def test_quit_read_at_once_with_more_after_it_ends_in_eof(self):
        """A client that reads each reply at once, its kernel acknowledging
        it before walnut's last write returns, while more it sent after QUIT
        waits unread: EOF after +OK, not a reset (walnut closed over the
        unread bytes: 14 to 19 of 20 tries before the fix, with 1 MB after
        QUIT; a CI run caught it once)."""
        ends = [h.last_replies_then_more(self.port, resp("PING") + resp("QUIT"),
                                         b"x" * (1 << 20), eager=True) for _ in range(10)]
        self.assertEqual(ends, [(b"+PONG\r\n+OK\r\n", "EOF")] * 10)

    def test_select(self):
        """SELECT 0 (and SELECT <redis_db>) is +OK; any other db a clear -ERR;
        what is no integer to redis-server gets its error (it got walnut's)."""
        with self.raw(self.port) as c:
            c.request(resp("SELECT", "0"), b"+OK\r\n")
            for db in ("1", "15", "-1", "2147483647"):
                c.send(resp("SELECT", db))
                self.assertRegex(c.recv_line(), rb"^-ERR walnut serves one database per pool "
                                 rb"\(redis_db 0\); SELECT 0 only\r\n$")
            for db in ("x", "00", "01", " 1", "+1", "-0", "2147483648", "-2147483649",
                       "9223372036854775808", ""):
                self.assertSameAsDirect(self.port, self.backends[0].port, resp("SELECT", db))
                c.send(resp("SELECT", db))
                self.assertRegex(c.recv_line(), rb"^-ERR value is (not an integer or )?out of "
                                 rb"range")
            c.request(resp("PING"), b"+PONG\r\n")

    def test_hello(self):
        """HELLO and HELLO 2: a RESP2 map like redis-server's, plus walnut's
        `proxy` field; HELLO 3 -NOPROTO (clients fall back to RESP2); bad
        versions get redis-server's texts."""
        with self.raw(self.port) as c:
            for cmd in (("HELLO",), ("HELLO", "2"), ("hello", "2", "SETNAME", "hi")):
                m = c.call(*cmd)
                self.assertIsInstance(m, list, cmd)
                fields = dict(zip(m[0::2], m[1::2]))
                self.assertEqual(m[0::2], [b"server", b"version", b"proto", b"id", b"mode",
                                           b"role", b"modules", b"proxy"])
                self.assertEqual((fields[b"server"], fields[b"proto"], fields[b"mode"],
                                  fields[b"role"], fields[b"modules"]),
                                 (b"redis", 2, b"standalone", b"master", []))
                self.assertRegex(fields[b"proxy"], rb"^walnut ")
                self.assertEqual(fields[b"id"], c.call("CLIENT", "ID"))
            c.request(resp("HELLO", "3"), b"-NOPROTO unsupported protocol version\r\n")
        # the same texts as redis-server for versions it refuses too
        self.assertSameAsDirect(self.port, self.backends[0].port, b"".join(
            resp(*a) for a in (("HELLO", "4"), ("HELLO", "x"), ("HELLO", "2", "NOSUCH"),
                               ("HELLO", "1"), ("HELLO", "0"))))

    def test_hello_setname_is_kept(self):
        """HELLO 2 SETNAME <name> names the connection, as redis-server does
        (CLIENT GETNAME answers it)."""
        with self.raw(self.port) as c:
            self.assertIsInstance(c.call("HELLO", "2", "SETNAME", "myname"), list)
            self.assertEqual(c.call("CLIENT", "GETNAME"), b"myname")

    def test_client_subcommands(self):
        """CLIENT SETNAME/GETNAME/ID/INFO/SETINFO answered by walnut; others a
        clear -ERR; redis-server's texts for a bad name and wrong arity."""
        with self.raw(self.port) as c, self.raw(self.port) as c2:
            c.request(resp("CLIENT", "GETNAME"), b"$-1\r\n")
            c.request(resp("CLIENT", "SETNAME", "worker-1"), b"+OK\r\n")
            c.request(resp("CLIENT", "GETNAME"), resp_bulk(b"worker-1"))
            i1, i2 = c.call("CLIENT", "ID"), c2.call("CLIENT", "ID")
            self.assertIsInstance(i1, int)
            self.assertNotEqual(i1, i2)
            self.assertEqual(c.call("CLIENT", "ID"), i1)
            info = c.call("CLIENT", "INFO")
            self.assertRegex(info, rb"^id=%d .*name=worker-1 " % i1)
            self.assertTrue(info.endswith(b"\n"))
            c.request(resp("CLIENT", "SETINFO", "LIB-NAME", "redis-py"), b"+OK\r\n")
            c.request(resp("CLIENT", "SETINFO", "lib-ver", "4.3.4"), b"+OK\r\n")
            c.request(resp("CLIENT", "SETINFO", "lib-ver", ""), b"+OK\r\n")
            # redis-server 7.2's checks (7.0, which the tests run, has no SETINFO)
            c.request(resp("CLIENT", "SETINFO", "LIB-NAME", "my lib"),
                      b"-ERR LIB-NAME cannot contain spaces, newlines or special characters.\r\n")
            c.request(resp("CLIENT", "SETINFO", "lib-ver", "1\n2"),
                      b"-ERR lib-ver cannot contain spaces, newlines or special characters.\r\n")
            c.request(resp("CLIENT", "SETINFO", "lib-nom", "x"),
                      b"-ERR Unrecognized option 'lib-nom'\r\n")
            # values longer than a key (they span buffers): checked all the
            # same (a space at the end of 100,000 bytes got +OK)
            c.request(resp("CLIENT", "SETINFO", "LIB-VER", b"v" * 99999 + b" "),
                      b"-ERR LIB-VER cannot contain spaces, newlines or special characters.\r\n")
            c.request(resp("CLIENT", "SETINFO", "LIB-NAME", b"\x01" + b"v" * 99999),
                      b"-ERR LIB-NAME cannot contain spaces, newlines or special characters.\r\n")
            c.request(resp("CLIENT", "SETINFO", "LIB-NAME", b"v" * 100000), b"+OK\r\n")
            c.request(resp("CLIENT", "SETNAME", ""), b"+OK\r\n")
            c.request(resp("CLIENT", "GETNAME"), b"$-1\r\n")
            for sub in (("LIST",), ("KILL", "ID", "1"), ("PAUSE", "10"), ("NOSUCH",),
                        ("TRACKING", "on"), ("REPLY", "OFF")):
                c.send(resp("CLIENT", *sub))
                self.assertRegex(c.recv_line(), rb"^-ERR CLIENT %s is not supported by walnut"
                                 rb"[^\r\n]*\r\n$" % sub[0].encode(), sub)
            c.request(resp("PING"), b"+PONG\r\n")
        self.assertSameAsDirect(self.port, self.backends[0].port, b"".join(
            resp(*a) for a in (("CLIENT", "SETNAME", "a b"), ("CLIENT", "SETNAME", "a\nb"),
                               ("CLIENT",), ("CLIENT", "GETNAME"))))

    def test_client_info_long_name_and_crlf_subcommand(self):
        """CLIENT INFO after a long CLIENT SETNAME shows the whole name (it was
        composed in a 512-byte buffer and sent with snprintf's would-be length:
        stack bytes); an unsupported subcommand holding CR LF is shown with
        spaces, as redis-server shows arguments in errors, so the error stays
        one line and the next reply is the next request's."""
        name = b"n" * 2000
        with self.raw(self.port) as c:
            c.request(resp("CLIENT", "SETNAME", name), b"+OK\r\n")
            self.assertRegex(c.call("CLIENT", "INFO"), (
                rb"^id=\d+ addr=127\.0\.0\.1:%d laddr=127\.0\.0\.1:%d fd=\d+ name=%s age=\d+ "
                rb"idle=0 flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 "
                rb"multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=\d+ events=r "
                rb"cmd=client\|info user=default redir=-1 resp=2 proxy=walnut worker=\d+\n$")
                % (c.sock.getsockname()[1], self.port, name))
            c.send(resp("CLIENT", "a\r\nb"))
            self.assertEqual(c.recv_line(), b"-ERR CLIENT a  b is not supported by walnut: a "
                             b"client's connection to a server is shared with other clients\r\n")
            c.request(resp("PING"), b"+PONG\r\n")

    def test_command_forwarded(self):
        """COMMAND, COMMAND COUNT, COMMAND INFO, COMMAND DOCS go to a server:
        redis-server's own answer (twemproxy rejects COUNT and DOCS)."""
        d = self.backends[0].port
        for cmd in (("COMMAND", "COUNT"), ("COMMAND", "INFO", "get", "mset"),
                    ("COMMAND", "DOCS", "get"), ("COMMAND", "GETKEYS", "MSET", "a", "1", "b", "2"),
                    ("COMMAND", "LIST", "FILTERBY", "PATTERN", "getd*")):
            # twemproxy rejects COMMAND with arguments
            self.assertSameAsDirect(self.port, d, resp(*cmd))
        with self.raw(self.port) as c:
            self.assertEqual(len(c.call("COMMAND")), self.backends[0].call("COMMAND", "COUNT"))

    UNSUPPORTED = {
        r"transactions need a dedicated server connection": (
            ("EXEC",), ("DISCARD",), ("WATCH", "k"), ("UNWATCH",)),  # MULTI: below
        r"pub/sub needs a dedicated server connection": (
            ("SUBSCRIBE", "c"), ("PSUBSCRIBE", "c*"), ("PUBLISH", "c", "m"),
            ("UNSUBSCRIBE",), ("PUBSUB", "CHANNELS"), ("SSUBSCRIBE", "c")),
        r"blocking commands would stall a shared server connection": (
            ("BLPOP", "k", "0"), ("BRPOP", "k", "0"), ("BLMOVE", "a", "b", "LEFT", "LEFT", "0"),
            ("BZPOPMIN", "k", "0"), ("BRPOPLPUSH", "a", "b", "0"), ("WAIT", "0", "0")),
        r"the keyspace is spread over all servers": (
            ("KEYS", "*"), ("SCAN", "0"), ("FLUSHALL",), ("FLUSHDB",), ("DBSIZE",),
            ("RANDOMKEY",), ("SWAPDB", "0", "1")),
        r"it describes one server; ask that server directly": (
            ("INFO",), ("TIME",), ("SLOWLOG", "GET"), ("OBJECT", "ENCODING", "k")),
        r"server administration goes to each server directly": (
            ("CONFIG", "GET", "maxmemory"), ("SHUTDOWN",), ("DEBUG", "SLEEP", "0"), ("MONITOR",),
            ("SAVE",), ("ACL", "WHOAMI")),
        r"scripts and functions are managed on each server directly": (
            ("FUNCTION", "LIST"), ("FUNCTION", "FLUSH")),
        r"streams are not supported": (("XADD", "s", "*", "f", "v"), ("XLEN", "s")),
        # forwarded, it moved the key to a database walnut refuses to SELECT
        r"walnut serves one database per pool (redis_db); the key would leave it":
            (("MOVE", "k", "1"), ("MOVE", "k", "0")),
        r"walnut is not a Redis Cluster node": (("CLUSTER", "INFO"), ("READONLY",)),
    }

    def test_unsupported_commands_refused_with_reason(self):
        """Transactions, pub/sub, blocking, keyspace-wide and admin commands:
        one -ERR naming the command and why; nothing sent; the connection stays
        usable (twemproxy closes it)."""
        with self.raw(self.port) as c:
            for reason, cmds in self.UNSUPPORTED.items():
                for cmd in cmds:
                    c.send(resp(*cmd))
                    # twemproxy closes the connection
                    self.assertEqual(c.recv_line(), b"-ERR unsupported command '%s': %s\r\n" % (
                        cmd[0].lower().encode(), reason.encode()))
            c.request(resp("PING"), b"+PONG\r\n")
            c.request(resp("SET", self.keys_on[0][0], "still"), b"+OK\r\n")
        self.assertEqual(self.backends[0].call("GET", self.keys_on[0][0]), b"still")

    def test_refused_transaction_runs_nothing(self):
        """MULTI is refused, and a client may go on as in a transaction
        (redis-py sends MULTI, the commands and EXEC in one write): the
        commands up to EXEC or DISCARD ran outside any transaction (an
        adversarial pass: a retried INCRBY applied twice). Now none runs;
        EXEC gets redis-server's EXECABORT; QUIT still quits; after EXEC or
        DISCARD the connection serves again."""
        k0, k1 = self.keys_on[0][0], self.keys_on[1][0]
        tx = (b"-ERR unsupported command 'multi': transactions need a dedicated server "
              b"connection; what follows is not run until EXEC or DISCARD\r\n")
        not_run = (b"-ERR not run: walnut refused this connection's MULTI (transactions need a "
                   b"dedicated server connection); EXEC or DISCARD ends it\r\n")
        abort = (b"-EXECABORT Transaction discarded because walnut refused its MULTI "
                 b"(transactions need a dedicated server connection)\r\n")
        with self.raw(self.port) as c:
            # one write, as client libraries send a transaction
            c.send(resp("MULTI") + resp("INCR", k0) + resp("SET", k1, "x") +
                   resp("MGET", k0, k1) + resp("NOSUCH") + resp("GET") + resp("MULTI") +
                   resp("EXEC") + resp("INCR", k0))
            self.assertEqual([c.recv_line() for _ in range(9)],
                             [tx] + [not_run] * 6 + [abort, b":1\r\n"])
            # split at every byte, and ended by DISCARD
            for b in resp("MULTI") + resp("SET", k1, "y") + resp("DISCARD"):
                c.send(bytes([b]))
            self.assertEqual([c.recv_line() for _ in range(3)], [tx, not_run, b"+OK\r\n"])
            c.request(resp("GET", k0), resp_bulk(b"1"))
            # RESET ends it (with its own refusal), as it ends a transaction in redis-server
            c.send(resp("MULTI") + resp("RESET") + resp("INCR", k0))
            self.assertEqual([c.recv_line() for _ in range(3)],
                             [tx, b"-ERR unsupported command 'reset': server administration goes "
                              b"to each server directly\r\n", b":2\r\n"])
            # DISCARD with the wrong arity does not end it; EXEC with the wrong
            # arity does, with redis-server's EXECABORT; QUIT quits
            c.send(resp("MULTI") + resp("DISCARD", "x") + resp("EXEC", "x") + resp("INCR", k0) +
                   resp("MULTI") + resp("QUIT"))
            self.assertEqual([c.recv_line() for _ in range(6)],
                             [tx, not_run, b"-EXECABORT Transaction discarded because of: wrong "
                              b"number of arguments for 'exec' command\r\n", b":3\r\n", tx,
                              b"+OK\r\n"])
            c.expect_closed(what="QUIT closes the connection")
        self.assertIsNone(self.backends[1].call("GET", k1), "a refused transaction wrote")
        self.assertEqual(self.backends[0].call("GET", k0), b"3")
        # before AUTH, MULTI gets NOAUTH and starts nothing (test_auth)

    # ------------------------------------------------------- AUTH, redis_db

    PASSWORD = "s3cr3t-pw"

    def test_auth(self):
        """redis_auth with requirepass backends: NOAUTH before AUTH (unknown
        commands and wrong arity still get their own errors, as redis-server
        answers them first), twemproxy's texts for AUTH, AUTH default <pw>,
        a failed AUTH logs the client out again (twemproxy's rule)."""
        tmp = self.tmpdir()
        backends = self.start_redis(tmp, 2, prefix="au", password=self.PASSWORD)
        px = self.start_proxy(tmp, {"p": h.pool(backends, redis=True, timeout=5000,
                                                redis_auth=self.PASSWORD)},
                              workers=self.WORKERS, name="auth")
        port = px.port()
        noauth = b"-NOAUTH Authentication required\r\n"
        with self.raw(port) as c:
            for cmd in (("PING",), ("GET", "k"), ("SET", "k", "v"), ("MGET", "a", "b", "c"),
                        ("ECHO", "x"), ("SELECT", "0"), ("CLIENT", "ID"), ("COMMAND",),
                        ("EVAL", "return 1", "0"), ("MULTI",)):
                c.request(resp(*cmd), noauth, what=cmd[0])
            c.request(resp("HELLO"), b"-NOAUTH HELLO must be called with the client already "
                      b"authenticated, otherwise the HELLO AUTH <user> <pass> option can be used "
                      b"to authenticate the client and select the RESP protocol version at the "
                      b"same time\r\n")
            c.request(resp("AUTH", "wrong"), b"-ERR invalid password\r\n")
            c.request(resp("AUTH", "default", "wrong"), b"-ERR invalid password\r\n")
            c.request(resp("AUTH", "nobody", self.PASSWORD), b"-ERR invalid password\r\n")
            # user names are case-sensitive (a review: these logged in)
            c.request(resp("AUTH", "Default", self.PASSWORD), b"-ERR invalid password\r\n")
            c.request(resp("HELLO", "2", "AUTH", "DEFAULT", self.PASSWORD),
                      b"-ERR invalid password\r\n")
            c.request(resp("GET", "k"), noauth)
            c.request(resp("AUTH", self.PASSWORD), b"+OK\r\n")
            c.request(resp("SET", "k", "v"), b"+OK\r\n")
            c.request(resp("MSET", "a", "1", "b", "2", "c", "3", "d", "4"), b"+OK\r\n")
            c.request(resp("MGET", "k", "a", "d"), resp_array([resp_bulk(b"v"), resp_bulk(b"1"),
                                                              resp_bulk(b"4")]))
            c.request(resp("AUTH", "wrong"), b"-ERR invalid password\r\n")
            c.request(resp("GET", "k"), noauth, what="after a failed AUTH (twemproxy's rule)")
            c.request(resp("AUTH", "default", self.PASSWORD), b"+OK\r\n")
            c.request(resp("GET", "k"), resp_bulk(b"v"))
        # unknown command and wrong arity before AUTH: what redis-server says;
        # MSET's pairs are checked after AUTH; EXEC's refusals are EXECABORTs
        d = backends[0].port
        data = (resp("NOSUCH", "a") + resp("GET") + resp("MSET", "a") + resp("MSET", "a", "b") +
                resp("MSET", "a", "1", "b") + resp("EXEC") + resp("EXEC", "x"))
        got, want = [], []
        for p_, out in ((port, got), (d, want)):
            with h.Raw(p_) as c:
                c.send(data)
                out.extend(c.recv_resp() for _ in range(7))
        self.assertEqual(got[:3] + got[5:], want[:3] + want[5:])
        self.assertEqual(got[5], b"-EXECABORT Transaction discarded because of: NOAUTH "
                         b"Authentication required.\r\n")
        self.assertEqual((got[3:5], want[3:5]), ([noauth] * 2,
                                                 [b"-NOAUTH Authentication required.\r\n"] * 2),
                         "walnut: twemproxy's NOAUTH text (no period)")
        # RESET runs before AUTH in redis-server, DEBUG is refused there first:
        # walnut's refusals of both, not NOAUTH
        with self.raw(port) as c:
            c.request(resp("RESET"), b"-ERR unsupported command 'reset': server administration "
                      b"goes to each server directly\r\n")
            c.request(resp("DEBUG", "SLEEP", "0"), b"-ERR unsupported command 'debug': server "
                      b"administration goes to each server directly\r\n")
            c.request(resp("GET", "k"), noauth)
        # AUTH and a command in one write; HELLO 2 AUTH
        with self.raw(port) as c:
            c.request(resp("AUTH", self.PASSWORD) + resp("GET", "k"), b"+OK\r\n$1\r\nv\r\n")
        with self.raw(port) as c:
            c.request(resp("HELLO", "2", "AUTH", "default", "bad"), b"-ERR invalid password\r\n")
            m = c.call("HELLO", "2", "AUTH", "default", self.PASSWORD)
            self.assertEqual(m[:2], [b"server", b"redis"])
            c.request(resp("GET", "k"), resp_bulk(b"v"))
        # an unauthenticated client gets redis-server's small limits
        for data in (resp(*["x"] * 11), b"*2\r\n$3\r\nGET\r\n$20000\r\n"):
            got, want = [], []
            for p_, out in ((port, got), (d, want)):
                with h.Raw(p_) as c:
                    c.send(data)
                    out.append(c.recv_until_closed())
            self.assertEqual(got, want, h.show(data))
        px.stop()

    def test_auth_without_redis_auth(self):
        """No redis_auth: AUTH x gets redis-server's own text; backends that
        want a password answer data commands with their NOAUTH, relayed."""
        d = self.backends[0].port
        self.assertSameAsDirect(self.port, d, resp("AUTH", "x") + resp("AUTH", "a" * 100))
        tmp = self.tmpdir()
        backends = self.start_redis(tmp, 1, prefix="np", password="pw")
        px = self.start_proxy(tmp, {"p": h.pool(backends, redis=True, timeout=5000)},
                              workers=1, name="nopass")
        with self.raw(px.port()) as c:
            c.request(resp("GET", "k"), b"-NOAUTH Authentication required.\r\n")
            c.request(resp("PING"), b"+PONG\r\n")

    def test_auth_default_user_without_redis_auth(self):
        """No redis_auth and backends without a password: redis-server accepts
        AUTH default <anything> (the default user is nopass); so should walnut
        (redis-py with username='default' sends exactly this); another user
        gets redis-server's -WRONGPASS."""
        self.assertSameAsDirect(self.port, self.backends[0].port,
                                resp("AUTH", "default", "x") + resp("PING"))
        # and another user, "DEFAULT" too (names are case-sensitive):
        # redis-server's WRONGPASS
        for user in ("someone", "DEFAULT", "Default"):
            self.assertSameAsDirect(self.port, self.backends[0].port,
                                    resp("AUTH", user, "x") + resp("PING"))

    def test_redis_db(self):
        """redis_db: 3: keys written through walnut are in db 3 on the servers;
        SELECT 0 and SELECT 3 are +OK, others refused."""
        tmp = self.tmpdir()
        backends = self.start_redis(tmp, 3, prefix="db")
        px = self.start_proxy(tmp, {"p": h.pool(backends, redis=True, timeout=5000, redis_db=3)},
                              workers=self.WORKERS, name="db3")
        keys = [k for b in spread_keys(px.port(), backends, b"db3", 20, random.Random(3), db=3)
                for k in b]
        with self.raw(px.port()) as c:
            c.request(resp("MSET", *[x for k in keys for x in (k, b"v" + k)]), b"+OK\r\n")
            c.request(resp("SET", "one", "1"), b"+OK\r\n")
            c.request(resp("SELECT", "3"), b"+OK\r\n")
            c.request(resp("SELECT", "0"), b"+OK\r\n")
            c.send(resp("SELECT", "1"))
            self.assertRegex(c.recv_line(), rb"^-ERR walnut serves one database per pool "
                             rb"\(redis_db 3\)[^\r\n]*\r\n$")
            c.request(resp("MGET", *keys), resp_array([resp_bulk(b"v" + k) for k in keys]))
        where = h.redis_placement(backends, keys + [b"one"], db=3)
        self.assertEqual(len({b.port for b in where.values()}), 3, "keys on every server")
        for b in backends:
            self.assertEqual(b.call("DBSIZE", db=0), 0, "db 0 of %s" % b.name)
        self.assertEqual(sum(b.call("DBSIZE", db=3) for b in backends), len(keys) + 1)
        px.stop()

    def test_backend_refuses_select_or_auth(self):
        """redis_db beyond the servers' databases, or a redis_auth the servers
        do not take: requests get an error at once (no hang) and never run
        (they were once written behind the SELECT and ran in database 0), the
        log names what the server answered (no stray CR/LF from the server's
        reply in it), at most once per 10 s: each request opens a connection
        whose SELECT is refused, and 60 requests logged 60 lines (adversarial
        pass); the client's error names the cause, not "Invalid argument"."""
        tmp = self.tmpdir()
        plain = self.start_redis(tmp, 1, prefix="sd")[0]
        locked = self.start_redis(tmp, 1, prefix="sa", password="right")[0]
        px = self.start_proxy(tmp, {
            "baddb": h.pool([plain], redis=True, timeout=2000, redis_db=20),
            "badauth": h.pool([locked], redis=True, timeout=2000, redis_auth="wrong")},
            workers=1, name="refuses")
        t0 = time.monotonic()
        with self.raw(px.port("baddb"), timeout=5) as c:
            for _ in range(60):
                c.request(resp("SET", "k", "v"), b"-ERR the server refused SELECT of the pool's "
                          b"redis_db (see walnut's log)\r\n")
            c.request(resp("PING"), b"+PONG\r\n")
        windows = 1 + int((time.monotonic() - t0) / 10)  # one line per 10 s at most
        # Requests wait for the SELECT's answer: refused, they never ran (in db 0).
        self.assertIsNone(plain.call("GET", "k"), "a SET behind the refused SELECT ran in db 0")
        with self.raw(px.port("badauth"), timeout=5) as c:
            c.request(resp("AUTH", "wrong"), b"+OK\r\n")
            c.send(resp("SET", "k", "v"))
            self.assertRegex(c.recv_resp(), rb"^-(ERR|NOAUTH) [^\r\n]+\r\n$")
        log = h.wait_until(lambda: (lambda t: t if "walnut's AUTH" in t and "walnut's SELECT"
                                    in t else None)(h.read_text(px.log_path, "rb").decode()),
                           deadline=5, what="the AUTH and SELECT warnings")
        self.assertIn("answered walnut's SELECT with: -ERR DB index is out of range", log)
        self.assertGreaterEqual(log.count("answered walnut's SELECT"), 1, log[-3000:])
        self.assertLessEqual(log.count("answered walnut's SELECT"), windows, log[-3000:])
        self.assertIn("answered walnut's AUTH with: -WRONGPASS", log)
        bad = [ln for ln in log.split("\n") if not re.match(r"^\[\d{4}-", ln) and ln != ""]
        self.assertEqual(bad, [], "log lines that are not log entries")
        self.assertNotIn("\r", log)
        self.assertNotIn("\n\n", log, "an empty line in the log (the server's CRLF)")

    def test_refused_auth_with_redis_db(self):
        """A redis_auth the servers refuse, with redis_db set: the server refuses
        walnut's SELECT too (-NOAUTH), for the same reason. That is not a second
        failure: requests get the server's -NOAUTH, which says what is wrong, logged
        once, and a connection is tried again once a second at most. It used to close
        the connection at the SELECT: each request opened a new one, got -ERR Invalid
        argument, and logged two warnings. (Kept open, the unselected connection ran
        requests in database 0 once the password was gone: the next test.)"""
        tmp = self.tmpdir()
        locked = self.start_redis(tmp, 1, prefix="sad", password="right")[0]
        # Probes off: each probe of a server refusing AUTH opens a connection
        # of its own (a probe landing in the window counted a third under TSan).
        px = self.start_proxy(tmp, {
            "p": h.pool([locked], redis=True, timeout=2000, redis_auth="wrong", redis_db=3,
                        health_check_interval=0)},
            workers=1, name="authdb")

        def connections():
            info = locked.call("INFO", "stats")
            return int(re.search(rb"total_connections_received:(\d+)", info).group(1))
        before = connections()
        t0 = time.monotonic()
        with self.raw(px.port(), timeout=5) as c:
            c.request(resp("AUTH", "wrong"), b"+OK\r\n")
            for _ in range(5):
                c.request(resp("SET", "k", "v"), b"-NOAUTH Authentication required.\r\n")
        # walnut's one connection, and the one asking INFO now; and one more
        # for each second the requests took (a -NOAUTH a second after the
        # refusal opens the connection anew: test_refused_auth_is_tried_again)
        again = int(time.monotonic() - t0)
        opened = connections() - before
        self.assertGreaterEqual(opened, 2)
        self.assertLessEqual(opened, 2 + again, "connections for 5 requests in %d s" % again)
        log = h.read_text(px.log_path)
        self.assertGreaterEqual(log.count("answered walnut's AUTH"), 1, log[-3000:])
        self.assertLessEqual(log.count("answered walnut's AUTH"), 1 + again, log[-3000:])
        self.assertNotIn("answered walnut's SELECT", log)

    def test_refused_auth_with_redis_db_never_runs_in_database_0(self):
        """redis_auth wrong, redis_db 3: walnut's AUTH and SELECT refused, the
        connection was kept open (requests got the server's -NOAUTH); when the
        operator then removed the server's password, the requests written on
        it ran in database 0, silently (an adversarial helper; nutcracker the
        same). Now that connection fails at the SELECT, requests get the
        server's -NOAUTH unrun, and a new connection is tried a second later:
        its SELECT passes, and the SET lands in database 3, never in 0."""
        tmp = self.tmpdir()
        locked = self.start_redis(tmp, 1, prefix="wdb", password="right")[0]
        px = self.start_proxy(tmp, {
            "p": h.pool([locked], redis=True, timeout=2000, redis_auth="wrong", redis_db=3,
                        health_check_interval=0)},
            workers=1, name="wrongdb")
        with self.raw(px.port(), timeout=5) as c:
            c.request(resp("AUTH", "wrong"), b"+OK\r\n")
            c.request(resp("SET", "k1", "v1"), b"-NOAUTH Authentication required.\r\n")
            locked.call("CONFIG", "SET", "requirepass", "")
            locked.password = None

            def stored():
                c.send(resp("SET", "k2", "v2"))
                got = c.recv_resp()
                self.assertIn(got, (b"+OK\r\n", b"-NOAUTH Authentication required.\r\n"))
                return got == b"+OK\r\n"
            h.wait_until(stored, deadline=10, interval=0.2, what="the SET served")
            c.request(resp("GET", "k2"), b"$2\r\nv2\r\n")
        self.assertIsNone(locked.call("GET", "k2", db=0), "the SET ran in database 0")
        self.assertEqual(locked.call("GET", "k2", db=3), b"v2")
        self.assertIsNone(locked.call("GET", "k1", db=0))
        px.stop(check=True)

    def test_refused_auth_is_tried_again(self):
        """A server's password changes and walnut's connections are dropped:
        the new connection's AUTH is refused and requests get -NOAUTH, as they
        must. The password is then put back: probes, on connections of their
        own, pass, but the refused connection served on unauthenticated for
        good, every request -NOAUTH (adversarial pass; nutcracker the same).
        Expected: once the server says -NOAUTH again, at most once a second,
        the connection is opened anew, its AUTH and SELECT sent again."""
        tmp = self.tmpdir()
        locked = self.start_redis(tmp, 1, prefix="rot", password="right")[0]
        px = self.start_proxy(tmp, {
            "p": h.pool([locked], redis=True, timeout=2000, redis_auth="right", redis_db=2)},
            workers=1, name="rotate")
        admin = self.raw(locked.port, timeout=5)
        admin.request(resp("AUTH", "right"), b"+OK\r\n")
        c = self.raw(px.port(), timeout=5)
        c.request(resp("AUTH", "right"), b"+OK\r\n")
        c.request(resp("SET", "k", "v"), b"+OK\r\n")
        admin.request(resp("CONFIG", "SET", "requirepass", "other"), b"+OK\r\n")
        admin.send(resp("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"))
        admin.recv_resp()

        def get():
            c.send(resp("GET", "k"))
            return c.recv_resp()
        # (the first may find walnut's killed connection not yet seen closed)
        h.wait_until(lambda: get() == b"-NOAUTH Authentication required.\r\n", deadline=10,
                     interval=0.2, what="-NOAUTH while the password differs")
        admin.request(resp("CONFIG", "SET", "requirepass", "right"), b"+OK\r\n")
        h.wait_until(lambda: get() == b"$1\r\nv\r\n", deadline=10, interval=0.3,
                     what="the value (database 2) once the password is right again")
        self.assertIn("answered walnut's AUTH with: -WRONGPASS", h.read_text(px.log_path))
        px.stop(check=True)

    def test_refused_auth_and_bad_redis_db(self):
        """redis_auth set against a server with no password (it refuses walnut's AUTH
        with -ERR, not -WRONGPASS) and a redis_db it does not have: the SELECT's
        refusal is not the AUTH's (-ERR DB index is out of range, not -NOAUTH), so the
        connection fails as for any refused SELECT, and nothing runs in database 0."""
        tmp = self.tmpdir()
        plain = self.start_redis(tmp, 1, prefix="sab")[0]
        px = self.start_proxy(tmp, {
            "p": h.pool([plain], redis=True, timeout=2000, redis_auth="pw", redis_db=20)},
            workers=1, name="authbaddb")
        with self.raw(px.port(), timeout=5) as c:
            c.request(resp("AUTH", "pw"), b"+OK\r\n")
            c.send(resp("SET", "authbaddb", "v"))
            self.assertRegex(c.recv_resp(), rb"^-ERR [^\r\n]+\r\n$")
        self.assertIsNone(plain.call("GET", "authbaddb"), "the SET ran in database 0")
        log = h.wait_until(lambda: (lambda t: t if "walnut's SELECT" in t else None)(
            h.read_text(px.log_path)), deadline=5, what="the SELECT warning")
        self.assertIn("answered walnut's SELECT with: -ERR DB index is out of range", log)

    def test_announced_argument_count_reserves_nothing(self):
        """A "*1000000" line alone made walnut allocate room for a million
        arguments (40 MB) before any came: 60 such connections reserved 2 GB
        of address space (adversarial pass; redis-server grows its array as
        arguments arrive). Room now follows what arrives; the request still
        works when they all do."""
        if h.sanitized():
            self.skipTest("a sanitizer's allocator reserves address space of its own")
        before = h.proc_status(self.proxy.pid, "VmSize")
        conns = []
        for _ in range(60):
            c = h.Raw(self.port)
            self.addCleanup(c.close)
            c.send(b"*1000000\r\n$3\r\nDEL\r\n")
            conns.append(c)
        with self.raw(self.port) as c:
            c.request(resp("PING"), b"+PONG\r\n")  # every line above has been read
        grown = h.proc_status(self.proxy.pid, "VmSize") - before
        self.assertLess(grown, 256 << 20, "60 announced requests reserved %d MB" % (grown >> 20))
        # a long request that does arrive grows its room as it comes
        with self.raw(self.port) as c:
            keys = [b"ann%d" % i for i in range(100000)]
            c.request(resp("MSET", *[x for k in keys[:1000] for x in (k, k)]), b"+OK\r\n")
            data = resp("DEL", *keys)
            for i in range(0, len(data), 65536):
                c.send(data[i:i + 65536])
            c.expect(b":1000\r\n", timeout=60)

    def test_client_buffer_limit(self):
        """A client that pipelines big GETs and never reads is cut off at
        client_buffer_limit (logged); others are served."""
        tmp = self.tmpdir()
        b = self.start_redis(tmp, 1, prefix="cb")[0]
        px = self.start_proxy(tmp, {"p": h.pool([b], redis=True, timeout=5000,
                                                client_buffer_limit=1 << 20)},
                              workers=1, name="limit")
        b.call("SET", "big", b"x" * 100000)
        hog = self.raw(px.port(), timeout=10)
        hog.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        hog.send(resp("GET", "big") * 300)
        h.wait_until(lambda: "over client_buffer_limit 1048576; disconnecting it" in
                     h.read_text(px.log_path), deadline=10, what="the disconnect")
        with self.raw(px.port()) as c:
            c.request(resp("STRLEN", "big"), b":100000\r\n")
        px.stop()

    def test_split_mget_larger_than_client_buffer_limit(self):
        """A split MGET's reply is sent once every part has answered, so it
        counts whole against client_buffer_limit however fast the client
        reads: one larger than the limit cut the client with nothing sent
        (adversarial pass: 100,000 values of 1,000 bytes under 64 MiB).
        Expected: that command gets an error line, in order, and every part
        lets go of what it gathered at once (a review: the parts under the
        limit kept theirs until the last part answered, and a 60 KB reply
        pipelined behind it cut the client); the client is not cut, and a
        large MGET under the limit is served after it."""
        tmp = self.tmpdir()
        x, y, z = self.start_redis(tmp, 3, prefix="mb")
        px = self.start_proxy(tmp, {"p": h.pool([x, y, z], redis=True, timeout=15000,
                                                client_buffer_limit=1 << 20)},
                              workers=1, name="bigmget")
        cand = [b"mb:%s" % hashlib.sha1(b"%d" % i).hexdigest()[:10].encode()
                for i in range(3000)]
        where = h.walnut_locate(px.conf_path, cand)
        on = {r: [k for k in cand if where[("p", k)][1] == r.addr] for r in (x, y, z)}
        # 100 values of 10 KB on x and on y (each part about 1 MB, under the
        # 1 MiB limit; together over it), one key on z
        keys = on[z][:1]
        for r in (x, y):
            for k in on[r][:100]:
                r.call("SET", k, b"v" * 10000)
            keys += on[r][:100]
        keys.sort()
        after = on[x][100]
        x.call("SET", after, b"w" * 60000)
        err = (b"-ERR walnut: the reply would take the client past the pool's "
               b"client_buffer_limit (1048576 bytes)\r\n")
        with self.raw(px.port(), timeout=20) as c:
            # y's part comes first (whole, under the limit), then x's (over
            # it, with the GET's reply behind it), while z holds the MGET
            h.sigstop_and_wait(z.proc.pid)
            h.sigstop_and_wait(x.proc.pid)
            try:
                c.send(resp("MGET", *keys) + resp("GET", after))
                h.wait_until(lambda: out_queue(px, y) == 0, deadline=20, what="y's part")
                os.kill(x.proc.pid, signal.SIGCONT)
                h.wait_until(lambda: out_queue(px, x) == 0, deadline=20,
                             what="x's part and the GET")
            finally:
                os.kill(x.proc.pid, signal.SIGCONT)
                os.kill(z.proc.pid, signal.SIGCONT)
            c.expect(err + resp_bulk(b"w" * 60000), timeout=20)
            c.request(resp("PING"), b"+PONG\r\n")
            # 60 of them (600 KB) fit, after it as before it
            self.assertEqual(c.call("MGET", *keys[1:61]),
                             [x.call("GET", k) or y.call("GET", k) for k in keys[1:61]])
        self.assertNotIn("over client_buffer_limit", h.read_text(px.log_path))
        px.stop()

    def test_integer_array_streams_past_client_buffer_limit(self):
        """A reply of integers (LPOS COUNT 0, SMISMEMBER, a script's table)
        went out only once complete: a million of them (8.9 MB) cut a
        client reading as fast as it could at a 1 MiB client_buffer_limit,
        while a million strings streamed. Integers now flow as strings do;
        nested arrays too."""
        tmp = self.tmpdir()
        b = self.start_redis(tmp, 1, prefix="ia")[0]
        px = self.start_proxy(tmp, {"p": h.pool([b], redis=True, timeout=10000,
                                                client_buffer_limit=1 << 20)},
                              workers=1, name="intarr")
        flat = ("local t={} for i=1,1000000 do t[i]=i end return t",
                b"*1000000\r\n" + b"".join(b":%d\r\n" % i for i in range(1, 1000001)))
        nested = ("local t={} for i=1,200000 do t[i]={i,-i,{i}} end return t",
                  b"*200000\r\n" + b"".join(b"*3\r\n:%d\r\n:-%d\r\n*1\r\n:%d\r\n" % (i, i, i)
                                              for i in range(1, 200001)))
        for script, want in (flat, nested):
            req = resp("EVAL", script, "0")
            direct, err = h.send_and_read(b.port, req, len(want), timeout=60)
            self.assertEqual(direct, want, "redis-server's own reply")
            got, err = h.send_and_read(px.port(), req + resp("PING"), len(want) + 7, timeout=60)
            self.assertEqual(err, [])
            self.assertTrue(got == want + b"+PONG\r\n",
                            h.describe_mismatch(want + b"+PONG\r\n", got))
        self.assertNotIn("over client_buffer_limit", h.read_text(px.log_path))
        px.stop()

    def test_long_redis_auth(self):
        """A 1500-byte password (once underflowed a buffer in the health probe):
        clients authenticate, the probes pass (nothing is ejected), data flows."""
        pw = "".join(random.Random(5).choice("abcdefghijklmnopqrstuvwxyz0123456789")
                     for _ in range(1500))
        tmp = self.tmpdir()
        backends = self.start_redis(tmp, 2, prefix="lp", password=pw)
        px = self.start_proxy(tmp, {"p": h.pool(backends, redis=True, timeout=2000,
                                                redis_auth=pw, auto_eject_hosts=True,
                                                server_failure_limit=1,
                                                health_check_interval=100)},
                              workers=self.WORKERS, name="longpw")
        keys = [k for b in spread_keys(px.port(), backends, b"lp", 10, random.Random(4), auth=pw)
                for k in b]
        with self.raw(px.port()) as c:
            c.request(resp("AUTH", pw), b"+OK\r\n")
            c.request(resp("MSET", *[x for k in keys for x in (k, k)]), b"+OK\r\n")
            time.sleep(1.0)  # ten probe rounds
            c.request(resp("MGET", *keys), resp_array([resp_bulk(k) for k in keys]))
        where = h.redis_placement(backends, keys)
        self.assertEqual(len({b.port for b in where.values()}), 2)
        self.assertNotRegex(px.log(), r"(?m)^\[[^]]+\] (WARN|ERROR)|ejected")
        px.stop()

    def test_redis_auth_and_a_server_without_password(self):
        """redis_auth set, one server with that requirepass and one with none:
        the second refuses walnut's AUTH ('-ERR AUTH <password> called without
        any password configured ...') and serves every request. The request
        path kept its connection but counted the refusal as a failure, and the
        health probe (AUTH, then PING) failed on the AUTH line, so the server
        was ejected within 200 ms and never came back: its keys were written
        to the other server. Expected: neither counts it (the probe judges
        PING), so the server stays in and keeps its keys, even with
        server_failure_limit 1 and every worker connecting."""
        tmp = self.tmpdir()
        locked = self.start_redis(tmp, 1, prefix="pw", password="pw")[0]
        open_ = self.start_redis(tmp, 1, prefix="nopw")[0]
        backends = [locked, open_]
        px = self.start_proxy(tmp, {"p": h.pool(backends, redis=True, timeout=2000,
                                                redis_auth="pw", auto_eject_hosts=True,
                                                server_failure_limit=1,
                                                server_retry_timeout=1000,
                                                health_check_interval=100,
                                                server_connections=2)},
                              workers=self.WORKERS, name="nopw")
        keys = spread_keys(px.port(), backends, b"np", 5, random.Random(6), auth="pw")[1]
        clients = [self.raw(px.port()) for _ in range(4)]  # every worker, both connections
        for c in clients:
            c.request(resp("AUTH", "pw"), b"+OK\r\n")
        for i in range(10):  # over a second: ten probe rounds
            for c in clients:
                for k in keys:
                    c.request(resp("SET", k, b"v%d" % i), b"+OK\r\n")
            time.sleep(0.1)
        for k in keys:
            self.assertEqual(open_.call("GET", k), b"v9", "key %r on its own server" % k)
        self.assertNotIn("ejected", px.log())
        self.assertIn("has no password and refused walnut's AUTH (-ERR AUTH", px.log(),
                      "the request path's refused AUTH is still logged")
        px.stop()

    # ---------------------------------------------------------- server side

    def test_oom_relayed(self):
        """A server over maxmemory: its -OOM reaches the client as the server
        said it (twemproxy answers -ERR Invalid argument) and the server is not
        treated as broken: the next read works."""
        k = self.keys_on[1][0]
        b = self.backends[1]
        b.call("SET", k, "before")
        b.call("CONFIG", "SET", "maxmemory", "1")
        try:
            # twemproxy turns -OOM into -ERR Invalid argument
            self.assertSameAsDirect(self.port, b.port, resp("SET", k, "v") + resp("GET", k) +
                                    resp("MSET", k, "1", k + b"x", "2"))
        finally:
            b.call("CONFIG", "SET", "maxmemory", "0")
        with self.raw(self.port) as c:
            c.request(resp("SET", k, "after"), b"+OK\r\n")

    def test_busy_relayed(self):
        """A server running a long script: -BUSY relayed as it said it; after
        SCRIPT KILL the server answers through walnut again."""
        b = self.backends[2]
        k = self.keys_on[2][0]
        b.call("CONFIG", "SET", "busy-reply-threshold", "50")
        busy = h.Raw(b.port)
        self.addCleanup(busy.close)
        busy.send(resp("EVAL", "local i = 0 while true do i = i + 1 end", 0))
        time.sleep(0.2)
        try:
            with h.Raw(b.port) as d:
                want = d.call("GET", k)
            self.assertIsInstance(want, RespError)
            self.assertTrue(want.startswith(b"BUSY "), want)
            with self.raw(self.port) as c:
                # twemproxy turns -BUSY into -ERR Invalid argument
                c.request(resp("GET", k), b"-%s\r\n" % want)
        finally:
            h.redis_call(b.port, "SCRIPT", "KILL")
        self.assertRegex(busy.recv_line(), rb"^-ERR Script killed by user with SCRIPT KILL")
        with self.raw(self.port) as c:
            c.request(resp("SET", k, "v"), b"+OK\r\n")
            c.request(resp("GET", k), resp_bulk(b"v"))

    def fake_pool(self, fake, **settings):
        settings.setdefault("timeout", 2000)
        px = self.start_proxy(self.tmpdir(), {"p": h.pool([fake], redis=True, **settings)},
                              workers=1, name="fake")
        return px, px.port()

    def test_script_exists_ignores_a_server_that_fails_mid_reply(self):
        """SCRIPT EXISTS leaves out a server walnut could not get an answer
        from, but nothing of that server's reply may count: one that sent
        ':1' for the first SHA1 and then went silent or closed made walnut
        answer 1 where a server that did answer had 0 (its count was added
        as the elements arrived). And a server that answers wrongly (a reply
        walnut cannot read) is not left out: the client hears of it."""
        sha_a, sha_b = b"a" * 40, b"b" * 40

        class Scripted(fakes.FakeRedis):
            def __init__(self, exists):
                self.exists = exists
                super().__init__()

            def reply(self, cid, args):
                if len(args) >= 2 and args[0].upper() == b"SCRIPT":
                    return self.exists
                return super().reply(cid, args)

        cases = [("silent", [(b"*2\r\n:1\r\n", 0), (b"", 30)], b"*2\r\n:0\r\n:1\r\n"),
                 ("closes", [(b"*2\r\n:1\r\n", 0), (None, 0.1)], b"*2\r\n:0\r\n:1\r\n"),
                 ("garbage", b"*2\r\n:1\r\n:7\r\n", b"-ERR Invalid argument\r\n")]
        for what, third, want in cases:
            with self.subTest(what):
                a = self.fake(Scripted, b"*2\r\n:1\r\n:1\r\n")
                b = self.fake(Scripted, b"*2\r\n:0\r\n:1\r\n")
                c = self.fake(Scripted, third)
                px = self.start_proxy(self.tmpdir(), {"p": h.pool([a, b, c], redis=True,
                                                                  timeout=1000)},
                                      workers=1, name="exists-" + what)
                with self.raw(px.port(), timeout=10) as cl:
                    cl.request(resp("SCRIPT", "EXISTS", sha_a, sha_b), want)
                    cl.request(resp("PING"), b"+PONG\r\n")
                px.stop()

    def test_loading_and_masterdown_relayed(self):
        """-LOADING and -MASTERDOWN from a server reach the client verbatim."""
        for line in (b"-LOADING Redis is loading the dataset in memory\r\n",
                     b"-MASTERDOWN Link with MASTER is down and replica-serve-stale-data is "
                     b"set to 'no'.\r\n"):
            f = self.fake(fakes.ErrorRedis, line)
            px, port = self.fake_pool(f)
            with self.raw(port) as c:
                c.request(resp("GET", "k"), line)
                c.request(resp("GET", "k"), line)
                c.request(resp("PING"), b"+PONG\r\n")
            px.stop()

    def test_loading_answering_a_split_part_counts_against_the_server(self):
        """A server answering -LOADING cannot serve, whether the request was a
        whole command or one server's part of a split MGET or DEL. The part's
        error was relayed but never counted: a loading server that only ever
        got parts of split commands was never ejected (every key on it kept
        failing). Expected: counted as for a whole command, so with
        auto_eject_hosts and server_failure_limit 2 the server is ejected
        (server_ejects >= 1) and the keys it held go to the other server."""
        line = b"-LOADING Redis is loading the dataset in memory\r\n"
        # on both servers (fnv1a keys that differ only at their end cluster on the ring)
        keys = [hashlib.md5(b"%d" % i).hexdigest()[:12].encode() for i in range(40)]
        for cmd in ("MGET", "DEL"):
            with self.subTest(cmd=cmd):
                good, loading = self.fake(fakes.FakeRedis), self.fake(fakes.ErrorRedis, line)
                px = self.start_proxy(self.tmpdir(), {"p": h.pool(
                    [good, loading], redis=True, timeout=2000, auto_eject_hosts=True,
                    server_failure_limit=2, server_retry_timeout=60000)}, workers=1,
                    name="loading-" + cmd.lower())
                with self.raw(px.port(), timeout=10) as c:
                    c.request(resp(cmd, *keys), line)
                    self.assertTrue(any(a[0].upper() == cmd.encode()
                                        for _cid, a in good.requests()),
                                    "the keys span both servers (the good one got a part)")

                    def ejects():
                        with h.Raw(px.stats_port, timeout=10) as st:
                            st.send(b"GET /stats HTTP/1.0\r\n\r\n")
                            body = st.recv_until_closed().split(b"\r\n\r\n", 1)[1]
                        return json.loads(body)["p"]["server_ejects"] >= 1

                    for _ in range(3):  # more parts answered -LOADING, up to the limit
                        c.send(resp(cmd, *keys))
                        got = c.recv_resp()
                        self.assertIn(got, (line, b"*40\r\n" + b"$-1\r\n" * 40, b":0\r\n"),
                                      "the part's error, or (ejected) the good server's answer")
                    h.wait_until(ejects, deadline=10, what="server_ejects >= 1")
                    # every key now on the good server: no part goes to the loading one
                    want = b"*40\r\n" + b"$-1\r\n" * 40 if cmd == "MGET" else b":0\r\n"

                    def answer():
                        c.send(resp(cmd, *keys))
                        return c.recv_resp()
                    h.wait_until(lambda: answer() == want, deadline=10,
                                 what="%s answered by the good server alone" % cmd)
                px.stop()

    def check_misbehaving_server(self, fake, port, good_prefix, nclients=3):
        """Clients GET their own keys from a misbehaving fake: each reply is
        that client's value or an -ERR; never another's, never the junk."""
        errors, seen = [], [0, 0]

        def client(n):
            try:
                with h.Raw(port, timeout=10) as c:
                    for i in range(40):
                        key = b"k%d-%d" % (n, i)
                        fake.store[key] = b"%s%d-%d" % (good_prefix, n, i)
                        c.send(resp("GET", key))
                        got = c.recv_resp()
                        if got == resp_bulk(fake.store[key]):
                            seen[0] += 1
                        elif re.match(RX_FAIL, got):
                            seen[1] += 1
                        else:
                            errors.append((n, key, got))
                    c.request(resp("PING"), b"+PONG\r\n")
            except (AssertionError, OSError) as e:
                errors.append((n, repr(e)))

        threads = [threading.Thread(target=client, args=(n,)) for n in range(nclients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(errors[:10], [], "%d replies not the client's own (or lost connections); "
                         "%d right, %d -ERR" % (len(errors), seen[0], seen[1]))
        return seen

    def test_stray_reply_closes_server_connection(self):
        """A server that sends a reply nobody asked for (right after the real
        one, nothing else in flight): walnut sees bytes where no request waits,
        closes that connection; the client gets its own value every time and
        keeps its connection."""
        f = self.fake(fakes.StrayReplyRedis)
        px, port = self.fake_pool(f)
        good, failed = self.check_misbehaving_server(f, port, b"val", nclients=1)
        self.assertEqual((good, failed), (40, 0))
        self.assertGreater(f.nconns, 10, "walnut should close and reopen the server connection")
        self.assertTrue(px.alive())

    def test_stray_reply_counts_a_server_failure(self):
        """The same server with auto_eject_hosts: each stray closed the
        connection but counted no failure (the queue was empty by then), so
        the server was never ejected, against the README (adversarial pass).
        Now each counts (a request answered between two strays clears the
        count again, as for every failure): at server_failure_limit 1 the
        first stray ejects it."""
        f = self.fake(fakes.StrayReplyRedis)
        px, port = self.fake_pool(f, auto_eject_hosts=True, server_failure_limit=1,
                                  server_retry_timeout=30000)
        with self.raw(port) as c:
            c.request(resp("GET", "k"), b"$-1\r\n")
            h.wait_until(lambda: "ejected" in px.log(), deadline=5, what="the server ejected")
            c.request(resp("GET", "k"), b"-ERR Connection refused\r\n")

    # A documented limitation, not a bug to fix: RESP replies carry no request
    # id, so a well-formed extra reply of the same type as the next request's
    # (here a bulk after a GET, then another client's GET) cannot be told from
    # that request's own reply; every reply on the shared connection after it
    # shifts by one. walnut catches a reply that arrives with nothing in
    # flight, and one of a type its request never gets
    # (test_shifted_reply_caught_by_its_type), not this one. See README
    # ("Limitations"). It fails on twemproxy the same way.
    @unittest.expectedFailure
    def test_stray_reply_concurrent_clients_get_only_their_own(self):
        """The same stray-reply server, two clients whose requests share one
        server connection: no client may get the stray bytes or another
        client's value (DESIGN: "No client ever receives bytes meant for
        another"). RESP has no request ids, so a stray that arrives while
        another client's request is in flight looks like its reply; the promise
        needs more than walnut's position matching. The replies come late, so
        B's GET is always in flight when the stray arrives (it once ran three
        clients at random, and could pass by luck: an unexpected success)."""
        f = self.fake(fakes.StrayReplyRedis, delay=fakes.NEXT_REQUEST)
        f.store[b"a-key"], f.store[b"b-key"] = b"a-value", b"b-value"
        px, port = self.fake_pool(f)
        with self.raw(port) as a, self.raw(port) as b:
            a.send(resp("GET", "a-key"))
            time.sleep(0.1)  # A's GET is on the server connection, unanswered
            b.send(resp("GET", "b-key"))  # queued behind it: the stray lands here
            # (the server answers A once B's GET has come)
            a.expect(resp_bulk(b"a-value"))
            got = b.recv_resp()
            self.assertTrue(got == resp_bulk(b"b-value") or re.match(RX_FAIL, got),
                            "B got %r, not its own value" % got)

    def test_shifted_reply_caught_by_its_type(self):
        """A server that answers INCR with a second, unasked integer: on the
        shared server connection it lands on the next request, another
        client's GET. A GET never answers an integer, so walnut takes it as a
        protocol error: that connection closes, the GET gets an error instead
        of the other client's integer, both clients keep their connections.
        Under concurrent load no GET ever gets anything but its own value or
        an error, and the INCR client only integers or errors."""
        f = self.fake(fakes.ExtraIntegerRedis, delay=fakes.NEXT_REQUEST)
        f.store[b"b-key"] = b"b-value"
        px, port = self.fake_pool(f)
        with self.raw(port) as a, self.raw(port) as b:
            a.send(resp("INCR", "a-counter"))
            time.sleep(0.1)  # A's INCR is on the server connection, unanswered
            b.send(resp("GET", "b-key"))  # queued behind it on that connection
            # (the server answers A once B's GET has come)
            a.expect(b":1\r\n")
            self.assertRegex(b.recv_resp(), RX_FAIL, "B must not get A's integer")
            b.request(resp("GET", "b-key"), resp_bulk(b"b-value"))
            a.request(resp("PING"), b"+PONG\r\n")
        self.assertGreater(f.nconns, 1, "the server connection should have been closed")
        self.assertIn("sent a reply that does not match its request", px.log())

        f.delay = 0.0
        stop, errors, counts = threading.Event(), [], {"caught": 0, "incr": 0}

        def incrementer():
            try:
                with h.Raw(port, timeout=10) as c:
                    while not stop.is_set():
                        c.send(resp("INCR", "a-counter"))
                        got = c.recv_resp()
                        if not re.fullmatch(rb":\d+\r\n", got) and not re.match(RX_FAIL, got):
                            errors.append(("INCR", got))
                        counts["incr"] += 1
            except (AssertionError, OSError) as e:
                errors.append(("INCR", repr(e)))

        inc = threading.Thread(target=incrementer)
        inc.start()
        try:
            seen = self.check_misbehaving_server(f, port, b"mine", nclients=3)
        finally:
            stop.set()
            inc.join(30)
        self.assertEqual(errors, [])
        sys.stderr.write("  [info] GETs: %d right, %d -ERR; %d INCRs\n" % (
            seen[0], seen[1], counts["incr"]))
        self.assertTrue(px.alive())

    def test_garbage_reply_closes_server_connection(self):
        """A reply that is no RESP: -ERR for the request, the server connection
        closed, the client's kept."""
        f = self.fake(fakes.GarbageRedis)
        px, port = self.fake_pool(f)
        with self.raw(port) as c:
            for _ in range(3):
                c.send(resp("GET", "k"))
                self.assertRegex(c.recv_resp(), RX_FAIL)
            c.request(resp("PING"), b"+PONG\r\n")
            c.request(resp("SET", "k", "v"), b"+OK\r\n")
        self.assertGreater(f.nconns, 1)

    def check_cut_reply(self, c, cut, what):
        """After a reply cut short by its server: either one -ERR line and the
        connection usable, or (bytes already relayed) a prefix of what the
        server sent and the connection closed; never anything else."""
        c.send(resp("PING"))
        try:
            line = c.recv_line(timeout=10)
        except AssertionError:
            line = None
        if line is not None and re.fullmatch(RX_FAIL, line):
            c.expect(b"+PONG\r\n", what=what)
            return "error"
        got = (line or b"") + c.recv_until_closed(timeout=10)
        self.assertTrue(cut.startswith(got), "%s: %s" % (what, h.show(got)))
        return "closed"

    def test_server_gone_mid_reply(self):
        """A server that closes in the middle of a bulk it has begun (10 bytes,
        and 4 MB of which 1 MB is sent): the client gets one -ERR and keeps its
        connection, or the relayed prefix and a close; a new connection works."""
        for size, sent in ((10, 3), (4 << 20, 1 << 20)):
            with self.subTest(size=size):
                f = self.fake(fakes.HalfReplyRedis, size, sent)
                px, port = self.fake_pool(f, timeout=5000)
                with self.raw(port, timeout=10) as c:
                    c.send(resp("SET", "k", "v") + resp("GET", "k"))
                    c.expect(b"+OK\r\n")
                    self.check_cut_reply(c, b"$%d\r\n" % size + b"h" * sent, "GET")
                with self.raw(port) as c:
                    c.request(resp("SET", "k2", "v"), b"+OK\r\n")
                self.assertTrue(px.alive())
                px.stop()

    def test_split_part_gone_mid_reply(self):
        """MGET over a good server and one that dies mid-reply (its keys last,
        so the good part could stream first): one error line for the whole
        command and the connection kept, never a partial merge."""
        keys = [b"k" + hashlib.sha1(b"%d" % i).hexdigest()[:10].encode() for i in range(40)]
        good = self.fake(fakes.FakeRedis, values={k: b"v" + k for k in keys})
        for delay in (0.0, 0.2):
            bad = self.fake(fakes.HalfReplyRedis, delay=delay)
            px = self.start_proxy(self.tmpdir(), {"p": h.pool([good, bad], redis=True,
                                                              timeout=5000)},
                                  workers=1, name="halfsplit")
            loc = h.walnut_locate(px.conf_path, keys)
            mine = sorted(keys, key=lambda k: loc[("p", k)][1] != good.addr)
            self.assertEqual({loc[("p", k)][1] for k in keys}, {good.addr, bad.addr})
            with self.subTest(delay=delay), self.raw(px.port(), timeout=10) as c:
                c.send(resp("MGET", *mine))
                self.assertEqual(self.check_cut_reply(c, b"", "MGET"), "error")
            self.assertTrue(px.alive())
            px.stop()

    def test_timeout_stopped_server(self):
        """A stopped server (SIGSTOP) under timeout: 500: GET and a split MGET
        answer -ERR Connection timed out in about that time, the connection
        stays usable; after SIGCONT all is well."""
        tmp = self.tmpdir()
        backends = self.start_redis(tmp, 2, prefix="to")
        px = self.start_proxy(tmp, {"p": h.pool(backends, redis=True, timeout=500)},
                              workers=self.WORKERS, name="timeout")
        buckets = spread_keys(px.port(), backends, b"to", 2, random.Random(21))
        stopped = backends[1]
        stopped.sigstop()
        self.addCleanup(stopped.sigcont)
        with self.raw(px.port(), timeout=10) as c:
            for cmd in (("GET", buckets[1][0]), ("MGET", buckets[0][0], buckets[1][0]),
                        ("SET", buckets[1][1], "x")):
                t0 = time.monotonic()
                c.send(resp(*cmd))
                self.assertEqual(c.recv_resp(timeout=10), b"-ERR Connection timed out\r\n", cmd)
                self.assertLess(time.monotonic() - t0, 8.0, "took far longer than timeout")
            c.request(resp("GET", buckets[0][1]), b"$-1\r\n")
        stopped.sigcont()
        with self.raw(px.port(), timeout=10) as c:
            c.request(resp("SET", buckets[1][0], "back"), b"+OK\r\n")
            c.request(resp("MGET", buckets[0][0], buckets[1][0]),
                      resp_array([b"$-1\r\n", resp_bulk(b"back")]))
        px.stop()

    def test_clients_gone_with_split_in_flight(self):
        """Clients that send MGET/DEL/MSET over every server and leave (RST)
        while one server is stopped: walnut stays up, answers others right,
        and the late parts find nobody (ASan builds check the memory)."""
        tmp = self.tmpdir()
        backends = self.start_redis(tmp, 3, prefix="gn")
        px = self.start_proxy(tmp, {"p": h.pool(backends, redis=True, timeout=5000)},
                              workers=self.WORKERS, name="gone")
        buckets = spread_keys(px.port(), backends, b"gn", 3, random.Random(22))
        keys = [k for b in buckets for k in b]
        with self.raw(px.port()) as c:
            c.request(resp("MSET", *[x for k in keys for x in (k, k)]), b"+OK\r\n")
        backends[2].sigstop()
        self.addCleanup(backends[2].sigcont)
        for i in range(8):
            d = h.Raw(px.port())
            d.send(resp("MGET", *keys) + resp("DEL", *keys[:4]) +
                   resp("MSET", *[x for k in keys for x in (k, k)]) + resp("GET", keys[-1]))
            time.sleep(0.02)
            d.reset() if i % 2 else d.close()
        time.sleep(0.2)
        backends[2].sigcont()
        with self.raw(px.port(), timeout=10) as c:
            c.request(resp("MGET", *keys), resp_array([resp_bulk(k) for k in keys]))
        self.assertTrue(px.alive())
        px.stop()

    def test_multikey_part_error_reply(self):
        """A split MSET whose part meets -OOM on one server: that error line for
        the whole command, the connection kept."""
        keys = self.key_per_backend(2)
        b = self.backends[1]
        b.call("CONFIG", "SET", "maxmemory", "1")
        try:
            with self.raw(self.port) as c:
                c.send(resp("MSET", *[x for k in keys for x in (k, "v")]))
                self.assertEqual(c.recv_resp(), b"-OOM command not allowed when used memory > "
                                 b"'maxmemory'.\r\n")
                c.request(resp("PING"), b"+PONG\r\n")
        finally:
            b.call("CONFIG", "SET", "maxmemory", "0")

    def test_slow_big_bulk_under_timeout(self):
        """`timeout` is per progress: a 4 MB bulk dribbled over ~2 s under
        timeout: 1000 arrives whole. (It was 500: twice in full-file runs
        beside a CI run on this 2-CPU machine the reply stopped at a piece's
        end, not reproduced since, alone or with the CPUs loaded; the fake's
        130 ms gaps now have 7x, not 4x, before the timeout.)"""
        value = bytes(random.Random(9).getrandbits(8) for _ in range(256)) * (4 << 12)
        f = self.fake(fakes.SlowBulkRedis, b"big", value, chunks=16, gap=0.13)
        px, port = self.fake_pool(f, timeout=1000)
        with self.raw(port, timeout=30) as c:
            t0 = time.monotonic()
            c.send(resp("GET", "big"))
            c.expect(resp_bulk(value), timeout=30)
            took = time.monotonic() - t0
            c.request(resp("PING"), b"+PONG\r\n")
        self.assertGreater(took, 1.0, "the fake should have taken its time")


class TestRedisSmallBuffers(TestRedis):
    """The framing tests again with 512-byte buffer chunks (-m 512, the
    minimum) and one worker: every request, key and reply straddles chunks."""

    WORKERS = 1
    EXTRA_ARGS = ("-m", "512")
    KEEP = ("test_inline_and_multibulk_requests", "test_every_reply_type_relayed_byte_for_byte",
            "test_pipeline_one_byte_per_write", "test_split_at_every_point",
            "test_malformed_multibulk_same_error_then_close", "test_empty_multibulk_is_no_request",
            "test_client_gone_mid_bulk_fin", "test_client_gone_mid_bulk_rst",
            "test_multikey_split_and_merged", "test_1000_keys_mget_mset", "test_long_keys",
            "test_unknown_and_arity_errors_in_order", "test_ping_echo",
            "test_unknown_command_long_name_many_args", "test_ping_extra_args_arity_error",
            "test_quit_after_earlier_replies", "test_eval_routes_by_first_key",
            "test_slow_big_bulk_under_timeout")


def keep_only(cls):
    """cls runs only the TestRedis tests in its KEEP; the rest are set to
    None, which unittest does not collect (not callable)."""
    for name in dir(TestRedis):
        if name.startswith("test_") and name not in cls.KEEP:
            setattr(cls, name, None)


keep_only(TestRedisSmallBuffers)


class TestRedisLargeBuffers(TestRedis):
    """1 MiB buffer chunks (-m 1048576, the maximum): a key over 64 KiB
    arrives whole in one chunk, readable where it lies. The 64 KiB limit was
    applied only to keys that spanned chunks, so such a key was routed (a
    review found it)."""

    WORKERS = 1
    EXTRA_ARGS = ("-m", "1048576")
    KEEP = ("test_long_keys", "test_1000_keys_mget_mset", "test_multikey_split_and_merged")


keep_only(TestRedisLargeBuffers)


def tearDownModule():
    h.report_known_diffs()


if __name__ == "__main__":
    h.main()
