#!/usr/bin/python3
"""Regenerate the redis_* files in test/data/placement/: where twemproxy 0.5.0
puts keys of Redis pools, and how it routes and splits multi-key commands.

Placement (redis_<shape>.yml / .tsv): for each shape this starts real
redis-servers on loopback, writes one nutcracker config with a few `redis: true`
pools (all sharing the same servers), starts the real nutcracker, SETs every
test key through each pool and then asks every backend directly (KEYS *) which
keys it holds. The .tsv has the same format as the memcached tables
(pool<TAB>key_hex<TAB>server_name) and test/unit/test_placement.c checks
walnut's ring against it.

Routing (redis_routing.yml / .json): EVAL, EVALSHA, MGET, DEL, MSET and a few
more sent through nutcracker over three explicitly named redis-servers, with
MONITOR on every backend recording exactly which sub-commands each server got.

Run with Debian's python3 (standard library only):
    /usr/bin/python3 test/tools/gen_placement_redis.py [--out DIR] [--shape NAME ...]
                                                       [--no-routing] [--routing-only]

Only loopback addresses are used; every process started here is stopped by
PID, and every wait is bounded.
"""

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gen_placement as gp  # noqa: E402  (shared: Server, Procs, ports, stats)

DEFAULT_OUT = gp.DEFAULT_OUT
KEY_SEED = 0x4ED15  # fixed: the key set must not change between runs
MBUF_KEY_MAX = 16384 - 48 - 1  # nutcracker -m 16384 (default): keys < mbuf size - 48

# (hash, distribution): the pools of a placement shape (unless SHAPE_POOLS says
# otherwise). The fnv1a_64/ketama pool is written with neither `hash:` nor
# `distribution:`, i.e. twemproxy's defaults.
POOLS = [("fnv1a_64", "ketama"), ("fnv1a_64", "modula"), ("md5", "ketama"),
         ("murmur", "ketama"), ("murmur", "modula"), ("crc16", "ketama"),
         ("crc16", "modula")]


def die(msg):
    raise SystemExit("gen_placement_redis: " + msg)


# ---------------------------------------------------------------------------
# shapes: name -> (description, server factory, hash_tag, key options)

Server = gp.Server


def ephemeral(n, weights=None, names=None):
    return gp.ephemeral(n, weights=weights, names=names)


SHAPES = {
    "redis_two_servers": ("two redis servers, weight 1, pool settings left at their defaults; "
                          "also every single-byte key",
                          lambda: ephemeral(2), None, {"single_bytes": True}),
    "redis_weights_1_2_3": ("three redis servers with weights 1, 2, 3",
                            lambda: ephemeral(3, weights=[1, 2, 3]), None, {}),
    "redis_named": ("five redis servers with explicit names of varied lengths",
                    lambda: ephemeral(5, names=["redis-10", "alpha", "redis-2", "zz", "b"]),
                    None, {}),
    "redis_hash_tag": ("three redis servers, hash_tag \"{}\"",
                       lambda: ephemeral(3), "{}", {"tag_heavy": True}),
    # Many servers tell more per key, so the costly keys go here: every single
    # byte, and (in three pools only, to keep the table small) keys of several KB
    # up to the mbuf limit.
    "redis_servers_25": ("25 redis servers, weight 1: 156 ketama points per server; also "
                         "every single-byte key, and keys up to nutcracker's mbuf limit in "
                         "three pools",
                         lambda: ephemeral(25), None, {"single_bytes": True}),
    # Does the port-11211 naming rule (name = host alone) apply to redis pools?
    "redis_default_port": ("three redis servers on 127.0.0.x:11211 and one on an "
                           "ephemeral port: the port-11211 naming rule in a redis pool",
                           lambda: [Server("127.0.0.2", gp.DEFAULT_PORT, 1),
                                    Server("127.0.0.1", None, 1),
                                    Server("127.0.0.3", gp.DEFAULT_PORT, 1),
                                    Server("127.0.0.4", gp.DEFAULT_PORT, 1)], None, {}),
}
# Every hash x distribution once, over the keys memcached cannot carry.
SHAPES["redis_all_hashes"] = ("four redis servers, every hash with ketama and modula: keys "
                              "with spaces, control bytes and over 250 bytes",
                              lambda: ephemeral(4), None, {})
SHAPE_POOLS = {"redis_all_hashes": [(h, d) for h in gp.HASHES for d in gp.DISTS]}
# Shapes whose pools (by index in POOLS) also get the huge keys.
HUGE_KEY_POOLS = {"redis_servers_25": {0, 2, 4}}  # fnv1a_64_ketama, md5_ketama, murmur_modula
HUGE_KEY_LENS = [4096, 8191, MBUF_KEY_MAX]


# ---------------------------------------------------------------------------
# keys: any bytes (RESP bulk strings are length-prefixed)


def make_keys(single_bytes=False, tag_heavy=False):
    rng = random.Random(KEY_SEED)
    keys, seen = [], set()

    def add(k):
        if isinstance(k, str):
            k = k.encode("utf-8")
        if len(k) > MBUF_KEY_MAX:
            die("internal: key of %d bytes is over nutcracker's limit" % len(k))
        if k not in seen:
            seen.add(k)
            keys.append(k)

    printable = bytes(range(0x20, 0x7F))  # with space
    anybyte = bytes(range(0x00, 0x100))

    # Readable and Redis-specific keys first.
    for k in [b"", b" ", b"  ", b"a", b"foo", b"bar", b"hello", b"hello world", b"user:1000",
              b"key with spaces", b" leading", b"trailing ", b"\r\n", b"\r", b"\n", b"a\r\nb",
              b"a\nb", b"a\rb", b"line1\r\nline2\r\n", b"\t", b"tab\tkey", b"\x00", b"\x00\x00",
              b"nul\x00key", b"\x00lead", b"trail\x00", b"\x7f", b"\x1b[0m",
              b"*1\r\n$3\r\nfoo\r\n", b"$3", b"+OK", b"-ERR", b":1", b"\"quoted\"", b"back\\slash",
              b"SET", b"get", b"PING", b"x" * 250, b"x" * 251, b"\x80", b"\xa0", b"\xc3", b"\xfe",
              b"\xff", b"\xff\x80abc", b"\xe9t\xe9", "café", "ключ", "🔑", "😀 🎉", "𝄞",
              # hash-tag shaped (plain keys unless the pool has hash_tag)
              "{user1000}.following", "{user1000}.followers", "a{b}c", "a{b}d", "b", "{}x",
              "x{y", "y", "}{a}", "{a}{b}", "foo{bar}baz", "foo{}bar", "{", "}", "{}", "}{",
              "{ }", " ", "{\r\n}", "\r\n", "{\x00}", "\x00", "{\xff}", "{a b}1", "{a b}2",
              "a b", "{{a}}", "{a", "{tag} with space", "tag"]:
        add(k)
    # Every single byte as a key (sign-extension of every byte value, \0, CR, LF).
    if single_bytes:
        for b in range(256):
            add(bytes([b]))
    # Printable with spaces.
    for _ in range(30):
        n = rng.choice([rng.randint(1, 16), rng.randint(1, 64)])
        add(bytes(rng.choice(printable) for _ in range(n)))
    # Arbitrary bytes, control bytes included.
    for _ in range(30):
        n = rng.choice([rng.randint(1, 8), rng.randint(1, 48)])
        add(bytes(rng.choice(anybyte) for _ in range(n)))
    # Text with CR / LF / CRLF / NUL spliced in.
    for _ in range(16):
        k = bytearray(rng.choice(printable) for _ in range(rng.randint(2, 30)))
        for _ in range(rng.randint(1, 3)):
            k[rng.randrange(len(k) + 1):0] = rng.choice([b"\r", b"\n", b"\r\n", b"\x00"])
        add(bytes(k))
    # High bytes, not necessarily valid UTF-8.
    high = bytes(range(0x80, 0x100))
    for _ in range(16):
        add(bytes(rng.choice(high) for _ in range(rng.randint(1, 24))))
    # Longer than memcached's 250; around the 3-byte hsieh / 4-byte murmur tails.
    for n in [252, 253, 254, 255, 256, 300, 463, 464, 1024]:
        add(bytes(rng.choice(printable) for _ in range(n)))
    # Random hash-tag shaped keys, some with bytes a memcached key cannot have.
    for _ in range(60 if tag_heavy else 12):
        tag = "".join(rng.choice("abc 01\r\n\x00") for _ in range(rng.randint(0, 4)))
        pre = "".join(rng.choice("kl :}") for _ in range(rng.randint(0, 5)))
        post = "".join(rng.choice("qr :{}") for _ in range(rng.randint(0, 5)))
        add("%s{%s}%s" % (pre, tag, post))
    return keys


def make_huge_keys():
    """Keys of several KB, the last one as long as nutcracker accepts (any bytes)."""
    rng = random.Random(KEY_SEED + 1)
    return [bytes(rng.randrange(256) for _ in range(n)) for n in HUGE_KEY_LENS]


# ---------------------------------------------------------------------------
# RESP over a raw socket


class Closed(Exception):
    pass


def encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode("utf-8")
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class Status(bytes):
    pass


class Error(bytes):
    pass


class Resp:
    def __init__(self, host, port, timeout=10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        self.pos = 0

    def close(self):
        self.sock.close()

    def local_addr(self):
        h, p = self.sock.getsockname()[:2]
        return "%s:%d" % (h, p)

    def send(self, *args):
        self.sock.sendall(encode(args))

    def _fill(self):
        try:
            chunk = self.sock.recv(1 << 20)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            raise Closed()
        self.buf = self.buf[self.pos:] + chunk
        self.pos = 0

    def _line(self):
        while True:
            i = self.buf.find(b"\r\n", self.pos)
            if i >= 0:
                ln, self.pos = self.buf[self.pos:i], i + 2
                return ln
            self._fill()

    def _exact(self, n):
        while len(self.buf) - self.pos < n:
            self._fill()
        d = self.buf[self.pos:self.pos + n]
        self.pos += n
        return d

    def read(self):
        """One reply, and its bytes as they came."""
        raw = []

        def rd():
            ln = self._line()
            raw.append(ln + b"\r\n")
            t, rest = ln[:1], ln[1:]
            if t == b"+":
                return Status(rest)
            if t == b"-":
                return Error(rest)
            if t == b":":
                return int(rest)
            if t == b"$":
                n = int(rest)
                if n < 0:
                    return None
                d = self._exact(n + 2)
                raw.append(d)
                return d[:-2]
            if t == b"*":
                n = int(rest)
                return None if n < 0 else [rd() for _ in range(n)]
            die("bad RESP line %r" % ln[:80])
        v = rd()
        return v, b"".join(raw)

    def call(self, *args):
        self.send(*args)
        return self.read()[0]


def expect(v, want, what):
    if v != want:
        die("%s: got %r, wanted %r" % (what, v, want))


def all_keys(host, port):
    c = Resp(host, port)
    try:
        ks = c.call("KEYS", "*")
    finally:
        c.close()
    if not isinstance(ks, list):
        die("KEYS * on %s:%d answered %r" % (host, port, ks))
    return ks


def flushall(host, port):
    c = Resp(host, port)
    try:
        expect(c.call("FLUSHALL"), b"OK", "FLUSHALL on %s:%d" % (host, port))
    finally:
        c.close()


def set_all(port, keys, batch=64):
    c = Resp("127.0.0.1", port, timeout=30)
    try:
        for i in range(0, len(keys), batch):
            part = keys[i:i + batch]
            c.sock.sendall(b"".join(encode([b"SET", k, b"v"]) for k in part))
            for k in part:
                try:
                    r = c.read()[0]
                except Closed:
                    die("SET %s... (%d bytes) through port %d: connection closed"
                        % (k[:40].hex(), len(k), port))
                if r != b"OK" or not isinstance(r, Status):
                    die("SET %s through port %d answered %r" % (k[:40].hex(), port, r))
    finally:
        c.close()


# ---------------------------------------------------------------------------
# processes


def start_redis(procs, redis, srv, tmp):
    if srv.port is not None:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((srv.host, srv.port))
        except OSError as e:
            die("%s:%d is not free (%s); the port-11211 naming check needs it"
                % (srv.host, srv.port, e))
    for _ in range(5):
        port = srv.port if srv.port is not None else gp.free_port(srv.host)
        log = os.path.join(tmp, "redis-%s-%d.log" % (srv.host, port))
        p = procs.start([redis, "--save", "", "--appendonly", "no", "--port", str(port),
                         "--bind", srv.host, "--daemonize", "no", "--dir", tmp,
                         "--logfile", log, "--databases", "1"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        if gp.wait_listening(srv.host, port, p, "redis-server") and p.poll() is None:
            c = Resp(srv.host, port)
            try:
                expect(c.call("PING"), b"PONG", "PING %s:%d" % (srv.host, port))
            finally:
                c.close()
            srv.port = port
            return
        procs.stop(p)
        if srv.port is not None:
            break
    die("redis-server would not start on %s:%s" % (srv.host, srv.port))


def start_nutcracker(procs, nutcracker, conf, tmp, listen_ports, stats_port):
    nlog = os.path.join(tmp, "nutcracker.log")
    nc = procs.start([nutcracker, "-c", conf, "-s", str(stats_port), "-a", "127.0.0.1",
                      "-o", nlog, "-p", os.path.join(tmp, "nutcracker.pid"), "-v", "5"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    for p in listen_ports:
        if not gp.wait_listening("127.0.0.1", p, nc, "nutcracker"):
            with open(nlog, errors="replace") as f:
                die("nutcracker exited (%s); log:\n%s" % (nc.returncode, f.read()[-4000:]))
    gp.wait_listening("127.0.0.1", stats_port, nc, "nutcracker stats")
    return nc


def check_names(stats_port, pool_names, names, what):
    """nutcracker's stats are keyed by server name: cross-check our naming rule."""
    stats = gp.nutcracker_stats(stats_port)
    for pn in pool_names:
        got = sorted(k for k, v in stats.get(pn, {}).items() if isinstance(v, dict))
        if got != sorted(names):
            die("%s: pool %s: nutcracker names servers %r, we expected %r"
                % (what, pn, got, sorted(names)))


def pick_ports(n, avoid):
    ports = []
    for _ in range(n):
        for _ in range(100):
            p = gp.free_port()
            if p not in ports and p not in avoid:
                break
        ports.append(p)
    return ports


def dump_nc_log(tmp, what):
    nlog = os.path.join(tmp, "nutcracker.log")
    if os.path.exists(nlog):
        with open(nlog, errors="replace") as f:
            print("gen_placement_redis: %s failed; nutcracker log tail:\n%s"
                  % (what, f.read()[-3000:]), file=sys.stderr)


# ---------------------------------------------------------------------------
# placement


def pool_name(h, d):
    return "%s_%s" % (h, d)


def write_config(path, shape, desc, servers, tag, listen_ports, pools):
    lines = ["# walnut placement shape '%s': %s." % (shape, desc),
             "# Generated by test/tools/gen_placement_redis.py and run by nutcracker 0.5.0;",
             "# %s.tsv records where nutcracker put each key. Do not edit by hand." % shape, ""]
    for i, (h, d) in enumerate(pools):
        defaults = (h, d) == ("fnv1a_64", "ketama")
        lines.append("%s:" % pool_name(h, d))
        lines.append("  listen: 127.0.0.1:%d" % listen_ports[i])
        lines.append("  redis: true")
        if defaults:
            lines.append("  # hash and distribution left out: the defaults, %s and %s" % (h, d))
        else:
            lines.append("  hash: %s" % h)
            lines.append("  distribution: %s" % d)
        if tag:
            lines.append("  hash_tag: \"%s\"" % tag)
        if not defaults:
            lines.append("  auto_eject_hosts: false")
            lines.append("  timeout: 5000")
        lines.append("  servers:")
        for s in servers:
            lines.append("   - %s" % s.spec())
        lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))


def run_shape(shape, out_dir, nutcracker, redis):
    desc, factory, tag, kopts = SHAPES[shape]
    servers = factory()
    pools = SHAPE_POOLS.get(shape, POOLS)
    base_keys = make_keys(**kopts)
    huge_pools = HUGE_KEY_POOLS.get(shape, set())
    huge_keys = make_huge_keys() if huge_pools else []
    tmp = tempfile.mkdtemp(prefix="walnut-rplace-%s-" % shape)
    procs = gp.Procs()
    ok = False
    try:
        for s in servers:
            start_redis(procs, redis, s, tmp)
        names = [s.twemproxy_name() for s in servers]
        if len(set(names)) != len(names):
            die("%s: duplicate server names %r" % (shape, names))
        by_addr = {(s.host, s.port): s.twemproxy_name() for s in servers}

        listen = pick_ports(len(pools), {s.port for s in servers})
        stats_port = pick_ports(1, set(listen) | {s.port for s in servers})[0]
        conf = os.path.join(tmp, "nutcracker.yml")
        write_config(conf, shape, desc, servers, tag, listen, pools)
        nc = start_nutcracker(procs, nutcracker, conf, tmp, listen, stats_port)
        check_names(stats_port, [pool_name(h, d) for h, d in pools], names, shape)

        rows = []
        for i, (h, d) in enumerate(pools):
            pn = pool_name(h, d)
            keys = base_keys + (huge_keys if i in huge_pools else [])
            for s in servers:
                flushall(s.host, s.port)
            set_all(listen[i], keys)
            where = {}
            for s in servers:
                for k in all_keys(s.host, s.port):
                    where.setdefault(k, []).append(by_addr[(s.host, s.port)])
            extra = set(where) - set(keys)
            if extra:
                die("%s: pool %s: backends hold keys never set: %r"
                    % (shape, pn, [k[:40] for k in extra][:5]))
            for k in keys:
                w = where.get(k, [])
                if len(w) != 1:
                    die("%s: pool %s: key %s found on %d backends %r"
                        % (shape, pn, k[:40].hex(), len(w), w))
                rows.append((pn, k, w[0]))
            if tag:
                span_srv = {}
                for (_, k, srv) in rows[-len(keys):]:
                    sp = gp.effective_tag_span(k, tag)
                    if span_srv.setdefault(sp, srv) != srv:
                        die("%s: pool %s: hash span %s on two servers" % (shape, pn, sp.hex()))
        if nc.poll() is not None:
            die("nutcracker died during the run")

        os.makedirs(out_dir, exist_ok=True)
        shutil.copyfile(conf, os.path.join(out_dir, shape + ".yml"))
        with open(os.path.join(out_dir, shape + ".tsv"), "w") as f:
            for pn, k, srv in rows:
                f.write("%s\t%s\t%s\n" % (pn, k.hex(), srv))
        ok = True
        return len(rows), len(base_keys), len(servers), len(pools)
    finally:
        procs.stop_all()
        if not ok:
            dump_nc_log(tmp, shape)
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------
# routing of multi-key and script commands, observed with MONITOR

ROUTING_NAMES = ["r1", "r2", "r3"]  # explicit names: placement does not depend on ports
ROUTING_POOLS = [("routing", None), ("routing_tag", "{}")]
SCRIPT = "return {KEYS[1], #KEYS, #ARGV}"


def unrepr(s):
    """Undo Redis's sdscatrepr (MONITOR's argument quoting)."""
    out, i = bytearray(), 0
    while i < len(s):
        c = s[i]
        if c == 0x5C and i + 1 < len(s):  # backslash
            n = s[i + 1]
            simple = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("a"): 7, ord("b"): 8,
                      ord("\\"): 0x5C, ord('"'): 0x22}
            if n in simple:
                out.append(simple[n])
                i += 2
                continue
            if n == ord("x"):
                out.append(int(s[i + 2:i + 4], 16))
                i += 4
                continue
        out.append(c)
        i += 1
    return bytes(out)


def parse_monitor(line):
    """'+1700000000.123 [0 127.0.0.1:5555] "mget" "a"' -> ('127.0.0.1:5555', [b'mget', b'a'])."""
    if not line.startswith(b"+"):
        die("unexpected MONITOR line %r" % line[:100])
    lb, rb = line.index(b"["), line.index(b"]")
    who = line[lb + 1:rb].split(b" ", 1)[1].decode()
    rest, args, i = line[rb + 1:], [], 0
    while i < len(rest):
        if rest[i] == 0x20:
            i += 1
            continue
        if rest[i] != 0x22:
            die("unexpected MONITOR argument in %r" % line[:100])
        j = i + 1
        while rest[j] != 0x22:
            j += 2 if rest[j] == 0x5C else 1
        args.append(unrepr(rest[i + 1:j]))
        i = j + 1
    return who, args


def text(b):
    """An argument for the JSON: routing keys are chosen ASCII so it stays readable."""
    return b if isinstance(b, str) else b.decode("ascii")


class Monitors:
    """A MONITOR connection per backend, plus a control connection to mark ends."""

    def __init__(self, servers):
        self.servers = servers
        self.mon, self.ctl, self.mine, self.seq = {}, {}, set(), 0
        for s in servers:
            m = Resp(s.host, s.port)
            expect(m.call("MONITOR"), b"OK", "MONITOR")
            c = Resp(s.host, s.port)
            self.mon[s.name], self.ctl[s.name] = m, c
            self.mine.add(c.local_addr())
        self.drain()

    def drain(self):
        """Every command each backend ran since the last drain, from others than us."""
        self.seq += 1
        mark = b"walnut-mark-%d" % self.seq
        got = {}
        for s in self.servers:
            expect(self.ctl[s.name].call("ECHO", mark), mark, "ECHO")
        for s in self.servers:
            cmds = []
            while True:
                ln = self.mon[s.name]._line()
                who, args = parse_monitor(ln)
                if who in self.mine:
                    if args == [b"ECHO", mark]:
                        break
                    continue
                if who == "lua":
                    continue
                cmds.append(args)
            got[s.name] = cmds
        return got

    def direct(self, name, *args):
        return self.ctl[name].call(*args)

    def close(self):
        for c in list(self.mon.values()) + list(self.ctl.values()):
            c.close()


def run_routing(out_dir, nutcracker, redis):
    servers = ephemeral(len(ROUTING_NAMES), names=ROUTING_NAMES)
    tmp = tempfile.mkdtemp(prefix="walnut-rrouting-")
    procs = gp.Procs()
    ok = False
    mons = None
    try:
        for s in servers:
            start_redis(procs, redis, s, tmp)
        listen = pick_ports(len(ROUTING_POOLS), {s.port for s in servers})
        stats_port = pick_ports(1, set(listen) | {s.port for s in servers})[0]
        conf = os.path.join(tmp, "nutcracker.yml")
        lines = ["# walnut routing check: how nutcracker 0.5.0 routes and splits Redis",
                 "# multi-key and script commands. Generated by",
                 "# test/tools/gen_placement_redis.py; redis_routing.json has the results.",
                 "# The servers carry explicit names, so placement does not depend on the",
                 "# ports: a test may run this pool on any ports as long as it keeps the names.",
                 ""]
        for (pn, tag), lp in zip(ROUTING_POOLS, listen):
            lines += ["%s:" % pn, "  listen: 127.0.0.1:%d" % lp, "  redis: true"]
            if tag:
                lines.append("  hash_tag: \"%s\"" % tag)
            lines.append("  servers:")
            lines += ["   - %s" % s.spec() for s in servers]
            lines.append("")
        with open(conf, "w") as f:
            f.write("\n".join(lines))
        nc = start_nutcracker(procs, nutcracker, conf, tmp, listen, stats_port)
        check_names(stats_port, [p for p, _ in ROUTING_POOLS], ROUTING_NAMES, "routing")
        port_of = dict(zip([p for p, _ in ROUTING_POOLS], listen))

        # Where keys land in each pool (measured like the placement tables).
        def placement(pn, cand):
            for s in servers:
                flushall(s.host, s.port)
            set_all(port_of[pn], cand)
            where = {}
            for s in servers:
                for k in all_keys(s.host, s.port):
                    where[k] = s.name
            for s in servers:
                flushall(s.host, s.port)
            return where

        # Readable keys with well spread hashes (key:0..key:N cluster under fnv1a).
        cand = [w.encode() for w in (
            "alfa bravo charlie delta echo foxtrot golf hotel india juliett kilo lima mike "
            "november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee "
            "zulu foo bar baz hello world apple banana cherry").split()] + [b""]
        where = placement("routing", cand)
        per = {n: [k for k in cand if k and where[k] == n] for n in ROUTING_NAMES}
        for n in ROUTING_NAMES:
            if len(per[n]) < 3:
                die("routing: fewer than 3 of the candidate keys on %s: %r" % (n, {m: len(v) for m, v in per.items()}))
        A, B, C = (per[n][:3] for n in ROUTING_NAMES)  # keys on r1, r2, r3
        # Tagged keys: two per tag, for tags spread over the servers.
        tags = [w for w in cand if w][:12]
        tcand = [b"{%s}.%s" % (t, x) for t in tags for x in (b"a", b"b")]
        tcand += [b"{}x", b"x{y", b"}{%s}" % tags[0]]
        twhere = placement("routing_tag", tcand)
        tag_home = {}
        for t in tags:
            tag_home.setdefault(twhere[b"{%s}.a" % t], t)
        if len(tag_home) < 2:
            die("routing: all tags on one server")
        used_keys = sorted(set(A + B + C + [b""]))
        where_json = {"routing": {text(k): where[k] for k in used_keys},
                      "routing_tag": {text(k): twhere[k] for k in tcand}}

        # The script's SHA, loaded on every backend directly (SCRIPT is not proxied).
        sha = None
        for s in servers:
            c = Resp(s.host, s.port)
            try:
                h = c.call("SCRIPT", "LOAD", SCRIPT)
            finally:
                c.close()
            if sha not in (None, h):
                die("SCRIPT LOAD gave different SHAs")
            sha = h
        sha = sha.decode()
        t1, t2 = list(tag_home.values())[:2]  # two tags on different servers
        tA = [b"{%s}.a" % t1, b"{%s}.b" % t1]
        tB = [b"{%s}.a" % t2, b"{%s}.b" % t2]

        a1, a2, a3 = A
        b1, b2, b3 = B
        c1, c2, c3 = C
        S = SCRIPT
        cases = [
            # (pool, note, args)
            ("routing", "EVAL, one key", ["EVAL", S, "1", a1]),
            ("routing", "EVAL, two keys on different servers: routed by the first key",
             ["EVAL", S, "2", a1, b1]),
            ("routing", "EVAL, the same keys the other way round", ["EVAL", S, "2", b1, a1]),
            ("routing", "EVAL, three keys on three servers", ["EVAL", S, "3", c1, a1, b1]),
            ("routing", "EVAL, one key and an ARGV that would hash elsewhere",
             ["EVAL", S, "1", a1, b1]),
            ("routing", "EVAL, lower case", ["eval", S, "2", b1, c1]),
            ("routing", "EVAL, numkeys with a leading zero", ["EVAL", S, "01", c1]),
            ("routing", "EVAL, the empty key", ["EVAL", S, "1", ""]),
            ("routing", "EVAL, numkeys larger than the keys given: forwarded, the server "
             "refuses", ["EVAL", S, "3", b1]),
            ("routing", "EVAL, numkeys 0", ["EVAL", S, "0"]),
            ("routing", "EVAL, numkeys 0 with an ARGV", ["EVAL", S, "0", a1]),
            ("routing", "EVAL, numkeys negative", ["EVAL", S, "-1", a1]),
            ("routing", "EVAL, numkeys not a number", ["EVAL", S, "x", a1]),
            ("routing", "EVAL, no numkeys", ["EVAL", S]),
            ("routing", "EVALSHA, one key", ["EVALSHA", sha, "1", b1]),
            ("routing", "EVALSHA, two keys on different servers", ["EVALSHA", sha, "2", c1, a1]),
            ("routing", "EVALSHA, unknown SHA: the first key's server answers NOSCRIPT",
             ["EVALSHA", "0" * 40, "2", a1, c1]),
            ("routing", "EVALSHA, numkeys 0", ["EVALSHA", sha, "0"]),
            ("routing", "MGET, keys on three servers", ["MGET", a1, b1, c1, a2, b2, c2]),
            ("routing", "MGET, interleaved, with a key that does not exist",
             ["MGET", c1, a1, "missing:" + text(a3), b2, a2]),
            ("routing", "MGET, a key twice", ["MGET", a1, b1, a1]),
            ("routing", "MGET, every key on one server", ["MGET", a1, a2, a3]),
            ("routing", "MGET, one key", ["MGET", b1]),
            ("routing", "MGET, lower case", ["mget", a1, b1]),
            ("routing", "MGET, the empty key among others", ["MGET", "", a1, b1, c1]),
            ("routing", "DEL, keys on three servers", ["DEL", a1, b1, c1, a2, b2]),
            ("routing", "DEL, a key twice and a missing key",
             ["DEL", a1, a1, "missing:" + text(b3), b1]),
            ("routing", "DEL, one key", ["DEL", c1]),
            ("routing", "MSET, pairs on three servers",
             ["MSET", a1, "n1", b1, "n2", c1, "n3", a2, "n4"]),
            ("routing", "MSET, one pair", ["MSET", b1, "n1"]),
            ("routing", "MSET, a key twice", ["MSET", a1, "n1", b1, "n2", a1, "n3"]),
            ("routing", "MSET, odd number of arguments", ["MSET", a1, "n1", b1]),
            ("routing", "UNLINK, keys on three servers", ["UNLINK", a1, b1, c1]),
            ("routing", "TOUCH, keys on three servers", ["TOUCH", a1, b1, c1]),
            ("routing", "EXISTS is not split: all to the first key's server",
             ["EXISTS", b1, a1, c1]),
            ("routing", "SUNION: all to the first key's server", ["SUNION", c1, a1]),
            ("routing", "RPOPLPUSH: to the source key's server", ["RPOPLPUSH", b1, a1]),
            ("routing", "SINTERSTORE: to the destination key's server",
             ["SINTERSTORE", c1, a1, b1]),
            ("routing", "MSETNX is not supported", ["MSETNX", a1, "n1", b1, "n2"]),
            ("routing_tag", "hash_tag pool: MGET split by tag", ["MGET"] + tA + tB),
            ("routing_tag", "hash_tag pool: MGET, keys without a usable tag",
             ["MGET", tA[0], "{}x", "x{y", b"}{%s}" % t1]),
            ("routing_tag", "hash_tag pool: EVAL with one tag", ["EVAL", S, "2"] + tA),
            ("routing_tag", "hash_tag pool: EVAL with two tags: routed by the first key",
             ["EVAL", S, "2", tB[0], tA[0]]),
            ("routing_tag", "hash_tag pool: MSET split by tag",
             ["MSET", tA[0], "n1", tB[0], "n2", tA[1], "n3"]),
        ]

        mons = Monitors(servers)
        results = []
        for pn, note, args in cases:
            # Every used key on every backend, its value the backend's name: an
            # MGET reply then tells which server answered for each key.
            for s in servers:
                expect(mons.direct(s.name, "FLUSHALL"), b"OK", "FLUSHALL")
                allk = used_keys + tcand
                expect(mons.direct(s.name, "MSET", *[x for k in allk for x in (k, s.name)]),
                       b"OK", "MSET direct")
            mons.drain()
            c = Resp("127.0.0.1", port_of[pn], timeout=5)
            try:
                c.send(*args)
                try:
                    _, raw = c.read()
                    reply = raw.decode("ascii")
                except Closed:
                    reply = None
                except socket.timeout:
                    reply = "(no reply within 5s)"
                closed_after = False
                if reply is not None and not reply.startswith("(no reply"):
                    # A PING (answered by the proxy itself) shows the connection is still open.
                    try:
                        c.send("PING")
                        closed_after = c.read()[0] != b"PONG"
                    except Closed:
                        closed_after = True
            finally:
                c.close()
            got = mons.drain()
            results.append({
                "pool": pn,
                "note": note,
                "request": [text(a) for a in args],
                "reply": reply,  # the bytes nutcracker answered, or null: closed, no reply
                "connection_closed": reply is None or closed_after,
                "servers": {n: [[text(a) for a in cmd] for cmd in cmds]
                            for n, cmds in got.items() if cmds},
            })
        if nc.poll() is not None:
            die("nutcracker died during the routing run")

        doc = {
            "about": "How nutcracker 0.5.0 routes Redis script and multi-key commands. "
                     "Measured by test/tools/gen_placement_redis.py with MONITOR on every "
                     "backend: 'servers' lists, per server name, each command that server "
                     "received for the request (as the server saw it), 'reply' is what "
                     "nutcracker answered (raw RESP; null when it closed the connection "
                     "without a reply). Before each request every key in 'placement' was "
                     "set directly on every backend to that backend's name, so an MGET reply "
                     "shows which server answered for each key.",
            "config": "redis_routing.yml",
            "script": SCRIPT,
            "script_sha1": sha,
            "placement": where_json,
            "cases": results,
        }
        os.makedirs(out_dir, exist_ok=True)
        shutil.copyfile(conf, os.path.join(out_dir, "redis_routing.yml"))
        with open(os.path.join(out_dir, "redis_routing.json"), "w") as f:
            json.dump(doc, f, indent=1, ensure_ascii=True)
            f.write("\n")
        ok = True
        return len(results)
    finally:
        if mons is not None:
            mons.close()
        procs.stop_all()
        if not ok:
            dump_nc_log(tmp, "routing")
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=DEFAULT_OUT, help="output directory (%(default)s)")
    ap.add_argument("--shape", action="append", choices=sorted(SHAPES),
                    help="only this placement shape (repeatable); default all")
    ap.add_argument("--no-routing", action="store_true", help="skip redis_routing.*")
    ap.add_argument("--routing-only", action="store_true", help="only redis_routing.*")
    args = ap.parse_args()
    nutcracker, redis = gp.find_binary("nutcracker"), gp.find_binary("redis-server")
    v = subprocess.run([nutcracker, "-V"], capture_output=True, text=True, timeout=10)
    if "0.5.0" not in v.stdout + v.stderr:
        die("%s is not nutcracker 0.5.0: %r" % (nutcracker, (v.stdout + v.stderr).strip()))
    t0 = time.monotonic()
    if not args.routing_only:
        for shape in args.shape or list(SHAPES):
            t = time.monotonic()
            nrows, nkeys, nserv, npools = run_shape(shape, args.out, nutcracker, redis)
            print("%-20s %2d servers %3d keys x %2d pools = %5d rows  (%.1fs)"
                  % (shape, nserv, nkeys, npools, nrows, time.monotonic() - t))
    if not args.no_routing and not args.shape:
        t = time.monotonic()
        n = run_routing(args.out, nutcracker, redis)
        print("%-20s %d cases  (%.1fs)" % ("redis_routing", n, time.monotonic() - t))
    print("total %.1fs" % (time.monotonic() - t0))


if __name__ == "__main__":
    main()
