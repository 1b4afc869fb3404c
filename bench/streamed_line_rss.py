#!/usr/bin/python3
"""bench/streamed_line_rss.py: what walnut holds for one long streamed get line.

Starts two real memcached and one walnut (one worker) on loopback ports, then one
client sends `get` + KEYS distinct KEYLEN-byte keys (misses) in 1 MB writes, holds
the line's last key and its end back for HOLD seconds, then sends them and reads
the answer. walnut's RSS (VmRSS, and VmHWM reset before the line) is printed at
baseline, while the line is open, and after it answered, with what the client
got (END, an error line, or a disconnect) and the pool's client_overlimit.

    WALNUT_BIN=build/walnut /usr/bin/python3 bench/streamed_line_rss.py \
        [--limit BYTES] [--keys 100000] [--keylen 250] [--hold 3]

Run with Debian's /usr/bin/python3. Loopback only; every process it starts is
stopped by PID (the integration harness's own cleanup).
"""

import argparse
import os
import socket
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "test",
                                "integration"))
import harness as h  # noqa: E402

MiB = 1 << 20


def stat(port, name):
    with h.Raw(port, timeout=10) as c:
        c.send(b"stats\r\n")
        raw = c.recv_until(b"END\r\n")
    for line in raw.split(b"\r\n"):
        parts = line.split(b" ")
        if len(parts) == 3 and parts[1] == name.encode():
            return int(parts[2])
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=None, help="client_buffer_limit (bytes)")
    ap.add_argument("--keys", type=int, default=100000)
    ap.add_argument("--keylen", type=int, default=250)
    ap.add_argument("--hold", type=float, default=3.0)
    a = ap.parse_args()

    tmp = h.TempDir()
    procs = []
    try:
        mcs = [h.Memcached(tmp, name="mc%d" % i).start() for i in range(2)]
        procs += mcs
        settings = {"timeout": 30000}
        if a.limit is not None:
            settings["client_buffer_limit"] = a.limit
        px = h.Proxy(tmp, {"alpha": h.pool(mcs, **settings)}, workers=1).start()
        procs.append(px)
        port, pid = px.port(), px.pid
        # warm up: one short get
        with h.Raw(port) as c:
            c.request(b"get warm\r\n", b"END\r\n")
        time.sleep(0.3)
        base = h.proc_status(pid, "VmRSS")
        have_peak = h.reset_peak(pid)
        if a.keylen >= 8:
            keys = [(b"%07d:" % i).ljust(a.keylen, b"k") for i in range(a.keys)]
        else:  # short keys: hex, as long as asked (repeating past 16 ** keylen)
            keys = [b"%0*x" % (a.keylen, i % 16 ** a.keylen) for i in range(a.keys)]
        body = b"get " + b" ".join(keys[:-1]) + b" "
        tail = keys[-1] + b"\r\n"
        print("line: %d keys of %d bytes, %.1f MB; client_buffer_limit %s" % (
            a.keys, a.keylen, (len(body) + len(tail)) / 1e6,
            a.limit if a.limit is not None else "default (64 MiB)"))
        print("baseline RSS %.1f MiB" % (base / MiB))
        s = socket.create_connection((h.HOST, port), timeout=60)
        sent = 0
        cut = False
        t0 = time.monotonic()
        try:
            for i in range(0, len(body), 1 << 20):
                s.sendall(body[i:i + (1 << 20)])
                sent += min(1 << 20, len(body) - i)
                time.sleep(0.02)
        except (BrokenPipeError, ConnectionResetError):
            cut = True
        print("sent %.1f MB in %.1f s%s" % (sent / 1e6, time.monotonic() - t0,
                                            " (walnut closed the connection)" if cut else ""))
        open_rss = 0
        end = time.monotonic() + a.hold
        while time.monotonic() < end:
            open_rss = max(open_rss, h.proc_status(pid, "VmRSS"))
            time.sleep(0.05)
        peak_open = h.proc_status(pid, "VmHWM") if have_peak else open_rss
        print("line open (end held back %.1f s): RSS %.1f MiB (+%.1f), peak %.1f MiB (+%.1f)" % (
            a.hold, open_rss / MiB, (open_rss - base) / MiB, peak_open / MiB,
            (peak_open - base) / MiB))
        got = b""
        try:
            s.sendall(tail)
            s.settimeout(60)
            while not got.endswith(b"\r\n") or got.count(b"\r\n") < 1:
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                got += chunk
        except (BrokenPipeError, ConnectionResetError, socket.timeout) as e:
            got += ("<%s>" % type(e).__name__).encode()
        s.close()
        time.sleep(0.5)
        after = h.proc_status(pid, "VmRSS")
        peak = h.proc_status(pid, "VmHWM") if have_peak else max(open_rss, after)
        print("client got: %r" % (got[:80] if got else b"<closed, nothing>"))
        print("after: RSS %.1f MiB (+%.1f), peak over the run %.1f MiB (+%.1f)" % (
            after / MiB, (after - base) / MiB, peak / MiB, (peak - base) / MiB))
        print("client_overlimit %s" % stat(port, "client_overlimit"))
        log = h.tail(px.log_path, 4000)
        for line in log.splitlines():
            if "client_buffer_limit" in line:
                print("log: %s" % line.strip())
        px.stop()
    finally:
        for p in procs:
            p.kill()
        tmp.cleanup()


if __name__ == "__main__":
    main()
