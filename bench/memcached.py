#!/usr/bin/python3
"""walnut vs twemproxy (nutcracker) vs memcached, memcached ASCII and binary, driven by memtier_benchmark.

Starts two memcached, nutcracker, walnut --workers 1 and walnut --workers 2 (all on ephemeral
127.0.0.1 ports, the three proxies in front of the same two memcached), preloads every key so GETs
hit, checks that the proxies return the same, correct data, then runs memtier_benchmark against
each target in alternating rounds and prints a markdown table (medians over the rounds) and the
walnut/nutcracker and walnut/memcached ratios. With --protocols memcache_binary (in the default),
the binary protocol is measured too, against memcached and walnut only: nutcracker has none.

See bench/README.md. Run: bench/memcached.sh [--test-time 5] [--rounds 3] [--keys 100000]
"""
import struct

import argparse
import json
import os
import random
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HOST = "127.0.0.1"  # everything stays on loopback
CLK_TCK = os.sysconf("SC_CLK_TCK")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ERROR_WORDS = ("error", "dropped", "failed", "reconnect", "timeout", "aborted")


class BenchFailure(Exception):
    pass


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def free_ports(n):
    """n distinct free loopback ports (held open together while picking, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def cpu_seconds(pid):
    """utime+stime of a whole process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    fields = data[data.rindex(")") + 2:].split()  # fields[0] is field 3 (state)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def system_cpu():
    """(busy, steal) seconds summed over all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    return (user + nice + system + irq + softirq) / CLK_TCK, steal / CLK_TCK


def tail(path, n=40):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError as e:
        return f"(cannot read {path}: {e})"


class Procs:
    """Long-running processes; every one is stopped by its PID in stop_all()."""

    def __init__(self):
        self.items = []  # (name, Popen, logpath)

    def start(self, name, argv, logpath):
        logf = open(logpath, "ab")
        try:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT)
        finally:
            logf.close()
        self.items.append((name, p, logpath))
        log(f"started {name}: pid {p.pid}: {' '.join(argv)}")
        return p

    def check_alive(self):
        for name, p, logpath in self.items:
            rc = p.poll()
            if rc is not None:
                raise BenchFailure(f"{name} (pid {p.pid}) exited with status {rc}; log {logpath}:\n{tail(logpath)}")

    def stop_all(self):
        for name, p, _ in reversed(self.items):
            if p.poll() is None:
                p.terminate()  # SIGTERM to this PID
        for name, p, _ in reversed(self.items):
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                log(f"{name} (pid {p.pid}) ignored SIGTERM for 5 s; sending SIGKILL")
                p.kill()
                p.wait(timeout=5)
        self.items = []


def wait_listening(port, proc, name, logpath, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchFailure(f"{name} exited with status {proc.returncode} at start-up; log:\n{tail(logpath)}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchFailure(f"{name} is not listening on {HOST}:{port} after {timeout} s; log:\n{tail(logpath)}")


# --- a tiny memcached ASCII client, for the correctness checks -----------------------------------

class MC:
    def __init__(self, port, timeout=5.0):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise BenchFailure("connection closed by the server")
        self.buf += chunk

    def _line(self):
        while b"\r\n" not in self.buf:
            if len(self.buf) > 1 << 20:
                raise BenchFailure("reply line longer than 1 MiB")
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _bytes(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        data, trailer, self.buf = self.buf[:n], self.buf[n:n + 2], self.buf[n + 2:]
        if trailer != b"\r\n":
            raise BenchFailure(f"value not followed by CRLF: {trailer!r}")
        return data

    def set(self, key, value, flags=0):
        self.sock.sendall(b"set %s %d 0 %d\r\n%s\r\n" % (key, flags, len(value), value))
        line = self._line()
        if line != b"STORED":
            raise BenchFailure(f"set {key!r}: got {line!r}")

    def get(self, keys):
        """{key: (flags, value)} for the keys found."""
        self.sock.sendall(b"get " + b" ".join(keys) + b"\r\n")
        found = {}
        for _ in range(len(keys) + 1):
            line = self._line()
            if line == b"END":
                return found
            parts = line.split()
            if len(parts) != 4 or parts[0] != b"VALUE":
                raise BenchFailure(f"get: unexpected line {line!r}")
            found[parts[1]] = (int(parts[2]), self._bytes(int(parts[3])))
        raise BenchFailure("get: more VALUE lines than keys asked for")


class BMC:
    """A tiny memcached binary client (SET, GETK in a GETKQ...NOOP batch), for the checks."""

    HDR = struct.Struct(">BBHBBHIIQ")

    def __init__(self, port, timeout=5.0):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def _packet(self):
        while True:
            if len(self.buf) >= 24:
                magic, op, kl, el, _, st, bl, opq, _ = self.HDR.unpack(self.buf[:24])
                if magic != 0x81:
                    raise BenchFailure(f"binary: response magic {magic:#x}")
                if len(self.buf) >= 24 + bl:
                    body, self.buf = self.buf[24:24 + bl], self.buf[24 + bl:]
                    return op, st, opq, body[:el], body[el:el + kl], body[el + kl:]
            chunk = self.sock.recv(65536)
            if not chunk:
                raise BenchFailure("binary: connection closed by the server")
            self.buf += chunk

    def set(self, key, value, flags=0):
        extras = struct.pack(">II", flags, 0)
        self.sock.sendall(self.HDR.pack(0x80, 0x01, len(key), 8, 0, 0, 8 + len(key) + len(value), 1, 0)
                          + extras + key + value)
        op, st, _, _, _, body = self._packet()
        if op != 0x01 or st != 0:
            raise BenchFailure(f"binary set {key!r}: status {st:#06x} {body[:60]!r}")

    def get(self, keys):
        """{key: (flags, value)} for the keys found, asked as GETKQ ... NOOP."""
        req = b"".join(self.HDR.pack(0x80, 0x0d, len(k), 0, 0, 0, len(k), 2, 0) + k for k in keys)
        self.sock.sendall(req + self.HDR.pack(0x80, 0x0a, 0, 0, 0, 0, 0, 3, 0))
        found = {}
        while True:
            op, st, _, extras, key, value = self._packet()
            if op == 0x0a:
                return found
            if op != 0x0d or st != 0 or len(extras) != 4:
                raise BenchFailure(f"binary getkq: op {op:#x} status {st:#06x}")
            found[key] = (struct.unpack(">I", extras)[0], value)


def check_binary(bin_proxies, text_proxies, tag):
    """Write through each walnut in binary; read back in binary through every walnut and as text
    through every proxy (nutcracker included): the same items, byte for byte."""
    rng = random.Random("bin" + tag)
    specials = [b"", b"\r\nEND\r\n", b"VA 1 f0\r\n", b"\x00\xff" * 7, b"x" * 20000]
    for wname, wport in bin_proxies:
        keys = [f"wbenchbin:{tag}:{wname.replace(' ', '_')}:{i}".encode() for i in range(40)]
        values = {k: (i, specials[i] if i < len(specials) else rng.randbytes(rng.randint(1, 3000)))
                  for i, k in enumerate(keys)}
        w = BMC(wport)
        for k, (flags, v) in values.items():
            w.set(k, v, flags)
        w.close()
        for rname, rport, cls in [(n, p, BMC) for n, p in bin_proxies] + \
                [(n, p, MC) for n, p in text_proxies]:
            r = cls(rport)
            got = r.get(keys)
            r.close()
            if got != values:
                bad = [k for k in keys if got.get(k) != values[k]][:5]
                raise BenchFailure(f"binary correctness ({tag}): written in binary via {wname}, read via "
                                   f"{rname} ({'binary' if cls is BMC else 'text'}) differs for {bad}")
    log(f"binary correctness check '{tag}': ok ({len(bin_proxies)} binary writers)")


def check_correctness(proxies, tag, nkeys, memtier_keys=True):
    """Write through each proxy, read through every proxy (single and multi-key GET), compare exactly.
    Then read a sample of memtier's keys through every proxy and compare."""
    rng = random.Random(tag)
    specials = [b"", b"\r\nEND\r\n", b"VALUE x 0 1\r\n", b"\x00\xff" * 7, b"x" * 20000]
    for wname, wport in proxies:
        keys = [f"wbench:{tag}:{wname.replace(' ', '_')}:{i}".encode() for i in range(40)]
        values = {}
        for i, k in enumerate(keys):
            values[k] = (i, specials[i] if i < len(specials) else rng.randbytes(rng.randint(1, 3000)))
        w = MC(wport)
        for k, (flags, v) in values.items():
            w.set(k, v, flags)
        w.close()
        for rname, rport in proxies:
            r = MC(rport)
            single = {}
            for k in keys:
                single.update(r.get([k]))
            multi = r.get(keys)
            r.close()
            for label, got in (("get k", single), ("get k1..k40", multi)):
                if got != values:
                    bad = [k for k in keys if got.get(k) != values[k]][:5]
                    raise BenchFailure(f"correctness ({tag}): written via {wname}, '{label}' via {rname} differs "
                                       f"for {len(bad)}+ keys, e.g. {bad[0]!r}: expected "
                                       f"{values[bad[0]][1][:60]!r}, got {got.get(bad[0], ('missing',))!r:.120}")
    if not memtier_keys:
        log(f"correctness check '{tag}': ok ({len(proxies)} writers x {len(proxies)} readers)")
        return
    sample = [f"memtier-{rng.randint(1, nkeys)}".encode() for _ in range(200)]
    views = {}
    for name, port in proxies:
        c = MC(port)
        views[name] = c.get(sample)
        c.close()
    ref_name = proxies[0][0]
    ref = views[ref_name]
    if len(ref) < len(set(sample)) * 0.99:
        raise BenchFailure(f"correctness ({tag}): only {len(ref)} of {len(set(sample))} sampled memtier keys "
                           f"found via {ref_name}; preload did not take")
    for name, got in views.items():
        if got != ref:
            diff = [k for k in set(sample) if got.get(k) != ref.get(k)][:3]
            raise BenchFailure(f"correctness ({tag}): memtier keys read via {name} differ from {ref_name}: {diff}")
    log(f"correctness check '{tag}': ok ({len(proxies)} proxies x {len(proxies)} readers, "
        f"{len(ref)} memtier keys identical)")


# --- memtier ------------------------------------------------------------------------------------

def run_memtier(port, extra, outdir, label, timeout, watch_pids, procs, protocol="memcache_text"):
    """One memtier_benchmark run; returns (json, wall seconds, memtier cpu s, {pid: cpu s delta}, foreign)
    where foreign is the share of the machine's CPU time (wall x nproc) used by processes that are
    neither watched nor memtier (other users of this machine) plus steal time."""
    jpath = os.path.join(outdir, label + ".json")
    opath = os.path.join(outdir, label + ".out")
    epath = os.path.join(outdir, label + ".err")
    argv = ["memtier_benchmark", "-s", HOST, "-p", str(port), f"--protocol={protocol}", "--hide-histogram",
            "--print-percentiles=50,99", f"--json-out-file={jpath}"] + extra
    with open(os.path.join(outdir, label + ".cmd"), "w") as f:
        f.write(" ".join(argv) + "\n")
    cpu0 = {pid: cpu_seconds(pid) for pid in watch_pids}
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    sys0 = system_cpu()
    t0 = time.monotonic()
    with open(opath, "wb") as out, open(epath, "wb") as err:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)
            raise BenchFailure(f"{label}: memtier_benchmark did not finish within {timeout} s (target hung?); "
                               f"cmd: {' '.join(argv)}\nstderr tail:\n{tail(epath, 5)}")
        finally:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
    wall = time.monotonic() - t0
    sys1 = system_cpu()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    procs.check_alive()
    cpu1 = {pid: cpu_seconds(pid) for pid in watch_pids}
    with open(epath, "rb") as f:
        err_text = f.read().decode(errors="replace").replace("\r", "\n")
    bad = [ln for ln in err_text.splitlines() if any(w in ln.lower() for w in ERROR_WORDS)]
    if rc != 0 or bad:
        raise BenchFailure(f"{label}: memtier_benchmark exit {rc}; cmd: {' '.join(argv)}\nerrors:\n" +
                           "\n".join(bad[:10]))
    with open(jpath) as f:
        js = json.load(f)
    totals = js["ALL STATS"]["Totals"]
    if totals.get("Connection Errors", 0):
        raise BenchFailure(f"{label}: {totals['Connection Errors']} connection errors; cmd: {' '.join(argv)}")
    memtier_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    deltas = {pid: cpu1[pid] - cpu0[pid] for pid in watch_pids}
    ours = memtier_cpu + sum(deltas.values())
    foreign = max(0.0, (sys1[0] - sys0[0]) - ours + (sys1[1] - sys0[1])) / (wall * os.cpu_count())
    return js, wall, memtier_cpu, deltas, foreign


def measured_rate(js, test_time, label):
    """Requests per second from memtier's own per-second time series: the requests completed in the
    test_time full seconds (the tail bucket only holds replies still in flight when time ran out),
    divided by test_time. memtier's printed Ops/sec divides by a mis-averaged duration."""
    series = js["ALL STATS"]["Totals"]["Time-Serie"]
    buckets = {int(k): v["Count"] for k, v in series.items()}
    full = [buckets.get(s, 0) for s in range(test_time)]
    if min(full) == 0:
        raise BenchFailure(f"{label}: a second with zero completed requests (stall or hang): {full}")
    if min(full) < 0.25 * statistics.median(full):
        log(f"WARNING {label}: very uneven seconds: {full}")
    return sum(full) / test_time


def pct(js, name):
    return js["ALL STATS"]["Totals"]["Percentile Latencies"][name]


def hit_rate(js):
    g = js["ALL STATS"]["Gets"]
    hits, misses = g.get("Hits/sec", 0.0), g.get("Misses/sec", 0.0)
    return hits / (hits + misses) if hits + misses else float("nan")


def one_run(tport, tpid, tlabel, label, size, pipeline, rnd, base, mc_pids, procs, outdir, args, protocol=None):
    protocol = protocol or getattr(args, "protocol", "memcache_text")
    watch = sorted(set(p.pid for _, p, _ in procs.items))
    js, wall, mt_cpu, cpu, foreign = run_memtier(
        tport, base + [f"--test-time={args.test_time}", f"--pipeline={pipeline}", f"--data-size={size}"],
        outdir, label, args.test_time + 60, watch, procs, protocol)
    count = js["ALL STATS"]["Totals"]["Count"]
    ops = measured_rate(js, args.test_time, label)
    hr = hit_rate(js)
    if hr < 0.99:
        raise BenchFailure(f"{label}: GET hit rate {hr:.4f} < 0.99 (wrong data or lost keys?)")
    r = {"protocol": protocol, "size": size, "pipeline": pipeline, "round": rnd + 1, "target": tlabel,
         "label": label,
         "count": count, "ops": ops, "p50": pct(js, "p50.00"), "p99": pct(js, "p99.00"),
         "hit": hr, "wall": wall, "foreign_cpu": foreign,
         "memtier_printed_ops": js["ALL STATS"]["Totals"]["Ops/sec"],
         "cpu_target": cpu[tpid] / count * 1e5,
         "cpu_backends": sum(cpu[p] for p in mc_pids) / count * 1e5,
         "cpu_memtier": mt_cpu / count * 1e5}
    log(f"{label}: {ops:,.0f} ops/s  p50 {r['p50']:.3f} ms  p99 {r['p99']:.3f} ms  hit {hr:.4f}  "
        f"target CPU {r['cpu_target']:.3f} s/100k  other load {foreign:.0%}")
    return r


def wait_quiet(threshold, max_wait):
    """Wait (at most max_wait s) until the whole machine is below threshold busy over a 0.5 s window.
    Between runs our own processes are idle, so what is left is other users of the machine."""
    for _ in range(int(max_wait / 0.5)):
        b0 = system_cpu()
        time.sleep(0.5)
        b1 = system_cpu()
        if (b1[0] - b0[0] + b1[1] - b0[1]) / (0.5 * os.cpu_count()) <= threshold:
            return


# --- main ---------------------------------------------------------------------------------------

def write_conf(path, listen_port, mc_ports):
    with open(path, "w") as f:
        f.write("bench:\n"
                f"  listen: {HOST}:{listen_port}\n"
                "  hash: fnv1a_64\n"
                "  distribution: ketama\n"
                "  timeout: 1000\n"
                "  servers:\n")
        for p in mc_ports:
            f.write(f"   - {HOST}:{p}:1\n")


def default_walnut():
    for d in ("build-bench", "build"):
        p = os.path.join(REPO, d, "walnut")
        if os.access(p, os.X_OK):
            return p
    return None


def fmt_ratio(a, b):
    return f"{a / b:.2f}" if b else "n/a"


def paired(a, b):
    """Round by round ratios of two targets' rates (a, b: round -> ops/s) and their median: each
    round runs the targets one after the other, so a host that drifts slower or faster between
    rounds (a VM's neighbours) moves both sides of a round's ratio, where it moves one median more
    than the other. "n/a" when the targets share no round."""
    if not a or not b:
        return "n/a"
    rs = [a[k] / b[k] for k in sorted(a) if k in b and b[k] > 0]
    if not rs:
        return "n/a"
    return f"{', '.join(f'{x:.2f}' for x in rs)} ({statistics.median(rs):.2f})"


def pin_threads(pid, cpus):
    """Every thread of pid onto cpus (threads made later inherit it)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except ProcessLookupError:
            pass


def pin(backends, proxies, what):
    """--pin: the backends and this process (so memtier, which it starts) on
    CPU 0, the proxies on CPU 1."""
    if not {0, 1} <= os.sched_getaffinity(0):
        raise BenchFailure("--pin needs CPUs 0 and 1")
    for p in backends:
        pin_threads(p.pid, {0})
    for p in proxies:
        pin_threads(p.pid, {1})
    os.sched_setaffinity(0, {0})
    log(f"pinned: {what} on CPU 0; proxies on CPU 1")


PIN_HELP = ("the servers and the load on CPU 0, the proxies on CPU 1: the load and the server get the "
            "same CPU in every row, and a proxy one of its own, as on a host where the proxy does not "
            "share cores")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--walnut", default=os.environ.get("WALNUT") or default_walnut(),
                    help="walnut binary (default: build-bench/walnut or build/walnut in the repository)")
    ap.add_argument("--walnut-args", default="",
                    help="more options for both walnuts, e.g. '--batch-wait=100' (named in the table)")
    ap.add_argument("--nutcracker", default=shutil.which("nutcracker") or "/usr/sbin/nutcracker")
    ap.add_argument("--memcached", default=shutil.which("memcached") or "/usr/bin/memcached")
    ap.add_argument("--test-time", type=int, default=5, help="seconds per memtier run (default 5)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; each target runs once per round (default 3)")
    ap.add_argument("--keys", type=int, default=100000, help="key range memtier-1..memtier-N (default 100000)")
    ap.add_argument("--threads", type=int, default=1, help="memtier threads (default 1)")
    ap.add_argument("--clients", type=int, default=25, help="memtier clients per thread (default 25)")
    ap.add_argument("--pipelines", default="1,16")
    ap.add_argument("--sizes", default="32,1024")
    ap.add_argument("--ratio", default="1:10", help="set:get (default 1:10)")
    ap.add_argument("--protocols", default="memcache_text,memcache_binary",
                    help="memtier protocols to measure (default memcache_text,memcache_binary); "
                         "memcache_binary runs against memcached and walnut only (nutcracker has none)")
    ap.add_argument("--max-other-load", type=float, default=0.25,
                    help="a run during which other processes (and steal) used more than this share of the "
                         "machine is repeated (default 0.25); before each run, wait up to 10 s for quiet")
    ap.add_argument("--retries", type=int, default=2, help="repeats of a disturbed run (default 2)")
    ap.add_argument("--budget", type=int, default=None,
                    help="seconds for all measured runs; waiting and repeating stop when the runs still to "
                         "come would not fit (default 480 for the text rows, 840 with the binary ones)")
    ap.add_argument("--out", default=None, help="directory for logs and raw results (default: a new /tmp dir)")
    ap.add_argument("--pin", action="store_true", help=PIN_HELP)
    args = ap.parse_args()

    if shutil.which("memtier_benchmark") is None:
        log("memtier_benchmark is not on PATH. It is not a Debian package: build it from "
            "https://github.com/RedisLabs/memtier_benchmark (autoreconf -ivf && ./configure && make) "
            "and put the binary on PATH. See bench/README.md.")
        return 2
    for name, path in (("walnut", args.walnut), ("nutcracker", args.nutcracker), ("memcached", args.memcached)):
        if not path or not os.access(path, os.X_OK):
            log(f"{name} not found ({path}). Build walnut with: cmake -S {REPO} -B {REPO}/build-bench "
                f"-DCMAKE_BUILD_TYPE=Release && cmake --build {REPO}/build-bench -j2"
                if name == "walnut" else f"{name} not found ({path})")
            return 2
    protocols = [x for x in args.protocols.split(",") if x]
    if not protocols or any(x not in ("memcache_text", "memcache_binary") for x in protocols):
        log("--protocols: a comma-separated list of memcache_text and memcache_binary")
        return 2
    if args.budget is None:
        args.budget = 480 if protocols == ["memcache_text"] else 840
    if not (0 <= args.retries <= 5 and 0 < args.max_other_load <= 1 and 0 <= args.budget <= 7200):
        log("out of range: --retries 0..5, --max-other-load 0..1, --budget 0..7200")
        return 2
    if not (1 <= args.rounds <= 20 and 2 <= args.test_time <= 120 and 100 <= args.keys <= 10_000_000):
        log("out of range: --rounds 1..20, --test-time 2..120, --keys 100..10000000")
        return 2
    pipelines = [int(x) for x in args.pipelines.split(",")]
    sizes = [int(x) for x in args.sizes.split(",")]

    outdir = args.out or tempfile.mkdtemp(prefix="walnut-bench-")
    os.makedirs(outdir, exist_ok=True)
    log(f"logs and raw memtier output: {outdir}")

    def on_term(signum, frame):
        raise SystemExit(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)

    procs = Procs()
    try:
        (mc_a, mc_b, nc_port, nc_stats, w1_port, w1_stats, w2_port, w2_stats) = free_ports(8)
        mem_mb = max(256, args.keys * (max(sizes) + 200) * 2 // (1 << 20) + 64)
        mcs = {}
        for name, port in (("memcached A", mc_a), ("memcached B", mc_b)):
            lp = os.path.join(outdir, name.replace(" ", "_") + ".log")
            argv = [args.memcached, "-l", HOST, "-p", str(port), "-U", "0", "-t", "2", "-m", str(mem_mb),
                    "-c", "4096"]
            if os.geteuid() == 0:
                argv += ["-u", "root"]
            mcs[name] = procs.start(name, argv, lp)
            wait_listening(port, mcs[name], name, lp)

        confs = {}
        for name, port in (("nutcracker", nc_port), ("walnut1", w1_port), ("walnut2", w2_port)):
            confs[name] = os.path.join(outdir, name + ".yml")
            write_conf(confs[name], port, [mc_a, mc_b])
        nc_log = os.path.join(outdir, "nutcracker.log")
        nc = procs.start("nutcracker", [args.nutcracker, "-c", confs["nutcracker"], "-s", str(nc_stats),
                                        "-a", HOST, "-o", nc_log, "-p", os.path.join(outdir, "nutcracker.pid")],
                         os.path.join(outdir, "nutcracker.stdout"))
        wait_listening(nc_port, nc, "nutcracker", nc_log)
        walnuts = {}
        for n, port, sport in ((1, w1_port, w1_stats), (2, w2_port, w2_stats)):
            lp = os.path.join(outdir, f"walnut{n}.log")
            walnuts[n] = procs.start(f"walnut -T{n}", [args.walnut, "-c", confs[f"walnut{n}"], "--workers", str(n),
                                                       "-s", str(sport), "-a", HOST, "-o", lp]
                                     + shlex.split(args.walnut_args), lp)
            wait_listening(port, walnuts[n], f"walnut -T{n}", lp)

        if args.pin:
            pin(mcs.values(), [nc] + list(walnuts.values()), "memcacheds, memtier")
        mc_pids = [mcs["memcached A"].pid, mcs["memcached B"].pid]
        targets = [  # (label, port, pid whose CPU is "the proxy's")
            (f"memcached direct (A, :{mc_a})", mc_a, mcs["memcached A"].pid),
            ("nutcracker 0.5.0", nc_port, nc.pid),
            ("walnut -T1", w1_port, walnuts[1].pid),
            ("walnut -T2", w2_port, walnuts[2].pid),
        ]
        proxies = [("nutcracker", nc_port), ("walnut -T1", w1_port), ("walnut -T2", w2_port)]
        # nutcracker has no binary protocol: binary rows measure memcached and walnut only
        targets_of = {"memcache_text": targets, "memcache_binary": [targets[0]] + targets[2:]}
        bin_proxies = [("walnut -T1", w1_port), ("walnut -T2", w2_port)]
        check_correctness(proxies, "start", args.keys, memtier_keys=False)
        if "memcache_binary" in protocols:
            check_binary(bin_proxies, proxies, "start")

        base = ["-t", str(args.threads), "-c", str(args.clients), f"--ratio={args.ratio}",
                "--key-minimum=1", f"--key-maximum={args.keys}", "--key-pattern=R:R", "--distinct-client-seed"]
        results = []  # dicts
        deadline = time.monotonic() + args.budget
        runs_left = len(sizes) * len(pipelines) * args.rounds * sum(len(targets_of[p]) for p in protocols)
        for size in sizes:
            # Preload every key through nutcracker (each key lands on its ketama owner, identical for
            # walnut), then every key straight into memcached A so the direct target hits too.
            for pname, pport in (("nutcracker", nc_port), ("memcachedA", mc_a)):
                label = f"preload_{size}B_{pname}"
                js, wall, _, _, _ = run_memtier(
                    pport, ["-t", "1", "-c", "1", "--pipeline=32", "--ratio=1:0", "--key-pattern=P:P",
                            "--key-minimum=1", f"--key-maximum={args.keys}", f"--requests={args.keys}",
                            f"--data-size={size}"], outdir, label, 120, [], procs)
                n = js["ALL STATS"]["Sets"]["Count"]
                if n != args.keys:
                    raise BenchFailure(f"{label}: {n} sets, expected {args.keys}")
                log(f"{label}: {n} keys of {size} B stored in {wall:.1f} s")
            for pipeline, protocol, rnd in [(pl, pr, rn) for pl in pipelines for pr in protocols
                                            for rn in range(args.rounds)]:
                tgts = targets_of[protocol]
                k = rnd % len(tgts)
                for tlabel, tport, tpid in tgts[k:] + tgts[:k]:
                    slug = tlabel.split(" (")[0].replace(" ", "_").replace("-", "")
                    if protocol != "memcache_text":
                        slug = "bin_" + slug
                    best = None
                    for attempt in range(args.retries + 1):
                        # wait/repeat only while the runs still to come fit in the budget
                        in_budget = time.monotonic() + (runs_left + 1) * (args.test_time + 1) + 15 < deadline
                        if in_budget:
                            wait_quiet(args.max_other_load, 10.0)
                        label = f"{size}B_p{pipeline}_r{rnd + 1}_{slug}" + (f"_retry{attempt}" if attempt else "")
                        r = one_run(tport, tpid, tlabel, label, size, pipeline, rnd, base, mc_pids, procs,
                                    outdir, args, protocol)
                        r["attempt"] = attempt + 1
                        if best is None or r["foreign_cpu"] < best["foreign_cpu"]:
                            best = r
                        if r["foreign_cpu"] <= args.max_other_load or not in_budget:
                            break
                        if attempt < args.retries:
                            log(f"{label}: other processes used {r['foreign_cpu']:.0%} of the machine; "
                                f"running it again")
                    results.append(best)
                    runs_left -= 1
            check_correctness(proxies, f"after-{size}B", args.keys)
            if "memcache_binary" in protocols:
                check_binary(bin_proxies, proxies, f"after-{size}B")
        procs.check_alive()
        with open(os.path.join(outdir, "runs.json"), "w") as f:
            json.dump(results, f, indent=1)
        report(results, targets, sizes, pipelines, args, outdir, protocols)
        return 0
    except BenchFailure as e:
        log(f"\nBENCHMARK FAILED: {e}\nlogs: {outdir}")
        return 1
    finally:
        procs.stop_all()


def walnut_revision(binary):
    """Which source the binary was built from, as far as git can tell (read-only git commands)."""
    try:
        head = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", "src", "include", "CMakeLists.txt"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "git revision unknown"
    built = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(os.stat(binary).st_mtime))
    return f"tree at {head or '?'}{' + uncommitted changes in src/include' if dirty else ''}, binary built {built}"


def report(results, targets, sizes, pipelines, args, outdir, protocols=None):
    """The tables. protocols: the memtier protocols measured (default args.protocol); with more than
    one, a protocol column; a target with no runs under a protocol gets an n/a row (nutcracker has no
    memcached binary protocol)."""
    protocols = protocols or [getattr(args, "protocol", "memcache_text")]
    backend = getattr(args, "backend_name", "memcached")
    short = {"memcache_text": "text", "memcache_binary": "binary"}
    many = len(protocols) > 1
    med = {}
    for r in results:
        key = (r.get("protocol", protocols[0]), r["size"], r["pipeline"], r["target"])
        med.setdefault(key, []).append(r)
    for key, rs in med.items():
        m = {k: statistics.median(r[k] for r in rs)
             for k in ("ops", "p50", "p99", "cpu_target", "cpu_backends", "cpu_memtier", "hit")}
        m["ops_all"] = [round(r["ops"]) for r in rs]
        m["by_round"] = {r["round"]: r["ops"] for r in rs}
        med[key] = m
    col = (lambda protocol: f"| {short.get(protocol, protocol)} ") if many else (lambda protocol: "")
    lines = []
    extra = getattr(args, "walnut_args", "")
    lines.append(f"walnut: {args.walnut} ({walnut_revision(args.walnut)})"
                 f"{' ' + extra if extra else ''}; {os.cpu_count()} CPUs"
                 f"{'; pinned (--pin): servers and load on CPU 0, proxies on CPU 1' if getattr(args, 'pin', False) else ''}; "
                 f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    lines.append(f"memtier_benchmark --protocol={'|'.join(protocols)} -t {args.threads} -c {args.clients} "
                 f"--ratio={args.ratio} --test-time={args.test_time}, keys 1..{args.keys} (R:R), "
                 f"median of {args.rounds} rounds")
    lines.append("")
    lines.append(("| protocol " if many else "") + "| value | pipeline | target | ops/s | p50 ms | p99 ms | GET hit "
                 f"| target CPU s/100k req | {backend} CPU s/100k | memtier CPU s/100k | ops/s per round |")
    lines.append(("|---" if many else "") + "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for protocol in protocols:
        for size in sizes:
            for pipeline in pipelines:
                for tlabel, _, _ in targets:
                    m = med.get((protocol, size, pipeline, tlabel))
                    if m is None:
                        lines.append(f"{col(protocol)}| {size} B | {pipeline} | {tlabel} | n/a: no binary "
                                     f"protocol | | | | | | | |")
                        continue
                    cpu_b = "(same)" if tlabel.startswith(backend) else f"{m['cpu_backends']:.3f}"
                    lines.append(f"{col(protocol)}| {size} B | {pipeline} | {tlabel} | {m['ops']:,.0f} | "
                                 f"{m['p50']:.3f} | {m['p99']:.3f} | {m['hit'] * 100:.2f}% | {m['cpu_target']:.3f} | "
                                 f"{cpu_b} | {m['cpu_memtier']:.3f} | {', '.join(f'{x:,}' for x in m['ops_all'])} |")
    lines.append("")
    lines.append(("| protocol " if many else "") + "| value | pipeline | T1/nutcracker ops | T1/nutcracker CPU per req "
                 f"| T2/nutcracker ops | T2/nutcracker CPU per req | T1/{backend} ops | T2/{backend} ops "
                 "| T1/nutcracker ops round by round (median) |")
    lines.append(("|---" if many else "") + "|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    direct, nc, w1, w2 = (t[0] for t in targets)
    for protocol in protocols:
        for size in sizes:
            for pipeline in pipelines:
                def g(t, k):
                    m = med.get((protocol, size, pipeline, t))
                    return m[k] if m else None

                def ratio(a, b):
                    return "n/a" if a is None or b is None else fmt_ratio(a, b)
                lines.append(f"{col(protocol)}| {size} B | {pipeline} | {ratio(g(w1, 'ops'), g(nc, 'ops'))} | "
                             f"{ratio(g(w1, 'cpu_target'), g(nc, 'cpu_target'))} | "
                             f"{ratio(g(w2, 'ops'), g(nc, 'ops'))} | "
                             f"{ratio(g(w2, 'cpu_target'), g(nc, 'cpu_target'))} | "
                             f"{ratio(g(w1, 'ops'), g(direct, 'ops'))} | {ratio(g(w2, 'ops'), g(direct, 'ops'))} | "
                             f"{paired(g(w1, 'by_round'), g(nc, 'by_round'))} |")
    if "memcache_binary" in protocols:
        lines.append("")
        lines.append("nutcracker (twemproxy 0.5.0) has no memcached binary protocol: its binary rows are n/a.")
    fc = sorted(r["foreign_cpu"] for r in results)
    lines.append("")
    noisy = sum(1 for x in fc if x > args.max_other_load)
    lines.append(f"CPU used by other processes on the machine (plus steal) during the kept runs, as a share of "
                 f"{os.cpu_count()} CPUs x wall time: median {statistics.median(fc):.1%}, max {fc[-1]:.1%}; "
                 f"{noisy} of {len(fc)} kept runs above {args.max_other_load:.0%}; "
                 f"{sum(r['attempt'] - 1 for r in results)} runs repeated because of such load.")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(outdir, "table.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    sys.exit(main())
