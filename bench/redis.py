#!/usr/bin/python3
"""walnut vs twemproxy (nutcracker) vs redis-server, Redis (RESP), driven by memtier_benchmark
and redis-benchmark.

Starts two redis-servers (no persistence), nutcracker, walnut --workers 1 and walnut --workers 2
(all on ephemeral 127.0.0.1 ports, the three proxies in front of the same two servers), preloads
every key so GETs hit, checks that the proxies return the same, correct data (GET, MGET across
servers), then runs memtier_benchmark --protocol=redis against each target in alternating rounds,
and redis-benchmark (SET, GET, MSET of 10 keys) once per target, and prints markdown tables
(medians over the rounds) with the walnut/nutcracker and walnut/redis ratios.

Shares its process handling, memtier runs and report with bench/memcached.py.
See bench/README.md. Run: bench/redis.sh [--test-time 5] [--rounds 3] [--keys 100000]
"""

import argparse
import json
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import memcached as mb  # noqa: E402  (the shared machinery)

HOST = mb.HOST
log = mb.log
BenchFailure = mb.BenchFailure


class RESP:
    """A tiny RESP2 client for the correctness checks."""

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
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind in (b"+", b":"):
            return rest
        if kind == b"-":
            raise BenchFailure(f"error reply: {line!r}")
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data
        if kind == b"*":
            return [self._reply() for _ in range(int(rest))]
        raise BenchFailure(f"unexpected reply line {line!r}")

    def call(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(out)
        return self._reply()


def check_correctness(proxies, tag, nkeys, memtier_keys=True):
    """Write through each proxy, read through every proxy (GET and one MGET), compare exactly; then a
    sample of memtier's keys through every proxy."""
    rng = random.Random(tag)
    specials = [b"", b"\r\n$3\r\nabc\r\n", b"*2\r\n", b"\x00\xff" * 7, b"x" * 20000]
    for wname, wport in proxies:
        keys = [f"wbench:{tag}:{wname.replace(' ', '_')}:{i}".encode() for i in range(40)]
        values = {k: specials[i] if i < len(specials) else rng.randbytes(rng.randint(1, 3000))
                  for i, k in enumerate(keys)}
        w = RESP(wport)
        for k, v in values.items():
            if w.call(b"SET", k, v) != b"OK":
                raise BenchFailure(f"SET via {wname} not OK")
        w.close()
        for rname, rport in proxies:
            r = RESP(rport)
            single = {k: r.call(b"GET", k) for k in keys}
            multi = dict(zip(keys, r.call(b"MGET", *keys)))
            r.close()
            for label, got in (("GET k", single), ("MGET k1..k40", multi)):
                if got != values:
                    bad = [k for k in keys if got.get(k) != values[k]][:3]
                    raise BenchFailure(f"correctness ({tag}): written via {wname}, '{label}' via {rname} "
                                       f"differs for keys {bad}")
    if not memtier_keys:
        log(f"correctness check '{tag}': ok ({len(proxies)} writers x {len(proxies)} readers)")
        return
    sample = [f"memtier-{rng.randint(1, nkeys)}".encode() for _ in range(200)]
    views = {}
    for name, port in proxies:
        c = RESP(port)
        views[name] = c.call(b"MGET", *sample)
        c.close()
    ref_name = proxies[0][0]
    ref = views[ref_name]
    if sum(v is not None for v in ref) < len(sample) * 0.99:
        raise BenchFailure(f"correctness ({tag}): memtier keys missing via {ref_name}; preload did not take")
    for name, got in views.items():
        if got != ref:
            raise BenchFailure(f"correctness ({tag}): memtier keys read via {name} differ from {ref_name}")
    log(f"correctness check '{tag}': ok ({len(proxies)} proxies, {len(sample)} memtier keys identical)")


def write_conf(path, listen_port, ports):
    with open(path, "w") as f:
        f.write("bench:\n"
                f"  listen: {HOST}:{listen_port}\n"
                "  hash: fnv1a_64\n"
                "  distribution: ketama\n"
                "  redis: true\n"
                "  timeout: 1000\n"
                "  servers:\n")
        for p in ports:
            f.write(f"   - {HOST}:{p}:1\n")


def redis_benchmark(port, label, outdir, args, watch, procs, pid):
    """redis-benchmark's own numbers (requests/s per test) and the target's CPU per 100k requests."""
    tests = "set,get,mset"
    n = args.rb_requests
    argv = ["redis-benchmark", "-h", HOST, "-p", str(port), "-c", str(args.clients), "-n", str(n),
            "-P", "16", "-r", str(args.keys), "-t", tests, "--csv"]
    cpu0 = mb.cpu_seconds(pid)
    t0 = time.monotonic()
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    wall = time.monotonic() - t0
    procs.check_alive()
    cpu = mb.cpu_seconds(pid) - cpu0
    with open(os.path.join(outdir, label + ".csv"), "w") as f:
        f.write(" ".join(argv) + "\n" + r.stdout + r.stderr)
    if r.returncode != 0:
        raise BenchFailure(f"{label}: redis-benchmark exit {r.returncode}: {r.stderr[-500:]}")
    rps = {}
    for line in r.stdout.splitlines():
        cells = [c.strip('"') for c in line.split(",")]
        if len(cells) >= 2 and cells[0] != "test":
            rps[cells[0].split(" ")[0]] = float(cells[1])
    if len(rps) != 3:
        raise BenchFailure(f"{label}: could not read redis-benchmark's output: {r.stdout[-500:]}")
    total = 3 * n
    log(f"{label}: " + "  ".join(f"{k} {v:,.0f}/s" for k, v in rps.items()) +
        f"  target CPU {cpu / total * 1e5:.3f} s/100k  ({wall:.1f} s)")
    return {"rps": rps, "cpu_target": cpu / total * 1e5}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--walnut", default=os.environ.get("WALNUT") or mb.default_walnut())
    ap.add_argument("--walnut-args", default="",
                    help="more options for both walnuts, e.g. '--batch-wait=100' (named in the table)")
    ap.add_argument("--nutcracker", default=shutil.which("nutcracker") or "/usr/sbin/nutcracker")
    ap.add_argument("--redis-server", default=shutil.which("redis-server") or "/usr/bin/redis-server")
    ap.add_argument("--test-time", type=int, default=5, help="seconds per memtier run (default 5)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds; each target runs once per round (default 3)")
    ap.add_argument("--keys", type=int, default=100000, help="key range memtier-1..memtier-N (default 100000)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clients", type=int, default=25)
    ap.add_argument("--pipelines", default="1,16")
    ap.add_argument("--sizes", default="32,1024")
    ap.add_argument("--ratio", default="1:10")
    ap.add_argument("--rb-requests", type=int, default=200000,
                    help="requests per redis-benchmark test (default 200000)")
    ap.add_argument("--max-other-load", type=float, default=0.25)
    ap.add_argument("--retries", type=int, default=2)
    ap.add_argument("--budget", type=int, default=480)
    ap.add_argument("--out", default=None)
    ap.add_argument("--pin", action="store_true", help=mb.PIN_HELP)
    args = ap.parse_args()
    args.protocol = "redis"
    args.backend_name = "redis"

    for tool in ("memtier_benchmark", "redis-benchmark"):
        if shutil.which(tool) is None:
            log(f"{tool} is not on PATH. memtier_benchmark is not a Debian package: build it from "
                "https://github.com/RedisLabs/memtier_benchmark and put it on PATH; redis-benchmark is in "
                "redis-tools. See bench/README.md.")
            return 2
    for name, path in (("walnut", args.walnut), ("nutcracker", args.nutcracker),
                       ("redis-server", args.redis_server)):
        if not path or not os.access(path, os.X_OK):
            log(f"{name} not found ({path})")
            return 2
    if not (1 <= args.rounds <= 20 and 2 <= args.test_time <= 120 and 100 <= args.keys <= 10_000_000
            and 1000 <= args.rb_requests <= 10_000_000 and 0 <= args.budget <= 7200):
        log("out of range: --rounds 1..20, --test-time 2..120, --keys 100..10000000, "
            "--rb-requests 1000..10000000, --budget 0..7200")
        return 2
    pipelines = [int(x) for x in args.pipelines.split(",")]
    sizes = [int(x) for x in args.sizes.split(",")]
    outdir = args.out or tempfile.mkdtemp(prefix="walnut-bench-redis-")
    os.makedirs(outdir, exist_ok=True)
    log(f"logs and raw output: {outdir}")

    def on_term(signum, frame):
        raise SystemExit(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)

    procs = mb.Procs()
    try:
        (ra, rb, nc_port, nc_stats, w1_port, w1_stats, w2_port, w2_stats) = mb.free_ports(8)
        servers = {}
        for name, port in (("redis A", ra), ("redis B", rb)):
            lp = os.path.join(outdir, name.replace(" ", "_") + ".log")
            argv = [args.redis_server, "--bind", HOST, "--port", str(port), "--save", "",
                    "--appendonly", "no", "--protected-mode", "no", "--logfile", lp,
                    "--dir", outdir, "--dbfilename", f"{name.replace(' ', '_')}.rdb"]
            servers[name] = procs.start(name, argv, lp + ".stdout")
            mb.wait_listening(port, servers[name], name, lp)
        confs = {}
        for name, port in (("nutcracker", nc_port), ("walnut1", w1_port), ("walnut2", w2_port)):
            confs[name] = os.path.join(outdir, name + ".yml")
            write_conf(confs[name], port, [ra, rb])
        nc_log = os.path.join(outdir, "nutcracker.log")
        nc = procs.start("nutcracker", [args.nutcracker, "-c", confs["nutcracker"], "-s", str(nc_stats),
                                        "-a", HOST, "-o", nc_log, "-p", os.path.join(outdir, "nutcracker.pid")],
                         os.path.join(outdir, "nutcracker.stdout"))
        mb.wait_listening(nc_port, nc, "nutcracker", nc_log)
        walnuts = {}
        for n, port, sport in ((1, w1_port, w1_stats), (2, w2_port, w2_stats)):
            lp = os.path.join(outdir, f"walnut{n}.log")
            walnuts[n] = procs.start(f"walnut -T{n}", [args.walnut, "-c", confs[f"walnut{n}"], "--workers",
                                                       str(n), "-s", str(sport), "-a", HOST, "-o", lp]
                                     + shlex.split(args.walnut_args), lp)
            mb.wait_listening(port, walnuts[n], f"walnut -T{n}", lp)

        if args.pin:
            mb.pin(servers.values(), [nc] + list(walnuts.values()), "redis-servers, memtier, redis-benchmark")

        backend_pids = [servers["redis A"].pid, servers["redis B"].pid]
        targets = [
            (f"redis direct (A, :{ra})", ra, servers["redis A"].pid),
            ("nutcracker 0.5.0", nc_port, nc.pid),
            ("walnut -T1", w1_port, walnuts[1].pid),
            ("walnut -T2", w2_port, walnuts[2].pid),
        ]
        proxies = [("nutcracker", nc_port), ("walnut -T1", w1_port), ("walnut -T2", w2_port)]
        check_correctness(proxies, "start", args.keys, memtier_keys=False)

        base = ["-t", str(args.threads), "-c", str(args.clients), f"--ratio={args.ratio}",
                "--key-minimum=1", f"--key-maximum={args.keys}", "--key-pattern=R:R", "--distinct-client-seed"]
        results = []
        deadline = time.monotonic() + args.budget
        runs_left = len(sizes) * len(pipelines) * args.rounds * len(targets)
        for size in sizes:
            for pname, pport in (("nutcracker", nc_port), ("redisA", ra)):
                label = f"preload_{size}B_{pname}"
                js, wall, _, _, _ = mb.run_memtier(
                    pport, ["-t", "1", "-c", "1", "--pipeline=32", "--ratio=1:0", "--key-pattern=P:P",
                            "--key-minimum=1", f"--key-maximum={args.keys}", f"--requests={args.keys}",
                            f"--data-size={size}"], outdir, label, 120, [], procs, "redis")
                if js["ALL STATS"]["Sets"]["Count"] != args.keys:
                    raise BenchFailure(f"{label}: {js['ALL STATS']['Sets']['Count']} sets, expected {args.keys}")
                log(f"{label}: {args.keys} keys of {size} B stored in {wall:.1f} s")
            for pipeline in pipelines:
                for rnd in range(args.rounds):
                    k = rnd % len(targets)
                    for tlabel, tport, tpid in targets[k:] + targets[:k]:
                        slug = tlabel.split(" (")[0].replace(" ", "_").replace("-", "")
                        best = None
                        for attempt in range(args.retries + 1):
                            in_budget = time.monotonic() + (runs_left + 1) * (args.test_time + 1) + 15 < deadline
                            if in_budget:
                                mb.wait_quiet(args.max_other_load, 10.0)
                            label = f"{size}B_p{pipeline}_r{rnd + 1}_{slug}" + (f"_retry{attempt}" if attempt else "")
                            r = mb.one_run(tport, tpid, tlabel, label, size, pipeline, rnd, base, backend_pids,
                                           procs, outdir, args)
                            r["attempt"] = attempt + 1
                            if best is None or r["foreign_cpu"] < best["foreign_cpu"]:
                                best = r
                            if r["foreign_cpu"] <= args.max_other_load or not in_budget:
                                break
                        results.append(best)
                        runs_left -= 1
            check_correctness(proxies, f"after-{size}B", args.keys)
        rb_rows = []
        for tlabel, tport, tpid in targets:
            mb.wait_quiet(args.max_other_load, 10.0)
            slug = tlabel.split(" (")[0].replace(" ", "_").replace("-", "")
            rb_rows.append((tlabel, redis_benchmark(tport, "rb_" + slug, outdir, args, [], procs, tpid)))
        procs.check_alive()
        with open(os.path.join(outdir, "runs.json"), "w") as f:
            json.dump({"memtier": results, "redis_benchmark": rb_rows}, f, indent=1)
        mb.report(results, targets, sizes, pipelines, args, outdir)
        lines = ["", f"redis-benchmark -c {args.clients} -n {args.rb_requests} -P 16 -r {args.keys} "
                 "-t set,get,mset (requests/s; MSET of 10 keys counts as one request)", "",
                 "| target | SET/s | GET/s | MSET/s | target CPU s/100k req |", "|---|---:|---:|---:|---:|"]
        for tlabel, row in rb_rows:
            rps = row["rps"]
            lines.append(f"| {tlabel} | {rps.get('SET', 0):,.0f} | {rps.get('GET', 0):,.0f} | "
                         f"{rps.get('MSET', 0):,.0f} | {row['cpu_target']:.3f} |")
        text = "\n".join(lines) + "\n"
        with open(os.path.join(outdir, "table.md"), "a") as f:
            f.write(text)
        print(text)
        return 0
    except BenchFailure as e:
        log(f"\nBENCHMARK FAILED: {e}\nlogs: {outdir}")
        return 1
    finally:
        procs.stop_all()


if __name__ == "__main__":
    sys.exit(main())
