#!/usr/bin/python3
"""memcached's binary protocol through walnut, against memcached 1.6.18 itself.

A memcache pool's client connection speaks binary when its first byte is 0x80,
as memcached's does. walnut carries binary requests to its (shared, text)
server connections as meta commands and answers with the packets memcached
would send. Every test here runs the same requests against a memcached
directly ("ref") and against walnut in front of two or three memcached, and
compares the packets: status, opaque, extras (flags), key echo, value, and CAS
(normalised per key: each server counts CAS on its own, so a key's n-th
distinct CAS is compared, not its number). Where walnut differs by design the
test says so (STAT is walnut's own, VERSION is a server's; see README "memcached's binary
protocol").

Also: every quiet/NOOP combination and random pipelines across servers, keys
with any bytes, routing equal to the text path's, values up to 1 MiB across
buffer chunks, libmemcached's tools with --binary, memtier_benchmark with
--protocol=memcache_binary, and hostile input (bad magic mid-stream, huge body
lengths, bad lengths, half packets, a pipeline never read) with the process
alive and bounded after each.

nutcracker has no binary protocol: under WALNUT_TEST_PROXY=nutcracker the file
is skipped.
"""

import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import unittest

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import fakes  # noqa: E402

HOST = h.HOST
NC_SKIP = "nutcracker (twemproxy 0.5.0) has no memcached binary protocol"

# ---------------------------------------------------------------------------
# packets

OP = dict(GET=0x00, SET=0x01, ADD=0x02, REPLACE=0x03, DELETE=0x04, INCREMENT=0x05,
          DECREMENT=0x06, QUIT=0x07, FLUSH=0x08, GETQ=0x09, NOOP=0x0a, VERSION=0x0b,
          GETK=0x0c, GETKQ=0x0d, APPEND=0x0e, PREPEND=0x0f, STAT=0x10, SETQ=0x11, ADDQ=0x12,
          REPLACEQ=0x13, DELETEQ=0x14, INCREMENTQ=0x15, DECREMENTQ=0x16, QUITQ=0x17,
          FLUSHQ=0x18, APPENDQ=0x19, PREPENDQ=0x1a, VERBOSITY=0x1b, TOUCH=0x1c, GAT=0x1d,
          GATQ=0x1e, SASL_LIST_MECHS=0x20, SASL_AUTH=0x21, SASL_STEP=0x22, GATK=0x23,
          GATKQ=0x24)
NAME = {v: k for k, v in OP.items()}

OK, ENOENT, EEXISTS, E2BIG, EINVAL, NOT_STORED, DELTA_BADVAL = 0, 1, 2, 3, 4, 5, 6
UNKNOWN_COMMAND, ENOMEM, EINTERNAL, ETMPFAIL = 0x81, 0x82, 0x84, 0x86

HDR = struct.Struct(">BBHBBHIIQ")


def packet(op, key=b"", extras=b"", value=b"", opaque=0, cas=0, magic=0x80, keylen=None,
           extlen=None, bodylen=None, datatype=0, vbucket=0):
    kl = len(key) if keylen is None else keylen
    el = len(extras) if extlen is None else extlen
    bl = len(extras) + len(key) + len(value) if bodylen is None else bodylen
    return HDR.pack(magic, op, kl, el, datatype, vbucket, bl, opaque, cas) + extras + key + value


def set_extras(flags=0, exptime=0):
    return struct.pack(">II", flags, exptime)


def incr_extras(delta=1, initial=0, exptime=0):
    return struct.pack(">QQI", delta, initial, exptime)


def exp_extras(exptime=0):
    return struct.pack(">I", exptime)


class Pkt:
    __slots__ = ("magic", "op", "status", "opaque", "cas", "extras", "key", "value", "datatype")

    def __repr__(self):
        return "<%s st=%04x opq=%x cas=%d ext=%s key=%r val=%r>" % (
            NAME.get(self.op, hex(self.op)), self.status, self.opaque, self.cas,
            self.extras.hex(), self.key, self.value[:60])


def parse_one(buf):
    """(Pkt, rest) or (None, buf) when incomplete."""
    if len(buf) < 24:
        return None, buf
    magic, op, kl, el, dt, st, bl, opq, cas = HDR.unpack(buf[:24])
    if len(buf) < 24 + bl:
        return None, buf
    body = buf[24:24 + bl]
    p = Pkt()
    p.magic, p.op, p.status, p.opaque, p.cas, p.datatype = magic, op, st, opq, cas, dt
    p.extras, p.key, p.value = body[:el], body[el:el + kl], body[el + kl:]
    return p, buf[24 + bl:]


class BinConn(h.Raw):
    """A raw connection that reads binary response packets."""

    def read_packet(self, timeout=None):
        end = time.monotonic() + (timeout or self.timeout)
        while True:
            p, rest = parse_one(self.buf)
            if p is not None:
                self.buf = rest
                if p.magic != 0x81:
                    raise AssertionError("response magic %02x: %r" % (p.magic, p))
                return p
            try:
                if not self._fill(end):
                    raise AssertionError("connection closed inside a packet; got %s" % h.show(self.buf))
            except socket.timeout:
                raise AssertionError("no whole packet within %.1fs; got %s" % (
                    timeout or self.timeout, h.show(self.buf))) from None

    def read_until_opaque(self, opaque, timeout=None):
        out = []
        while True:
            p = self.read_packet(timeout)
            out.append(p)
            if p.opaque == opaque and p.op == OP["NOOP"]:
                return out

    def read_all_until_closed(self, timeout=None):
        data = self.recv_until_closed(timeout)
        out, rest = [], data
        while True:
            p, rest = parse_one(rest)
            if p is None:
                return out, rest
            out.append(p)


class Session:
    """Requests with unique opaques and a transcript of normalised replies.

    Normalised: (op, status, opaque offset, cas index for the request's key,
    extras, key, value). The same scenario run against memcached and walnut
    must give equal transcripts.
    """

    def __init__(self, port, timeout=h.IO_TIMEOUT):
        self.c = BinConn(port, timeout=timeout)
        self.opq = 0x10000
        self.key_of = {}
        self.cas_ids = {}
        self.log = []
        self.last_cas = {}
        self.squash_spaces = False  # values hold no spaces but counters' padding

    def close(self):
        self.c.close()

    def pkt(self, op, key=b"", extras=b"", value=b"", cas=0):
        self.opq += 1
        self.key_of[self.opq] = key
        return packet(OP[op] if isinstance(op, str) else op, key, extras, value, self.opq, cas)

    def norm(self, p):
        """A counter read back may be "0 " or "0": memcached rewrites it in place
        (space-padded) unless a reply still holds the item, then it copies it;
        when that happens depends on its write timing, not on the protocol."""
        key = self.key_of.get(p.opaque, b"")
        value = p.value
        if re.fullmatch(rb"\d+ +", value):
            value = value.rstrip(b" ")
        if self.squash_spaces:
            value = value.replace(b" ", b"")
        cas = 0
        if p.cas:
            ids = self.cas_ids.setdefault(key, {})
            cas = ids.setdefault(p.cas, len(ids) + 1)
            self.last_cas[key] = p.cas
        return (NAME.get(p.op, p.op), p.status, p.opaque - 0x10000, cas, p.extras, p.key, value)

    def batch(self, pkts, log=True):
        """Send pkts and a NOOP in one write; every reply up to the NOOP's."""
        noop = self.pkt("NOOP")
        self.c.send(b"".join(pkts) + noop)
        got = self.c.read_until_opaque(self.opq)
        if log:
            self.log.extend(self.norm(p) for p in got)
        return got

    def do(self, op, key=b"", extras=b"", value=b"", cas=0):
        """One request; its reply packet (None when a quiet opcode got none)."""
        got = self.batch([self.pkt(op, key, extras, value, cas)])
        return got[0] if len(got) == 2 else None


class ScriptedMemcached(h.FakeMemcached):
    """A text-protocol stand-in that records the exact bytes walnut sends (meta
    commands, with ms data blocks framed) and answers each request from a
    script: replies[raw request] = raw reply, else a default (version: VERSION,
    mg: EN, ms: HD c1, md: HD, ma: NF, flush_all: OK)."""

    TAG = re.compile(rb" (O[0-9a-f]{1,8})(?=[ \r])")
    ECHOES = (b"HD", b"VA", b"EN", b"NF", b"NS", b"EX")

    def __init__(self, name="scripted"):
        self.replies = {}
        self.tags = []          # walnut's O token of each meta request, in order
        self.echo = True        # False: answer without the O, as if for another request
        self.drop_next = 0      # answer nothing to the next this many requests
        super().__init__(name)

    def answer(self, raw, reply, tag):
        """The reply as memcached sends it: the request's O token echoed on the
        first line of HD VA EN NF NS EX (not on errors)."""
        if tag is None or not self.echo or reply[:2] not in self.ECHOES:
            return reply
        i = reply.find(b"\r\n")
        return reply[:i] + b" " + tag + reply[i:]

    def _serve(self, conn, cid):
        buf = b""
        try:
            while not self.stopped:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
                while True:
                    i = buf.find(b"\r\n")
                    if i < 0:
                        break
                    parts = buf[:i].split()
                    need = i + 2
                    if parts and parts[0] == b"ms" and len(parts) >= 3:
                        need += int(parts[2]) + 2
                        if len(buf) < need:
                            break
                    raw, buf = buf[:need], buf[need:]
                    tag = None
                    m = self.TAG.search(raw, 0, i + 1)
                    if m is not None and parts[0][:1] == b"m":
                        tag = m.group(1)
                        raw = raw[:m.start()] + raw[m.end():]  # logged and scripted untagged
                    with self.lock:
                        self.log.append((cid, raw))
                        if parts[0][:1] == b"m":
                            self.tags.append(tag)
                        reply = self.replies.get(raw)
                        drop = self.drop_next > 0
                        self.drop_next -= drop
                    if reply is None:
                        reply = {b"version": b"VERSION 1.6.18\r\n", b"mg": b"EN\r\n",
                                 b"ms": b"HD c1\r\n", b"md": b"HD\r\n", b"ma": b"NF\r\n",
                                 b"flush_all": b"OK\r\n"}.get(parts[0] if parts else b"",
                                                              b"ERROR\r\n")
                    if not drop:
                        conn.sendall(self.answer(raw, reply, tag))
        except OSError:
            return
        finally:
            conn.close()


def locate(proxy, keys):
    """{key: server address} by the text path's routing (walnut --locate)."""
    name = next(iter(proxy.pools))
    loc = h.walnut_locate(proxy.conf_path, keys)
    return {k: loc[(name, k)][1] for k in keys}


# ---------------------------------------------------------------------------
# scenarios: the same requests against memcached and walnut

def scenario_every_opcode(s, keys):
    """Every opcode that reaches a server, loud and quiet, hit, miss and error."""
    a, b, n = keys[0], keys[1], keys[2]
    s.do("GET", a)
    s.do("GETK", a)
    s.do("GETQ", a)
    s.do("GETKQ", a)
    s.do("SET", a, set_extras(0xdeadbeef), b"hello")
    s.do("GET", a)
    s.do("GETK", a)
    s.do("GETQ", a)
    s.do("GETKQ", a)
    s.do("ADD", a, set_extras(1), b"no")
    s.do("ADDQ", a, set_extras(1), b"no")
    s.do("ADD", b, set_extras(2), b"bee")
    s.do("REPLACE", b"nokey" + a, set_extras(1), b"x")
    s.do("REPLACEQ", b"nokey" + a, set_extras(1), b"x")
    s.do("REPLACE", b, set_extras(3), b"BEE")
    s.do("APPEND", a, b"", b" world")
    s.do("PREPEND", a, b"", b">> ")
    s.do("APPEND", b"nokey" + b, b"", b"x")
    s.do("PREPENDQ", b"nokey" + b, b"", b"x")
    s.do("GET", a)
    s.do("TOUCH", a, exp_extras(1000))
    s.do("TOUCH", b"nokey" + a, exp_extras(1000))
    s.do("GAT", a, exp_extras(2000))
    s.do("GATK", b, exp_extras(2000))
    s.do("GATQ", b"nokey" + a, exp_extras(10))
    s.do("GATKQ", b"nokey" + a, exp_extras(10))
    s.do("GATK", b"nokey" + a, exp_extras(10))
    s.do("GAT", b"nokey" + a, exp_extras(10))
    # CAS: right, wrong, on a missing key; ADD and REPLACE with a CAS
    cas = s.do("GET", a).cas
    s.do("SET", a, set_extras(5), b"v2", cas=cas + 100000)
    s.do("SET", a, set_extras(5), b"v2", cas=cas)
    s.do("SET", b"nokey" + a, set_extras(5), b"x", cas=7)
    s.do("ADD", b"nokey" + a, set_extras(5), b"x", cas=7)
    cas = s.do("GET", a).cas
    s.do("ADD", a, set_extras(6), b"v3", cas=cas)
    cas = s.do("GET", a).cas
    s.do("REPLACE", a, set_extras(6), b"v4", cas=cas + 100000)
    s.do("APPEND", a, b"", b"+", cas=cas + 100000)
    s.do("APPEND", a, b"", b"+", cas=cas)
    cas = s.do("GET", a).cas
    s.do("DELETE", a, cas=cas + 100000)
    s.do("DELETE", a, cas=cas)
    s.do("DELETE", a)
    s.do("DELETEQ", a)
    s.do("DELETEQ", b)
    # counters: create with the initial value, apply, no-create, non-numeric, CAS
    s.do("INCREMENT", n, incr_extras(5, 10, 0))
    s.do("INCREMENT", n, incr_extras(5, 10, 0))
    s.do("DECREMENT", n, incr_extras(100, 10, 0))
    s.do("GET", n)
    s.do("INCREMENT", b"nokey" + n, incr_extras(1, 1, 0xffffffff))
    s.do("DECREMENTQ", b"nokey" + n, incr_extras(1, 1, 0xffffffff))
    s.do("INCREMENTQ", n, incr_extras(2**64 - 1, 0, 0))
    s.do("GET", n)
    s.do("INCREMENT", n, incr_extras(1, 0, 0))
    s.do("SET", b, set_extras(0), b"text")
    s.do("INCREMENT", b, incr_extras(1, 0, 0))
    s.do("INCREMENTQ", b, incr_extras(1, 0, 0))
    cas = s.do("GET", n).cas
    s.do("INCREMENT", n, incr_extras(1, 0, 0), cas=cas + 100000)
    s.do("INCREMENT", n, incr_extras(1, 0, 0), cas=cas)
    s.do("DECREMENTQ", b"q" + n, incr_extras(3, 42, 0))
    s.do("GET", b"q" + n)
    s.do("INCREMENT", b"big" + n, incr_extras(1, 2**64 - 1, 0))
    s.do("INCREMENT", b"big" + n, incr_extras(1, 0, 0))
    s.do("SET", b"e" + a, set_extras(9), b"")
    s.do("GETK", b"e" + a)
    s.do("APPEND", b"e" + a, b"", b"")
    s.do("GETK", b"e" + a)
    s.do("FLUSH")
    s.do("GET", n)
    s.do("SETQ", a, set_extras(1), b"x")
    s.do("FLUSHQ")
    s.do("GETK", a)
    s.do("SET", a, set_extras(1), b"x")
    s.do("FLUSH", b"", exp_extras(0))
    s.do("GETK", a)
    s.do("VERSION")


QUIET = ["GETQ", "GETKQ", "GATQ", "GATKQ", "SETQ", "ADDQ", "REPLACEQ", "APPENDQ",
         "PREPENDQ", "DELETEQ", "INCREMENTQ", "DECREMENTQ", "FLUSHQ"]


def quiet_request(s, op, key, case):
    """The quiet opcode op on key in a state giving success, a miss or an error."""
    if op in ("GETQ", "GETKQ"):
        return s.pkt(op, key)
    if op in ("GATQ", "GATKQ"):
        return s.pkt(op, key, exp_extras(500))
    if op in ("SETQ", "ADDQ", "REPLACEQ"):
        cas = {"ok": 0, "miss": 0, "error": 12345678}[case]
        return s.pkt(op, key, set_extras(7, 0), b"val-" + key, cas=cas)
    if op in ("APPENDQ", "PREPENDQ"):
        return s.pkt(op, key, b"", b"+")
    if op == "DELETEQ":
        return s.pkt(op, key, cas=12345678 if case == "error" else 0)
    if op in ("INCREMENTQ", "DECREMENTQ"):
        exptime = 0xffffffff if case == "miss" else 0
        return s.pkt(op, key, incr_extras(1, 5, exptime))
    if op == "FLUSHQ":
        return s.pkt(op, b"", exp_extras(1000) if case == "error" else b"")
    raise AssertionError(op)


def scenario_quiet_combinations(s, keys):
    """Each quiet opcode in each state, alone before a NOOP, then all in one batch."""
    for op in QUIET:
        for case in ("ok", "miss", "error"):
            s.batch([s.pkt("DELETEQ", k) for k in keys], log=False)
            if case in ("ok", "error"):
                value = b"12" if op in ("INCREMENTQ", "DECREMENTQ") and case == "ok" else b"abc"
                s.batch([s.pkt("SETQ", k, set_extras(3), value) for k in keys], log=False)
            s.batch([quiet_request(s, op, keys[0], case)])
            # the same on every server, then loud requests between them
            s.batch([quiet_request(s, op, k, case) for k in keys[1:]])
            s.batch([p for k in keys for p in (quiet_request(s, op, k, case),
                                                s.pkt("GETK", k))])
    # every quiet opcode in one batch, keys on every server
    s.batch([s.pkt("SETQ", k, set_extras(1), b"9") for k in keys], log=False)
    mix = []
    for i, op in enumerate(QUIET * 2):
        if op == "FLUSHQ":
            continue
        mix.append(quiet_request(s, op, keys[i % len(keys)], ("ok", "miss", "error")[i % 3]))
    s.batch(mix)
    s.batch([s.pkt("GETKQ", k) for k in keys] + [s.pkt("GETK", k) for k in keys])


def scenario_random(s, keys, seed, rounds=40):
    """Random batches of random opcodes over keys on every server."""
    rng = random.Random(seed)
    s.squash_spaces = True  # a counter's padding spreads into appended values
    ops = ["GET", "GETQ", "GETK", "GETKQ", "SET", "SETQ", "ADD", "ADDQ", "REPLACE",
           "REPLACEQ", "DELETE", "DELETEQ", "INCREMENT", "INCREMENTQ", "DECREMENT",
           "DECREMENTQ", "APPEND", "APPENDQ", "PREPEND", "PREPENDQ", "TOUCH", "GAT", "GATQ",
           "GATK", "GATKQ"]
    for _ in range(rounds):
        pkts = []
        for _ in range(rng.randint(1, 30)):
            op, key = rng.choice(ops), rng.choice(keys)
            cas = 0
            if rng.random() < 0.25 and key in s.last_cas:
                cas = s.last_cas[key] + (0 if rng.random() < 0.6 else 100000)
            if op in ("SET", "SETQ", "ADD", "ADDQ", "REPLACE", "REPLACEQ"):
                value = rng.choice([b"", b"7", b"x" * rng.randint(1, 3000)])
                pkts.append(s.pkt(op, key, set_extras(rng.getrandbits(32)), value, cas))
            elif op in ("APPEND", "APPENDQ", "PREPEND", "PREPENDQ"):
                pkts.append(s.pkt(op, key, b"", b"y" * rng.randint(0, 700), cas))
            elif op in ("INCREMENT", "INCREMENTQ", "DECREMENT", "DECREMENTQ"):
                exptime = rng.choice([0, 0, 0xffffffff])
                pkts.append(s.pkt(op, key, incr_extras(rng.randint(0, 1000),
                                                       rng.randint(0, 99), exptime), b"", cas))
            elif op in ("TOUCH", "GAT", "GATQ", "GATK", "GATKQ"):
                pkts.append(s.pkt(op, key, exp_extras(rng.choice([0, 1000, 3000]))))
            elif op in ("DELETE", "DELETEQ"):
                pkts.append(s.pkt(op, key, b"", b"", cas))
            else:
                pkts.append(s.pkt(op, key))
        s.batch(pkts)


# ---------------------------------------------------------------------------
# the suite


class BinarySuite:
    WORKERS = 1
    NBACKENDS = 3
    EXTRA_ARGS = ()

    @classmethod
    def start_shared(cls):
        cls.ref = cls.shared_server(h.Memcached, "ref")
        cls.backends = cls.shared_servers(h.Memcached, cls.NBACKENDS, "mc")
        cls.pools = {"alpha": h.pool(cls.backends, timeout=10000)}
        cls.proxy = cls.shared_proxy(cls.pools, workers=cls.WORKERS, extra=cls.EXTRA_ARGS)
        cls.port = cls.proxy.port()
        # keys on every server, found by the text path's routing
        rng = random.Random(11)  # consecutive names hash close together
        cand = [b"bin:%08x" % rng.getrandbits(32) for i in range(400)]
        where = locate(cls.proxy, cand)
        addrs = [b.addr for b in cls.backends]
        cls.keys_on = [[k for k in cand if where[k] == a][:6] for a in addrs]
        if not all(len(ks) == 6 for ks in cls.keys_on):
            raise AssertionError("keys per server %s: %s" % (
                [len(k) for k in cls.keys_on], sorted(set(where.values()))))

    def setUp(self):
        self.watch_shared()
        for b in self.servers:
            if not b.running():
                b.start()
            b.flush()

    def tearDown(self):
        self.assertProxyAlive()

    def session(self, port):
        s = Session(port)
        self.addCleanup(s.close)
        return s

    def conn(self, port=None, timeout=h.IO_TIMEOUT):
        c = BinConn(port or self.port, timeout=timeout)
        self.addCleanup(c.close)
        return c

    def limited_proxy(self, limit, pool="small"):
        """A walnut of its own in front of the backends, one worker, with this
        client_buffer_limit (stopped, checked, by the test)."""
        tmp = h.TempDir()
        self.addCleanup(tmp.cleanup)
        px = h.Proxy(tmp, {pool: h.pool(self.backends, client_buffer_limit=limit)},
                     workers=1).start()
        self.addCleanup(px.kill)
        return px

    def spread(self, n=1):
        """n keys on every server, interleaved."""
        return [ks[j] for j in range(n) for ks in self.keys_on]

    def compare(self, scenario, *args):
        """Run scenario against memcached and walnut from a clean state; equal transcripts."""
        self.ref.flush()
        ref = self.session(self.ref.port)
        scenario(ref, *args)
        for b in self.backends:
            b.flush()
        wal = self.session(self.port)
        scenario(wal, *args)
        self.assertGreater(len(ref.log), 0)
        for i, (want, got) in enumerate(zip(ref.log, wal.log)):
            self.assertEqual(want, got, "reply %d differs (memcached, then walnut); "
                             "earlier replies equal" % i)
        self.assertEqual(len(ref.log), len(wal.log), "number of replies")
        return wal

    # ---------------------------------------------------------------- semantics

    def test_every_opcode_against_memcached(self):
        self.compare(scenario_every_opcode, self.spread(2))

    def test_quiet_and_noop_combinations(self):
        self.compare(scenario_quiet_combinations, self.spread(1))

    def test_random_pipelines_against_memcached(self):
        for seed in (1, 2, 3):
            with self.subTest(seed=seed):
                self.compare(scenario_random, self.spread(2), seed)

    def test_noop_waits_for_every_server_in_order(self):
        """GETKQ hits on every server, the first server stopped for a while: the
        replies still come in request order, the NOOP last."""
        keys = self.spread(2)
        s = self.session(self.port)
        s.batch([s.pkt("SETQ", k, set_extras(1), b"v:" + k) for k in keys], log=False)
        slow = self.backends[0]
        slow.sigstop()
        try:
            noop_opq = s.opq + len(keys) + 1
            s.c.send(b"".join(s.pkt("GETKQ", k) for k in keys) + s.pkt("NOOP"))
            s.c.quiet_for(0.3)  # the first reply waits for the stopped server
        finally:
            slow.sigcont()
        got = s.c.read_until_opaque(noop_opq)
        self.assertEqual([p.key for p in got[:-1]], keys)
        self.assertEqual([p.value for p in got[:-1]], [b"v:" + k for k in keys])

    def test_split_at_every_byte(self):
        """A pipeline cut at every byte, the two parts in separate reads: the same
        replies every time (heads straddling reads stay whole, values are taken
        in pieces)."""
        k0, k1 = self.spread(1)[:2]
        data = (packet(OP["SET"], k0, set_extras(3), b"v" * 100, opaque=1) +
                packet(OP["GETK"], k0, opaque=2) +
                packet(OP["INCREMENT"], k1, incr_extras(1, 5), opaque=3) +
                packet(OP["GETKQ"], b"nokey", opaque=4) +
                packet(OP["APPENDQ"], k0, b"", b"w" * 30, opaque=5) +
                packet(OP["NOOP"], opaque=6))
        want = None
        for cut in range(1, len(data)):
            for b in self.backends:
                b.flush()
            c = self.conn()
            c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c.send(data[:cut])
            time.sleep(0.005)
            c.send(data[cut:])
            got = [(p.op, p.status, p.opaque, p.extras, p.key, p.value)
                   for p in c.read_until_opaque(6)]
            c.close()
            if want is None:
                want = got
                self.assertEqual([g[:3] for g in want], [(OP["SET"], OK, 1), (OP["GETK"], OK, 2),
                                                         (OP["INCREMENT"], OK, 3),
                                                         (OP["NOOP"], OK, 6)])
            self.assertEqual(got, want, "cut at byte %d" % cut)

    def test_opaque_and_cas_carried(self):
        c = self.conn()
        for opq in (0, 1, 0x7fffffff, 0xfffffffe, 0xffffffff):
            c.send(packet(OP["SET"], b"opq", set_extras(), b"v", opaque=opq))
            p = c.read_packet()
            self.assertEqual((p.status, p.opaque), (OK, opq))
            self.assertNotEqual(p.cas, 0, "SET answers the new item's CAS")
            c.send(packet(OP["GETK"], b"opq", opaque=opq ^ 0x5a5a5a5a))
            g = c.read_packet()
            self.assertEqual((g.opaque, g.cas, g.key), (opq ^ 0x5a5a5a5a, p.cas, b"opq"))
        # a CAS is the server's: the same as a text client's gets shows
        with h.Raw(self.port) as t:
            t.send(b"gets opq\r\n")
            line = t.recv_line()
        self.assertEqual(int(line.split()[4]), g.cas)

    def test_keys_with_any_bytes(self):
        """Keys the text protocol cannot carry go base64; they are the same items
        memcached stores for the binary key (a text client with the b flag sees them)."""
        keys = [b"a b", b"x\r\ny", b"\0lead", b"tab\tctl\x01del\x7f", b"\xff\xfe", b"end\r",
                b" " * 186, b"k" * 250, b"sp ace " + b"z" * 179]
        def sc(s):
            for i, k in enumerate(keys):
                s.do("SET", k, set_extras(i), b"v%d" % i)
                s.do("GETK", k)
                s.do("GETKQ", k)
            s.batch([s.pkt("DELETEQ", k) for k in keys] + [s.pkt("GETK", k) for k in keys])
        self.compare(sc)
        # the key is stored as sent: the text path finds it with the b flag (direct)
        import base64
        s = self.session(self.port)
        s.batch([s.pkt("SETQ", k, set_extras(), b"x") for k in keys[:3]])
        for k in keys[:3]:
            where = [b for b in self.backends
                     if h.mc_command(b.port, b"mg %s b v\r\n" % base64.b64encode(k),
                                     b"\r\n").startswith(b"VA")]
            self.assertEqual(len(where), 1, "key %r on exactly one server" % k)
        # 187+ bytes holding NUL, LF or space cannot be carried: EINVAL, the
        # connection goes on (walnut's documented answer; memcached stores it)
        c = self.conn()
        long_key = b" " * 187
        c.send(packet(OP["SET"], long_key, set_extras(), b"xyz", opaque=5) +
               packet(OP["GETKQ"], long_key, opaque=6) + packet(OP["NOOP"], opaque=7))
        p = c.read_packet()
        self.assertEqual((p.op, p.status, p.opaque, p.value), (OP["SET"], EINVAL, 5,
                                                              b"Invalid arguments"))
        p = c.read_packet()
        self.assertEqual((p.op, p.status, p.opaque, p.key), (OP["GETKQ"], EINVAL, 6, b""))
        self.assertEqual(c.read_packet().opaque, 7)

    def test_routing_matches_text_path(self):
        keys = [b"route:%d" % i for i in range(300)] + [b"user{%d}:x" % i for i in range(20)]
        s = self.session(self.port)
        s.batch([s.pkt("SETQ", k, set_extras(), b"1") for k in keys], log=False)
        where = h.placement(self.backends, keys)
        loc = locate(self.proxy, keys)
        for k in keys:
            self.assertEqual(where[k].addr, loc[k], "key %r" % k)
        self.assertEqual(len({where[k].addr for k in keys}), len(self.backends))

    def test_text_and_binary_clients_share_servers(self):
        """Text and binary clients at once, each seeing only its own replies, and
        each other's data (flags, values, CAS) exactly."""
        keys = self.spread(3)
        errors = []

        def text_client(n):
            try:
                with h.Raw(self.port) as t:
                    for i in range(n):
                        k = keys[i % len(keys)]
                        t.send(b"set t%s 5 0 3\r\nabc\r\nget t%s\r\n" % (k, k))
                        t.expect(b"STORED\r\nVALUE t%s 5 3\r\nabc\r\nEND\r\n" % k)
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        def bin_client(n):
            try:
                s = Session(self.port)
                for i in range(n):
                    k = keys[i % len(keys)]
                    got = s.batch([s.pkt("SETQ", b"b" + k, set_extras(6), b"xyz"),
                                   s.pkt("GETK", b"b" + k)])
                    assert [(p.op, p.key, p.value, p.extras) for p in got[:-1]] == \
                        [(OP["GETK"], b"b" + k, b"xyz", set_extras(6)[:4])], got
                s.close()
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=f, args=(150,)) for f in
                   (text_client, bin_client, text_client, bin_client)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])
        # each sees the other's items
        s = self.session(self.port)
        p = s.do("GETK", b"t" + keys[0])
        self.assertEqual((p.status, p.extras, p.value), (OK, set_extras(5)[:4], b"abc"))
        with h.Raw(self.port) as t:
            t.send(b"gets b%s\r\n" % keys[1])
            line = t.recv_line()
            self.assertEqual(line.split()[:4], [b"VALUE", b"b" + keys[1], b"6", b"3"])
            self.assertEqual(t.recv_until(b"END\r\n"), b"xyz\r\nEND\r\n")
        self.assertEqual(int(line.split()[4]), s.do("GET", b"b" + keys[1]).cas)

    def test_large_values(self):
        """Values up to memcached's 1 MiB item in any number of buffers; over it,
        E2BIG with the value swallowed, as memcached does."""
        def sc(s):
            for size in (500, 70000, 512 * 1024, 1024 * 1024 - 512):
                v = bytes(random.Random(size).getrandbits(8) for _ in range(size))
                s.do("SET", b"big%d" % size, set_extras(size), v)
                s.do("GETK", b"big%d" % size)
            # too large: refused, the value swallowed; a SET (SETQ) also unlinks
            # the key's old value, ADD, REPLACE, APPEND and PREPEND keep it
            over = b"z" * (1024 * 1024 + 1)
            for op in ("SET", "SETQ", "ADD", "REPLACE", "APPEND", "PREPENDQ"):
                k = b"toobig:" + op.encode()
                s.do("SET", k, set_extras(1), b"old")
                s.do(op, k, set_extras(2) if "PEND" not in op else b"", over)
                s.do("GETK", k)
            s.do("SET", b"toobig: key", set_extras(1), b"old")
            s.do("SETQ", b"toobig: key", set_extras(2), over)
            s.do("GETK", b"toobig: key")
        self.compare(sc)

    def test_gat_and_touch_set_the_exptime(self):
        def sc(s):
            a, b = self.spread(1)[:2]
            s.do("SET", a, set_extras(1, 0), b"x")
            s.do("SET", b, set_extras(2, 0), b"y")
            s.do("TOUCH", a, exp_extras(1))
            s.do("GAT", b, exp_extras(1))
            time.sleep(2.2)
            s.do("GET", a)
            s.do("GET", b)
        self.compare(sc)

    # ---------------------------------------------------------------- local

    def test_noop_version_stat(self):
        c = self.conn()
        c.send(packet(OP["NOOP"], opaque=1) + packet(OP["VERSION"], opaque=2))
        p = c.read_packet()
        self.assertEqual((p.op, p.status, p.opaque, p.cas, p.value), (OP["NOOP"], OK, 1, 0, b""))
        p = c.read_packet()
        self.assertEqual((p.op, p.status, p.opaque), (OP["VERSION"], OK, 2))
        # forwarded, as the text version is: a real memcached's
        self.assertEqual(p.value, b"1.6.18")
        # STAT: walnut's own statistics, the same names as the text `stats`
        c.send(packet(OP["STAT"], opaque=3))
        stats = []
        while True:
            p = c.read_packet()
            self.assertEqual((p.op, p.status, p.opaque), (OP["STAT"], OK, 3))
            if not p.key:
                self.assertEqual(p.value, b"")
                break
            stats.append((p.key, p.value))
        text = h.mc_stats(self.port)
        self.assertEqual([k.decode() for k, _ in stats], list(text.keys()))
        self.assertEqual(dict(stats)[b"version"], text["version"].encode())
        # groups: as a memcached holding nothing answers them in binary (the text
        # `stats <group>` says the same); groups binary STAT lacks: Not found
        want = {b"items": [(OK, b"", b"")],
                b"slabs": [(OK, b"active_slabs", b"0"), (OK, b"total_malloced", b"0"),
                           (OK, b"", b"")],
                b"reset": [(OK, b"", b"")],
                b"detail dump": [(OK, b"detailed", b"END\r\n"), (OK, b"", b"")],
                b"conns": [(ENOENT, b"", b"Not found")],
                b"bogus": [(ENOENT, b"", b"Not found")]}
        for opq, (group, packets) in enumerate(want.items(), 10):
            c.send(packet(OP["STAT"], group, opaque=opq) + packet(OP["NOOP"], opaque=opq))
            got = c.read_until_opaque(opq)[:-1]
            self.assertEqual([(p.status, p.key, p.value) for p in got], packets, group)
            self.assertEqual({(p.op, p.opaque) for p in got}, {(OP["STAT"], opq)})

    def test_quit(self):
        for op, want_reply in (("QUIT", True), ("QUITQ", False)):
            c = self.conn()
            c.send(packet(OP["SET"], b"q", set_extras(), b"1", opaque=1) +
                   packet(OP[op], opaque=2) + packet(OP["SET"], b"q", set_extras(), b"2",
                                                     opaque=3))
            got, rest = c.read_all_until_closed()
            self.assertEqual(rest, b"")
            want = [(OP["SET"], 1)] + ([(OP[op], 2)] if want_reply else [])
            self.assertEqual([(p.op, p.opaque) for p in got], want)
            # what followed QUIT was never run
            self.assertEqual(self.session(self.port).do("GET", b"q").value, b"1")

    def test_sasl_and_unknown_opcodes_as_memcached_without_sasl(self):
        def sc(s):
            s.batch([s.pkt("SASL_LIST_MECHS"), s.pkt("SASL_AUTH", b"PLAIN", b"", b"\0u\0p"),
                     s.pkt("SASL_STEP", b"PLAIN", b"", b"x"), s.pkt(0x50),
                     s.pkt(0x50, b"", b"", b"body"), s.pkt("GETK", b"after")])
        self.compare(sc)

    def test_stat_counts_binary_requests(self):
        before = h.mc_stats(self.port)
        s = self.session(self.port)
        k = self.spread(1)[0]
        s.do("SET", k, set_extras(), b"1")
        s.do("GET", k)
        s.do("GETQ", b"missing")
        after = h.mc_stats(self.port)
        for name, n in (("cmd_set", 1), ("cmd_get", 2), ("get_hits", 1), ("get_misses", 1)):
            self.assertEqual(int(after[name]) - int(before[name]), n, name)

    # ---------------------------------------------------------------- failures

    def test_server_down(self):
        """A request to a server walnut cannot reach: 0x0086 (Temporary failure)
        with twemproxy's text, quiet ones included; the others go on."""
        down, up = self.keys_on[0][0], self.keys_on[1][0]
        s = self.session(self.port)
        s.do("SET", up, set_extras(), b"fine")
        self.backends[0].kill()
        try:
            got = s.batch([s.pkt("GETQ", down), s.pkt("GETKQ", up), s.pkt("SETQ", down,
                                                                           set_extras(), b"x")])
            self.assertEqual([(NAME[p.op], p.status) for p in got],
                             [("GETQ", ETMPFAIL), ("GETKQ", OK), ("SETQ", ETMPFAIL),
                              ("NOOP", OK)])
            self.assertIn(got[0].value.decode(), h.TWEMPROXY_SERVER_ERRORS)
            self.assertEqual(got[1].value, b"fine")
            got = s.batch([s.pkt("FLUSH")])
            self.assertEqual((got[0].status, got[0].op), (ETMPFAIL, OP["FLUSH"]))
        finally:
            self.backends[0].start()

    # ---------------------------------------------------------------- hostile

    def compare_raw(self, data, close_write=False, timeout=5):
        """The packets (and whether it closed) memcached and walnut answer data with."""
        out = []
        for port in (self.ref.port, self.port):
            c = self.conn(port, timeout=timeout)
            c.send(data)
            if close_write:
                c.sock.shutdown(socket.SHUT_WR)
            got, rest = c.read_all_until_closed(timeout)
            out.append(([(p.op, p.status, p.opaque, p.key, p.value) for p in got], rest))
        self.assertEqual(out[0], out[1], "memcached, then walnut")
        return out[1]

    def test_bad_magic_mid_stream(self):
        """A packet without the request magic: no reply, the connection closes,
        as memcached does; what came before it is answered first (memcached
        1.6.18 loses replies it had not written yet when the bad packet came in
        the same read: documented difference)."""
        c = self.conn()
        c.send(packet(OP["SET"], b"m", set_extras(), b"1", opaque=1) +
               packet(OP["NOOP"], opaque=2, magic=0x81) + packet(OP["NOOP"], opaque=3))
        got, rest = c.read_all_until_closed()
        self.assertEqual(([(p.op, p.status, p.opaque) for p in got], rest),
                         ([(OP["SET"], OK, 1)], b""))
        # after a reply memcached has written: the same too
        for port in (self.ref.port, self.port):
            c = self.conn(port)
            c.send(packet(OP["NOOP"], opaque=1))
            self.assertEqual(c.read_packet().opaque, 1)
            c.send(b"GET / HTTP/1.0\r\nHost: walnut\r\n\r\n")  # a header's worth
            self.assertEqual(c.read_all_until_closed(), ([], b""))

    def test_bad_lengths_close_as_memcached(self):
        cases = {
            "key length > body": packet(OP["GET"], b"k", keylen=5, bodylen=1, opaque=9),
            "extras mismatch": packet(OP["GET"], b"k", b"\0\0\0\0", opaque=9),
            "set without extras": packet(OP["SET"], b"k", b"", b"v", opaque=9),
            "key over 250": packet(OP["GET"], b"k" * 251, opaque=9),
            "noop with a body": packet(OP["NOOP"], b"", b"", b"xx", opaque=9),
        }
        for name, bad in cases.items():
            with self.subTest(case=name):
                got, _ = self.compare_raw(packet(OP["NOOP"], opaque=1) + bad +
                                          packet(OP["NOOP"], opaque=2))
                self.assertEqual(got[0][:3], (OP["NOOP"], OK, 1))
                self.assertLessEqual(len(got), 2, "nothing after the bad packet is answered")

    def test_half_packet_then_fin(self):
        """Half a packet, then FIN: every complete request is answered, the half
        one is never run, the connection closes. memcached 1.6.18 does the same
        for a half header, but when the FIN comes inside a value it closes
        without sending the replies it still held (documented difference)."""
        for cut in (0, 10, 23, 24 + 8 + 2, 24 + 8 + 3 + 100):
            with self.subTest(cut=cut):
                data = packet(OP["SET"], b"hf", set_extras(), b"1", opaque=1) + \
                    packet(OP["SET"], b"hf", set_extras(), b"x" * 1000, opaque=2)[:cut]
                if cut < 24:
                    got, rest = self.compare_raw(data, close_write=True)
                else:
                    c = self.conn()
                    c.send(data)
                    c.sock.shutdown(socket.SHUT_WR)
                    got, rest = c.read_all_until_closed()
                    got = [(p.op, p.status, p.opaque) for p in got]
                self.assertEqual([g[:3] for g in got], [(OP["SET"], OK, 1)])
                self.assertEqual(rest, b"")
                self.assertEqual(self.session(self.port).do("GET", b"hf").value, b"1")

    def test_huge_body_length(self):
        """A SET announcing 4 GiB: E2BIG at once, then what follows is swallowed as
        its body (as memcached does), without holding it."""
        c = self.conn()
        c.send(packet(OP["SET"], b"huge", set_extras(), b"", opaque=1, bodylen=0xffffffff))
        p = c.read_packet()
        self.assertEqual((p.op, p.status, p.opaque, p.value), (OP["SET"], E2BIG, 1, b"Too large."))
        buf_before = int(h.mc_stats(self.port)["buffer_bytes"])
        junk = packet(OP["NOOP"], opaque=2) * ((8 << 20) // 24)
        c.send(junk)
        c.quiet_for(0.5)  # the NOOPs are body bytes: nothing answers them
        buf_after = int(h.mc_stats(self.port)["buffer_bytes"])
        self.assertLess(buf_after - buf_before, 4 << 20, "swallowed bytes are not kept")
        # an unknown opcode with a big body is skipped exactly
        c2 = self.conn()
        c2.send(packet(0x60, b"", b"", b"q" * 3_000_000, opaque=3) + packet(OP["NOOP"], opaque=4))
        self.assertEqual([(p.status, p.opaque) for p in c2.read_until_opaque(4)],
                         [(UNKNOWN_COMMAND, 3), (OK, 4)])

    def test_value_over_client_buffer_limit(self):
        """A value over half the pool's client_buffer_limit is refused (E2BIG, the
        value swallowed) up front instead of disconnecting the client later."""
        px = self.limited_proxy(65536)
        c = self.conn(px.port())
        c.send(packet(OP["SET"], b"sm", set_extras(), b"v" * 32768, opaque=1) +
               packet(OP["SET"], b"sm", set_extras(), b"v" * 32769, opaque=2) +
               packet(OP["NOOP"], opaque=3))
        self.assertEqual([(p.status, p.opaque) for p in c.read_until_opaque(3)],
                         [(OK, 1), (E2BIG, 2), (OK, 3)])
        px.stop(check=True)

    def test_value_limit_follows_a_reload(self):
        """A reload that halves client_buffer_limit applies to a binary client that is
        already connected (its limit was fixed when it connected)."""
        px = self.limited_proxy(131072)
        c = self.conn(px.port())
        c.send(packet(OP["SET"], b"sm", set_extras(), b"v" * 40000, opaque=1) +
               packet(OP["NOOP"], opaque=2))
        self.assertEqual([(p.status, p.opaque) for p in c.read_until_opaque(2)],
                         [(OK, 1), (OK, 2)])
        with open(px.conf_path, "w") as f:
            f.write(h.render_config({"small": h.pool(self.backends,
                                                     client_buffer_limit=65536)}))
        os.kill(px.pid, signal.SIGHUP)
        h.wait_until(lambda: "worker(s) run generation" in px.log(), deadline=10.0,
                     what="the reload to reach the worker")
        c.send(packet(OP["SET"], b"sm", set_extras(), b"v" * 40000, opaque=3) +
               packet(OP["NOOP"], opaque=4))
        self.assertEqual([(p.status, p.opaque) for p in c.read_until_opaque(4)],
                         [(E2BIG, 3), (OK, 4)])
        px.stop(check=True)

    def test_pipeline_never_read(self):
        """A client pipelining GETs of a 100 KB value and never reading: walnut holds
        at most its client_buffer_limit for it, then disconnects it; others go on."""
        px = self.limited_proxy(4 << 20, pool="lim")
        s = Session(px.port())
        s.do("SET", b"fat", set_extras(), b"F" * 100000)
        s.close()
        c = self.conn(px.port(), timeout=30)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        burst = packet(OP["GET"], b"fat", opaque=1) * 2000
        deadline = time.monotonic() + 30
        closed = False
        while time.monotonic() < deadline and not closed:
            try:
                c.sock.settimeout(1)
                c.sock.send(burst)
            except (socket.timeout, BlockingIOError):
                pass
            except (BrokenPipeError, ConnectionResetError):
                closed = True
            st = h.mc_stats(px.port())
            if int(st["client_overlimit"]) > 0:
                closed = True
        self.assertTrue(closed, "the client was never disconnected")
        self.assertLess(int(h.mc_stats(px.port())["buffer_bytes"]), 64 << 20)
        s2 = Session(px.port())
        self.assertEqual(s2.do("GET", b"fat").value, b"F" * 100000)
        s2.close()
        px.stop(check=True)

    # ---------------------------------------------------------------- real clients

    def run_tool(self, args, input_bytes=None, timeout=60):
        r = subprocess.run(args, input=input_bytes, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout)
        return r.returncode, r.stdout, r.stderr

    def test_libmemcached_tools_binary(self):
        tools = {t: h.find_tool(t, package="libmemcached-tools") for t in
                 ("memccp", "memccat", "memcrm", "memcexist", "memctouch", "memcflush",
                  "memcstat", "memcslap")}
        tmp = h.TempDir()
        self.addCleanup(tmp.cleanup)
        files = []
        for i in range(6):
            p = tmp.join("file%d.bin" % i)
            with open(p, "wb") as f:
                f.write(bytes(random.Random(i).getrandbits(8) for _ in range(50 + 7000 * i)))
            files.append(p)
        results = []
        for port in (self.ref.port, self.port):
            srv = "--servers=%s:%d" % (HOST, port)
            out = []
            rc, o, e = self.run_tool([tools["memccp"], "--binary", srv] + files)
            out.append(("memccp", rc))
            names = [os.path.basename(f) for f in files]
            rc, o, e = self.run_tool([tools["memccat"], "--binary", srv] + names)
            out.append(("memccat", rc, o))
            rc, o, e = self.run_tool([tools["memcexist"], "--binary", srv, names[0], "nope"])
            out.append(("memcexist", rc))
            rc, o, e = self.run_tool([tools["memctouch"], "--binary", "--expire=1000", srv,
                                      names[1]])
            out.append(("memctouch", rc))
            rc, o, e = self.run_tool([tools["memcrm"], "--binary", srv, names[2]])
            out.append(("memcrm", rc))
            rc, o, e = self.run_tool([tools["memccat"], "--binary", srv, names[2]])
            out.append(("memccat removed", rc, o))
            rc, o, e = self.run_tool([tools["memcstat"], "--binary", srv])
            out.append(("memcstat", rc, b"pid" in o))
            rc, o, e = self.run_tool([tools["memcflush"], "--binary", srv])
            out.append(("memcflush", rc))
            rc, o, e = self.run_tool([tools["memccat"], "--binary", srv, names[0]])
            out.append(("memccat flushed", rc, o))
            for test in ("set", "get", "mget"):  # mget: GETKQ ... NOOP batches
                rc, o, e = self.run_tool([tools["memcslap"], "--binary", srv, "--test=" + test,
                                          "--concurrency=2", "--execute-number=300"],
                                         timeout=120)
                out.append(("memcslap " + test, rc, b"rror" in o + e))
            results.append(out)
        expect = b""
        for f in files:
            with open(f, "rb") as fh:
                expect += fh.read() + b"\n"  # memccat ends each value with a newline
        self.assertEqual(results[1][0], ("memccp", 0))
        self.assertTrue(results[1][1] == ("memccat", 0, expect), "memccat through walnut")

        def short(r):
            return tuple(x if not isinstance(x, bytes) or len(x) < 80 else
                         "%d bytes" % len(x) for x in r)
        for want, got in zip(results[0], results[1]):
            self.assertEqual(want, got, "memcached %r, walnut %r" % (short(want), short(got)))

    def test_memtier_binary(self):
        memtier = h.find_tool("memtier_benchmark",
                              how="not a Debian package: build it from source, see README.md, "
                              "Quick start")
        tmp = h.TempDir()
        self.addCleanup(tmp.cleanup)
        js = tmp.join("mt.json")
        r = subprocess.run([memtier, "-s", HOST, "-p", str(self.port),
                            "--protocol=memcache_binary", "-t", "1", "-c", "4", "--pipeline=8",
                            "--test-time=2", "--ratio=1:4", "--key-maximum=2000",
                            "--data-size=200", "--hide-histogram", "--json-out-file=" + js],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
        err = r.stderr.decode("utf-8", "replace")
        self.assertEqual(r.returncode, 0, err[-2000:])
        self.assertNotRegex(err, r"(?i)error|dropped|failed", err[-2000:])
        with open(js) as f:
            totals = json.load(f)["ALL STATS"]["Totals"]
        self.assertGreater(totals["Count"], 1000)
        self.assertEqual(totals.get("Connection Errors", 0), 0)


@unittest.skipIf(h.UNDER_NUTCRACKER, NC_SKIP)
class TestBinaryExactBytes(h.ProxyTestCase):
    """What the server receives for each binary request, byte for byte, and the
    packet the client gets for replies a real memcached rarely gives (out of
    memory, an old memcached's ERROR, a reply that answers nothing asked)."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = h.TempDir()
        cls.fakes = [ScriptedMemcached("a"), ScriptedMemcached("b")]
        cls.proxy = None
        try:
            cls.proxy = h.Proxy(cls.tmp, {"alpha": h.pool(cls.fakes, timeout=5000)},
                                workers=1).start()
        except BaseException:
            for f in cls.fakes:
                f.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.proxy.stop(check=True)
        finally:
            for f in cls.fakes:
                f.stop()
            cls.tmp.cleanup()

    def setUp(self):
        self.addCleanup(self._log_if_failed, self.proxy)  # the class's proxy, on failure
        for f in self.fakes:
            f.clear()
            with f.lock:
                f.replies.clear()
                f.tags.clear()
                f.echo = True
                f.drop_next = 0
        # consecutive names hash close together under fnv1a_64: random ones
        rng = random.Random(7)
        cand = [b"ex:%08x" % rng.getrandbits(32) for _ in range(200)]
        where = locate(self.proxy, cand)
        self.keys = {i: next(k for k in cand if where[k] == f.addr)
                     for i, f in enumerate(self.fakes)}

    def another_key_on(self, i, prefix):
        """A key of fake i's other than self.keys[i] (random names: consecutive
        ones hash close together)."""
        rng = random.Random(prefix)
        cand = [prefix + b":%08x" % rng.getrandbits(32) for _ in range(200)]
        where = locate(self.proxy, cand)
        return next(x for x in cand if where[x] == self.fakes[i].addr and x != self.keys[i])

    def sent(self, i):
        return b"".join(r for _, r in self.fakes[i].requests())

    def exchange(self, pkts, opaque_end):
        c = BinConn(self.proxy.port())
        self.addCleanup(c.close)
        c.send(b"".join(pkts) + packet(OP["NOOP"], opaque=opaque_end))
        return b"".join(HDR.pack(0x81, p.op, len(p.key), len(p.extras), p.datatype, p.status,
                                 len(p.extras) + len(p.key) + len(p.value), p.opaque, p.cas) +
                        p.extras + p.key + p.value for p in c.read_until_opaque(opaque_end))

    def noop(self, opq):
        return HDR.pack(0x81, OP["NOOP"], 0, 0, 0, 0, 0, opq, 0)

    def test_requests_and_replies_byte_for_byte(self):
        k = self.keys[0]
        f = self.fakes[0]
        f.replies[b"mg %s v f c\r\n" % k] = b"VA 3 f5 c77\r\nabc\r\n"
        f.replies[b"ms %s 3 T60 F9 C5 c\r\nxyz\r\n" % k] = b"HD c6\r\n"
        f.replies[b"ma %s N0 J1 D2 v c\r\n" % k] = b"VA 2 c8\r\n42\r\n"
        f.replies[b"mg %s T7 f c\r\n" % k] = b"HD f5 c9\r\n"
        got = self.exchange([
            packet(OP["GETK"], k, opaque=1),
            packet(OP["SETQ"], k, set_extras(9, 60), b"xyz", opaque=2, cas=5),
            packet(OP["INCREMENT"], k, incr_extras(2, 1, 0), opaque=3),
            packet(OP["TOUCH"], k, exp_extras(7), opaque=4),
            packet(OP["DELETEQ"], k, opaque=5, cas=3),
            packet(OP["APPEND"], k, b"", b"++", opaque=6),
            packet(OP["GATKQ"], b"a b", exp_extras(0xffffffff), opaque=7),
        ], 8)
        b64 = b"mg YSBi b T2147483647 v f c\r\n"  # key "a b", exptime 2^32-1
        both = self.sent(0) + self.sent(1)
        self.assertEqual(both.count(b64), 1)
        self.assertEqual(self.sent(0).replace(b64, b""), b"".join([
            b"mg %s v f c\r\n" % k,
            b"ms %s 3 T60 F9 C5 c\r\nxyz\r\n" % k,
            b"ma %s N0 J1 D2 v c\r\n" % k,
            b"mg %s T7 f c\r\n" % k,
            b"md %s C3\r\n" % k,
            b"ms %s 2 MA c\r\n++\r\n" % k,
        ]))
        # each meta request tagged with an O token of its own
        tags = self.fakes[0].tags + self.fakes[1].tags
        self.assertEqual(len(tags), 7)
        self.assertTrue(all(tags), tags)
        self.assertEqual(len(set(tags)), len(tags), tags)
        self.assertEqual(got, b"".join([
            HDR.pack(0x81, OP["GETK"], len(k), 4, 0, OK, 4 + len(k) + 3, 1, 77) +
            struct.pack(">I", 5) + k + b"abc",
            HDR.pack(0x81, OP["INCREMENT"], 0, 0, 0, OK, 8, 3, 8) + struct.pack(">Q", 42),
            HDR.pack(0x81, OP["TOUCH"], 0, 4, 0, OK, 4, 4, 9) + struct.pack(">I", 5),
            HDR.pack(0x81, OP["APPEND"], 0, 0, 0, OK, 0, 6, 1),
            self.noop(8),
        ]))

    def test_error_replies(self):
        k0, k1 = self.keys[0], self.keys[1]
        self.fakes[0].replies[b"ms %s 1 T0 F0 c\r\nv\r\n" % k0] = \
            b"SERVER_ERROR out of memory storing object\r\n"
        self.fakes[0].replies[b"mg %s v f c\r\n" % k0] = b"ERROR\r\n"
        self.fakes[1].replies[b"ma %s D1 v c\r\n" % k1] = \
            b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
        self.fakes[1].replies[b"flush_all\r\n"] = b"SERVER_ERROR busy\r\n"
        got = self.exchange([
            packet(OP["SETQ"], k0, set_extras(), b"v", opaque=1),
            packet(OP["GETQ"], k0, opaque=2),
            packet(OP["INCREMENTQ"], k1, incr_extras(1, 0, 0xffffffff), opaque=3),
            packet(OP["FLUSHQ"], opaque=4),
        ], 5)

        def err(op, opq, status, text):
            return HDR.pack(0x81, op, 0, 0, 0, status, len(text), opq, 0) + text
        self.assertEqual(got, b"".join([
            err(OP["SETQ"], 1, ENOMEM, b"Out of memory allocating item"),
            err(OP["GETQ"], 2, EINTERNAL, b"ERROR"),
            err(OP["INCREMENTQ"], 3, DELTA_BADVAL,
                b"Non-numeric server-side value for incr or decr"),
            err(OP["FLUSHQ"], 4, EINTERNAL, b"SERVER_ERROR busy"),
            self.noop(5),
        ]))
        self.assertEqual(self.sent(0).count(b"flush_all\r\n"), 1)
        self.assertEqual(self.sent(1).count(b"flush_all\r\n"), 1)

    def test_unreadable_reply_keeps_walnuts_tag_to_itself(self):
        """A reply line walnut cannot translate (flags past 32 bits) becomes an
        internal error whose body is the server's line: it carried the O token
        walnut added to the request, which the client never sent. Expected:
        the server's words without the tag."""
        k = self.keys[0]
        self.fakes[0].replies[b"mg %s v f c\r\n" % k] = b"VA 1 f99999999999 c5\r\nx\r\n"
        c = BinConn(self.proxy.port())
        self.addCleanup(c.close)
        c.send(packet(OP["GET"], k, opaque=1))
        p = c.read_packet()
        self.assertEqual((p.op, p.status, p.opaque), (OP["GET"], EINTERNAL, 1))
        self.assertEqual(p.value, b"VA 1 f99999999999 c5")
        self.fakes[0].replies.clear()
        c.send(packet(OP["GET"], k, opaque=2))
        p = c.read_packet()
        self.assertEqual((p.status, p.opaque, p.value), (ENOENT, 2, b"Not found"))

    def test_reply_that_answers_nothing_asked(self):
        """A server answering an mg with a line no mg gets: its connection is closed
        and the request fails (0x0086); the next request reconnects."""
        k = self.keys[0]
        self.fakes[0].replies[b"mg %s v f c\r\n" % k] = b"STORED\r\n"
        c = BinConn(self.proxy.port())
        self.addCleanup(c.close)
        c.send(packet(OP["GET"], k, opaque=1))
        p = c.read_packet()
        self.assertEqual((p.op, p.status, p.opaque), (OP["GET"], ETMPFAIL, 1))
        self.assertIn(p.value.decode(), h.TWEMPROXY_SERVER_ERRORS)
        self.fakes[0].replies.clear()
        c.send(packet(OP["GET"], k, opaque=2))
        p = c.read_packet()
        self.assertEqual((p.status, p.opaque, p.value), (ENOENT, 2, b"Not found"))


    def test_reply_for_another_request_is_refused(self):
        """A server that drops one reply (or answers without the request's O
        token): the next reply on the connection answered the earlier request,
        and GET handed one client the value another asked for. Expected: the
        reply's O token is checked; both requests fail (0x0086), no client
        sees the other's value, and the next request is served."""
        f = self.fakes[0]
        k = self.keys[0]
        k2 = self.another_key_on(0, b"ex2")
        f.replies[b"mg %s v f c\r\n" % k2] = b"VA 6 f0 c1\r\nSECRET\r\n"
        f.drop_next = 1
        a = BinConn(self.proxy.port())
        self.addCleanup(a.close)
        b = BinConn(self.proxy.port())
        self.addCleanup(b.close)
        a.send(packet(OP["GET"], k, opaque=1))
        h.wait_until(lambda: len(f.tags) == 1, what="a's GET at the server")
        b.send(packet(OP["GET"], k2, opaque=2))
        pa, pb = a.read_packet(), b.read_packet()
        self.assertNotIn(b"SECRET", pa.value)
        self.assertEqual((pa.status, pa.opaque), (ETMPFAIL, 1), pa)
        self.assertEqual((pb.status, pb.opaque), (ETMPFAIL, 2), pb)
        # a reply without the O token: refused the same way
        f.echo = False
        b.send(packet(OP["GET"], k2, opaque=3))
        pb = b.read_packet()
        self.assertEqual((pb.status, pb.opaque), (ETMPFAIL, 3), pb)
        f.echo = True
        b.send(packet(OP["GET"], k2, opaque=4))
        pb = b.read_packet()
        self.assertEqual((pb.status, pb.opaque, pb.value), (OK, 4, b"SECRET"), pb)

    def test_text_meta_reply_for_another_request_is_refused(self):
        """The same for text meta commands (mg, ms, ma carry no key in their
        replies): a dropped reply must not hand A the value B asked for.
        A client's own O token still comes back in its place."""
        f = self.fakes[0]
        k = self.keys[0]
        k2 = self.another_key_on(0, b"ex3")
        f.replies[b"mg %s v\r\n" % k2] = b"VA 6\r\nSECRET\r\n"
        f.replies[b"mg %s s v\r\n" % k2] = b"VA 6 s6\r\nSECRET\r\n"
        f.drop_next = 1
        with h.Raw(self.proxy.port()) as a, h.Raw(self.proxy.port()) as b:
            a.send(b"mg %s v\r\n" % k)
            h.wait_until(lambda: len(f.tags) == 1, what="a's mg at the server")
            b.send(b"mg %s v\r\n" % k2)
            got_a, got_b = a.recv_line(), b.recv_line()
            self.assertTrue(got_a.startswith(b"SERVER_ERROR "), got_a)
            self.assertTrue(got_b.startswith(b"SERVER_ERROR "), got_b)
            # (this fake echoes O last; the order against a real memcached:
            # test_memcached's meta tests and test/data/mc_differential.txt)
            b.request(b"mg %s s v Oxyz\r\n" % k2, b"VA 6 s6 Oxyz\r\nSECRET\r\n",
                      what="the client's own O in its place")
            b.request(b"mg %s v\r\n" % k2, b"VA 6\r\nSECRET\r\n", what="no O: none back")
            a.request(b"mn\r\n", b"MN\r\n")
        # A line at memcached's 19-token limit has no room for walnut's O: it
        # went untagged, and a server that dropped a reply handed A the value
        # B asked for. Refused as memcached refuses one token more; never
        # sent. With an O of its own (replaced by walnut's) the same flags go.
        # (ms, md and ma cannot reach the limit without repeating a flag.)
        before = len(f.tags)
        flags = b"v s f t c h l k u N30 R30 T30 I P L C5 D1"
        with h.Raw(self.proxy.port()) as a:
            a.request(b"mg %s %s\r\n" % (k, flags),
                      b"CLIENT_ERROR options flags are too long\r\n")
            # (q is dropped on the way: then there is room)
            f.replies[b"mg %s %s\r\n" % (k, flags[:-3])] = b"EN\r\n"
            a.request(b"mg %s %s q\r\nmn\r\n" % (k, flags[:-3]), b"MN\r\n")
            before = len(f.tags)
            a.request(b"mn\r\n", b"MN\r\n")
            self.assertEqual(len(f.tags), before, "nothing reached the server")
            f.replies[b"mg %s %s\r\n" % (k2, flags[:-3])] = b"VA 6\r\nSECRET\r\n"
            a.request(b"mg %s %s Oab\r\n" % (k2, flags[:-3]), b"VA 6 Oab\r\nSECRET\r\n")
            self.assertIsNotNone(f.tags[-1])

    def test_me_reply_for_another_key_is_refused(self):
        """me cannot carry an O token, so its reply was matched by position
        only: a server answering two clients' me in swapped order gave each
        the other key's metadata (and name). Expected: the ME line's key is
        checked (as a VALUE's is) and a reply for another key is refused."""
        f = self.fakes[0]
        k = self.keys[0]
        k2 = self.another_key_on(0, b"me2")
        f.replies[b"me %s\r\n" % k] = b"ME %s exp=-1 la=1 cas=7 fetch=no cls=1 size=70\r\n" % k2
        with h.Raw(self.proxy.port()) as a:
            a.send(b"me %s\r\n" % k)
            line = a.recv_line()
            self.assertTrue(line.startswith(b"SERVER_ERROR "), line)
            f.replies[b"me %s\r\n" % k] = b"ME %s exp=-1 la=1 cas=7 fetch=no cls=1 size=70\r\n" % k
            a.request(b"me %s\r\n" % k, b"ME %s exp=-1 la=1 cas=7 fetch=no cls=1 size=70\r\n" % k)
            f.replies[b"me %s\r\n" % k] = b"EN\r\n"
            a.request(b"me %s\r\n" % k, b"EN\r\n")

    def test_bare_lf_reply_is_refused(self):
        """memcached ends every line with CRLF. `END\\n` to a get was relayed
        as it came (a split get's merged reply too), and clients reading to
        CRLF stalled. Expected: a protocol error, as for any line that is no
        reply of memcached's."""
        f = self.fakes[0]
        k = self.keys[0]
        f.replies[b"get %s\r\n" % k] = b"END\n"
        f.replies[b"mg %s v\r\n" % k] = b"EN\n"
        f.replies[b"mg %s v f c\r\n" % k] = b"EN\n"
        with h.Raw(self.proxy.port()) as c:
            for req in (b"get %s\r\n" % k, b"mg %s v\r\n" % k):
                c.send(req)
                line = c.recv_line()
                self.assertTrue(line.startswith(b"SERVER_ERROR ") and line.endswith(b"\r\n"),
                                (req, line))
        b = BinConn(self.proxy.port())
        self.addCleanup(b.close)
        b.send(packet(OP["GET"], k, opaque=9))
        p = b.read_packet()
        self.assertEqual((p.status, p.opaque), (ETMPFAIL, 9), p)


import test_reload_hostile as rh  # noqa: E402  (its reload helpers; its tests stay there)


class TestBinaryValueAcrossReload(rh.HostileCase):
    """test_reload_hostile F5 for a binary SET: routed when its head is parsed,
    queued once its value is in; a reload in between retires (and frees) the
    server it was routed to. It must route again under the new configuration."""

    def test_set_whose_server_is_removed_before_its_value_arrives(self):
        mc = self.start_memcached(self.tmp, n=2)
        x, y = mc
        both = {"alpha": h.pool([rh.spec(x.addr, "x"), rh.spec(y.addr, "y")],
                                listen="%s:%d" % (h.HOST, h.free_port()))}
        only_y = {"alpha": dict(both["alpha"], servers=[rh.spec(y.addr, "y")])}
        self.px = self.start_proxy(self.tmp, both, workers=1, verbosity=6)
        key = self.key_on(both, "alpha", "x")
        c = BinConn(self.px.port("alpha"))
        self.addCleanup(c.close)
        value = b"0123456789" * 10
        pkt = packet(OP["SET"], key, set_extras(4), value, opaque=9)
        c.send(pkt[:-60])
        time.sleep(0.2)  # the head is read and routed (nothing shows it)
        marker = self.log_size()
        self.reload(pools=only_y)
        self.wait_log(marker, "pool 'alpha': removed server x closed")
        c.send(pkt[-60:])
        p = c.read_packet(timeout=5)
        self.assertTrue(self.px.alive(), "walnut died:\n%s" % self.px.log()[-6000:])
        self.check_sanitizers()
        self.assertEqual((p.op, p.status, p.opaque), (OP["SET"], OK, 9))
        self.assertEqual(y.keys_held([key]), {key}, "the value went to the removed server x")
        self.stop_clean()


@unittest.skipIf(h.UNDER_NUTCRACKER, NC_SKIP)
class TestBinaryWorkers1(BinarySuite, h.SharedProxyCase):
    WORKERS = 1

    def lone_gets(self, px, times):
        """batch_waits while a lone text client sets the class's keys (on
        every server) and gets them all at once, `times` times."""
        before = px.http_json()["batch_waits"]
        h.mc_lone_gets(px.port("fast"), [k for ks in self.keys_on for k in ks], times)
        return px.http_json()["batch_waits"] - before

    def test_batch_wait_who_waits(self):
        """--batch-wait=1000, one worker, binary clients: a client waits from
        when a packet of its is read whole until it is answered (README
        "Batching under load"). Ten with a GET on a silent server and the
        first byte of their next packet wait, so a lone text client's gets
        over three servers wait each time (0 waits when the begun packet
        took one off, 73c93db); ten that sent a SET's head and half its
        value, and five half a GET's head, do not, and it never waits (when
        a packet being read counted, 7c3f8df: it waited)."""
        silent = fakes.MuteBackend()
        px = self.start_with_silent_pool(self.backends, silent, "batch-bin", ["--batch-wait=1000"])
        stuck = [BinConn(px.port("slow"), timeout=30) for _ in range(10)]
        for c in stuck:
            self.addCleanup(c.close)
            c.send(packet(0x00, key=b"stuck") + b"\x80")
        h.wait_until(lambda: len(silent.requests()) == 10, what="the ten GETs at the silent server")
        waits = self.lone_gets(px, 100)
        self.assertGreaterEqual(waits, 100, "ten clients waiting, %d waits" % waits)
        for c in stuck:
            c.reset()  # closed with FIN, each would wait for its GET's answer
        h.wait_until(lambda: px.http_json()["slow"]["client_connections"] == 0,
                     what="the ten gone")
        half = [BinConn(px.port("fast"), timeout=30) for _ in range(15)]
        sets = [packet(0x01, key=b"half%d" % i, extras=set_extras(), value=b"v" * 10)
                for i in range(10)]
        gets = [packet(0x00, key=b"half%d" % i) for i in range(5)]
        for c, pkt in zip(half, sets + gets):
            self.addCleanup(c.close)
            c.send(pkt[:-5] if pkt in sets else pkt[:10])
        time.sleep(0.3)  # read by then; if not, nothing here waits either
        self.assertEqual(self.lone_gets(px, 100), 0)
        for c, pkt in zip(half, sets + gets):
            c.send(pkt[-5:] if pkt in sets else pkt[10:])
        for c in half[:10]:
            self.assertEqual(c.read_packet().status, 0)
        for c in half[10:]:
            self.assertEqual(c.read_packet().op, 0x00)
        px.stop()


@unittest.skipIf(h.UNDER_NUTCRACKER, NC_SKIP)
class TestBinaryWorkers2TwoServersSmallBuffers(BinarySuite, h.SharedProxyCase):
    """Two servers, two workers, 512-byte buffer chunks (-m 512): every packet
    head and value straddles chunk boundaries."""
    WORKERS = 2
    NBACKENDS = 2
    EXTRA_ARGS = ("-m", "512")


if __name__ == "__main__":
    h.main()
