#!/usr/bin/python3
"""Regenerate test/data/placement/: where twemproxy 0.5.0 really puts keys.

For each pool shape this starts real memcached backends on loopback, writes
one nutcracker config with a pool per (hash x distribution) combination (all
sharing the same servers), starts the real nutcracker, sets every test key
through each pool and then asks every backend directly which keys it holds.
The result is <shape>.yml (the exact config nutcracker ran) and <shape>.tsv
(pool<TAB>key_hex<TAB>server_name), which test/unit/test_placement.c checks
walnut's ring against.

Run with Debian's python3 (it needs nothing beyond the standard library):
    /usr/bin/python3 test/tools/gen_placement.py [--out DIR] [--shape NAME ...]

Only loopback addresses are used; every process started here is stopped by
PID, and every wait is bounded.
"""

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HASHES = ["one_at_a_time", "md5", "crc16", "crc32", "crc32a", "fnv1_64", "fnv1a_64",
          "fnv1_32", "fnv1a_32", "hsieh", "murmur", "jenkins"]
DISTS = ["ketama", "modula"]  # random has no placement to record
DEFAULT_PORT = 11211          # twemproxy names such a server by its host alone
KEY_SEED = 0x7A1A9  # fixed: the key set must not change between runs
MAX_KEY_LEN = 250   # memcached's and twemproxy's limit

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.normpath(os.path.join(HERE, "..", "data", "placement"))


def die(msg):
    raise SystemExit("gen_placement: " + msg)


def find_binary(name):
    for d in os.environ.get("PATH", "").split(os.pathsep) + ["/usr/sbin", "/usr/bin"]:
        p = os.path.join(d, name)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    die("cannot find %s on PATH or in /usr/sbin, /usr/bin" % name)


def free_port(host="127.0.0.1"):
    """An ephemeral port on host, found by binding port 0."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_listening(host, port, proc, what, deadline_s=10.0):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.02)
    die("%s did not start listening on %s:%d within %.0fs" % (what, host, port, deadline_s))


# ---------------------------------------------------------------------------
# shapes


class Server:
    def __init__(self, host, port, weight, name=None):
        self.host, self.port, self.weight, self.name = host, port, weight, name

    def spec(self):
        s = "%s:%d:%d" % (self.host, self.port, self.weight)
        return s + " " + self.name if self.name else s

    def twemproxy_name(self):
        """conf_add_server: explicit name; else host alone for port 11211; else host:port."""
        if self.name:
            return self.name
        if self.port == DEFAULT_PORT:
            return self.host
        return "%s:%d" % (self.host, self.port)


def ephemeral(n, weights=None, names=None):
    """Servers on 127.0.0.1 with ports chosen when started (port None)."""
    return [Server("127.0.0.1", None, weights[i] if weights else 1, names[i] if names else None)
            for i in range(n)]


# name -> (description, server list factory, hash_tag or None)
SHAPES = {
    "two_servers": ("two servers, weight 1 each (the classic demo)",
                    lambda: ephemeral(2), None),
    "weights_1_2_3": ("three servers with weights 1, 2, 3 (80/160/240 ketama points)",
                      lambda: ephemeral(3, weights=[1, 2, 3]), None),
    "servers_25": ("25 servers, weight 1: float points per server is 156, not 160",
                   lambda: ephemeral(25), None),
    "servers_47": ("47 servers, weight 1: the next size where points per server is 156",
                   lambda: ephemeral(47), None),
    # Names of different lengths: twemproxy sorts servers by name length, then
    # bytes, so this order (b, zz, alpha, server2, server10) differs from both
    # the file order and plain strcmp order, which matters for modula.
    "named": ("five servers with explicit names of varied lengths",
              lambda: ephemeral(5, names=["server10", "alpha", "server2", "zz", "b"]), None),
    # Port 11211 on distinct loopback addresses: named by host alone. One more
    # server on an ephemeral port is named host:port, and sorts after them.
    "default_port": ("three servers on 127.0.0.x:11211 (named by host) and one on an "
                     "ephemeral port",
                     lambda: [Server("127.0.0.2", DEFAULT_PORT, 1),
                              Server("127.0.0.1", None, 1),
                              Server("127.0.0.3", DEFAULT_PORT, 1),
                              Server("127.0.0.4", DEFAULT_PORT, 1)], None),
    "hash_tag": ("three servers, hash_tag \"{}\"", lambda: ephemeral(3), "{}"),
}


# ---------------------------------------------------------------------------
# keys


def valid_key(k):
    # memcached's ASCII protocol splits on space and ends lines at LF;
    # twemproxy's parser ends a key at space or CR. Keep clear of all control bytes.
    return 1 <= len(k) <= MAX_KEY_LEN and all(b > 0x20 and b != 0x7F for b in k)


def make_keys(tag_heavy):
    """About 300 deterministic keys: ASCII of lengths 1..250, UTF-8, high bytes, hash tags."""
    rng = random.Random(KEY_SEED)
    keys, seen = [], set()

    def add(k):
        if isinstance(k, str):
            k = k.encode("utf-8")
        if not valid_key(k):
            die("internal: invalid key %r" % k)
        if k not in seen:
            seen.add(k)
            keys.append(k)

    printable = bytes(range(0x21, 0x7F))
    alnum = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_:-."

    # Fixed, readable keys first.
    for k in ["a", "b", "z", "0", "1", "foo", "bar", "key", "hello", "user:1", "user:1000",
              "session:abcdef", "x" * 250, "0" * 250, "~", "!", "{", "}", "{}", "}{"]:
        add(k)
    # ASCII, every length 1..16, then random lengths up to 250 (and the edges).
    for n in range(1, 17):
        add(bytes(rng.choice(alnum) for _ in range(n)))
    for n in [31, 32, 33, 63, 64, 65, 127, 128, 129, 200, 248, 249, 250]:
        add(bytes(rng.choice(printable) for _ in range(n)))
    for _ in range(100):
        n = rng.choice([rng.randint(1, 24), rng.randint(1, 64), rng.randint(1, 250)])
        add(bytes(rng.choice(printable) for _ in range(n)))
    # UTF-8.
    words = ["ключ", "キー", "钥匙", "clé", "schlüssel", "κλειδί", "מפתח", "مفتاح", "🔑",
             "😀🎉", "naïve", "Ångström", "ß", "€", "𝄞"]
    for w in words:
        add(w)
    for i in range(40):
        w = rng.choice(words)
        add("%s:%d:%s" % (w, rng.randint(0, 99999), rng.choice(words)))
    # High bytes, not necessarily valid UTF-8.
    high = bytes(range(0x80, 0x100))
    for b in [0x80, 0xA0, 0xC3, 0xFE, 0xFF]:
        add(bytes([b]))
    for _ in range(45):
        n = rng.randint(1, 250)
        k = bytearray(rng.choice(high if rng.random() < 0.5 else printable) for _ in range(n))
        k[rng.randrange(n)] = rng.choice(high)
        add(bytes(k))
    # Hash-tag shaped keys (plain keys in pools without hash_tag).
    for k in ["user{42}:name", "user{42}:email", "{42}", "{}x", "x{}", "a{b", "a}b", "{ab}c{d}",
              "{ab}", "ab", "{{ab}}", "{a}{b}", "a{}b{c}", "}a{b}", "{}", "{}{}", "{x", "x}",
              "pre{tag}post", "tag", "{tag}", "{ключ}:1", "{ключ}:2", "{\xff}z"]:
        add(k)
    ntag = 80 if tag_heavy else 20
    for _ in range(ntag):
        tag = "".join(rng.choice("abcdefghij0123456789") for _ in range(rng.randint(0, 6)))
        pre = "".join(rng.choice("klmnop:") for _ in range(rng.randint(0, 8)))
        post = "".join(rng.choice("qrstuv:{}") for _ in range(rng.randint(0, 8)))
        add("%s{%s}%s" % (pre, tag, post))
    return keys


def effective_tag_span(key, tag):
    """twemproxy's server_pool_idx: the bytes hashed when hash_tag is set."""
    if not tag:
        return key
    o, c = tag.encode()[0], tag.encode()[1]
    s = key.find(bytes([o]))
    if s < 0:
        return key
    e = key.find(bytes([c]), s + 1)
    if e < 0 or e - s <= 1:
        return key
    return key[s + 1:e]


# ---------------------------------------------------------------------------
# memcached text protocol over a raw socket (keys are arbitrary bytes)


class Conn:
    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=10)
        self.buf = b""

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            die("connection closed by peer")
        self.buf += chunk

    def line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                ln, self.buf = self.buf[:i], self.buf[i + 2:]
                return ln
            self._fill()

    def exact(self, n):
        while len(self.buf) < n:
            self._fill()
        d, self.buf = self.buf[:n], self.buf[n:]
        return d


def flush(host, port):
    c = Conn(host, port)
    try:
        c.send(b"flush_all\r\n")
        r = c.line()
        if r != b"OK":
            die("flush_all on %s:%d answered %r" % (host, port, r))
    finally:
        c.close()


def set_all(port, keys, batch=64):
    c = Conn("127.0.0.1", port)
    try:
        for i in range(0, len(keys), batch):
            part = keys[i:i + batch]
            c.send(b"".join(b"set " + k + b" 0 0 1\r\nv\r\n" for k in part))
            for k in part:
                r = c.line()
                if r != b"STORED":
                    die("set %s through port %d answered %r" % (k.hex(), port, r))
    finally:
        c.close()


def held_keys(host, port, keys, max_line=1024):
    """The subset of keys that the backend holds (pipelined multi-gets)."""
    chunks, cur, cur_len = [], [], 0
    for k in keys:
        if cur and cur_len + len(k) + 1 > max_line:
            chunks.append(cur)
            cur, cur_len = [], 0
        cur.append(k)
        cur_len += len(k) + 1
    if cur:
        chunks.append(cur)
    found = set()
    c = Conn(host, port)
    try:
        c.send(b"".join(b"get " + b" ".join(ch) + b"\r\n" for ch in chunks))
        for _ in chunks:
            while True:
                ln = c.line()
                if ln == b"END":
                    break
                parts = ln.split(b" ")
                if len(parts) != 4 or parts[0] != b"VALUE":
                    die("unexpected reply from %s:%d: %r" % (host, port, ln[:80]))
                c.exact(int(parts[3]) + 2)
                found.add(parts[1])
    finally:
        c.close()
    return found


# ---------------------------------------------------------------------------
# processes


class Procs:
    def __init__(self):
        self.procs = []

    def start(self, argv, **kw):
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, **kw)
        self.procs.append(p)
        return p

    def stop(self, p):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)  # by PID, via the Popen object
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self):
        # Signal every process first, then wait: memcached can take most of a
        # second to exit, and 47 of them one after another add up.
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in list(reversed(self.procs)):
            self.stop(p)


def start_memcached(procs, memcached, srv, tmp):
    user = ["-u", "root"] if os.geteuid() == 0 else []
    if srv.port is not None:
        # A fixed port someone else listens on would pass the readiness check
        # below with the wrong memcached behind it: refuse up front.
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((srv.host, srv.port))
        except OSError as e:
            die("%s:%d is not free (%s); the '%s' naming rule needs it"
                % (srv.host, srv.port, e, "host alone for port 11211"))
    for attempt in range(5):
        port = srv.port if srv.port is not None else free_port(srv.host)
        log = open(os.path.join(tmp, "memcached-%s-%d.log" % (srv.host, port)), "wb")
        p = procs.start([memcached, "-l", srv.host, "-p", str(port), "-U", "0", "-m", "16",
                         "-t", "1", "-c", "64"] + user, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        if wait_listening(srv.host, port, p, "memcached") and p.poll() is None:
            srv.port = port
            return
        procs.stop(p)
        if srv.port is not None:
            break  # a fixed port (11211) that is taken: retrying will not help
    with open(log.name, errors="replace") as f:
        die("memcached would not start on %s:%s: %s" % (srv.host, srv.port, f.read()[-500:]))


def nutcracker_stats(port):
    data = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        for _ in range(10000):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


# ---------------------------------------------------------------------------


def pool_name(h, d):
    return "%s_%s" % (h, d)


def write_config(path, shape, desc, servers, tag, listen_ports):
    lines = ["# walnut placement shape '%s': %s." % (shape, desc),
             "# Generated by test/tools/gen_placement.py and run by nutcracker 0.5.0;",
             "# <shape>.tsv records where nutcracker put each key. Do not edit by hand.", ""]
    for h in HASHES:
        for d in DISTS:
            lines.append("%s:" % pool_name(h, d))
            lines.append("  listen: 127.0.0.1:%d" % listen_ports[(h, d)])
            lines.append("  hash: %s" % h)
            if tag:
                lines.append("  hash_tag: \"%s\"" % tag)
            lines.append("  distribution: %s" % d)
            lines.append("  auto_eject_hosts: false")
            lines.append("  timeout: 5000")
            lines.append("  servers:")
            for s in servers:
                lines.append("   - %s" % s.spec())
            lines.append("")
    with open(path, "w") as f:
        f.write("\n".join(lines))


def run_shape(shape, out_dir, nutcracker, memcached):
    desc, factory, tag = SHAPES[shape]
    servers = factory()
    keys = make_keys(tag_heavy=tag is not None)
    tmp = tempfile.mkdtemp(prefix="walnut-placement-%s-" % shape)
    procs = Procs()
    ok = False
    try:
        for s in servers:
            start_memcached(procs, memcached, s, tmp)
        names = [s.twemproxy_name() for s in servers]
        if len(set(names)) != len(names):
            die("%s: duplicate server names %r" % (shape, names))
        by_addr = {(s.host, s.port): s.twemproxy_name() for s in servers}

        listen_ports, used = {}, set()
        for h in HASHES:
            for d in DISTS:
                for _ in range(100):
                    p = free_port()
                    if p not in used and p not in {s.port for s in servers}:
                        break
                used.add(p)
                listen_ports[(h, d)] = p
        stats_port = free_port()
        conf = os.path.join(tmp, "nutcracker.yml")
        write_config(conf, shape, desc, servers, tag, listen_ports)

        nlog = os.path.join(tmp, "nutcracker.log")
        nc = procs.start([nutcracker, "-c", conf, "-s", str(stats_port), "-a", "127.0.0.1",
                          "-o", nlog, "-p", os.path.join(tmp, "nutcracker.pid"), "-v", "5"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        for (h, d), p in listen_ports.items():
            if not wait_listening("127.0.0.1", p, nc, "nutcracker"):
                with open(nlog, errors="replace") as f:
                    die("nutcracker exited (%s); log:\n%s" % (nc.returncode, f.read()[-4000:]))
        wait_listening("127.0.0.1", stats_port, nc, "nutcracker stats")

        # Cross-check our naming rule against nutcracker's own: its stats are
        # keyed by server name.
        stats = nutcracker_stats(stats_port)
        for h in HASHES:
            for d in DISTS:
                pn = pool_name(h, d)
                got = sorted(k for k, v in stats.get(pn, {}).items() if isinstance(v, dict))
                if got != sorted(names):
                    die("%s: pool %s: nutcracker names servers %r, we expected %r"
                        % (shape, pn, got, sorted(names)))

        rows = []
        for h in HASHES:
            for d in DISTS:
                pn = pool_name(h, d)
                for s in servers:
                    flush(s.host, s.port)
                set_all(listen_ports[(h, d)], keys)
                where = {}
                for s in servers:
                    for k in held_keys(s.host, s.port, keys):
                        where.setdefault(k, []).append(by_addr[(s.host, s.port)])
                for k in keys:
                    w = where.get(k, [])
                    if len(w) != 1:
                        die("%s: pool %s: key %s found on %d backends %r"
                            % (shape, pn, k.hex(), len(w), w))
                    rows.append((pn, k, w[0]))
                if tag:
                    # Keys with the same hashed span must share a server.
                    span_srv = {}
                    for (p_, k, srv) in rows[-len(keys):]:
                        sp = effective_tag_span(k, tag)
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
        return len(rows), len(keys), len(servers)
    finally:
        procs.stop_all()
        if not ok:
            nlog = os.path.join(tmp, "nutcracker.log")
            if os.path.exists(nlog):
                with open(nlog, errors="replace") as f:
                    tail = f.read()[-3000:]
                print("gen_placement: %s failed; nutcracker log tail:\n%s" % (shape, tail),
                      file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=DEFAULT_OUT, help="output directory (%(default)s)")
    ap.add_argument("--shape", action="append", choices=sorted(SHAPES),
                    help="only this shape (repeatable); default all")
    args = ap.parse_args()
    nutcracker, memcached = find_binary("nutcracker"), find_binary("memcached")
    v = subprocess.run([nutcracker, "-V"], capture_output=True, text=True, timeout=10)
    if "0.5.0" not in v.stdout + v.stderr:
        die("%s is not nutcracker 0.5.0: %r" % (nutcracker, (v.stdout + v.stderr).strip()))
    t0 = time.monotonic()
    for shape in args.shape or list(SHAPES):
        t = time.monotonic()
        nrows, nkeys, nserv = run_shape(shape, args.out, nutcracker, memcached)
        print("%-14s %2d servers %3d keys x %d pools = %5d rows  (%.1fs)"
              % (shape, nserv, nkeys, len(HASHES) * len(DISTS), nrows, time.monotonic() - t))
    print("total %.1fs" % (time.monotonic() - t0))


if __name__ == "__main__":
    main()
