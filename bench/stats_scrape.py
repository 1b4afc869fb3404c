#!/usr/bin/python3
"""Does scraping walnut's stats slow its data path? memtier_benchmark through walnut with a GET of
/metrics every 100 ms (as a Prometheus with a 100 ms scrape interval would) versus no scraping.

Starts two memcached and one walnut (all on ephemeral 127.0.0.1 ports), preloads every key, then
runs memtier_benchmark against walnut in rounds. Each round has one run without scraping and one
with a scraper thread fetching /metrics on a kept-alive HTTP connection every --interval-ms; the
order alternates from round to round. Prints a markdown table (medians over the rounds, the
scrape-on/scrape-off ratio of each round) and writes it, with every run, to the output directory.

See bench/README.md. Run: bench/stats_scrape.sh [--rounds 5] [--test-time 5] [--interval-ms 100]
"""

import argparse
import http.client
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import memcached as mb  # noqa: E402  (the shared helpers: processes, memtier runs, load checks)

HOST = mb.HOST
log = mb.log
BenchFailure = mb.BenchFailure


class Scraper:
    """GET path every interval on one kept-alive connection until stopped (bounded by max_seconds).

    Records each scrape's latency and size; any status but 200, a short body or a connection error
    is recorded as an error (the run then fails).
    """

    def __init__(self, port, path, interval, max_seconds):
        self.port, self.path, self.interval, self.max_seconds = port, path, interval, max_seconds
        self.latencies, self.sizes, self.errors = [], [], []
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        end = time.monotonic() + self.max_seconds
        conn = None
        nxt = time.monotonic()
        while not self.stop_event.is_set() and time.monotonic() < end:
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(HOST, self.port, timeout=10)
                t0 = time.monotonic()
                conn.request("GET", self.path)
                r = conn.getresponse()
                body = r.read()
                dt = time.monotonic() - t0
                if r.status != 200 or not body.endswith(b"\n"):
                    self.errors.append(f"status {r.status}, {len(body)} bytes")
                else:
                    self.latencies.append(dt)
                    self.sizes.append(len(body))
            except (OSError, http.client.HTTPException) as e:
                self.errors.append(repr(e))
                if conn is not None:
                    conn.close()
                conn = None
                if len(self.errors) > 50:
                    return
            nxt += self.interval
            self.stop_event.wait(max(0.0, nxt - time.monotonic()))
        if conn is not None:
            conn.close()

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.stop_event.set()
        self.thread.join(self.max_seconds + 15)


def one_run(port, wpid, mc_pids, mode, label, rnd, base, procs, outdir, args):
    scraper = None
    if mode == "scrape":
        scraper = Scraper(args.stats_port, args.path, args.interval_ms / 1000.0,
                          args.test_time + 60).start()
    watch = [wpid] + mc_pids
    try:
        js, wall, mt_cpu, cpu, foreign = mb.run_memtier(
            port, base + [f"--test-time={args.test_time}", f"--pipeline={args.pipeline}",
                          f"--data-size={args.size}"],
            outdir, label, args.test_time + 60, watch, procs)
    finally:
        if scraper is not None:
            scraper.stop()
    count = js["ALL STATS"]["Totals"]["Count"]
    ops = mb.measured_rate(js, args.test_time, label)
    hr = mb.hit_rate(js)
    if hr < 0.99:
        raise BenchFailure(f"{label}: GET hit rate {hr:.4f} < 0.99 (wrong data or lost keys?)")
    r = {"mode": mode, "round": rnd + 1, "label": label, "count": count, "ops": ops,
         "p50": mb.pct(js, "p50.00"), "p99": mb.pct(js, "p99.00"), "hit": hr, "wall": wall,
         "foreign_cpu": foreign, "cpu_walnut": cpu[wpid] / count * 1e5,
         "scrapes": 0, "scrape_ms_p50": None, "scrape_ms_max": None, "scrape_bytes": None}
    if scraper is not None:
        if scraper.errors:
            raise BenchFailure(f"{label}: {len(scraper.errors)} failed scrapes, e.g. {scraper.errors[:3]}")
        if not scraper.latencies:
            raise BenchFailure(f"{label}: the scraper made no scrape")
        r["scrapes"] = len(scraper.latencies)
        r["scrape_ms_p50"] = statistics.median(scraper.latencies) * 1000
        r["scrape_ms_max"] = max(scraper.latencies) * 1000
        r["scrape_bytes"] = statistics.median(scraper.sizes)
    log(f"{label}: {ops:,.0f} ops/s  p50 {r['p50']:.3f} ms  p99 {r['p99']:.3f} ms  "
        f"walnut CPU {r['cpu_walnut']:.3f} s/100k  scrapes {r['scrapes']}  other load {foreign:.0%}")
    return r


def report(results, args, outdir):
    def med(mode, k):
        return statistics.median(r[k] for r in results if r["mode"] == mode)

    rounds = sorted({r["round"] for r in results})
    by = {(r["mode"], r["round"]): r for r in results}
    paired = [by[("scrape", n)]["ops"] / by[("none", n)]["ops"] for n in rounds]
    offs = [by[("none", n)]["ops"] for n in rounds]
    lines = [
        f"walnut: {args.walnut} ({mb.walnut_revision(args.walnut)}), --workers {args.workers}; "
        f"{os.cpu_count()} CPUs; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"memtier_benchmark --protocol=memcache_text -t {args.threads} -c {args.clients} "
        f"--ratio={args.ratio} --pipeline={args.pipeline} --data-size={args.size} "
        f"--test-time={args.test_time}, keys 1..{args.keys} (R:R); scraper: GET {args.path} every "
        f"{args.interval_ms} ms on one kept-alive connection; {len(rounds)} rounds, order alternating",
        "",
        "| scraping | ops/s (median) | p50 ms | p99 ms | walnut CPU s/100k req | scrapes per run "
        "| scrape ms p50 / max | /metrics bytes | ops/s per round |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for mode, name in (("none", "none"), ("scrape", f"{args.path} every {args.interval_ms} ms")):
        rs = [by[(mode, n)] for n in rounds]
        scr = (f"{med(mode, 'scrape_ms_p50'):.2f} / {max(r['scrape_ms_max'] for r in rs):.2f}"
               if mode == "scrape" else "-")
        nbytes = f"{med(mode, 'scrape_bytes'):,.0f}" if mode == "scrape" else "-"
        per_round = ", ".join("{:,.0f}".format(r["ops"]) for r in rs)
        lines.append(f"| {name} | {med(mode, 'ops'):,.0f} | {med(mode, 'p50'):.3f} | {med(mode, 'p99'):.3f} | "
                     f"{med(mode, 'cpu_walnut'):.3f} | {med(mode, 'scrapes'):.0f} | {scr} | {nbytes} | "
                     f"{per_round} |")
    lines.append("")
    ratio = med("scrape", "ops") / med("none", "ops")
    lines.append(f"scrape/none ops ratio: {ratio:.3f} (medians); per round {', '.join(f'{x:.3f}' for x in paired)} "
                 f"(min {min(paired):.3f}, max {max(paired):.3f}). Spread of the no-scrape runs alone: "
                 f"max/min {max(offs) / min(offs):.3f}. walnut CPU per request, scrape/none: "
                 f"{med('scrape', 'cpu_walnut') / med('none', 'cpu_walnut'):.3f}.")
    fc = sorted(r["foreign_cpu"] for r in results)
    lines.append(f"Other processes (plus steal) used a median {statistics.median(fc):.1%}, max {fc[-1]:.1%} "
                 f"of the machine during the kept runs; {sum(r['attempt'] - 1 for r in results)} runs "
                 f"repeated because of such load.")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(outdir, "table.md"), "w") as f:
        f.write(text)
    print(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--walnut", default=os.environ.get("WALNUT") or mb.default_walnut(),
                    help="walnut binary (default: build-bench/walnut or build/walnut in the repository)")
    ap.add_argument("--memcached", default=shutil.which("memcached") or "/usr/bin/memcached")
    ap.add_argument("--workers", type=int, default=1, help="walnut --workers (default 1)")
    ap.add_argument("--test-time", type=int, default=5, help="seconds per memtier run (default 5)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of (no scrape, scrape) (default 5)")
    ap.add_argument("--interval-ms", type=int, default=100, help="scrape interval (default 100)")
    ap.add_argument("--path", default="/metrics", help="what to scrape (default /metrics)")
    ap.add_argument("--keys", type=int, default=100000, help="key range memtier-1..memtier-N (default 100000)")
    ap.add_argument("--threads", type=int, default=1, help="memtier threads (default 1)")
    ap.add_argument("--clients", type=int, default=25, help="memtier clients per thread (default 25)")
    ap.add_argument("--pipeline", type=int, default=1)
    ap.add_argument("--size", type=int, default=32, help="value size in bytes (default 32)")
    ap.add_argument("--ratio", default="1:10", help="set:get (default 1:10)")
    ap.add_argument("--max-other-load", type=float, default=0.25,
                    help="a run during which other processes (and steal) used more than this share of the "
                         "machine is repeated (default 0.25); before each run, wait up to 10 s for quiet")
    ap.add_argument("--retries", type=int, default=2, help="repeats of a disturbed run (default 2)")
    ap.add_argument("--out", default=None, help="directory for logs and raw results (default: a new /tmp dir)")
    args = ap.parse_args()

    if shutil.which("memtier_benchmark") is None:
        log("stats_scrape: memtier_benchmark is not on PATH, so nothing was measured. It is not a Debian "
            "package: build it from https://github.com/RedisLabs/memtier_benchmark (autoreconf -ivf && "
            "./configure && make) and put the binary on PATH. See bench/README.md.")
        return 2
    for name, path in (("walnut", args.walnut), ("memcached", args.memcached)):
        if not path or not os.access(path, os.X_OK):
            log(f"{name} not found ({path})" + (
                f". Build it with: cmake -S {mb.REPO} -B {mb.REPO}/build-bench -DCMAKE_BUILD_TYPE=Release "
                f"&& cmake --build {mb.REPO}/build-bench -j2" if name == "walnut" else ""))
            return 2
    if not (1 <= args.rounds <= 20 and 2 <= args.test_time <= 120 and 100 <= args.keys <= 10_000_000
            and 10 <= args.interval_ms <= 10000 and 1 <= args.workers <= 64 and 0 <= args.retries <= 5):
        log("out of range: --rounds 1..20, --test-time 2..120, --keys 100..10000000, "
            "--interval-ms 10..10000, --workers 1..64, --retries 0..5")
        return 2

    outdir = args.out or tempfile.mkdtemp(prefix="walnut-bench-scrape-")
    os.makedirs(outdir, exist_ok=True)
    log(f"logs and raw memtier output: {outdir}")

    def on_term(signum, frame):
        raise SystemExit(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)

    procs = mb.Procs()
    try:
        mc_a, mc_b, wport, args.stats_port = mb.free_ports(4)
        mcs = []
        for name, port in (("memcached A", mc_a), ("memcached B", mc_b)):
            lp = os.path.join(outdir, name.replace(" ", "_") + ".log")
            argv = [args.memcached, "-l", HOST, "-p", str(port), "-U", "0", "-t", "1", "-m", "512",
                    "-c", "4096"]
            if os.geteuid() == 0:
                argv += ["-u", "root"]
            mcs.append(procs.start(name, argv, lp))
            mb.wait_listening(port, mcs[-1], name, lp)
        conf = os.path.join(outdir, "walnut.yml")
        mb.write_conf(conf, wport, [mc_a, mc_b])
        lp = os.path.join(outdir, "walnut.log")
        w = procs.start("walnut", [args.walnut, "-c", conf, "--workers", str(args.workers),
                                   "-s", str(args.stats_port), "-a", HOST, "-o", lp], lp)
        mb.wait_listening(wport, w, "walnut", lp)
        mb.wait_listening(args.stats_port, w, "walnut stats", lp)
        mb.check_correctness([("walnut", wport)], "start", args.keys, memtier_keys=False)

        label = "preload"
        js, wall, _, _, _ = mb.run_memtier(
            wport, ["-t", "1", "-c", "1", "--pipeline=32", "--ratio=1:0", "--key-pattern=P:P",
                    "--key-minimum=1", f"--key-maximum={args.keys}", f"--requests={args.keys}",
                    f"--data-size={args.size}"], outdir, label, 120, [], procs)
        if js["ALL STATS"]["Sets"]["Count"] != args.keys:
            raise BenchFailure(f"preload: {js['ALL STATS']['Sets']['Count']} sets, expected {args.keys}")
        log(f"preload: {args.keys} keys of {args.size} B in {wall:.1f} s")

        base = ["-t", str(args.threads), "-c", str(args.clients), f"--ratio={args.ratio}",
                "--key-minimum=1", f"--key-maximum={args.keys}", "--key-pattern=R:R", "--distinct-client-seed"]
        mc_pids = [m.pid for m in mcs]
        results = []
        for rnd in range(args.rounds):
            modes = ("none", "scrape") if rnd % 2 == 0 else ("scrape", "none")
            for mode in modes:
                best = None
                for attempt in range(args.retries + 1):
                    mb.wait_quiet(args.max_other_load, 10.0)
                    label = f"r{rnd + 1}_{mode}" + (f"_retry{attempt}" if attempt else "")
                    r = one_run(wport, w.pid, mc_pids, mode, label, rnd, base, procs, outdir, args)
                    r["attempt"] = attempt + 1
                    if best is None or r["foreign_cpu"] < best["foreign_cpu"]:
                        best = r
                    if r["foreign_cpu"] <= args.max_other_load:
                        break
                    if attempt < args.retries:
                        log(f"{label}: other processes used {r['foreign_cpu']:.0%} of the machine; "
                            f"running it again")
                results.append(best)
        mb.check_correctness([("walnut", wport)], "after", args.keys)
        # The stats still add up after all that: walnut counted every request memtier made.
        c = http.client.HTTPConnection(HOST, args.stats_port, timeout=10)
        c.request("GET", "/stats")
        st = json.loads(c.getresponse().read())
        c.close()
        # (memtier closes with SO_LINGER 0: every one of its connections ends in a reset,
        # which walnut counts as client_err, as twemproxy does. So client_err says nothing here.)
        if st["bench"]["forward_error"]:
            raise BenchFailure(f"walnut answered {st['bench']['forward_error']} requests with its own "
                               f"errors (forward_error)")
        procs.check_alive()
        with open(os.path.join(outdir, "runs.json"), "w") as f:
            json.dump(results, f, indent=1)
        report(results, args, outdir)
        return 0
    except BenchFailure as e:
        log(f"\nBENCHMARK FAILED: {e}\nlogs: {outdir}")
        return 1
    finally:
        procs.stop_all()


if __name__ == "__main__":
    sys.exit(main())
