#!/usr/bin/python3
"""CPU per request, counted in instructions: the proxy runs under callgrind.

Wall-clock CPU time on a shared 2-core machine moves with whatever else runs;
instruction counts do not (callgrind counts the same total for the same
binary and input). Each target proxy -- one or more walnut binaries
(--walnut PATH, repeatable; e.g. before and after a change) and nutcracker --
runs in front of two memcached under `valgrind --tool=callgrind`, and
memtier_benchmark sends a fixed number of requests (no time limit) through it
twice: N and 2N requests per client. The difference between the two runs'
totals, divided by the extra requests, is the cost of one request with
start-up and shutdown taken out. Pipeline 1 and 16, ratio 1:10 (set:get),
32-byte values (--data-size), keys preloaded so gets hit. memcached text by
default; --protocol redis puts two redis-servers behind a `redis: true` pool.

Run: bench/cpu_per_request.py --walnut build-before/walnut --walnut build-bench/walnut
     bench/cpu_per_request.py --protocol redis --data-size 1024 --walnut build-bench/walnut
Prints a markdown table; see bench/README.md.
"""

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HOST = "127.0.0.1"


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_port(port, deadline=60.0):
    end = time.time() + deadline
    while time.time() < end:
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("port %d never answered" % port)


def need(tool, hint):
    path = shutil.which(tool) or next(
        (os.path.join(d, tool) for d in ("/usr/sbin", "/usr/local/bin")
         if os.access(os.path.join(d, tool), os.X_OK)), None)
    if path is None:
        raise SystemExit("cpu_per_request: %s is not installed (%s)" % (tool, hint))
    return path


MEMTIER_PROTOCOL = {"memcache": "memcache_text", "memcache_binary": "memcache_binary",
                    "redis": "redis"}


def memtier(port, requests, pipeline, args):
    clients, threads = args.clients, args.threads
    cmd = [need("memtier_benchmark", "build it from RedisLabs/memtier_benchmark, see bench/README.md"),
           "-s", HOST, "-p", str(port), "--protocol=" + MEMTIER_PROTOCOL[args.protocol],
           "-t", str(threads), "-c", str(clients), "--ratio=1:10",
           "--data-size=%d" % args.data_size, "--key-pattern=R:R",
           "--key-maximum=%d" % args.keys, "--pipeline=%d" % pipeline,
           "--requests=%d" % requests, "--hide-histogram", "--distinct-client-seed"]
    if args.multi_key_get > 0:
        cmd.append("--multi-key-get=%d" % args.multi_key_get)
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=900)
    if r.returncode != 0:
        raise SystemExit("memtier failed: %s" % r.stderr[-2000:])
    return requests * clients * threads


def callgrind_total(outfile):
    with open(outfile) as f:
        for line in f:
            m = re.match(r"(?:summary|totals):\s+(\d+)", line)
            if m:
                return int(m.group(1))
    raise SystemExit("no total in %s" % outfile)


def one_run(name, argv_for, tmp, requests, pipeline, args):
    """Instructions the proxy executed for `requests` per client."""
    port = free_port()
    out = os.path.join(tmp, "cg.%s.%d.%d.out" % (name, pipeline, requests))
    log = open(os.path.join(tmp, "%s.log" % name), "a")
    p = subprocess.Popen(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out]
                         + argv_for(port), stdout=log, stderr=log)
    try:
        wait_port(port)
        n = memtier(port, requests, pipeline, args)
    finally:
        p.send_signal(signal.SIGINT if name == "nutcracker" else signal.SIGTERM)
        try:
            p.wait(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return callgrind_total(out), n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--walnut", action="append", default=[], help="walnut binary (repeatable)")
    ap.add_argument("--requests", type=int, default=2000, help="N: requests per client")
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--keys", type=int, default=1000)
    ap.add_argument("--pipelines", default="1,16")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-nutcracker", action="store_true")
    ap.add_argument("--protocol", choices=sorted(MEMTIER_PROTOCOL), default="memcache")
    ap.add_argument("--data-size", type=int, default=32, help="value bytes (default 32)")
    ap.add_argument("--multi-key-get", type=int, default=0,
                    help="memtier's --multi-key-get: gets of up to N keys (split over both "
                         "servers); default 0, one key a get")
    args = ap.parse_args()
    need("valgrind", "Debian package valgrind")
    redis = args.protocol == "redis"
    if redis:
        server = need("redis-server", "Debian package redis-server")
    else:
        server = need("memcached", "Debian package memcached")
    walnuts = args.walnut or [os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), "build", "walnut")]
    tmp = tempfile.mkdtemp(prefix="walnut-cpu-")
    backends = []
    try:
        ports = []
        for _ in range(2):
            port = free_port()
            if redis:
                argv = [server, "--port", str(port), "--bind", HOST, "--save", "",
                        "--appendonly", "no"]
            else:
                argv = [server, "-u", "nobody", "-l", HOST, "-p", str(port), "-U", "0", "-t", "2"]
            backends.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL))
            ports.append(port)
        for port in ports:
            wait_port(port)
        conf = os.path.join(tmp, "pool.yml")

        def write_conf(listen_port):
            with open(conf, "w") as f:
                f.write("bench:\n  listen: %s:%d\n  hash: fnv1a_64\n  distribution: ketama\n"
                        "  timeout: 5000\n%s  servers:\n"
                        % (HOST, listen_port, "  redis: true\n" if redis else ""))
                for port in ports:
                    f.write("    - %s:%d:1\n" % (HOST, port))
            return conf

        targets = []
        for i, w in enumerate(walnuts):
            label = "walnut %s" % w

            def argv(port, w=w):
                return [w, "-c", write_conf(port), "--workers", "1", "-v", "3",
                        "-s", str(free_port()), "-a", HOST]
            targets.append((("walnut%d" % i), label, argv))
        if not args.no_nutcracker:
            nc = need("nutcracker", "Debian package nutcracker")

            def nargv(port):
                return [nc, "-c", write_conf(port), "-s", str(free_port()), "-a", HOST, "-v", "3"]
            targets.append(("nutcracker", "nutcracker 0.5.0", nargv))

        # Preload every key into both memcached, so gets hit wherever a key lands.
        for port in ports:
            subprocess.run([need("memtier_benchmark", "see bench/README.md"), "-s", HOST, "-p",
                            str(port), "--protocol=" + MEMTIER_PROTOCOL[args.protocol], "-t", "1",
                            "-c", "1", "--ratio=1:0", "--data-size=%d" % args.data_size,
                            "--key-pattern=P:P",
                            "--key-maximum=%d" % args.keys, "--requests=%d" % args.keys,
                            "--hide-histogram"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, check=True, timeout=300)
        # How many requests share a read or a loop turn depends on timing, so
        # each figure is the median of --rounds, the targets interleaved.
        rows = []
        for pipeline in [int(x) for x in args.pipelines.split(",")]:
            samples = {name: [] for name, _, _ in targets}
            for _ in range(args.rounds):
                for name, label, argv in targets:
                    small, n1 = one_run(name, argv, tmp, args.requests, pipeline, args)
                    big, n2 = one_run(name, argv, tmp, 2 * args.requests, pipeline, args)
                    per = (big - small) / (n2 - n1)
                    samples[name].append(per)
                    print("pipeline %2d  %-60s %8.0f instructions/request" % (pipeline, label, per),
                          file=sys.stderr, flush=True)
            for name, label, _ in targets:
                v = sorted(samples[name])
                rows.append((pipeline, label, v[len(v) // 2], v))
        print("%s, %d-byte values%s" % (args.protocol, args.data_size,
                                         ", gets of up to %d keys" % args.multi_key_get
                                         if args.multi_key_get > 0 else ""))
        print("| pipeline | target | instructions per request (median) | rounds |")
        print("|---:|---|---:|---|")
        for pipeline, label, per, v in rows:
            print("| %d | %s | %.0f | %s |" % (pipeline, label, per, ", ".join("%.0f" % x for x in v)))
    finally:
        for b in backends:
            b.terminate()
            b.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
