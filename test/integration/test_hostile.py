#!/usr/bin/python3
"""test_hostile.py: regression tests for the defects of the outside review.

Each test names the defect it guards (the review's numbering) and asserts the
behaviour of the rebuilt worker core:

   1  bytes after `quit` are never run
   2  a rejected request's data block is swallowed, never run (no smuggling)
   3  a client that closes mid-value is closed on walnut's side too
   4  memory is bounded: client_buffer_limit, free buffers returned, idle
      connections hold no read buffer
   5  multi-get lines over 64 KiB work
   6  a noreply line with a long run of spaces is still forwarded
   7  a backend that answers probes but fails every real request is ejected
   8  an unsolicited backend reply never reaches another client
   9  SIGTERM with an idle client connected exits at once
  10  shutdown while workers are busy is clean (no sanitizer report)
  11  a second walnut on the same listen address fails to start
  12  timeout bounds the wait for the next byte, not for a whole reply
  13  a connect that fails at once does not free what the caller still uses
  14  server_ejects is counted

Misbehaving backends come from fakes.py. RSS bounds (defect 4) are asserted
only for a plain build: a sanitizer's allocator keeps freed memory (ASan's
quarantine) and shadow memory, so there the functional half is asserted and
the idle-connections test is skipped.

Run with Debian's /usr/bin/python3; WALNUT_BIN names the binary.
"""

import collections
import hashlib
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

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fakes  # noqa: E402
import harness as h  # noqa: E402

HOST = h.HOST
MiB = 1 << 20
SANITIZER_RX = re.compile(r"runtime error|AddressSanitizer|ThreadSanitizer")

sanitized = h.sanitized


def raise_own_fd_limit(want=4096):
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE,
                           (min(want, hard) if hard != resource.RLIM_INFINITY else want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def measured(what, value):
    sys.stderr.write("  [measured] %s: %s\n" % (what, value))




def most_queued(px):
    """The most bytes walnut said were queued for a server it refused."""
    return max(int(n) for n in re.findall(r"has not taken (\d+) bytes", px.log()))


def nfds(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except OSError:
        return -1


def walnut_stats(port, timeout=10.0):
    """{name: value} from `stats` answered by walnut itself."""
    with h.Raw(port, timeout=timeout) as c:
        c.send(b"stats\r\n")
        raw = c.recv_until(b"END\r\n")
    out = {}
    for line in raw.split(b"\r\n"):
        if line.startswith(b"STAT "):
            parts = line.decode("utf-8", "replace").split(" ", 2)
            out[parts[1]] = parts[2] if len(parts) > 2 else ""
    return out


def stat_int(port, name):
    st = walnut_stats(port)
    if name not in st:
        raise AssertionError("walnut's stats have no %s (has: %s)" % (name, " ".join(sorted(st))))
    return int(st[name])


def get_reply(items):
    return b"".join(b"VALUE %s %d %d\r\n%s\r\n" % (k, f, len(v), v) for k, f, v in items) + \
        b"END\r\n"


def read_file(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def drain_until_closed(sock, deadline, max_bytes=4 << 30):
    """Read and drop until EOF or RST; returns (closed, nbytes). Bounded in time."""
    end = time.monotonic() + deadline
    n = 0
    while n < max_bytes:
        left = end - time.monotonic()
        if left <= 0:
            return False, n
        sock.settimeout(left)
        try:
            chunk = sock.recv(1 << 20)
        except socket.timeout:
            return False, n
        except (ConnectionResetError, BrokenPipeError):
            return True, n
        if not chunk:
            return True, n
        n += len(chunk)
    return False, n


def read_count(sock, n):
    """Read and drop up to n bytes; how many came before EOF."""
    got = 0
    while got < n:
        d = sock.recv(min(n - got, 1 << 20))
        if not d:
            break
        got += len(d)
    return got


def rst_close(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class HostileCase(h.ProxyTestCase):
    """Fixtures shared by the tests below."""

    def setUp(self):
        if h.UNDER_NUTCRACKER:
            self.skipTest("walnut's own behaviour (the rebuilt core)")
        t0 = time.monotonic()
        # registered first, so it runs last: the time includes every cleanup
        self.addCleanup(lambda: sys.stderr.write("  [%.1f s] %s\n" % (
            time.monotonic() - t0, self.id().split(".", 1)[-1])))
        self.tmp = self.tmpdir()

    def memcached(self, n=1, **kw):
        out = []
        for i in range(n):
            m = h.Memcached(self.tmp, name="mc%d" % i, **kw).start()
            self.addCleanup(m.kill)  # SIGKILL: a SIGTERM'd memcached takes ~1 s to go
            out.append(m)
        return out

    def fake(self, fake):
        self.addCleanup(fake.stop)
        return fake

    def proxy(self, servers, workers=1, start=True, verbosity=5, nofile=None, name=None,
              **settings):
        px = h.Proxy(self.tmp, {"alpha": h.pool(servers, **settings)}, workers=workers,
                     verbosity=verbosity, nofile=nofile, name=name)
        if start:
            px.start()
            self.addCleanup(px.kill)
        else:
            px.write_config()
        return px

    def raw(self, port, timeout=h.IO_TIMEOUT):
        c = h.Raw(port, timeout=timeout)
        self.addCleanup(c.close)
        return c

    def sock(self, port, timeout=h.IO_TIMEOUT):
        s = socket.create_connection((HOST, port), timeout=timeout)
        self.addCleanup(s.close)
        return s

    def sets_refused(self, port, keys, value, gap):
        """A set of value for each key, each on a client of its own, `gap`
        seconds apart: how many were refused as out of memory (a refusal is
        at once; the others stay queued, unanswered). Replies are collected
        after the last send, with one deadline for all: a refusal read late
        by a loaded machine is still a refusal."""
        clients = []
        for k in keys:
            c = self.raw(port, timeout=10)
            c.send(b"set %s 0 0 %d\r\n%s\r\n" % (k, len(value), value))
            clients.append(c)
            time.sleep(gap)
        refused = 0
        end = time.monotonic() + 3
        for c in clients:
            try:
                line = c.recv_line(timeout=max(0.01, end - time.monotonic()))
                if line.startswith(b"SERVER_ERROR Out of memory"):
                    refused += 1
            except AssertionError:
                pass  # queued: no answer while the server does not take it
        return refused

    def assertAlive(self, px, what=""):
        if not px.alive():
            self.fail("%swalnut exited (status %s); log:\n%s" % (
                what + ": " if what else "", px.proc.returncode, px.log()))

    def assertNoSanitizerReport(self, px):
        text = read_file(px.log_path) + read_file(px.log_path + ".stdout")
        bad = [l for l in text.splitlines() if SANITIZER_RX.search(l)]
        if bad:
            self.fail("sanitizer report in walnut's output:\n%s\n--- log tail:\n%s" % (
                "\n".join(bad[:20]), px.log()[-6000:]))

    def keys_on(self, px, addr, n, prefix, limit=20000):
        """n keys that walnut --locate maps to the server at addr."""
        out = []
        step = 400
        i = 0
        while len(out) < n and i < limit:
            # varied tails: fnv1a's low bits barely move with a last digit
            cand = [b"%s%d:%s" % (prefix, j, hashlib.md5(b"%d" % j).hexdigest()[:6].encode())
                    for j in range(i, i + step)]
            where = h.walnut_locate(px.conf_path, cand)
            for k in cand:
                if where[("alpha", k)][1] == addr:
                    out.append(k)
            i += step
        self.assertGreaterEqual(len(out), n, "not enough keys on %s" % addr)
        return out[:n]

    def version_answered(self, port, what=""):
        c = self.raw(port, timeout=10)
        c.send(b"version\r\n")
        line = c.recv_line()
        self.assertTrue(line.startswith(b"VERSION "), "%s: %r" % (what, line))


# ---------------------------------------------------------------------------


class TestProtocolFraming(HostileCase):
    """Defects 1, 2, 5, 6: what a client sends is run exactly as framed."""

    def start(self, nmc=1, **kw):
        self.mcs = self.memcached(nmc)
        self.px = self.proxy(self.mcs, timeout=10000, **kw)
        self.port = self.px.port()
        return self.mcs[0]

    def test_01_bytes_after_quit_are_never_run(self):
        """Defect 1: requests pipelined after `quit` are dropped, not forwarded."""
        mc = self.start()
        h.mc_command(mc.port, b"set victim 0 0 1\r\nv\r\n", expect=b"STORED\r\n")
        c = self.raw(self.port)
        c.send(b"quit\r\ndelete victim\r\n")
        c.expect_closed(what="after quit")
        # One worker, one server connection: anything walnut forwarded for the
        # closed client reaches memcached before this get.
        c2 = self.raw(self.port)
        c2.send(b"get victim\r\n")
        got = c2.recv_until(b"END\r\n")
        self.assertIn(b"victim", mc.keys_held([b"victim"]),
                      "`delete victim` sent after `quit` was run (get through walnut: %r)" % got)
        self.assertEqual(got, get_reply([(b"victim", 0, b"v")]))

        c3 = self.raw(self.port)
        c3.send(b"get qk\r\nquit\r\nset x 0 0 1\r\nz\r\n")
        c3.expect(b"END\r\n", what="reply to the get before quit")
        c3.expect_closed(what="after quit")
        c4 = self.raw(self.port)
        c4.send(b"get x\r\n")
        got = c4.recv_until(b"END\r\n")
        self.assertEqual(mc.keys_held([b"x"]), set(),
                         "`set x` sent after `quit` was run (get through walnut: %r)" % got)
        self.assertEqual(got, b"END\r\n")

    def test_01b_replies_before_quit_arrive_whole_when_more_follows(self):
        """Defect 1, the other half: a client that sent more after `quit`
        than walnut read, and reads its replies slowly, gets every reply asked
        before `quit`, then EOF. Closing over unread bytes makes the kernel
        reset the connection and throw away what it had not delivered: the
        client got 1 of 3.8 MB, then a reset (memcached 1.6.18 itself does
        that)."""
        mc = h.Memcached(self.tmp, name="mcbig", extra=["-I", "2m"]).start()
        self.addCleanup(mc.kill)
        px = self.proxy([mc], timeout=10000)
        size = 1900000
        for k in (b"q1", b"q2"):
            h.mc_command(mc.port, b"set %s 0 0 %d\r\n%s\r\n" % (k, size, k * (size // 2)),
                         expect=b"STORED\r\n")
        want = get_reply([(b"q1", 0, b"q1" * (size // 2)), (b"q2", 0, b"q2" * (size // 2))])
        before = px.http_json()["alpha"]
        for more in (b"get q1\r\n" * 10, b"x" * (4 << 20), b""):
            with self.subTest(more=more[:8], n=len(more)):
                got, end = h.last_replies_then_more(px.port(), b"get q1 q2\r\nquit\r\n", more)
                self.assertTrue(got == want and end == "EOF",
                                "got %d of %d bytes, then %s" % (len(got), len(want), end))
        h.mc_command(px.port(), b"get q3\r\n", expect=b"END\r\n")  # walnut answers on
        # Each of them closed as a client that quits does: counted in
        # client_eof, not client_err (a review: the EOF of a client walnut
        # lingered for was taken for a broken socket)
        h.wait_until(lambda: px.http_json()["alpha"]["client_connections"] == 0, deadline=10)
        after = px.http_json()["alpha"]
        self.assertEqual((after["client_eof"] - before["client_eof"],
                          after["client_err"] - before["client_err"]), (4, 0))

    def test_01c_quit_read_at_once_with_more_after_it_ends_in_eof(self):
        """Defect 1's lingering close, when the client reads at once: its
        kernel had acknowledged the whole reply by the time walnut's last
        write returned, while more it sent after `quit` waited unread; walnut
        closed over those bytes and the client read a reset where it should
        read EOF (14 to 19 of 20 tries before the fix, with 1 MB after
        `quit`; a CI run caught it once)."""
        mc = self.start()
        h.mc_command(mc.port, b"set q1 0 0 2\r\nok\r\n", expect=b"STORED\r\n")
        ends = [h.last_replies_then_more(self.port, b"get q1\r\nquit\r\n", b"x" * (1 << 20),
                                         eager=True) for _ in range(10)]
        self.assertEqual(ends, [(b"VALUE q1 0 2\r\nok\r\nEND\r\n", "EOF")] * 10)

    def read_until_version(self, c, what):
        lines = []
        for _ in range(6):
            line = c.recv_line(timeout=10)
            lines.append(line)
            if line.startswith(b"VERSION "):
                return lines
        self.fail("%s: no VERSION line; got %r" % (what, lines))

    def test_02_rejected_request_data_block_is_swallowed(self):
        """Defect 2: the data block of a rejected storage request is never run as a command."""
        mc = self.start()
        h.mc_command(mc.port, b"set important 0 0 2\r\nok\r\n", expect=b"STORED\r\n")
        # a rejected ms (an invalid flag): its 16+2 bytes of data are the block.
        c = self.raw(self.port)
        c.send(b"ms foo 16 !\r\ndelete important\r\n")
        c.send(b"version\r\n")
        lines = self.read_until_version(c, "after a rejected ms")
        self.assertIn(b"important", mc.keys_held([b"important"]),
                      "the data block of a rejected `ms` was run as `delete important`; "
                      "walnut answered %r" % lines)
        self.assertNotIn(b"DELETED\r\n", lines)

        # A storage line whose length parses but whose flags do not: memcached
        # itself would run the block as a command (request smuggling).
        h.mc_command(mc.port, b"set important 0 0 2\r\nok\r\n", expect=b"STORED\r\n")
        c2 = self.raw(self.port)
        c2.send(b"set k abc 0 18\r\ndelete important\r\n\r\n")
        line = c2.recv_line(timeout=10)
        c2.send(b"version\r\n")
        lines = [line] + self.read_until_version(c2, "after a bad storage line")
        self.assertIn(b"important", mc.keys_held([b"important"]),
                      "the data block of `set k abc 0 18` was run as `delete important`; "
                      "walnut answered %r" % lines)
        self.assertEqual(lines[0], b"CLIENT_ERROR bad command line format\r\n")
        self.assertEqual(len(lines), 2, "one reply for the bad line, then VERSION: %r" % lines)
        self.assertEqual(mc.keys_held([b"k"]), set())

    def test_05_multiget_lines_over_64k(self):
        """Defect 5: a get line of ~130 KB (6,000 keys over two servers) is answered."""
        self.start(nmc=2)
        keys = [(b"mk:%05d:" % i).ljust(20, b"p") for i in range(6000)]
        present = [k for i, k in enumerate(keys) if i % 7 != 3]
        vals = {k: b"v%d" % (len(k) * 31 + i) for i, k in enumerate(present)}
        sets = b"".join(b"set %s 0 0 %d\r\n%s\r\n" % (k, len(v), v) for k, v in vals.items())
        got, err = h.send_and_read(self.port, sets, 8 * len(vals), timeout=60)
        self.assertFalse(err, err)
        self.assertEqual(got, b"STORED\r\n" * len(vals))
        where = h.placement(self.mcs, present)
        self.assertEqual(len(set(where.values())), 2, "keys on both servers")

        line = b"get " + b" ".join(keys) + b"\r\n"
        self.assertGreater(len(line), 120000)
        want = get_reply([(k, 0, vals[k]) for k in keys if k in vals])
        got, err = h.send_and_read(self.port, line, len(want), timeout=60)
        if got != want:
            self.fail("get of 6,000 keys (%d-byte line): %s" % (
                len(line), h.describe_mismatch(want, got)))

        # pymemcache's get_many sends one line: 2,000 keys of ~40 bytes (~82 KB)
        from pymemcache.client.base import Client
        pm = Client((HOST, self.port), connect_timeout=10, timeout=60, default_noreply=False)
        self.addCleanup(pm.close)
        pkeys = ["pm:%05d:" % i + "q" * 31 for i in range(2000)]
        pvals = {k: ("val%d" % i).encode() for i, k in enumerate(pkeys) if i % 5}
        self.assertEqual(pm.set_many(pvals), [])
        self.assertEqual(pm.get_many(pkeys), pvals)

    def test_05b_retrieval_lines_are_streamed(self):
        """Defect 5: a get line is parsed as it arrives, with no length limit; only the
        keys bound it. 10,000 keys of 100 bytes with 3,000 spaces after each (a 31 MB
        line, over the 16 MiB walnut used to hold before answering `CLIENT_ERROR line
        too long`): answered in key order with one END, while walnut's peak memory grows
        by far less than the line (the spaces are never held). A key over 250 bytes in
        a long line gets memcached's one error line (no hits), and the connection
        goes on."""
        self.start(nmc=2)
        keys = [(b"sk:%05d:" % i).ljust(100, b"q") for i in range(10000)]
        vals = {k: b"v%d" % i for i, k in enumerate(keys) if i % 9 == 4}
        sets = b"".join(b"set %s 0 0 %d\r\n%s\r\n" % (k, len(v), v) for k, v in vals.items())
        got, err = h.send_and_read(self.port, sets, 8 * len(vals), timeout=60)
        self.assertEqual(got, b"STORED\r\n" * len(vals), err)
        pid = self.px.pid
        have_peak = h.reset_peak(pid)
        before = h.rss(pid)
        pad = b" " * 3000
        line = b"get " + pad.join(keys) + b"\r\n"
        self.assertGreater(len(line), 29 << 20)
        want = get_reply([(k, 0, vals[k]) for k in keys if k in vals])
        got, err = h.send_and_read(self.port, line, len(want), timeout=120)
        if got != want:
            self.fail("a %d-byte get line: %s" % (len(line), h.describe_mismatch(want, got)))
        grew = (h.proc_status(pid, "VmHWM") if have_peak else h.rss(pid)) - before
        measured("peak memory growth for a %d MB get line" % (len(line) >> 20),
                 "%.1f MiB" % (grew / 1048576.0))
        # the keys (1 MB) are held until the line answers, twice (the client's parts
        # and the servers' lines); the 30 MB of spaces never are
        self.assertLess(grew, 16 << 20, "walnut held %d bytes for the line" % grew)

        # The parts before the long key are out (and answered) before it arrives: their
        # hits must not reach the client, however the line is cut into reads.
        bad = b"get " + b" ".join(keys[:5000]) + b" " + b"x" * 251 + b" " + keys[4] + b"\r\n"
        self.assertGreater(len(bad), 64 << 10)
        data = bad + b"get %s\r\n" % keys[4]
        want = b"CLIENT_ERROR bad command line format\r\n" + get_reply([(keys[4], 0, vals[keys[4]])])
        rng = random.Random(5)
        for attempt in range(20):
            c = self.raw(self.port, timeout=60)
            i = 0
            while i < len(data):
                n = rng.choice([1000, 7000, 65536, 100000, 300000])
                c.send(data[i:i + n])
                i += n
                if rng.random() < 0.3:
                    time.sleep(0.002)
            c.expect(want, what="attempt %d" % attempt)
            c.close()

    def test_05c_streamed_line_bounds_and_eof(self):
        """Defect 5: a streamed line's keys go out in parts of at least 256 keys (or
        16 KiB), so a client trickling keys one at a time makes few requests; a client
        that leaves in the middle of a long line is closed and its parts dropped (no
        fd kept, nothing answered to anyone else); pymemcache's get_many of 5,000 keys
        (a 235 KB line) is answered."""
        self.start(nmc=2)
        keys = [(b"tk:%05d:" % i).ljust(30, b"t") for i in range(3000)]
        head = b"get " + b" ".join(keys[:2300]) + b" "
        self.assertGreater(len(head), 64 << 10)
        frags0 = stat_int(self.port, "fragments")
        c = self.raw(self.port, timeout=60)
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.send(head)
        for k in keys[2300:]:
            c.send(k + b" ")
            time.sleep(0.001)
        c.send(b"\r\n")
        c.expect(b"END\r\n")
        frags = stat_int(self.port, "fragments") - frags0
        measured("fragments for a 3,000-key line, 700 keys trickled one per write", frags)
        # two servers: a part makes at most two fragments; measured 10 (the head in one
        # or two parts, the trickled keys in three); a part per key would make 1,400
        self.assertLessEqual(frags, 40, "parts of the trickled keys")

        for rst in (False, True):
            s = socket.create_connection((HOST, self.port))
            s.sendall(head)
            time.sleep(0.2)  # streamed, parts sent
            if rst:
                rst_close(s)
            else:
                s.close()
        # Half-closed mid-line: the line never ends, so nothing is answered (memcached
        # sends nothing either), not the hits of the parts already sent.
        vals = {k: b"h%d" % i for i, k in enumerate(keys[:50])}
        got, err = h.send_and_read(self.port, b"".join(b"set %s 0 0 %d\r\n%s\r\n" % (
            k, len(v), v) for k, v in vals.items()), 8 * len(vals))
        self.assertEqual(got, b"STORED\r\n" * len(vals), err)
        half = self.raw(self.port, timeout=15)
        half.send(head)
        time.sleep(0.2)
        half.sock.shutdown(socket.SHUT_WR)
        self.assertEqual(half.recv_until_closed(), b"", "answered a line that never ended")
        h.wait_until(lambda: stat_int(self.port, "curr_connections") <= 2 + 1, deadline=15,
                     what="the clients that left mid-line closed")
        self.assertAlive(self.px)

        from pymemcache.client.base import Client
        pm = Client((HOST, self.port), connect_timeout=10, timeout=60, default_noreply=False)
        self.addCleanup(pm.close)
        pkeys = ["pg:%05d:" % i + "r" * 38 for i in range(5000)]
        pvals = {k: ("v%d" % i).encode() for i, k in enumerate(pkeys) if i % 3 == 0}
        self.assertEqual(pm.set_many(pvals), [])
        self.assertEqual(pm.get_many(pkeys), pvals)
        self.assertNoSanitizerReport(self.px)

    def test_05d_streamed_line_with_a_failing_server(self):
        """Defect 5: when a part of a streamed line fails (one of two servers is down),
        the whole line is answered with one error line and nothing else: no hits of
        the other parts, no END, so the client's next reply is its own; a long gat
        and a long get pipelined with short requests keep their order."""
        mcs = self.memcached(2)
        self.px = self.proxy(mcs, timeout=2000, auto_eject_hosts=False)
        self.port = self.px.port()
        keys = [(b"fk:%05d:" % i).ljust(40, b"f") for i in range(3000)]
        where = h.walnut_locate(self.px.conf_path, keys[:50])
        self.assertEqual(len({where[("alpha", k)][1] for k in keys[:50]}), 2, "keys on both")
        first = keys[0]
        c = self.raw(self.port, timeout=30)
        c.send(b"set %s 0 0 2\r\nv0\r\n" % first)
        c.expect(b"STORED\r\n")
        line = b"get " + b" ".join(keys) + b"\r\n"
        gat = b"gat 100 " + b" ".join(keys) + b"\r\n"
        self.assertGreater(len(line), 64 << 10)
        c.send(line + b"version\r\n" + gat + b"get %s\r\n" % first)
        c.expect(get_reply([(first, 0, b"v0")]))
        self.assertTrue(c.recv_line().startswith(b"VERSION "))
        c.expect(get_reply([(first, 0, b"v0")]) * 2)
        mcs[1].kill()
        c.send(line + b"version\r\n")
        err = c.recv_line()
        self.assertTrue(err.startswith(b"SERVER_ERROR "), err)
        nxt = c.recv_line()
        self.assertTrue(nxt.startswith(b"VERSION ") or nxt.startswith(b"SERVER_ERROR "),
                        "the reply after the line's one error: %r" % nxt)
        self.assertAlive(self.px)
        self.assertNoSanitizerReport(self.px)

    def test_05k_a_get_failing_after_its_first_hits_ends_with_the_error(self):
        """A get split over two servers whose second server fails (stopped:
        timed out) after the first server's hits went out to the client: the
        client got those VALUE blocks, then the connection closed, with no
        error line and no END (pymemcache: MemcacheUnexpectedCloseError, the
        hits lost), depending only on the order of the keys. Now the hits are
        followed by the error line, as memcached ends a get it fails part-way,
        and the connection serves on; for a split get, and for a line over
        64 KiB (parts), whose failing part is itself split."""
        mcs = self.memcached(2)
        self.px = self.proxy(mcs, timeout=800, auto_eject_hosts=False)
        port = self.px.port()
        # hashed: keys that differ only in a short counter all land on one
        # of two servers for about one port pair in seven (fnv1a_64's 32 bits)
        keys = [b"pk:" + hashlib.sha1(b"%d" % i).hexdigest()[:12].encode() for i in range(600)]
        c = self.raw(port, timeout=30)
        c.send(b"".join(b"set %s 0 0 2\r\nv%s\r\n" % (k, k[-1:]) for k in keys))
        c.expect(b"STORED\r\n" * len(keys))
        where = h.placement(mcs, keys)  # asked of each memcached
        on = {i: [k for k in keys if where[k] is mcs[i]] for i in (0, 1)}
        self.assertTrue(on[0] and on[1], "keys on both servers")
        fast, stopped = on[0][:5], on[1][:5]
        mcs[1].sigstop()
        self.addCleanup(mcs[1].sigcont)
        err = b"SERVER_ERROR Connection timed out\r\n"
        # the split get: the first server's hits, then the error line
        c.send(b"get " + b" ".join(fast + stopped) + b"\r\n")
        c.expect(get_reply([(k, 0, b"v" + k[-1:]) for k in fast])[:-len(b"END\r\n")] + err)
        # a line over 64 KiB: every hit of the parts before, then the error line
        long_keys = on[0] * (12000 // len(on[0])) + stopped
        line = b"get " + b" ".join(long_keys) + b"\r\n"
        self.assertGreater(len(line), 64 << 10)
        c.send(line)
        head = get_reply([(k, 0, b"v" + k[-1:]) for k in long_keys[:-len(stopped)]])
        c.expect(head[:-len(b"END\r\n")] + err)
        mcs[1].sigcont()
        # the connection serves on, in order
        c.send(b"get %s %s\r\n" % (fast[0], stopped[0]))
        c.expect(get_reply([(fast[0], 0, b"v" + fast[0][-1:]),
                            (stopped[0], 0, b"v" + stopped[0][-1:])]))
        self.assertAlive(self.px)
        self.assertNoSanitizerReport(self.px)

    def test_05l_a_later_part_failing_while_an_earlier_one_merges(self):
        """A get line over 64 KiB whose second part fails (its server answers
        SERVER_ERROR) while the first part still waits for a stopped server:
        the first part, once in, was cut with nothing (its hits streamed so
        far, then the connection closed, no error line; a review of 05k).
        Now the first part ends whole, its hits in key order, and the
        second's error line follows them; the connection serves on."""
        a, b = self.memcached(2)
        bad = self.fake(fakes.ServerErrorBackend(b"SERVER_ERROR boom\r\n"))
        self.px = self.proxy([a, b, bad], timeout=5000, auto_eject_hosts=False)
        port = self.px.port()
        # scrambled (see 05k), distinct, and as long as the line's layout wants
        keys = [b"pk:%05x" % (i * 2654435761 % (1 << 20)) for i in range(3000)]
        c = self.raw(port, timeout=30)
        # every key set: those of the fake get its SERVER_ERROR, the others
        # land on a or b, which are then asked what they hold
        c.send(b"".join(b"set %s 0 0 2\r\nv%s\r\n" % (k, k[-1:]) for k in keys))
        got = b"".join(c.recv_line() for _ in keys)
        self.assertEqual(got.count(b"STORED\r\n") + got.count(b"SERVER_ERROR boom\r\n"),
                         len(keys), got[:200])
        held_a, held_b = a.keys_held(keys), b.keys_held(keys)
        on_a = [k for k in keys if k in held_a][:800]
        on_b = [k for k in keys if k in held_b]
        on_c = [k for k in keys if k not in held_a and k not in held_b]
        self.assertTrue(on_a and on_b and on_c, "keys on every server")
        b.sigstop()
        self.addCleanup(b.sigcont)
        first = (on_a * 20)[:8000]
        hits = first[:7000] + [on_b[0]] + first[7000:]
        line = b"get " + b" ".join(hits + [on_c[0]]) + b"\r\n"
        self.assertGreater(line.index(on_b[0]), 60000)
        c.send(line)
        time.sleep(1.0)  # the second part fails meanwhile
        b.sigcont()
        # The parts before the failing one answer whole, in key order; the
        # failing part (the one with the SERVER_ERROR key, where the line's
        # last parts of 16 KiB begin) answers with its error line alone.
        got = c.recv_until(b"SERVER_ERROR boom\r\n")[:-len(b"SERVER_ERROR boom\r\n")]
        items = [(k, 0, b"v" + k[-1:]) for k in hits]
        n = got.count(b"VALUE ")
        self.assertGreater(n, 7000, "every hit of the first part, the stopped server's one too")
        self.assertEqual(got, get_reply(items[:n])[:-len(b"END\r\n")])
        c.send(b"get %s\r\n" % on_b[0])
        c.expect(get_reply([(on_b[0], 0, b"v" + on_b[0][-1:])]))
        self.assertAlive(self.px)
        self.assertNoSanitizerReport(self.px)

    def test_05n_a_part_failing_after_hits_answers_with_its_line_alone(self):
        """A split get whose second server sends a hit and then an error line
        (memcached out of memory part-way, or a walnut in front of one)
        while the first key's server has not answered: walnut answered with
        that part's whole reply as the "error line", the held hit before
        the line (out of key order, the first key's hit lost) and, a block
        cut at 512 bytes, a VALUE whose data took in the client's next
        reply (a review). Now the line alone, as for any part that fails
        before a hit has gone out; the next get is answered whole."""
        for value in (b"v1", b"\n" * 600):
            with self.subTest(value_len=len(value)):
                slow = self.fake(fakes.PartFailBackend(value, hits=9, delay=0.3, name="slow"))
                bad = self.fake(fakes.PartFailBackend(value, hits=1, name="bad"))
                px = self.proxy([slow, bad], timeout=5000, auto_eject_hosts=False)
                cand = [hashlib.sha1(b"pf%d" % i).hexdigest().encode() for i in range(200)]
                where = h.walnut_locate(px.conf_path, cand)
                on_slow = [k for k in cand if where[("alpha", k)][1] == slow.addr][:3]
                on_bad = [k for k in cand if where[("alpha", k)][1] == bad.addr][:2]
                c = self.raw(px.port(), timeout=10)
                c.send(b"get %s %s %s %s\r\nget %s\r\n" % (
                    on_slow[0], on_bad[0], on_slow[1], on_bad[1], on_slow[2]))
                c.expect(fakes.PartFailBackend.LINE +
                         get_reply([(on_slow[2], 0, value)]))
                c.close()
                self.assertNoSanitizerReport(px)
                px.stop()

    def test_05o_a_part_over_the_limit_answers_before_another_part_s_error(self):
        """A split get under a 64 KiB client_buffer_limit: one server sends
        150 KB of hits at once (its END a second later: its part is over the
        limit, not done), the first key's server then fails (SERVER_ERROR,
        or silence past the timeout). The part over the limit let go of
        every part, so the failed one kept no line, and walnut answered
        `SERVER_ERROR Connection reset by peer` (an adversarial helper).
        Now the over-limit line, as when the other part answers; the mn
        after the get is answered."""
        big = b"z" * 30000

        class Slow(fakes.FakeBackend):
            how = "err"

            def reply(self, cid, parts, data):
                if parts and parts[0] == b"version":
                    return self.VERSION
                if self.how == "err":
                    return [(b"SERVER_ERROR boom\r\n", 0.5)]
                if self.how == "mute":
                    return b""
                return [(b"".join(b"VALUE %s 0 1\r\nA\r\n" % k for k in parts[1:]) +
                         b"END\r\n", 0.5)]

        class Big(fakes.FakeBackend):
            def reply(self, cid, parts, data):
                if parts and parts[0] == b"version":
                    return self.VERSION
                return [(b"".join(b"VALUE %s 0 %d\r\n%s\r\n" % (k, len(big), big)
                                  for k in parts[1:]), 0), (b"END\r\n", 2.0)]

        slow = self.fake(Slow(name="slow"))
        bulk = self.fake(Big(name="big"))
        limit = 64 << 10
        px = self.proxy([slow, bulk], timeout=1000, client_buffer_limit=limit,
                        auto_eject_hosts=False)
        cand = [hashlib.sha1(b"ovl%d" % i).hexdigest().encode() for i in range(200)]
        where = h.walnut_locate(px.conf_path, cand)
        on_slow = [k for k in cand if where[("alpha", k)][1] == slow.addr][:1]
        on_big = [k for k in cand if where[("alpha", k)][1] == bulk.addr][:5]
        over = (b"SERVER_ERROR walnut: the reply would take the client past the pool's "
                b"client_buffer_limit (%d bytes)\r\n" % limit)
        for how in ("err", "mute", "ok"):
            with self.subTest(first_server=how):
                slow.how = how
                c = self.raw(px.port(), timeout=10)
                c.send(b"get " + b" ".join(on_slow + on_big) + b"\r\nmn\r\n")
                c.expect(over + b"MN\r\n")
                c.close()
        self.assertNoSanitizerReport(px)
        px.stop()

    def test_05m_hits_after_a_failed_line_answered_are_dropped(self):
        """A get line over 64 KiB whose every part is split over a dead server
        and a stopped one: the dead server's fragments fail at once, every
        part is over and the line answers with the error alone while the
        stopped server still owes its hits. When they came, walnut read them
        through the line it had freed (a use-after-free; TSan caught it in
        test_05d once in CI). Now they are dropped: the client gets the one
        error line, then its next reply, and walnut stays whole."""
        a, b = self.memcached(2)
        self.px = self.proxy([a, b], timeout=5000, auto_eject_hosts=False)
        port = self.px.port()
        keys = [b"pm:%05x" % (i * 2654435761 % (1 << 20)) for i in range(3000)]
        c = self.raw(port, timeout=30)
        c.send(b"".join(b"set %s 0 0 4\r\nv%s\r\n" % (k, k[-3:]) for k in keys))
        c.expect(b"STORED\r\n" * len(keys))
        held_a = a.keys_held(keys)
        on_a = [k for k in keys if k in held_a]
        on_b = [k for k in keys if k not in held_a]
        self.assertTrue(on_a and on_b, "keys on both servers")
        # every 2 KB of the line has keys of both servers
        mixed = [k for pair in zip(on_a, on_b) for k in pair]
        line = b"get " + b" ".join((mixed * 8)[:9000]) + b"\r\n"
        self.assertGreater(len(line), 64 << 10)
        b.kill()
        a.sigstop()
        self.addCleanup(a.sigcont)
        c.send(line + b"get %s\r\n" % on_a[0])
        err = c.recv_line()
        self.assertTrue(err.startswith(b"SERVER_ERROR "), err)
        time.sleep(0.3)
        a.sigcont()
        # the stopped server's hits come now, for a line already answered
        c.expect(get_reply([(on_a[0], 0, b"v" + on_a[0][-3:])]))
        c.send(b"get %s\r\n" % on_a[1])
        c.expect(get_reply([(on_a[1], 0, b"v" + on_a[1][-3:])]))
        self.assertAlive(self.px)
        self.assertNoSanitizerReport(self.px)

    def test_05e_streamed_line_server_error_and_big_replies(self):
        """Defect 5: a streamed line whose server answers with a long error line gets that
        line (it was dropped once: the line then answered END as if nothing failed); a
        streamed line whose hits come to more than client_buffer_limit streams to a client
        that reads (its parts were held until all were in: the client was disconnected)."""
        bad = self.fake(fakes.ServerErrorBackend(b"SERVER_ERROR " + b"e" * 300 + b"\r\n"))
        px = self.proxy([bad], timeout=5000)
        keys = [(b"ek:%05d:" % i).ljust(30, b"e") for i in range(3000)]
        line = b"get " + b" ".join(keys) + b"\r\n"
        self.assertGreater(len(line), 64 << 10)
        c = self.raw(px.port(), timeout=30)
        c.send(line + b"get %s\r\n" % keys[0])
        err = b"SERVER_ERROR " + b"e" * 300 + b"\r\n"
        c.expect(err + err)
        c.close()

        mc = self.memcached(1)[0]
        px2 = self.proxy([mc], name="walnut-big", timeout=10000, client_buffer_limit=1 << 20)
        value = b"v" * 1000
        vals = {k: value for k in keys}
        got, e = h.send_and_read(mc.port, b"".join(b"set %s 0 0 %d\r\n%s\r\n" % (
            k, len(v), v) for k, v in vals.items()), 8 * len(vals), timeout=60)
        self.assertEqual(got, b"STORED\r\n" * len(vals), e)
        want = get_reply([(k, 0, value) for k in keys])
        self.assertGreater(len(want), 2 << 20)  # twice the limit
        got, e = h.send_and_read(px2.port(), line, len(want), timeout=60)
        if got != want:
            self.fail("a streamed line with %d bytes of hits: %s\n%s" % (
                len(want), h.describe_mismatch(want, got), px2.log()[-2000:]))
        self.assertNotIn("over client_buffer_limit", px2.log())

    def test_05f_streamed_line_counts_what_it_holds(self):
        """Defect 5: everything walnut holds for a streamed get line counts against
        client_buffer_limit, not only the line's bytes: each part's split bookkeeping
        (28 bytes a key) and request slots count too. Under a 256 KiB limit, eight
        clients send 100,000 one-byte keys each (a 200 KB line, for which walnut held
        about 2 MiB: it was answered END) and one 8,000 keys of 250 bytes, in chunks,
        the ends held back: each is disconnected with nothing answered, with the
        warning and client_overlimit; walnut's peak RSS grows by less than 3 x the
        limit a client plus the 4 MiB of free buffers a worker keeps (it grew by 15
        MiB for the eight, now by about 6 MiB). A client asking for a split get, and
        for a long line of real keys, meanwhile and after is answered exactly."""
        limit = 256 << 10
        self.start(nmc=2, client_buffer_limit=limit)
        good = [b"gk:%03d:%s" % (i, b"g" * (i % 40)) for i in range(40)]
        vals = {k: b"val%d" % i for i, k in enumerate(good) if i % 3}
        got, err = h.send_and_read(self.port, b"".join(
            b"set %s 0 0 %d\r\n%s\r\n" % (k, len(v), v) for k, v in vals.items()),
            8 * len(vals))
        self.assertEqual(got, b"STORED\r\n" * len(vals), err)
        short_get = b"get " + b" ".join(good) + b"\r\n"
        short_want = get_reply([(k, 0, vals[k]) for k in good if k in vals])
        # a streamed line, 70 KB of misses and a few hits: its count (the line, 28
        # bytes a key, the hits) stays under the limit
        long_keys = [good[i % 40] if i % 50 == 0 else b"lk:%05d:%s" % (i, b"m" * 22)
                     for i in range(2200)]
        long_get = b"get " + b" ".join(long_keys) + b"\r\n"
        self.assertGreater(len(long_get), 64 << 10)
        long_want = get_reply([(k, 0, vals[k]) for k in long_keys if k in vals])
        other = self.raw(self.port, timeout=30)

        def served(what):
            other.send(short_get)
            other.expect(short_want, what=what)

        served("before")
        pid = self.px.pid
        have_peak = h.reset_peak(pid)
        before = h.rss(pid)
        short = b"get " + b" ".join(b"%x" % (i % 16) for i in range(99999)) + b" "
        self.assertLess(len(short), limit)
        # and one line of 250-byte keys (2 MB; its keys alone are over the limit)
        long250 = b"get " + b" ".join(b"%06d:" % i + b"k" * 243 for i in range(7999)) + b" "
        lines = [short] * 8 + [long250]
        nclients = len(lines)
        socks = [self.sock(self.port, timeout=30) for _ in range(nclients)]
        cut = [False] * nclients
        chunk = 32 << 10
        for i in range(0, max(map(len, lines)), chunk):
            for j, s in enumerate(socks):
                if cut[j] or i >= len(lines[j]):
                    continue
                try:
                    s.sendall(lines[j][i:i + chunk])
                except (BrokenPipeError, ConnectionResetError):
                    cut[j] = True
            if i % (8 * chunk) == 0:
                served("while %d lines are open" % nclients)
            time.sleep(0.01)
        time.sleep(0.5)  # the ends held back
        for j, s in enumerate(socks):
            try:
                s.sendall(b"0\r\n")  # the line's last key, and its end
            except (BrokenPipeError, ConnectionResetError):
                cut[j] = True
        for j, s in enumerate(socks):
            closed, n = drain_until_closed(s, deadline=20)
            self.assertTrue(closed and n == 0,
                            "client %d: closed %s after %d bytes (a %d-byte line under a "
                            "%d-byte limit)" % (j, closed, n, len(lines[j]) + 3, limit))
        grew = (h.proc_status(pid, "VmHWM") if have_peak else h.rss(pid)) - before
        measured("peak RSS growth, %d clients with a long get line open, limit %d KiB" % (
            nclients, limit >> 10), "%.1f MiB" % (grew / MiB))
        self.assertEqual(stat_int(self.port, "client_overlimit"), nclients)
        warned = re.findall(r"client holds (\d+) bytes, over client_buffer_limit (\d+)",
                            self.px.log())
        self.assertEqual(len(warned), nclients, self.px.log()[-3000:])
        for held, lim in warned:
            self.assertGreater(int(held), int(lim), "the warning says what was held")
        if not sanitized():
            # each client is cut once its count passes the limit: what it held is about
            # the limit; 3 x that a client, and the 4 MiB of free buffers a worker keeps
            self.assertLess(grew, nclients * 3 * limit + (4 << 20),
                            "walnut's RSS grew by %.1f MiB" % (grew / MiB))
        served("after")
        other.send(long_get)
        other.expect(long_want, what="a 70 KB streamed line of real keys")
        served("at the end")
        self.assertAlive(self.px)
        self.assertNoSanitizerReport(self.px)

    def assertAllMissed(self, socks, gets):
        """Client i's gets[i] gets of a key nobody set are each answered END."""
        for i, (s, n) in enumerate(zip(socks, gets)):
            want, got = b"END\r\n" * n, b""
            while len(got) < len(want):
                more = s.recv(65536)
                if not more:
                    break
                got += more
            self.assertEqual(got, want, "client %d's gets" % i)

    def test_05g_one_turns_requests_are_not_a_stalled_server(self):
        """A server's bound on the bytes queued for it (client_buffer_limit)
        says it stopped reading. It counted requests from the moment they were
        queued, before walnut had offered them to the socket: when one loop
        turn read many clients at once, what that turn queued alone passed the
        bound, and a healthy memcached's requests got SERVER_ERROR Out of
        memory (seen under ThreadSanitizer in CI, where walnut is slow, in
        test_05f). Here walnut is stopped while six clients each send 16 KiB
        of gets, then resumed: one turn reads them all (97 KiB against a
        64 KiB bound; a turn may add up to one bound's worth). Expected:
        every get answered by memcached."""
        self.start(client_buffer_limit=64 << 10)
        key = b"t" * 200
        socks = [self.sock(self.port, timeout=30) for _ in range(6)]
        h.sigstop_and_wait(self.px.pid)
        try:
            for s in socks:
                s.sendall(b"get %s\r\n" % key * 80)
        finally:
            os.kill(self.px.pid, signal.SIGCONT)
        self.assertAllMissed(socks, [80] * len(socks))
        self.assertAlive(self.px)

    def test_05i_a_burst_the_socket_has_not_taken_yet_is_not_a_stalled_server(self):
        """Past what is not yet offered, the bound counted bytes offered to
        the server's socket and not taken yet as a server that stopped
        reading. A burst of many clients leaves more than a small limit in
        the socket's queue while the server reads fine: 40 clients each
        sending 16 KiB of gets at once (628 KiB against a 64 KiB bound) had
        2,189 of their 3,120 gets refused with SERVER_ERROR Out of memory by
        a healthy memcached (adversarial pass). Expected: every get answered;
        a server is deemed stopped once its socket took nothing for 500 ms."""
        self.start(client_buffer_limit=64 << 10)
        key = b"t" * 200
        self.raw(self.port, timeout=30).request(b"get %s\r\n" % key, b"END\r\n")
        socks = [self.sock(self.port, timeout=30) for _ in range(40)]
        time.sleep(0.3)
        for s in socks:
            s.sendall(b"get %s\r\n" % key * 78)
        self.assertAllMissed(socks, [78] * len(socks))
        self.assertNotIn("refusing requests", self.px.log())
        self.assertAlive(self.px)

    def test_05h_requests_queued_while_connecting_are_not_a_stalled_server(self):
        """Bytes queued for a server whose connection is still being made
        had not been offered to a socket either, but once their loop turn had
        passed the bound counted them as bytes the server would not take: a
        burst that itself opened the connection had its later requests
        refused with SERVER_ERROR Out of memory by a healthy server (seen under
        ThreadSanitizer in CI, test_05g). Here the server's accept queue is
        full until six clients have each sent 16 KiB of gets over several
        turns (97 KiB against a 64 KiB bound), once the connect has taken
        over 500 ms (a server whose requests wait that long to be written is
        held to the limit: 64 KiB may wait unoffered, 64 KiB more offered).
        Expected: every get answered."""
        fake = self.fake(h.FakeMemcached(hold_connects=True))
        self.px = self.proxy([fake.addr + ":1"], client_buffer_limit=64 << 10, timeout=10000)
        port = h.listen_port(self.px.pools["alpha"])
        socks = [self.sock(port, timeout=30) for _ in range(7)]
        key = b"t" * 200
        socks[0].sendall(b"get %s\r\n" % key)  # the connect starts
        time.sleep(0.6)
        for s in socks[1:]:
            s.sendall(b"get %s\r\n" % key * 80)
            time.sleep(0.02)  # one client a turn, or more: none of them fresh
        time.sleep(0.1)
        fake.release()
        self.assertAllMissed(socks, [1] + [80] * (len(socks) - 1))
        self.assertAlive(self.px)

    def test_05j_a_server_that_never_connects_is_held_to_the_limit(self):
        """Requests for a server whose connect never completes are not
        offered to a socket; once they have waited 500 ms the server is held
        to its limit like one that stopped reading (one limit unoffered, one
        more, and the request that crosses it), not to the 16 MiB a server
        that reads gets (review: 400 clients' 30 KB sets queued 12 MB under a
        64 KiB limit). Expected: later requests refused, little queued."""
        fake = self.fake(h.FakeMemcached(hold_connects=True))  # never released
        self.px = self.proxy([fake.addr + ":1"], client_buffer_limit=64 << 10)
        port = h.listen_port(self.px.pools["alpha"])
        first = self.sock(port, timeout=30)
        first.sendall(b"get k\r\n")  # the connect starts
        time.sleep(1.5)  # more than 500 ms however late walnut reads the get
        value = b"v" * 30000
        refused = self.sets_refused(port, [b"k%d" % i for i in range(40)], value, 0.2)
        self.assertGreaterEqual(refused, 30, "sets refused for a server that never connects")
        queued = most_queued(self.px)
        self.assertLessEqual(queued, 2 * (64 << 10) + len(value) + 100, "bytes queued for it")
        self.assertAlive(self.px)

    def test_06_noreply_with_long_head(self):
        """Defect 6: `set` + 400 spaces + `k 0 0 1 noreply` is stored and not answered."""
        self.start()
        c = self.raw(self.port)
        c.send(b"set" + b" " * 400 + b"nrk 0 0 1 noreply\r\nx\r\nget nrk\r\n")
        got = c.recv_until(b"END\r\n", timeout=10)
        self.assertEqual(got, get_reply([(b"nrk", 0, b"x")]), "only the get is answered")
        c.request(b"version\r\n", b"VERSION ", what="nothing more before the next reply")
        self.assertIn(b"nrk", self.mcs[0].keys_held([b"nrk"]))


class TestClientLifecycle(HostileCase):
    """Defects 3, 9, 10, 11: connections and the process end cleanly."""

    def closing_clients(self, port, n, rst, pid):
        """n clients that send half a value then close (FIN, or RST); paced so
        that a walnut which closes its side never holds more than ~50 at once."""
        head = b"set y 0 0 1000\r\n" + b"a" * 100
        for i in range(n):
            try:
                s = socket.create_connection((HOST, port), timeout=10)
            except OSError as e:
                self.fail("client %d could not connect: %s (walnut fds: %d)" % (i, e, nfds(pid)))
            try:
                s.sendall(head)
            except OSError:
                pass
            if rst:
                rst_close(s)
            else:
                s.close()
            if i % 50 == 49:
                self.wait_connections(port, pid, "after %d %s clients" % (
                    i + 1, "RST" if rst else "FIN"))

    def wait_connections(self, port, pid, what, most=2):
        last = [None]

        def settled():
            last[0] = stat_int(port, "curr_connections")
            return last[0] <= most
        try:
            h.wait_until(settled, deadline=15, interval=0.05, what="curr_connections <= %d" % most)
        except AssertionError:
            self.fail("%s: curr_connections stays %s (walnut holds %d fds: sockets left in "
                      "CLOSE_WAIT)" % (what, last[0], nfds(pid)))

    def test_03_client_closing_mid_value_is_closed(self):
        """Defect 3: a client gone mid-value (FIN or RST) is closed by walnut, no fd leak."""
        mcs = self.memcached(1)
        px = self.proxy(mcs, timeout=10000, nofile=256)
        port = px.port()
        for rst in (False, True):
            self.closing_clients(port, 300, rst, px.pid)
            self.assertAlive(px)
            c = self.raw(port, timeout=10)
            c.request(b"set y 0 0 2\r\nok\r\n", b"STORED\r\n")
            c.request(b"get y\r\n", get_reply([(b"y", 0, b"ok")]))
            c.close()
            self.wait_connections(port, px.pid, "after 300 %s clients" % ("RST" if rst else "FIN"))
        px.stop()

    def hold_connections(self, port, n):
        """Up to n connections to port, held open (closed at cleanup)."""
        held = []
        for _ in range(n):
            try:
                held.append(self.sock(port, timeout=1))
            except OSError:
                break
        return held

    def test_03c_out_of_descriptors_neither_spins_nor_wedges(self):
        """walnut -T 2 at RLIMIT_NOFILE 64, held open by clients past its
        limit while more connect. libuv's accept loop retries at once on
        EMFILE; its spare descriptor is per loop, and another worker took the
        one it freed: both workers spun for good (2.4 CPU-s a second), wrote
        ~40 MB of "accept failed" a second, served nobody, and ignored
        SIGTERM, even after every client was gone (adversarial pass; the
        stats server's accept did the same to the control thread). Expected:
        accepting pauses and retries on a timer, one warning, existing
        clients served throughout, a stats request waiting in the backlog
        served once descriptors are free, a clean stop. (The spin is a race:
        when libuv's spare descriptor survives, 196e933 drains the backlog
        silently and this fails only on the missing warning.)"""
        raise_own_fd_limit(4096)
        mc = self.memcached(1)[0]
        px = self.proxy([mc], workers=2, nofile=64, timeout=5000)
        port = px.port()
        keep = self.raw(port, timeout=10)
        keep.request(b"version\r\n", b"VERSION 1.6.18\r\n")
        held = self.hold_connections(port, 120)
        for _ in range(100):  # accepted by the kernel, then dropped
            try:
                socket.create_connection((HOST, port), timeout=1).close()
            except OSError:
                pass
        scrape = socket.create_connection((HOST, px.stats_port), timeout=20)
        self.addCleanup(scrape.close)
        scrape.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
        time.sleep(0.5)

        def cpu():
            with open("/proc/%d/stat" % px.pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        c0 = cpu()
        time.sleep(2)
        used = cpu() - c0
        measured("CPU of walnut -T 2 out of descriptors, 2 s", "%.2f s" % used)
        self.assertLess(used, 0.5, "walnut spins while out of descriptors")
        keep.request(b"version\r\n", b"VERSION 1.6.18\r\n")
        log = px.log()
        # At this limit walnut keeps nothing for clients beyond its own
        # descriptors (test_limits.py): it says so, and clients are not
        # limited, so they can take every descriptor, as here.
        self.assertIn("leaves no room for clients", log)
        self.assertLess(log.count("cannot accept"), 10, log[-2000:])
        self.assertIn("too many open files", log)
        for sk in held:
            sk.close()
        got = b""
        while True:
            d = scrape.recv(4096)
            if not d:
                break
            got += d
        self.assertTrue(got.startswith(b"HTTP/1.1 200 OK\r\n"), got[:100])
        # A new client is served. Its worker may have no server connection
        # yet and the connections dropped meanwhile are still being accepted
        # and closed: its first request can meet the last of the shortage
        # (SERVER_ERROR Too many open files, seen under TSan); it passes.
        def served():
            with h.Raw(port, timeout=10) as c:
                c.send(b"version\r\n")
                return c.recv_line() == b"VERSION 1.6.18\r\n"
        h.wait_until(served, deadline=10, interval=0.2, what="a new client served")
        self.assertAlive(px)
        px.stop()  # SIGTERM heard: a clean exit

    def test_03d_out_of_descriptors_is_not_the_servers_fault(self):
        """walnut out of descriptors (clients hold them all) cannot connect to
        its servers nor probe them: it counted each EMFILE as a failure of
        the server, and ejected two of four healthy servers, moving their
        keys (adversarial pass). Expected: the requests get the error, the
        servers stay in the ring, nothing is ejected."""
        raise_own_fd_limit(4096)
        mcs = self.memcached(4)
        px = self.proxy(mcs, nofile=64, timeout=400, auto_eject_hosts=True,
                        server_failure_limit=2, server_retry_timeout=1000)
        port = px.port()
        keep = self.raw(port, timeout=10)
        time.sleep(0.3)
        held = self.hold_connections(port, 120)
        time.sleep(0.5)
        # No server connection yet: each needs a descriptor walnut lacks.
        keep.send(b"".join(b"get key%d\r\n" % i for i in range(20)))
        got = b""
        while got.count(b"\r\n") < 20:
            got += keep.sock.recv(65536)
        self.assertIn(b"SERVER_ERROR Too many open files\r\n", got)
        time.sleep(2.5)  # probes fail meanwhile (every second), for the same reason
        for sk in held:
            sk.close()
        time.sleep(0.3)
        with h.Raw(px.stats_port, timeout=10) as st:
            st.send(b"GET /servers HTTP/1.0\r\n\r\n")
            body = st.recv_until_closed().split(b"\r\n\r\n", 1)[1]
        servers = json.loads(body)["pools"][0]["servers"]
        self.assertEqual([s["name"] for s in servers if s["ejected"]], [], body[:600])
        self.assertNotIn("ejected", px.log())
        # (the connections that waited in the backlog are being accepted and
        # closed: a first request may still meet the shortage, see test_03c)
        def stored():
            keep.send(b"set k 0 0 1\r\nv\r\n")
            return keep.recv_line() == b"STORED\r\n"
        h.wait_until(stored, deadline=10, interval=0.2, what="a set served")
        self.assertAlive(px)
        px.stop()

    def test_03b_replies_before_eof_mid_value_still_go_out(self):
        """Defect 3: requests complete before the half value are answered, then the
        connection closes; the half request never reaches the server."""
        mcs = self.memcached(1)
        px = self.proxy(mcs, timeout=10000)
        port = px.port()
        c = self.raw(port, timeout=10)
        c.request(b"set a3 0 0 1\r\nx\r\n", b"STORED\r\n")
        c.send(b"get a3\r\nset b3 0 0 1\r\ny\r\nget b3\r\nset half3 0 0 1000\r\n" + b"z" * 300)
        c.sock.shutdown(socket.SHUT_WR)
        want = get_reply([(b"a3", 0, b"x")]) + b"STORED\r\n" + get_reply([(b"b3", 0, b"y")])
        got = c.recv_until_closed(timeout=10)
        self.assertEqual(got, want)
        c.close()
        d = self.raw(port, timeout=10)
        d.request(b"get half3\r\n", b"END\r\n")
        d.close()
        px.stop()

    def test_09_sigterm_with_idle_client_exits_at_once(self):
        """Defect 9: SIGTERM with an idle client connected: exit 0 within ~1 s."""
        mcs = self.memcached(1)
        px = self.proxy(mcs, workers=2)
        c = self.raw(px.port())
        c.request(b"get idle\r\n", b"END\r\n")
        t0 = time.monotonic()
        os.kill(px.pid, signal.SIGTERM)
        try:
            rc = px.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.fail("walnut still running 15 s after SIGTERM")
        took = time.monotonic() - t0
        self.assertEqual(rc, 0, px.log())
        # the spec says 1 s; by walnut's own log times (this process may see
        # the exit late on a loaded machine), with slack for a sanitizer
        # build, far below the 5 s a client that is waited for gets
        log = px.log()
        stopping = h.log_time(log, r"signal 15 \(.*\): stopping")
        self.assertLess(h.log_time(log, r"NOTICE .* stopped$") - stopping, 2.0,
                        "exit took %.2f s after SIGTERM with an idle client" % took)
        self.assertLess(took, 4.5, "exit seen %.2f s after SIGTERM with an idle client" % took)

    def test_09b_a_request_completed_while_stopping_gets_its_server(self):
        """A request that arrives while walnut stops is answered, also when its
        worker has no connection to the key's server yet (connections open
        when first needed): a stopping worker used to never connect, so the
        request waited the 5 s grace and its client was closed unanswered."""
        mcs = self.memcached(1)
        with h.Raw(mcs[0].port) as c:
            c.request(b"set stopkey 0 0 1\r\nv\r\n", b"STORED\r\n")
        for workers in (1, 2):
            with self.subTest(workers=workers):
                px = self.proxy(mcs, workers=workers, name="walnut-w%d" % workers)
                s = self.sock(px.port())
                # half a request: the client is mid-request, so the stop waits
                # for it whatever this machine's timing
                s.sendall(b"get stopkey")
                time.sleep(0.2)
                t0 = time.monotonic()
                os.kill(px.pid, signal.SIGTERM)
                h.wait_until(lambda: re.search(r"stopping", px.log()) is not None,
                             what="walnut logs that it stops")
                s.sendall(b"\r\n")
                got = b""
                s.settimeout(10)
                while not got.endswith(b"END\r\n"):
                    more = s.recv(4096)
                    if not more:
                        break
                    got += more
                took = time.monotonic() - t0
                self.assertEqual(got, b"VALUE stopkey 0 1\r\nv\r\nEND\r\n",
                                 "after %.2f s; log:\n%s" % (took, px.log()[-2000:]))
                self.assertEqual(px.proc.wait(timeout=15), 0, px.log())
                self.assertNotIn("still busy", px.log())

    def test_10_shutdown_while_busy_is_clean(self):
        """Defect 10: SIGTERM while 8 clients hammer `stats` on 4 workers: exit 0, no
        sanitizer report. Repeated 10 times."""
        mcs = self.memcached(1)
        for rnd in range(10):
            px = self.proxy(mcs, workers=4, name="walnut%d" % rnd)
            port = px.port()
            stop = threading.Event()
            served = [0] * 8

            def hammer(i):
                try:
                    # generous: a sanitizer build on a loaded machine is slow
                    with h.Raw(port, timeout=15) as c:
                        end = time.monotonic() + 30
                        while not stop.is_set() and time.monotonic() < end:
                            # pipelined: a worker is busy for a while when the stop comes
                            c.send(b"stats\r\n" * 16)
                            for _ in range(16):
                                c.recv_until(b"END\r\n")
                            served[i] += 1
                except (OSError, AssertionError):
                    pass

            threads = [threading.Thread(target=hammer, args=(i,), daemon=True) for i in range(8)]
            for t in threads:
                t.start()
            h.wait_until(lambda: sum(1 for s in served if s) >= 6, deadline=45,
                         what="clients being served")
            time.sleep(0.05 * (rnd % 4))
            os.kill(px.pid, signal.SIGTERM)
            # keep asking through the shutdown for a moment, then leave
            time.sleep(0.3)
            stop.set()
            for t in threads:
                t.join(10)
            try:
                rc = px.proc.wait(timeout=h.STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                rc = "still running after %.0f s" % h.STOP_DEADLINE
            self.assertNoSanitizerReport(px)
            self.assertEqual(rc, 0, "round %d: exit status %s; log:\n%s" % (rnd, rc, px.log()))

    def test_11_second_walnut_on_same_address_fails(self):
        """Defect 11: a second walnut on a listen address in use exits non-zero, naming it."""
        mcs = self.memcached(1)
        px = self.proxy(mcs)
        port = px.port()
        conf2 = self.tmp.join("second.yml")
        with open(conf2, "w") as f:
            f.write(h.render_config(px.pools))
        log2 = self.tmp.join("second.log")
        cmd = [h.walnut_bin(), "-c", conf2, "-v", "5", "-o", log2, "-s", str(h.free_port()),
               "-a", HOST, "--workers", "1"]
        second = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT)
        h._register(second)
        self.addCleanup(h._stop_proc, second, signal.SIGKILL)
        try:
            out, _ = second.communicate(timeout=10)
            rc = second.returncode
        except subprocess.TimeoutExpired:
            h._stop_proc(second, signal.SIGKILL)
            out, rc = second.communicate()[0] or b"", None
        text = out.decode("utf-8", "replace") + read_file(log2)
        self.assertIsNotNone(rc, "a second walnut on 127.0.0.1:%d is still running after 10 s "
                                 "(it shares the port)" % port)
        self.assertNotEqual(rc, 0, text)
        self.assertIn("127.0.0.1:%d" % port, text, "the message names the address")
        self.assertAlive(px, "the first walnut")
        for i in range(20):  # every new client reaches the first one
            c = h.Raw(port, timeout=10)
            try:
                c.request(b"set s%d 0 0 1\r\n1\r\n" % i, b"STORED\r\n")
            finally:
                c.close()
        self.assertEqual(int(walnut_stats(port)["pid"]), px.pid)
        px.stop()


class TestMemoryBounds(HostileCase):
    """Defect 4: one client's buffered bytes are bounded; free buffers go back."""

    LIMIT = 8 * MiB
    VALUE = 1000000
    GETS = 1200

    def start(self, limit=True, nofile=None):
        mc = self.memcached(1, memory_mb=64)[0]
        big = b"B" * self.VALUE
        h.mc_command(mc.port, b"set bigkey 0 0 %d\r\n%s\r\n" % (len(big), big),
                     expect=b"STORED\r\n")
        settings = {"timeout": 10000}
        if limit:
            settings["client_buffer_limit"] = self.LIMIT
        try:
            px = self.proxy([mc], verbosity=6, nofile=nofile, **settings)
        except h.HarnessError as e:
            lines = [l for l in str(e).splitlines() if "client_buffer_limit" in l]
            if limit and lines:
                self.fail("walnut does not accept client_buffer_limit: %s" % lines[0])
            raise
        # warm up: one big get through walnut (buffer pools, backend connection)
        c = h.Raw(px.port(), timeout=30)
        try:
            c.send(b"get bigkey\r\n")
            self.assertEqual(c.recv_until(b"\r\nEND\r\n"), get_reply([(b"bigkey", 0, big)]))
        finally:
            c.close()
        time.sleep(0.2)
        return mc, px

    def flood(self, px, nclients, bound):
        """nclients send GETS x `get bigkey` and never read. Waits until each is
        counted over the limit; fails early if walnut's RSS grows past bound."""
        port = px.port()
        base = h.rss(px.pid)
        have_peak = h.reset_peak(px.pid)
        # Every get walnut forwarded before the disconnect still brings its 1 MB
        # back to be dropped (~1 GB per client here). Under a sanitizer each
        # byte read is slow and RSS is not asserted, so fewer gets (still ~20x
        # the limit) keep the functional check quick.
        gets = self.GETS if not sanitized() else 150
        socks = []
        for _ in range(nclients):
            s = self.sock(port, timeout=10)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            s.sendall(b"get bigkey\r\n" * gets)
            socks.append(s)
        peak = [base]

        def growth():
            cur = h.proc_status(px.pid, "VmHWM") if have_peak else h.rss(px.pid)
            peak[0] = max(peak[0], cur)
            return peak[0] - base

        over = None
        # fail early rather than let a walnut without the bound eat the machine
        rss_guard = bound if not sanitized() else 4 * bound + 512 * MiB
        wait = 120
        end = time.monotonic() + wait
        while True:
            self.assertAlive(px)
            if growth() > rss_guard:
                self.fail("walnut's RSS grew by %d MiB (bound %d MiB) with %d client(s) not "
                          "reading; client_overlimit %s" % (growth() // MiB, bound // MiB,
                                                            nclients, over))
            over = stat_int(port, "client_overlimit")
            if over >= nclients:
                break
            if time.monotonic() > end:
                self.fail("client_overlimit is %d after %d s, expected %d; RSS growth %d MiB"
                          % (over, wait, nclients, growth() // MiB))
            time.sleep(0.05)
        for i, s in enumerate(socks):
            closed, n = drain_until_closed(s, deadline=30)
            self.assertTrue(closed, "client %d not disconnected (read %d bytes)" % (i, n))
        g = growth()
        measured("peak RSS growth, %d client(s) not reading" % nclients, "%.1f MiB" % (g / MiB))
        if not sanitized():
            self.assertLess(g, bound, "RSS growth %.1f MiB with %d client(s) not reading" % (
                g / MiB, nclients))
        self.assertIn("client_buffer_limit", read_file(px.log_path),
                      "a log line names client_buffer_limit")
        self.assertAlive(px)
        c = self.raw(port)
        c.request(b"get nothere\r\n", b"END\r\n")
        return base

    def test_04a_one_client_not_reading_is_disconnected(self):
        """Defect 4: client_buffer_limit 8 MiB, 1,200 gets of a 1 MB value, never read:
        disconnected, counted, RSS growth < 80 MiB (before: ~1 GiB)."""
        mc, px = self.start()
        self.flood(px, 1, 80 * MiB)
        self.assertGreaterEqual(stat_int(px.port(), "client_overlimit"), 1)
        px.stop()

    def test_04b_ten_clients_bounded_then_memory_returned(self):
        """Defect 4: 10 such clients at once: growth < 200 MiB; after they leave RSS drops
        back below baseline + 48 MiB within seconds (free buffers bounded and returned)."""
        mc, px = self.start()
        base = self.flood(px, 10, 200 * MiB)
        if not sanitized():
            last = [0]

            def returned():
                last[0] = h.rss(px.pid)
                return last[0] < base + 48 * MiB
            try:
                h.wait_until(returned, deadline=10, interval=0.1, what="RSS back down")
                measured("RSS above baseline once they left", "%.1f MiB" % ((last[0] - base) / MiB))
            except AssertionError:
                self.fail("RSS stays %.1f MiB above baseline after the clients left" % (
                    (last[0] - base) / MiB))
        px.stop()

    def test_04d_small_replies_never_read_are_bounded(self):
        """A client pipelining tiny requests (meta `mn`, which walnut answers
        itself; `mg k v`, a miss answered `EN`) with a 64 KiB receive buffer,
        never reading. walnut handed each flush's replies to a queued write
        and let the requests go: the write's per-reply bookkeeping (iovecs,
        buffer references; ~40 bytes for a 4-byte reply) was counted nowhere,
        so neither the byte bound nor the 1,024-requests bound stopped it:
        +24.7 MB at an 8 MiB limit (an adversarial client's measure; +194 MB
        at the default 64 MiB). Expected: RSS growth under the limit."""
        mc, px = self.start()
        for unit in (b"mn\r\n", b"mg k v\r\n"):
            with self.subTest(request=unit):
                s = self.sock(px.port(), timeout=2)
                # Small, but not below a segment: at 4 KiB, set after the
                # handshake (window scale 10), both ends' TCP could stall in
                # retransmission backoff (RTO 26 s, seen on a 6.x kernel) and
                # the client's requests stopped reaching walnut at all.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
                base = h.rss(px.pid)
                have_peak = h.reset_peak(px.pid)
                chunk = unit * (65536 // len(unit))
                # A sanitizer's walnut answers too slowly to fill the limit
                # with 4-byte replies in time: there only the bound is looked at.
                wait = 60 if not sanitized() else 20
                sent, end, cut = 0, time.monotonic() + wait, False
                while time.monotonic() < end:
                    try:
                        sent += s.send(chunk)
                    except socket.timeout:
                        continue  # paused; read on (unpaced) after WN_CLIENT_STALL_MS
                    except (ConnectionResetError, BrokenPipeError):
                        cut = True  # its backlog and requests past the limit
                        break
                if not sanitized():
                    self.assertTrue(cut, "a client that never reads was not disconnected in "
                                    "%d s" % wait)
                grew = (h.proc_status(px.pid, "VmHWM") if have_peak else h.rss(px.pid)) - base
                measured("RSS growth, %r pipelined, never read" % unit,
                         "%.1f MiB (%.1f MB sent)" % (grew / MiB, sent / 1e6))
                self.assertAlive(px)
                # The limit bounds what walnut counts for the client (here its
                # replies' backlog, compact); RSS adds its input buffer and the
                # allocator's slack.
                if not sanitized():
                    self.assertLess(grew, self.LIMIT * 5 // 4, "RSS growth with %.1f MB of %r "
                                    "never read" % (sent / 1e6, unit))
                s.close()
        px.stop()

    def test_04e_small_replies_cannot_pin_shared_read_buffers(self):
        """A reply waits with its request, pointing into the server read buffer
        it came in (16 KiB, shared with other clients' replies), and only its
        own bytes count against client_buffer_limit. Six clients that filled
        the kernel's queue towards them with large replies, then sent a small
        GET every 4 ms and never read, while another client's 16 KB replies
        passed through the same server connection, made each small reply keep
        a 16 KiB buffer alive, in their stalled writes and with their
        requests: at a 1 MiB limit, +30.5 MiB of RSS on 196e933, nobody
        disconnected (an adversarial pass measured +86 MiB with ten); now
        +0.5 MiB. Expected:
        a stalled write and the replies waiting behind it kept compact (a
        copy), so the clients hold about what their limits count."""
        if sanitized():
            self.skipTest("RSS is not meaningful under a sanitizer")
        mc = self.memcached(1, memory_mb=64)[0]
        limit = MiB
        px = self.proxy([mc], timeout=10000, client_buffer_limit=limit)
        big = b"b" * 16000
        h.mc_command(mc.port, b"set big 0 0 %d\r\n%s\r\n" % (len(big), big), expect=b"STORED\r\n")
        h.mc_command(mc.port, b"set s 0 0 100\r\n%s\r\n" % (b"s" * 100), expect=b"STORED\r\n")
        base = h.rss(px.pid)
        have_peak = h.reset_peak(px.pid)
        stop = threading.Event()
        end = time.monotonic() + 10

        def streamer():
            # Reads every reply at once: each 16 KB reply fills most of a
            # server read buffer, and the small replies land one per buffer.
            with socket.create_connection((HOST, px.port()), timeout=10) as b:
                need = 8 * (16000 + len(b"VALUE big 0 16000\r\n\r\nEND\r\n"))
                while not stop.is_set():
                    b.sendall(b"get big\r\n" * 8)
                    if read_count(b, need) < need:
                        return

        def attacker():
            a = socket.socket()
            a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            a.settimeout(2)
            self.addCleanup(a.close)
            try:
                a.connect((HOST, px.port()))
                for _ in range(58):  # about 2.8 MB: the kernel's queue towards it
                    a.sendall(b"get big\r\n" * 3)
                    time.sleep(0.03)
                while not stop.is_set():
                    a.send(b"get s\r\n")
                    time.sleep(0.004)
            except OSError:
                return
        threads = [threading.Thread(target=streamer, daemon=True)] + [
            threading.Thread(target=attacker, daemon=True) for _ in range(6)]
        for t in threads:
            t.start()
        peak = 0
        while time.monotonic() < end:
            time.sleep(0.25)
            peak = max(peak, h.rss(px.pid))
        stop.set()
        for t in threads:
            t.join(10)
        if have_peak:
            peak = max(peak, h.proc_status(px.pid, "VmHWM"))
        grew = peak - base
        measured("RSS growth, six clients trickling small GETs behind stalled writes, "
                 "1 MiB limit", "%.1f MiB" % (grew / MiB))
        self.assertAlive(px)
        self.assertLess(grew, 10 * MiB)
        px.stop()

    def test_04f_slow_reader_with_large_buffers_is_not_cut(self):
        """A client that reads, slowly: three 1.9 MB GETs and two misses
        pipelined, read after half a second. With walnut's buffers at 16 MiB
        (-m) and an 8 MiB limit, the first reply copied behind its stalled
        write (a 5-byte END) took a 16 MiB chunk, counted whole: the client
        was cut after 3 MB ("client holds 17851904 bytes", review of
        424c00d+7740858). Expected: every byte, as on 196e933."""
        mc = h.Memcached(self.tmp, name="mcbig", extra=["-I", "2m"]).start()
        self.addCleanup(mc.kill)
        px = h.Proxy(self.tmp, {"alpha": h.pool([mc], client_buffer_limit=8 << 20)},
                     name="bigbufs", extra=["-m", str(16 << 20)])
        px.start()
        self.addCleanup(px.kill)
        size = 1900000
        h.mc_command(mc.port, b"set big 0 0 %d\r\n%s\r\n" % (size, b"b" * size),
                     expect=b"STORED\r\n")
        c = socket.socket()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.connect((HOST, px.port()))
        self.addCleanup(c.close)
        c.sendall(b"get big\r\n" * 3 + b"get nothing\r\nget nothing2\r\n")
        time.sleep(0.5)  # its socket is full meanwhile
        want = 3 * (len(b"VALUE big 0 %d\r\n" % size) + size + 7) + 10
        c.settimeout(10)
        got = read_count(c, want)
        self.assertEqual(got, want, "bytes before the close; log:\n%s" % px.log()[-1500:])
        self.assertNotIn("over client_buffer_limit", px.log())
        px.stop()

    def test_04c_idle_connections_hold_no_read_buffer(self):
        """Defect 4: 1,000 idle connections, each after one 15,000-byte set: RSS growth
        < 6 MiB (before: ~16 KiB per connection)."""
        if sanitized():
            self.skipTest("RSS is not meaningful under a sanitizer")
        if raise_own_fd_limit(4096) < 1100:
            self.skipTest("cannot open 1,000 sockets here (RLIMIT_NOFILE)")
        mc = self.memcached(1)[0]
        px = self.proxy([mc], nofile=4096, timeout=10000)
        port = px.port()
        value = b"i" * 15000
        for i in range(20):  # warm up
            c = h.Raw(port)
            c.request(b"set w%d 0 0 %d\r\n%s\r\n" % (i, len(value), value), b"STORED\r\n")
            c.close()
        time.sleep(0.3)
        base = h.rss(px.pid)
        conns = []
        try:
            for i in range(1000):
                c = h.Raw(port, timeout=20)
                conns.append(c)
                c.request(b"set idle%d 0 0 %d\r\n%s\r\n" % (i, len(value), value), b"STORED\r\n")
            h.wait_until(lambda: stat_int(port, "curr_connections") == 1001, deadline=10,
                         what="1,000 clients (and this one) connected")
            grown = [0]

            def small():
                grown[0] = h.rss(px.pid) - base
                return grown[0] < 6 * MiB
            try:
                h.wait_until(small, deadline=5, interval=0.1, what="RSS growth < 6 MiB")
                measured("RSS growth, 1,000 idle connections", "%.1f MiB" % (grown[0] / MiB))
            except AssertionError:
                self.fail("1,000 idle connections cost %.1f MiB (%.1f KiB each)" % (
                    grown[0] / MiB, grown[0] / 1024 / 1000))
        finally:
            for c in conns:
                c.close()
        px.stop()


class TestBackendMisbehaviour(HostileCase):
    """Defects 7, 8, 12, 13, 14: what a backend does never reaches the wrong client."""

    def test_18_a_server_failing_every_request_does_not_flood_the_log(self):
        """auto_eject_hosts off and a server that refuses every connection:
        each request logged 'cannot connect to server' (an adversarial run:
        8,400 lines in 5 s at the default level). Expected: a server's
        warnings at most once per 10 s, the next saying how many were left
        out; every request still answered."""
        dead = "%s:%d:1" % (HOST, h.refused_port())  # nothing listens there
        px = self.proxy([dead], workers=1, timeout=1000)
        c = self.raw(px.port())
        for i in range(200):
            c.request(b"get k%d\r\n" % i, b"SERVER_ERROR Connection refused\r\n")
        lines = [ln for ln in px.log().splitlines() if "cannot connect to server" in ln]
        self.assertGreaterEqual(len(lines), 1)
        self.assertLessEqual(len(lines), 2, lines[:5])
        time.sleep(10.2)  # the interval: the next warning is logged, with the count
        c.request(b"get k\r\n", b"SERVER_ERROR Connection refused\r\n")
        h.wait_until(lambda: "more like it in the last" in px.log(), deadline=5,
                     what="the warning that counts those left out")
        self.assertRegex(px.log(), r"cannot connect to server [^\n]*\(and (19[89]|200) more "
                                   r"like it in the last 1\d s, not logged\)")
        px.stop()

    def test_long_opaque_reply_must_echo_it(self):
        """An mg with an O over 32 bytes goes to its server untagged, with
        the client's O (memcached runs it, then answers CLIENT_ERROR opaque
        token too long). A server that takes the O echoes it: its reply is
        relayed and the connection serves on (a first cut closed the server
        connection on it, failing every request on it: one client could do
        that at will, review). A reply without that O (a stray EN) is no
        answer to it: a protocol error, never the client's reply (the first
        cut relayed it)."""
        long_o = b"O" + b"x" * 40

        class Echoing(fakes.FakeBackend):
            stray = False

            def reply(self, cid, parts, data):
                if parts[:1] != [b"mg"]:
                    return super().reply(cid, parts, data)
                o = [p for p in parts if p.startswith(b"O")]
                if o and o[0] == long_o and self.stray:
                    return b"EN\r\n"
                return b"EN" + b"".join(b" " + x for x in o) + b"\r\n"

        for stray in (False, True):
            with self.subTest(stray=stray):
                fake = Echoing()
                fake.stray = stray
                self.addCleanup(fake.stop)
                px = self.proxy([fake.addr + ":1"], workers=1, timeout=2000)
                c = self.raw(px.port())
                c.send(b"mg k v " + long_o + b"\r\n")
                line = c.recv_line()
                if stray:
                    self.assertServerError(line, "a reply without the request's O")
                    self.assertIn("protocol", px.log())
                else:
                    self.assertEqual(line, b"EN " + long_o + b"\r\n")
                c.request(b"mg k2 v Oab\r\n", b"EN Oab\r\n", what="the next request")
                px.stop()

    def test_20_a_server_at_its_connection_limit_says_so(self):
        """memcached past its -c accepts, writes 'ERROR Too many open
        connections' and closes. walnut gave that line to the client as the
        answer to its set (memcached clients read a bare ERROR as 'unknown
        command'), and logged only 'closed ... end of file' (an adversarial
        pass, 3 Dec). Expected: SERVER_ERROR with memcached's words, a log line
        saying the server is full, and service once a slot is free."""
        mc = self.memcached(1, extra=["-c", "16", "-t", "1"])[0]
        fillers, full = [], None
        for _ in range(64):  # connect until memcached says it is full
            s = socket.create_connection((HOST, mc.port), timeout=5)
            s.settimeout(0.2)
            try:
                full = s.recv(100)
            except socket.timeout:
                fillers.append(s)
                continue
            s.close()
            break
        self.addCleanup(lambda: [f.close() for f in fillers])
        self.assertEqual(full, b"ERROR Too many open connections\r\n", "memcached never filled")
        px = self.proxy([mc], workers=1, timeout=2000)
        c = self.raw(px.port())
        c.request(b"set k 0 0 1\r\nv\r\n", b"SERVER_ERROR Too many open connections\r\n")
        c.request(b"get k\r\n", b"SERVER_ERROR Too many open connections\r\n")
        self.assertIn("is at its connection limit (it said 'ERROR Too many open connections'",
                      px.log())
        for f in fillers:
            f.close()
        fillers.clear()
        def has_slot():
            with socket.create_connection((HOST, mc.port), timeout=5) as s:
                s.sendall(b"version\r\n")
                return s.recv(100).startswith(b"VERSION ")
        h.wait_until(has_slot, deadline=5, what="a slot in memcached")
        c.request(b"set k 0 0 1\r\nv\r\n", b"STORED\r\n")
        c.request(b"get k\r\n", b"VALUE k 0 1\r\nv\r\nEND\r\n")
        px.stop()

    def test_21_a_unix_server_with_a_full_backlog_says_so(self):
        """A unix socket server whose accept queue is full refuses a
        non-blocking connect with EAGAIN: the log said only 'cannot connect to
        server ...: resource temporarily unavailable', which says nothing of
        the server (an adversarial pass, 3 Dec). Expected: the request fails at
        once with the system's text, as twemproxy answers, and the log says the
        server's listen backlog is full."""
        path = os.path.join(self.tmp.path, "stuck.sock")
        stuck = socket.socket(socket.AF_UNIX)
        self.addCleanup(stuck.close)
        stuck.bind(path)
        stuck.listen(0)  # never accepts
        queued = []
        self.addCleanup(lambda: [q.close() for q in queued])
        for _ in range(64):  # fill its accept queue
            q = socket.socket(socket.AF_UNIX)
            q.setblocking(False)
            try:
                q.connect(path)
            except BlockingIOError:
                q.close()
                break
            queued.append(q)
        else:
            self.fail("the accept queue never filled")
        px = self.proxy(["%s:1" % path], workers=1, timeout=2000, health_check_interval=0)
        c = self.raw(px.port())
        c.request(b"get k\r\n", b"SERVER_ERROR Resource temporarily unavailable\r\n")
        h.wait_until(lambda: "its listen backlog is full" in h.read_text(px.log_path),
                     deadline=5, what="the warning")
        self.assertAlive(px)
        px.stop()

    def test_07_probe_only_backend_is_ejected(self):
        """Defect 7: a backend that answers `version` but nothing else is ejected;
        its keys go to the live server."""
        fake = self.fake(fakes.ProbeOnlyBackend())
        mc = self.memcached(1)[0]
        px = self.proxy([fake, mc], start=False, auto_eject_hosts=True, server_failure_limit=2,
                        server_retry_timeout=30000, health_check_interval=200, timeout=400)
        keys = self.keys_on(px, fake.addr, 200, b"ej:")
        px.start()
        self.addCleanup(px.kill)
        port = px.port()
        errors, stored = [], []
        c = h.Raw(port, timeout=10)
        try:
            for i, k in enumerate(keys):
                t0 = time.monotonic()
                try:
                    c.send(b"set %s 0 0 1\r\n%d\r\n" % (k, i % 10))
                    line = c.recv_line(timeout=10)
                except (OSError, AssertionError) as e:
                    errors.append((i, repr(e)[:100]))
                    c.close()
                    c = h.Raw(port, timeout=10)
                    continue
                if line == b"STORED\r\n":
                    stored.append(k)
                else:
                    errors.append((i, line))
                time.sleep(max(0.0, 0.025 - (time.monotonic() - t0)))
        finally:
            c.close()
        self.assertLessEqual(len(errors), 6, "%d of %d sets failed, first: %r" % (
            len(errors), len(keys), errors[:8]))
        held = mc.keys_held(stored)
        self.assertEqual(len(held), len(stored), "keys STORED but not on the live memcached: %r"
                         % sorted(set(stored) - held)[:10])

    def test_07b_an_answer_on_any_worker_clears_a_failure(self):
        """A failed request counts toward server_failure_limit until a request
        is answered again (README). Only the worker that failed reported its
        next answer, and good probes do not clear a request's failure: with
        answers on another worker the count stayed at 1 for good, and one
        unrelated failure much later ejected the server at limit 2
        (control-plane review). Expected: an answer on any worker clears it."""
        fake = self.fake(fakes.BoomBackend())
        px = self.proxy([fake], workers=2, auto_eject_hosts=True, server_failure_limit=2,
                        server_retry_timeout=60000, health_check_interval=200, timeout=1000)
        # one client on each worker: each worker has its own server connection
        by_conn = {}
        for i in range(32):
            c = self.raw(px.port())
            c.request(b"get map%d\r\n" % i, b"END\r\n")
            cid = [cid for cid, line in fake.requests() if line == b"get map%d" % i][0]
            by_conn.setdefault(cid, c)
            if len(by_conn) == 2:
                break
        self.assertEqual(len(by_conn), 2, "no client on the second worker")
        a, b = by_conn.values()
        a.request(b"get boom1\r\n", b"SERVER_ERROR ")

        def failures():
            return px.http_json("/servers")["pools"][0]["servers"][0]["failures"]
        h.wait_until(lambda: failures() == 1, deadline=5, what="the failure counted")
        time.sleep(0.5)  # a good probe or two: they do not clear it
        for i in range(5):
            b.request(b"get fine%d\r\n" % i, b"END\r\n")
        h.wait_until(lambda: failures() == 0, deadline=5, what="B's answers clearing the count")
        b.request(b"get boom2\r\n", b"SERVER_ERROR ")
        time.sleep(0.5)
        self.assertNotIn("ejected", px.log())

    def test_08_stray_reply_never_reaches_another_client(self):
        """Defect 8: a backend that appends a VALUE nobody asked for: no client ever
        receives a VALUE for a key it did not ask."""
        values = {b"c%d:k%d" % (t, j): b"val-%d-%d" % (t, j) for t in range(6) for j in range(4)}
        fake = self.fake(fakes.LeakyBackend(values))
        px = self.proxy([fake], workers=2, server_connections=1, timeout=2000)
        port = px.port()
        lock = threading.Lock()
        wrong, answered, failed = [], [0], [0]

        def read_reply(c, key):
            """One get reply; records wrong VALUEs. False if the connection is gone."""
            while True:
                line = c.recv_line(timeout=10)
                if line == b"END\r\n":
                    return True
                if not line.startswith(b"VALUE "):
                    with lock:
                        failed[0] += 1
                    return True  # an error line answers the request
                parts = line.split()
                n = int(parts[3])
                data = c.recv_exact(n + 2, timeout=10)
                if parts[1] != key or data[:n] != values.get(key):
                    with lock:
                        wrong.append((key, line, data[:40]))

        def client(t):
            mykeys = [b"c%d:k%d" % (t, j) for j in range(4)]
            end = time.monotonic() + 6
            c = None
            rounds = 0
            while time.monotonic() < end and rounds < 150:
                rounds += 1
                try:
                    if c is None:
                        c = h.Raw(port, timeout=10)
                    batch = [mykeys[(rounds + j) % 4] for j in range(3)]
                    c.send(b"".join(b"get %s\r\n" % k for k in batch))
                    for k in batch:
                        read_reply(c, k)
                    with lock:
                        answered[0] += 1
                except (OSError, AssertionError):
                    with lock:
                        failed[0] += 1
                    if c is not None:
                        c.close()
                    c = None
            if c is not None:
                c.close()

        threads = [threading.Thread(target=client, args=(t,), daemon=True) for t in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertAlive(px)
        if wrong:
            self.fail("clients received VALUEs they did not ask for: %d times, e.g. %r"
                      % (len(wrong), wrong[:3]))
        self.assertGreater(answered[0] + failed[0], 0)

    def test_08b_a_meta_reply_naming_another_key_is_refused(self):
        """A server answering `mg mine v k` with another key's item under the
        request's own O tag (so the tag matches): walnut relayed it (a
        review), where a classic get's VALUE for another key is refused.
        Now the k flag's key is checked as the VALUE line's is: the client
        gets a SERVER_ERROR, never SECRET, for mg (plain and base64 keys,
        with an O of its own) and for ms with k; without k nothing names
        the key, and the reply goes as it came."""
        fake = self.fake(fakes.MixupBackend(name="mixup"))
        px = self.proxy([fake], timeout=2000, auto_eject_hosts=False)
        for req in (b"get mine\r\n", b"mg mine v k\r\n", b"mg mine k v Oab\r\n",
                    b"mg bWluZQ== b v k\r\n", b"ms mine 2 k\r\nhi\r\n"):
            with self.subTest(req=req), self.raw(px.port(), timeout=10) as c:
                c.send(req)
                line = c.recv_line()
                self.assertTrue(line.startswith(b"SERVER_ERROR "), line)
        with self.raw(px.port(), timeout=10) as c:
            c.request(b"mg mine v\r\n", b"VA 6\r\nSECRET\r\n")
        self.assertAlive(px)
        self.assertNoSanitizerReport(px)

    def test_12a_slow_but_steady_reply_is_delivered(self):
        """Defect 12: a 4,000,000-byte value in 40 chunks 60 ms apart (~2.4 s) with
        timeout 500 arrives whole: timeout bounds the wait for the next byte."""
        value = bytes(range(256)) * (4000000 // 256) + b"z" * (4000000 % 256)
        fake = self.fake(fakes.SlowValueBackend(b"big", value, chunks=40, gap=0.06))
        px = self.proxy([fake], timeout=500)
        c = self.raw(px.port(), timeout=60)
        c.send(b"get big\r\n")
        want = fake.full_reply()
        got = b""
        end = time.monotonic() + 60
        while len(got) < len(want) and want.startswith(got) and time.monotonic() < end:
            c.sock.settimeout(max(0.01, end - time.monotonic()))
            try:
                chunk = c.sock.recv(1 << 20)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            got += chunk
        if got != want:
            i = h.first_diff(want, got)
            self.fail("slow steady reply: got %d of %d bytes, differing at %d: %s" % (
                len(got), len(want), i, h.show(got[max(0, i - 20):i + 60])))

    def test_12b_stalled_reply_times_out(self):
        """Defect 12: a backend silent mid-reply for longer than timeout: the client gets
        SERVER_ERROR Connection timed out (or EOF after a partial reply) in time."""
        value = b"s" * 4000000
        fake = self.fake(fakes.SlowValueBackend(b"big", value, chunks=40, gap=0.06,
                                                stall_after=5, stall=30))
        px = self.proxy([fake], timeout=500)
        c = self.raw(px.port(), timeout=30)
        t0 = time.monotonic()
        c.send(b"get big\r\n")
        want = fake.full_reply()
        err = b"SERVER_ERROR Connection timed out\r\n"
        got = b""
        while True:
            left = t0 + 15 - time.monotonic()
            if left <= 0:
                self.fail("no timeout within 15 s; got %d bytes" % len(got))
            c.sock.settimeout(left)
            try:
                chunk = c.sock.recv(1 << 20)
            except socket.timeout:
                continue
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                took = time.monotonic() - t0
                self.assertTrue(len(got) > 0 and want.startswith(got),
                                "closed after %r instead of a prefix of the reply" % got[:80])
                break
            got += chunk
            if got == err:
                took = time.monotonic() - t0
                break
            if not (want.startswith(got) or err.startswith(got)):
                self.fail("unexpected bytes: %s" % h.show(got))
        # 5 chunks take ~0.24 s, then 0.5 s of silence; generous slack
        self.assertLess(took, 0.24 + 0.5 + 3.0, "outcome after %.2f s" % took)
        self.assertAlive(px)

    def test_13_connect_failing_at_once(self):
        """Defect 13: a server whose connect fails synchronously: no use-after-free; a
        split get answers one SERVER_ERROR line, then the next request is answered."""
        mc = self.memcached(1)[0]
        px = self.proxy(["255.255.255.255:11211:1 bad", "%s:1" % mc.addr], start=False,
                        health_check_interval=0, timeout=2000)
        x = self.keys_on(px, "255.255.255.255:11211", 1, b"x")[0]
        k1 = self.keys_on(px, mc.addr, 1, b"k")[0]
        px.start()
        self.addCleanup(px.kill)
        port = px.port()
        c = self.raw(port, timeout=10)
        c.send(b"quit\r\nget %s %s\r\n" % (x, k1))
        c.expect_closed(what="after quit")
        time.sleep(0.2)
        self.assertAlive(px, "after quit + split get")
        self.assertEqual(h.mc_command(port, b"get %s\r\n" % k1, b"END\r\n"), b"END\r\n",
                         "after quit + split get")

        for i in range(4):  # the failing server's key first, then last
            c = self.raw(port, timeout=10)
            pair = (x, k1) if i % 2 == 0 else (k1, x)
            c.send(b"get %s %s\r\nget %s\r\n" % (pair + (k1,)))
            first = c.recv_line()
            self.assertRegex(first, rb"^SERVER_ERROR [^\r\n]+\r\n$")
            second = c.recv_line()
            self.assertEqual(second, b"END\r\n", "after the SERVER_ERROR for the get")
            c.close()
        time.sleep(0.2)
        self.assertAlive(px, "after split gets to a server that cannot be connected")
        self.assertEqual(h.mc_command(port, b"get %s\r\n" % k1, b"END\r\n"), b"END\r\n",
                         "at the end")
        self.assertNoSanitizerReport(px)
        px.stop()

    def test_14_server_ejects_is_counted(self):
        """Defect 14: after an ejection `stats` shows server_ejects >= 1."""
        mcs = self.memcached(2)
        px = self.proxy(mcs, auto_eject_hosts=True, server_failure_limit=2,
                        server_retry_timeout=30000, health_check_interval=200, timeout=400)
        port = px.port()
        self.assertEqual(stat_int(port, "server_ejects"), 0)
        mcs[1].kill()
        h.wait_until(lambda: re.search(r"server \S+ ejected", read_file(px.log_path)),
                     deadline=20, what="the ejection in walnut's log")
        last = [None]

        def counted():
            last[0] = stat_int(port, "server_ejects")
            return last[0] >= 1
        try:
            h.wait_until(counted, deadline=10, what="server_ejects >= 1")
        except AssertionError:
            self.fail("server_ejects stays %s after the ejection" % last[0])
        px.stop()

    def test_15_paused_client_resumes_when_its_bytes_are_taken(self):
        """Defect 15: a client paused at its soft bound (a quarter of client_buffer_limit)
        by sets walnut is forwarding is read on as soon as the server's socket has taken
        them. The server here answers nothing until it has all 6 x 1 MB sets (before:
        walnut waited for a reply and forwarded only 2, so neither side moved)."""
        n = 6
        fake = self.fake(fakes.BatchReplyBackend(n))
        px = self.proxy([fake], client_buffer_limit=8 * MiB)
        c = self.raw(px.port(), timeout=20)
        value = b"v" * MiB
        c.send(b"".join(b"set k%d 0 0 %d\r\n%s\r\n" % (i, len(value), value)
                        for i in range(n)))
        try:
            h.wait_until(lambda: len(fake.requests()) >= n, deadline=15,
                         what="all %d sets at the server" % n)
        except AssertionError:
            self.fail("walnut forwarded %d of %d sets and waited for a reply" % (
                len(fake.requests()), n))
        self.assertEqual(c.recv_exact(8 * n, timeout=20), b"STORED\r\n" * n)
        self.assertAlive(px)
        px.stop()

    def test_15b_pipeline_written_whole_before_reading(self):
        """A client that writes 60,000 `get`s of 240-byte keys (15 MB of requests,
        16 MB of replies) before reading any reply: walnut stopped reading it at
        1,024 in flight while the replies waited for it to read, and it was
        blocked writing the rest: both waited forever. Expected: read on once
        its reply write has not moved for a second (under a 256 MiB limit, which
        the requests in flight, about 1.3 KB each as counted, stay under);
        every reply, in order."""
        mc = self.memcached(1)[0]
        px = self.proxy([mc], client_buffer_limit=256 * MiB)
        keys = [(b"wb:%d:" % i).ljust(240, b"k") for i in range(32)]
        for i, k in enumerate(keys):
            h.mc_command(px.port(), b"set %s 0 0 10\r\n%s\r\n" % (k, (b"%d" % i).ljust(10, b"v")),
                         expect=b"STORED\r\n")
        n = 60000
        s = self.sock(px.port(), timeout=30)
        try:
            s.sendall(b"".join(b"get %s\r\n" % keys[i % 32] for i in range(n)))
        except socket.timeout:
            self.fail("walnut stopped reading a client writing its pipeline whole")
        want = b"".join(b"VALUE %s 0 10\r\n%s\r\nEND\r\n" % (keys[i % 32], (b"%d" % (i % 32))
                        .ljust(10, b"v")) for i in range(n))
        got = bytearray()
        while len(got) < len(want):
            d = s.recv(1 << 20)
            self.assertTrue(d, "closed after %d of %d bytes" % (len(got), len(want)))
            got += d
        self.assertEqual(bytes(got), want)
        s.close()
        self.assertAlive(px)

    def stalled_beside_live(self, nkeys, prefix, rcvbuf=None):
        """A server that stops reading at its first storage command, a memcached beside
        it, walnut in front (client_buffer_limit 8 MiB): the fake, the proxy, nkeys keys
        on the fake, a key on memcached set to "ok", and growth() (peak RSS since now)."""
        fake = self.fake(fakes.StallingBackend(rcvbuf=rcvbuf))
        mc = self.memcached(1)[0]
        px = self.proxy([fake, mc], start=False, client_buffer_limit=8 * MiB)
        keys = self.keys_on(px, fake.addr, nkeys, prefix)
        other = self.keys_on(px, mc.addr, 1, b"ok:")[0]
        px.start()
        self.addCleanup(px.kill)
        h.mc_command(px.port(), b"set %s 0 0 2\r\nok\r\n" % other, expect=b"STORED\r\n")
        base = h.rss(px.pid)
        have_peak = h.reset_peak(px.pid)

        def growth():
            return (h.proc_status(px.pid, "VmHWM") if have_peak else h.rss(px.pid)) - base
        return fake, px, keys, other, growth

    def test_16_stalled_server_writes_are_bounded(self):
        """Defect 16: a server that stops reading (no timeout set): the sets walnut
        queues for it count against the client's client_buffer_limit, so walnut stops
        reading that client; RSS growth < 48 MiB for 160 x 1 MB sets, each followed by a
        get answered by a live server, whose replies woke the client (before: every set
        read and queued, ~150 MiB). Another client is served meanwhile; once the server
        reads again every request is answered, in order."""
        n = 160 if not sanitized() else 40
        fake, px, keys, other, growth = self.stalled_beside_live(n, b"st:")
        port = px.port()
        values = [(b"%08d" % i) * (MiB // 8) for i in range(n)]
        s = self.sock(port, timeout=120)
        sent = threading.Event()

        def send_all():
            try:
                for k, v in zip(keys, values):
                    s.sendall(b"set %s 0 0 %d\r\n%s\r\nget %s\r\n" % (k, len(v), v, other))
            except OSError:
                return
            sent.set()

        t = threading.Thread(target=send_all, daemon=True)
        t.start()
        self.addCleanup(t.join, 5)
        h.wait_until(lambda: fake.stalled >= 1, deadline=20, what="the server stalled")
        # Wait until walnut has taken all it will: the sender is done, or RSS has
        # not moved for 1.5 s.
        last, still_since, end = growth(), time.monotonic(), time.monotonic() + 30
        while not sent.is_set() and time.monotonic() < end:
            self.assertAlive(px)
            time.sleep(0.1)
            g = growth()
            if g != last:
                last, still_since = g, time.monotonic()
            elif time.monotonic() - still_since > 1.5:
                break
        g = growth()
        measured("RSS growth, %d x 1 MB sets to a stalled server" % n, "%.1f MiB" % (g / MiB))
        if not sanitized():
            self.assertFalse(sent.is_set(), "walnut read all %d MB meant for a server that "
                             "does not read (RSS growth %.1f MiB)" % (n, g / MiB))
            self.assertLess(g, 48 * MiB, "RSS growth %.1f MiB" % (g / MiB))
        # another client is served meanwhile
        c = self.raw(port, timeout=10)
        c.request(b"get %s\r\n" % other, b"VALUE %s 0 2\r\nok\r\nEND\r\n" % other)
        # the server reads again: nothing was lost
        fake.go()
        f = s.makefile("rb")
        for i in range(n):
            self.assertEqual(f.readline(), b"STORED\r\n", "set %d of %d" % (i, n))
            self.assertEqual(f.readline() + f.readline() + f.readline(),
                             b"VALUE %s 0 2\r\nok\r\nEND\r\n" % other, "get %d of %d" % (i, n))
        t.join(30)
        self.assertTrue(sent.is_set(), "the sender finished")
        for i in (0, n - 1):
            c.send(b"get %s\r\n" % keys[i])
            self.assertEqual(c.recv_until(b"END\r\n", timeout=30),
                             get_reply([(keys[i], 0, values[i])]))
        self.assertAlive(px)
        self.assertNoSanitizerReport(px)
        px.stop()

    def test_17b_one_turn_cannot_queue_past_twice_the_bound(self):
        """A server that stops reading, and a worker that fell behind: walnut is
        stopped while 60 clients each send a 1.9 MB set for that server, then
        resumed, so one loop turn reads them all. The bound lets what one turn
        queued through until it is offered to the socket (test_05g), and let
        all of it through: ~90 MB queued for a server that never reads (an
        adversarial run: 298 MB with 200 clients, limit 8 MiB). Expected: at
        most twice the bound and the request that crosses it. In that one turn
        the server's socket has had nothing waiting in it yet, so it cannot be
        told from one that reads (test_05i): the bound is the limit or 16 MiB,
        the larger. A request a second later is refused: by then the socket
        has taken nothing for 500 ms, and the bound is the limit."""
        fake, px, keys, other, growth = self.stalled_beside_live(62, b"ot:")
        port = px.port()
        first = self.sock(port, timeout=10)
        first.sendall(b"set %s 0 0 1\r\nx\r\n" % keys[0])  # never answered: it stalls
        h.wait_until(lambda: fake.stalled >= 1, deadline=20, what="the server stalled")
        value = b"v" * 1900000
        socks = [self.sock(port, timeout=10) for _ in range(60)]
        h.sigstop_and_wait(px.pid)
        try:
            for k, s in zip(keys[1:], socks):
                s.setblocking(False)
                try:
                    s.send(b"set %s 0 0 %d\r\n%s\r\n" % (k, len(value), value))
                except OSError:
                    pass
        finally:
            os.kill(px.pid, signal.SIGCONT)
        time.sleep(1)
        late = self.raw(port, timeout=10)  # one more request for it: refused, and logged
        late.send(b"set %s 0 0 1\r\nx\r\n" % keys[61])
        self.assertServerError(late.recv_line(), "a request for a server over its bound")
        for s in socks:
            s.close()
        queued = most_queued(px)
        measured("bytes queued for a stalled server after one turn read 60 x 1.9 MB sets",
                 "%.1f MiB (limit 8 MiB)" % (queued / MiB))
        self.assertLessEqual(queued, 2 * 16 * MiB + len(value) + 100,
                             "bytes queued for a server that does not read")
        c = self.raw(port, timeout=10)
        c.request(b"get %s\r\n" % other, b"VALUE %s 0 2\r\nok\r\nEND\r\n" % other)
        self.assertAlive(px)
        fake.go()
        px.stop()

    def clients_that_reset(self, px, request, n):
        """n clients one after another, each sending request and resetting
        once walnut has read it: walnut's RSS growth."""
        base = h.rss(px.pid)
        for _ in range(n):
            s = self.sock(px.port(), timeout=10)
            s.sendall(request)
            time.sleep(0.001)  # read and sent on before the reset
            rst_close(s)
        time.sleep(0.5)
        return h.rss(px.pid) - base

    def test_17c_a_get_whose_client_left_lets_go_of_its_input_buffer(self):
        """A get waiting for its server keeps its line, to match the reply's
        keys. A server that reads and never answers, and client after client
        that sends it one get and resets: each get's line kept its client's
        whole 16 KiB input buffer alive, though only the line's bytes count
        in the server's bound (review: RSS +9.5 MiB for 2,000 clients, 1.8
        once the line moves). Expected: the line moves to a buffer of its
        own once its client is gone."""
        fake = self.fake(fakes.MuteBackend())
        mc = self.memcached(1)[0]
        px = self.proxy([fake, mc], start=False, client_buffer_limit=8 * MiB)
        key = self.keys_on(px, fake.addr, 1, b"x" * 200 + b":")[0]
        other = self.keys_on(px, mc.addr, 1, b"live:")[0]
        px.start()
        self.addCleanup(px.kill)
        n = 3000 if not sanitized() else 500
        grew = self.clients_that_reset(px, b"get %s\r\n" % key, n)
        measured("RSS growth, %d clients each sending a get to a mute server and resetting" % n,
                 "%.1f MiB" % (grew / MiB))
        if not sanitized():
            self.assertLess(grew, 8 * MiB, "RSS growth for %d gets whose clients left" % n)
        c = self.raw(px.port(), timeout=10)
        c.request(b"get %s\r\n" % other, b"END\r\n")  # the live server is served
        self.assertAlive(px)
        self.assertNoSanitizerReport(px)
        px.stop()

    def test_17d_a_split_get_whose_client_left_is_bounded(self):
        """A get split over a server that reads and never answers and a live
        one: its parent (the 47 KB line, the split's bookkeeping) lives while
        the silent server's part waits, and was counted nowhere once its client
        had gone; the silent server's bound counted the part's slot alone.
        Client after client sending such a get and closing grew walnut without
        bound (review: RSS +121 MiB for 2,000 clients, every part still
        queued). Expected: each part waiting counts its parent in its server's
        bound, so the server is refused requests once its parts pin more than
        16 MiB (here: over client_buffer_limit's 8 MiB), and the parent's line
        moves out of the client's input buffer. (The server has had a request
        unanswered for 300 ms first: what is queued before a server could have
        answered may reach four times the bound, test_17k.)"""
        self.split_parents_bounded(b"get", 2)

    def test_17h_a_split_gat_whose_client_left_is_bounded(self):
        """As test_17d for a gat, which sends the mute server several parts
        (2 KB lines of its 20 keys): the parent counts once in that server's
        bound, on its last part there (not on every part: test_17g; and not
        on none, which would let the parts grow without bound)."""
        self.split_parents_bounded(b"gat 0", 21, parts=3)

    def split_parents_bounded(self, verb, nsilent, parts=1):
        """`parts`: the mute server's parts of each line."""
        fake = self.fake(fakes.MuteBackend())
        mc = self.memcached(1)[0]
        px = self.proxy([fake, mc], start=False, client_buffer_limit=8 * MiB)
        silent = self.keys_on(px, fake.addr, nsilent, b"s" * 200 + b":")
        live = self.keys_on(px, mc.addr, 200, b"l" * 200 + b":")
        px.start()
        self.addCleanup(px.kill)
        line = verb + b" " + b" ".join(silent[:-1] + live) + b"\r\n"
        n = 2000 if not sanitized() else 500
        # the mute server has left a request unanswered for longer than
        # 100 ms before the flood: held to the bound from the first client
        first = self.sock(px.port(), timeout=10)
        first.sendall(b"get %s\r\n" % silent[-1])
        h.wait_until(lambda: len(fake.requests()) >= 1, deadline=20, what="the first get there")
        time.sleep(0.3)
        base = h.rss(px.pid)
        for _ in range(n):
            s = self.sock(px.port(), timeout=10)
            s.sendall(line)
            s.close()

        def queued():
            return self.queued(px, fake.addr)
        # every client is read (and its parts are queued or refused)
        h.wait_until(lambda: "has not answered requests holding" in px.log(), deadline=20,
                     what="the silent server's bound met")
        time.sleep(0.5)
        grew = h.rss(px.pid) - base
        waiting = queued()
        measured("%s parts waiting for a mute server, %d clients of a %d-byte line gone"
                 % (verb.decode(), n, len(line)), "%d (RSS +%.1f MiB)" % (waiting, grew / MiB))
        self.assertLessEqual(waiting, parts * (16 * MiB // len(line)),
                             "parts waiting for the silent server, each line pinning its parent")
        if not sanitized():
            self.assertLess(grew, 40 * MiB, "RSS growth for %d split lines whose clients left" % n)
        c = self.raw(px.port(), timeout=10)
        c.request(b"get %s\r\n" % silent[-1], b"SERVER_ERROR Out of memory\r\n")
        c.request(b"get %s\r\n" % live[0], b"END\r\n")  # the live server is served
        self.assertAlive(px)
        self.assertNoSanitizerReport(px)
        px.stop()

    def test_17e_a_split_get_whose_client_left_lets_go_of_its_input_buffer(self):
        """As test_17c, for a get split over a mute server and a live one: the
        parent's line, which its parts match their replies against, pointed
        into the client's 16 KiB input buffer, kept alive for as long as the
        mute server's part waits; its bound counts the line alone. Expected:
        the line moves to a buffer of its own once its client is gone."""
        fake = self.fake(fakes.MuteBackend())
        mc = self.memcached(1)[0]
        px = self.proxy([fake, mc], start=False, client_buffer_limit=8 * MiB)
        silent = self.keys_on(px, fake.addr, 1, b"s" * 100 + b":")[0]
        live = self.keys_on(px, mc.addr, 1, b"l" * 100 + b":")[0]
        px.start()
        self.addCleanup(px.kill)
        n = 3000 if not sanitized() else 500
        grew = self.clients_that_reset(px, b"get %s %s\r\n" % (silent, live), n)
        parts = sum(1 for _, r in fake.requests() if r.startswith(b"get "))
        self.assertGreater(parts, n * 9 // 10, "parts the mute server received (reset first?)")
        measured("RSS growth, %d clients each sending a get split over a mute server and "
                 "resetting" % n, "%.1f MiB" % (grew / MiB))
        self.assertNotIn("has not answered requests holding", px.log())
        if not sanitized():
            self.assertLess(grew, 12 * MiB, "RSS growth for %d split gets whose clients left" % n)
        c = self.raw(px.port(), timeout=10)
        c.request(b"get %s\r\n" % live, b"END\r\n")  # the live server is served
        self.assertAlive(px)
        self.assertNoSanitizerReport(px)
        px.stop()

    def test_17f_a_split_get_answered_early_lets_go_of_its_input_buffer(self):
        """As test_17e, when the parent is answered before its part for the
        mute server (its other part's server refuses connections): it left the
        client's queue, answered, and its line, which the waiting part still
        matches against, kept the client's input buffer (review: 3,000
        clients, RSS +16.3 MiB). Expected: the line moves then too."""
        fake = self.fake(fakes.MuteBackend())
        dead = "%s:%d" % (HOST, h.refused_port())  # nothing listens there
        px = self.proxy([fake, dead + ":1"], start=False, client_buffer_limit=8 * MiB)
        silent = self.keys_on(px, fake.addr, 1, b"s:")[0]
        refused = self.keys_on(px, dead, 1, b"d:")[0]
        px.start()
        self.addCleanup(px.kill)
        n = 3000 if not sanitized() else 500
        base = h.rss(px.pid)
        for _ in range(n):
            c = h.Raw(px.port(), timeout=10)
            c.request(b"get %s %s\r\n" % (silent, refused), b"SERVER_ERROR Connection refused\r\n")
            c.close()
        def parts():
            return sum(1 for _, r in fake.requests() if r.startswith(b"get "))
        # the fake's reading thread may lag the replies (once: 2,999 at 0.5 s)
        h.wait_until(lambda: parts() >= n, deadline=10, what="every part at the mute server")
        time.sleep(0.5)
        grew = h.rss(px.pid) - base
        measured("RSS growth, %d clients each answered a split get while its part waits for a "
                 "mute server" % n, "%.1f MiB" % (grew / MiB))
        self.assertEqual(parts(), n, "parts the mute server received")
        if not sanitized():
            self.assertLess(grew, 10 * MiB, "RSS growth for %d answered split gets" % n)
        self.assertAlive(px)
        self.assertNoSanitizerReport(px)
        px.stop()

    def test_17i_split_gets_waiting_for_a_stalled_server_hold_what_they_count(self):
        """A get split over servers has each part's line composed into a
        buffer of its own, which the part keeps until its server's socket
        takes it. That buffer was a pooled 16 KiB chunk while the part counts
        the line's ~40 bytes (as the Redis inline requests were, e9b98e9):
        while a server did not read, 1,000 parts waiting for it grew walnut by
        9.7 MiB. Here a server stalls with its socket full of sets, and a
        client pipelines gets split over it and a live memcached. Expected: the
        parts' lines take about their size (2.2 MiB in all, with the
        requests' bookkeeping)."""
        fake, px, keys, other, growth = self.stalled_beside_live(17, b"sg:", rcvbuf=64 << 10)
        port = px.port()
        # sets the server will not read fill its connection (the kernel's
        # buffers: walnut's send buffer, at most 4 MiB, and the server's small
        # receive buffer), and some wait in walnut
        filler = self.sock(port, timeout=60)
        value = b"f" * MiB

        filler.settimeout(5)  # a host whose socket buffers take less: full enough

        def fill():
            try:
                for k in keys[:10]:
                    filler.sendall(b"set %s 0 0 %d noreply\r\n%s\r\n" % (k, len(value), value))
            except OSError:
                pass
        t = threading.Thread(target=fill, daemon=True)
        t.start()
        self.addCleanup(t.join, 5)
        h.wait_until(lambda: fake.stalled >= 1, deadline=20, what="the server stalled")
        h.wait_until(lambda: not t.is_alive(), deadline=20, what="the sets read by walnut")
        time.sleep(0.5)
        base = growth()
        n = 1000  # under the client's 8 MiB: each line counts its parts' slots
        line = b"".join(b"get %s %s\r\n" % (keys[10 + i % 7], other) for i in range(n))
        c = self.sock(port, timeout=30)
        h.warm_up(c)  # 1000 in flight: a client seen to have small replies
        c.sendall(line)
        h.wait_until(lambda: self.metric(px, "walnut_server_out_queue", fake.addr) >= n,
                     deadline=30, what="every split get's part queued for the stalled server")
        time.sleep(0.3)
        grew = growth() - base
        measured("RSS growth, %d split gets' parts waiting for a stalled server" % n,
                 "%.1f MiB" % (grew / MiB))
        if not sanitized():
            # 2.2 MiB measured; 9.7 MiB with the pooled chunks
            self.assertLess(grew, 5 * MiB, "RSS growth for %d parts of ~60 bytes" % n)
        fake.go()  # the server reads again: every get is answered
        f = c.makefile("rb")
        for i in range(n):
            self.assertEqual(f.readline(), b"VALUE %s 0 2\r\n" % other, "get %d" % i)
            self.assertEqual(f.readline(), b"ok\r\n")
            self.assertEqual(f.readline(), b"END\r\n")
        self.assertAlive(px)
        self.assertNoSanitizerReport(px)
        px.stop()

    def test_17j_a_stalled_servers_bound_is_the_limit_again(self):
        """While a server's socket takes bytes, its bound is the limit or 16
        MiB, the larger (test_05i); once the socket has had bytes in it and
        taken none for 500 ms, the limit. Here (limit 1 MiB) the stalled
        server's socket is full and it has taken nothing for a second; then
        clients send 300 KB sets one turn apart. Expected: refused once about
        twice the limit waits, not at 16 MiB."""
        fake = self.fake(fakes.StallingBackend(rcvbuf=64 << 10))
        mc = self.memcached(1)[0]
        px = self.proxy([fake, mc], start=False, client_buffer_limit=MiB)
        keys = self.keys_on(px, fake.addr, 40, b"sj:")
        px.start()
        self.addCleanup(px.kill)
        port = px.port()
        filler = self.sock(port, timeout=5)
        value = b"f" * (300 << 10)
        try:  # the server stalls at the first; the kernel's buffers fill with the rest
            for k in keys[:20]:
                filler.sendall(b"set %s 0 0 %d noreply\r\n%s\r\n" % (k, len(value), value))
        except OSError:
            pass  # walnut stopped reading the filler: the socket is full
        h.wait_until(lambda: fake.stalled >= 1, deadline=20, what="the server stalled")
        # the kernel's buffers towards it full (walnut may still be writing
        # the filler into them on a slow machine), then the 500 ms
        h.wait_until_still(lambda: h.in_kernel(fake.port), still=1.0,
                           what="the bytes towards the stalled server to stop growing")
        time.sleep(0.6)
        refused = self.sets_refused(port, keys[20:], value, 0.1)
        self.assertGreaterEqual(refused, 10, "300 KB sets refused for a stalled server")
        queued = most_queued(px)
        measured("bytes queued for a server stalled for a second, limit 1 MiB",
                 "%.1f MiB" % (queued / MiB))
        self.assertLessEqual(queued, 2 * MiB + len(value) + 200, "bytes queued for it")
        self.assertAlive(px)
        fake.go()
        px.stop()

    def queued(self, px, addr, with_bytes=False):
        """Requests queued for the server at addr, written or not yet (a slow
        build writes them later), and with_bytes their bytes too. Read from
        one scrape, and again until two scrapes agree: requests written
        between reads of the in and out queues were counted twice (CI, ASan:
        a 19 MB burst written to its server between two scrapes read as 38)."""
        def snapshot():
            got = {}
            for l in px.metrics().splitlines():
                name = l.split("{", 1)[0]
                if name in ("walnut_server_in_queue", "walnut_server_out_queue",
                            "walnut_server_in_queue_bytes",
                            "walnut_server_out_queue_bytes") and addr in l:
                    got[name] = int(float(l.split()[-1]))
            if len(got) != 4:
                self.fail("no queue gauges for %s: %r" % (addr, got))
            return (got["walnut_server_in_queue"] + got["walnut_server_out_queue"],
                    got["walnut_server_in_queue_bytes"] + got["walnut_server_out_queue_bytes"])
        last = snapshot()
        deadline = time.monotonic() + 30  # a fake server parses 19 MB in Python
        while True:
            time.sleep(0.1)
            now = snapshot()
            if now == last:
                break
            if time.monotonic() > deadline:
                self.fail("the queue for %s never settled: %r then %r" % (addr, last, now))
            last = now
        return now if with_bytes else now[0]

    def metric(self, px, name, addr):
        for l in px.metrics().splitlines():
            if l.startswith(name + "{") and addr in l:
                return int(float(l.split()[-1]))
        self.fail("no %s for %s" % (name, addr))

    def test_17g_a_long_gat_is_not_refused_by_its_own_parts(self):
        """A gat line is split into parts of 2 KB lines (memcached's limit for
        gat), dozens of them for one server. Each part counted its whole
        parent (the line, 32 bytes of bookkeeping per key) in the server's
        bound, so one 64 KB gat of 32,000 keys counted 35 MB against a healthy
        memcached (review: refused, SERVER_ERROR Out of memory, and other
        clients' gets with it). Expected: a parent counts once per server."""
        mc = self.memcached(1)[0]
        px = self.proxy([mc], client_buffer_limit=8 * MiB)
        c = self.raw(px.port(), timeout=20)
        for nkeys in (4000, 32000):
            c.request(b"gat 0" + b" a" * nkeys + b"\r\n", b"END\r\n",
                      what="a gat of %d keys" % nkeys)
        self.assertNotIn("has not answered requests holding", px.log())
        self.assertNoSanitizerReport(px)
        px.stop()

    def test_17k_a_burst_of_pipelined_gets_for_a_healthy_server_is_served(self):
        """What a server has not answered is bounded by the limit or 16 MiB,
        each request counting its slot (about 0.6 KB). 100 clients each
        pipelining 720 gets, read in one turn (walnut stopped while they
        send), are 72,000 requests, 44 MB, for one healthy memcached: 44,764
        of them were answered SERVER_ERROR Out of memory. Expected: a server
        that answers is held to four times the bound, so every get is
        answered (END); a server that does not answer is still refused at the
        bound (test_17c to test_17h)."""
        mc = self.memcached(1)[0]
        px = self.proxy([mc], client_buffer_limit=MiB)
        nclients, ngets = 100, 720
        socks = [self.sock(px.port(), timeout=60) for _ in range(nclients)]
        for s in socks:
            h.warm_up(s)  # 720 in flight: a client seen to have small replies
        line = b"".join(b"get burst%d\r\n" % i for i in range(ngets))
        time.sleep(0.2)  # every connection accepted
        h.sigstop_and_wait(px.pid)
        try:
            for s in socks:
                s.sendall(line)  # 7.5 KB: the socket buffers take it
        finally:
            os.kill(px.pid, signal.SIGCONT)
        replies = collections.Counter()
        for s in socks:
            f = s.makefile("rb")
            for _ in range(ngets):
                replies[f.readline()] += 1
        measured("gets of a one-turn burst (100 clients x 720) answered END", replies[b"END\r\n"])
        self.assertEqual(dict(replies), {b"END\r\n": nclients * ngets})
        self.assertNotIn("has not answered requests holding", px.log())
        self.assertAlive(px)
        self.assertNoSanitizerReport(px)
        px.stop()

    def test_17l_a_mute_server_is_held_to_the_bound_not_the_burst_ceiling(self):
        """The other side of test_17k: a server that reads and has not
        answered its first request for 100 ms is refused at the bound (limit
        1 MiB here, so 16 MiB, about 27,000 gets of 0.6 KB), not at four
        times it. 150 clients then pipeline 700 gets each (105,000)."""
        fake = self.fake(fakes.MuteBackend())
        px = self.proxy([fake], client_buffer_limit=MiB)
        port = px.port()
        first = self.sock(port, timeout=10)
        first.sendall(b"get first\r\n")
        h.wait_until(lambda: self.metric(px, "walnut_server_out_queue", fake.addr) >= 1,
                     deadline=20, what="the first get at the mute server")
        time.sleep(0.3)  # unanswered for longer than 100 ms
        line = b"".join(b"get mute%d\r\n" % i for i in range(700))
        socks = []
        for _ in range(150):
            s = self.sock(port, timeout=10)
            h.warm_up(s)  # 700 in flight: a client seen to have small replies
            s.sendall(line)
            socks.append(s)
        h.wait_until(lambda: "has not answered requests holding" in px.log(), deadline=30,
                     what="the mute server's bound met")
        time.sleep(0.5)
        queued = self.queued(px, fake.addr)
        measured("gets queued for a mute server (limit 1 MiB, 105,000 sent)", queued)
        self.assertGreater(queued, 16 * MiB // 700, "gets queued for the mute server")
        # 16 MiB of ~0.6 KB slots, and what one turn read past it
        self.assertLessEqual(queued, 16 * MiB // 600 + 2 * 700, "gets held for a mute server")
        late = self.raw(port, timeout=10)
        late.request(b"get late\r\n", b"SERVER_ERROR Out of memory\r\n")
        self.assertAlive(px)
        self.assertNoSanitizerReport(px)
        px.stop()

    def test_17m_a_server_trickling_a_reply_it_never_ends_is_held_to_the_bound(self):
        """As test_17l, for a server that sends a byte of a reply now and
        then and never completes it (a 400 KB value in 400 pieces 90 ms
        apart). A byte of reply counted as an answer (adversarial review of
        22f68dc: 106,725 requests held, the bound and 48 MiB); an answer is
        a complete reply."""
        fake = self.fake(fakes.SlowValueBackend(b"big", b"v" * 400000, chunks=400, gap=0.09))
        px = self.proxy([fake], client_buffer_limit=MiB)
        port = px.port()
        first = self.sock(port, timeout=10)
        first.sendall(b"get big\r\n")
        h.wait_until(lambda: len(first.recv(65536, socket.MSG_PEEK)) > 0, deadline=20,
                     what="the reply's first piece")
        time.sleep(0.3)
        line = b"".join(b"get drip%d\r\n" % i for i in range(700))
        for _ in range(150):
            s = self.sock(port, timeout=10)
            h.warm_up(s)  # 700 in flight: a client seen to have small replies
            s.sendall(line)
            s.close()
        h.wait_until(lambda: "has not answered requests holding" in px.log(), deadline=30,
                     what="the trickling server's bound met")
        time.sleep(0.5)
        queued = self.queued(px, fake.addr)
        measured("gets queued for a server trickling one reply (limit 1 MiB, 105,000 sent)",
                 queued)
        self.assertGreater(queued, 16 * MiB // 700, "gets queued for the trickling server")
        # 16 MiB of ~0.6 KB slots, and what the turns read past it (a piece
        # unread in the socket when a client is read counts as an answer)
        self.assertLessEqual(queued, 16 * MiB // 600 + 3 * 700, "gets held for it")
        # the warning and its end at most once per 10 s, however often the
        # pieces let a request by (100 of each in 5 s, before)
        self.assertLessEqual(px.log().count("has not answered requests holding"), 1, px.log())
        self.assertAlive(px)
        self.assertNoSanitizerReport(px)
        px.stop()

    def test_17n_a_burst_counts_the_lines_its_gets_keep(self):
        """A get keeps its line until its reply (to check the reply's keys);
        the line counted in its server's bound once written, after the
        bound was asked. 400 clients' 300 gets of 240-byte keys, read in one
        turn for a server not yet connected that will never answer: 26 MB of
        lines past the bound and its 48 MiB for a burst (review: 89.6 MiB held,
        64 MiB promised). Expected: the slots and lines held stay within 64
        MiB (limit 1 MiB)."""
        fake = self.fake(fakes.MuteBackend())
        px = self.proxy([fake], client_buffer_limit=MiB)
        port = px.port()
        socks = [self.sock(port, timeout=30) for _ in range(400)]
        for s in socks:
            h.warm_up(s)  # 300 in flight: a client seen to have small replies
        time.sleep(0.3)
        h.sigstop_and_wait(px.pid)
        try:
            for i, s in enumerate(socks):
                s.setblocking(False)
                try:
                    s.send(b"".join(b"get %s\r\n" % (b"%06d" % (i * 300 + j)).rjust(240, b"k")
                                    for j in range(300)))
                except OSError:
                    pass
        finally:
            os.kill(px.pid, signal.SIGCONT)
        h.wait_until(lambda: "has not answered requests holding" in px.log(), deadline=30,
                     what="the mute server's bound met")
        time.sleep(0.5)
        n, lines = self.queued(px, fake.addr, with_bytes=True)
        self.assertGreater(n, 16 * MiB // 700, "gets queued for the mute server")
        held = n * 600 + lines  # a slot is about 0.6 KB
        measured("held for a mute server after a one-turn burst of 120,000 gets with 240-byte "
                 "keys (limit 1 MiB)", "%d gets, %.1f MiB" % (n, held / MiB))
        self.assertLessEqual(held, 65 * MiB, "slots and lines held for a mute server")
        self.assertAlive(px)
        self.assertNoSanitizerReport(px)
        px.stop()

    def test_17o_a_server_that_stops_reading_again_and_again_warns_once(self):
        """The waiting bound's warning, for a server that reads for 0.5 s in
        every 2.5: past the limit (1 MiB) while its socket has taken nothing
        for 500 ms, requests for it are refused; it reads, and they are taken
        again; and again. Each turn logged the warning and its end (22f68dc);
        now the warning at most once per 10 s, its end only after a logged
        warning. Clients send 192 KB of sets each, one every 0.05 s, and leave
        (what they leave behind counts against the server, not them)."""
        fake = self.fake(fakes.PhasedReadBackend(read_for=0.5, pause_for=2.0, rcvbuf=65536))
        px = self.proxy([fake], client_buffer_limit=MiB)
        port = px.port()
        value = b"v" * 65536
        refused = []  # per client: were its sets refused at once?
        deadline = time.monotonic() + 9
        i = 0
        while time.monotonic() < deadline:
            s = socket.create_connection((HOST, port), timeout=10)
            try:
                s.sendall(b"".join(b"set drip%d 0 0 %d\r\n%s\r\n" % (3 * i + j, len(value), value)
                                   for j in range(3)))
                s.settimeout(0.05)
                try:
                    refused.append(s.recv(64).startswith(b"SERVER_ERROR"))
                except socket.timeout:
                    refused.append(False)
            finally:
                s.close()
            i += 1
        runs = "".join("R" if r else "." for r in refused)
        turns = runs.count("R.")
        log = px.log()
        measured("a server reading 0.5 s in 2.5: clients refused, refusals that ended, "
                 "warnings, ends logged", "%d of %d, %d, %d, %d" % (
                     sum(refused), len(refused), turns, log.count("has not taken"),
                     log.count("reads again")))
        # the bound was met, left and met again (else this tests nothing)
        self.assertGreaterEqual(turns, 2, "clients refused (R) or not (.): " + runs)
        self.assertEqual(log.count("has not taken"), 1, log)
        self.assertLessEqual(log.count("reads again"), 1, log)
        self.assertAlive(px)
        self.assertNoSanitizerReport(px)
        px.stop()

    def test_17p_an_open_get_line_whose_hits_pass_the_limit_gets_an_error(self):
        """A get line over 64 KiB goes out in parts while it is still coming,
        and their hits are held until it ends. Hits over client_buffer_limit
        (3,000 values of 600 bytes under 1 MiB, the line's end held back
        until every part is answered): the part that went over kept what it
        had, so the line's next part took the client over and it was cut
        with nothing sent (a review). Expected: every part lets go, the line
        is answered with the limit's SERVER_ERROR alone, and the client is
        served on."""
        mcs = self.memcached(2)
        px = self.proxy(mcs, timeout=5000, client_buffer_limit=MiB)
        keys = [b"ll:%020d" % i for i in range(3000)]
        value = b"v" * 600
        c = self.raw(px.port(), timeout=30)
        c.send(b"".join(b"set %s 0 0 %d noreply\r\n%s\r\n" % (k, len(value), value)
                        for k in keys))
        c.request(b"version\r\n", b"VERSION ")
        c.recv_line()
        line = b"get %s\r\n" % b" ".join(keys)
        self.assertGreater(len(line), 64 << 10)
        hits = sum(int(m.stats()["get_hits"]) for m in mcs)
        c.send(line[:-40])
        # The parts sent so far (all but the last, of at most 16 KiB of
        # keys: over 2,000 keys) are answered: their hits, over 1 MiB, held.
        h.wait_until(lambda: sum(int(m.stats()["get_hits"]) for m in mcs) - hits >= 2000 and
                     sum(self.queued(px, m.addr) for m in mcs) == 0, deadline=30,
                     what="the open line's parts answered")
        c.send(line[-40:])
        c.expect(b"SERVER_ERROR walnut: the reply would take the client past the pool's "
                 b"client_buffer_limit (1048576 bytes)\r\n", timeout=30)
        c.request(b"get %s\r\n" % keys[0], b"VALUE %s 0 600\r\n%s\r\nEND\r\n" % (
            keys[0], value))
        self.assertNotIn("over client_buffer_limit", px.log())
        self.assertAlive(px)
        self.assertNoSanitizerReport(px)
        px.stop()

    def test_17_clients_that_leave_cannot_grow_a_stalled_servers_queue(self):
        """Defect 17: a server that stops reading (no timeout set), and client after
        client that sends it 3 MB of sets and closes. A client's bytes count against it
        only while it is there, and walnut cannot tell a client that closed from one
        that half-closed and waits for its replies, so before, walnut held ~2 MiB for
        every such client, without bound (RSS +57 MiB for 30). Now a server also bounds
        what waits for it: past client_buffer_limit (8 MiB here) its requests get
        SERVER_ERROR at once; twice as many clients add (almost) nothing; other
        servers are served; once the server reads again it gets what was queued and
        takes requests again."""
        clients = 20 if not sanitized() else 8
        fake, px, keys, other, growth = self.stalled_beside_live(clients * 6 + 2, b"lv:")
        port = px.port()
        value = b"v" * MiB

        def round_of_clients(first):
            for i in range(first, first + clients):
                s = self.sock(port, timeout=0.5)
                try:
                    for k in keys[3 * i:3 * i + 3]:
                        s.sendall(b"set %s 0 0 %d\r\n%s\r\n" % (k, len(value), value))
                except OSError:
                    pass  # walnut stopped reading this client: it leaves anyway
                s.close()
                if i == 0:
                    h.wait_until(lambda: fake.stalled >= 1, deadline=20,
                                 what="the server stalled")
            time.sleep(0.5)
            self.assertAlive(px)
            return growth()

        g1 = round_of_clients(0)
        q1 = self.queued(px, fake.addr, with_bytes=True)[1]
        g2 = round_of_clients(clients)
        q2 = self.queued(px, fake.addr, with_bytes=True)[1]
        measured("RSS growth, %d then %d clients x 3 MB of sets to a stalled server, each "
                 "closing" % (clients, 2 * clients), "%.1f MiB, %.1f MiB (queued for it: "
                 "%.1f MiB, %.1f MiB)" % (g1 / MiB, g2 / MiB, q1 / MiB, q2 / MiB))
        # What waits for the server, as walnut counts it: no more after twice
        # as many clients (before: ~2 MiB more for every client that left),
        # and bounded: until its socket has taken nothing for 500 ms a server
        # is bound by 16 MiB, not the 8 MiB limit (17251e3), one 1 MB set may
        # cross it, and what the sockets took (walnut's send buffer, the
        # server's receive buffer: tcp_wmem, tcp_rmem) waits for an answer too
        # (measured 22.0, 28.0 and 34.0 MiB, the same in both rounds).
        what = "queued for the stalled server: %.1f MiB after %d clients that left, %.1f MiB " \
               "after %d" % (q1 / MiB, clients, q2 / MiB, 2 * clients)
        if q1 >= 16 * MiB:  # the bound was reached (always, but with a sanitizer's 8 clients)
            # Which sets cross the bound moves with the turns: once under
            # TSan 18.0 then 20.0 MiB (CI of 0a9ca4e); the defect added 16
            # MiB for 8 clients, so a few sets' slack still catches it.
            self.assertLessEqual(q2, q1 + 3 * MiB, what)
        kernel = sum(int(open("/proc/sys/net/ipv4/tcp_%s" % b).read().split()[2])
                     for b in ("wmem", "rmem"))
        self.assertLessEqual(max(q1, q2), 17 * MiB + kernel, what)
        if not sanitized():
            # And walnut's memory with it. The peak moves with how many clients
            # walnut reads at once, which the machine's load decides (measured
            # 49 to 63 MiB after 40 on plain builds, the second round adding up
            # to 26.5 MiB to the first); before the server's bound it was 57
            # MiB for 30 clients and grew 2 MiB with each.
            self.assertLess(g2, 96 * MiB, "RSS growth %.1f MiB after %d clients that left, "
                            "%.1f MiB after %d" % (g1 / MiB, clients, g2 / MiB, 2 * clients))
        c = self.raw(port, timeout=10)
        c.request(b"set %s 0 0 1\r\nx\r\n" % keys[-1], b"SERVER_ERROR ")
        self.assertServerError(b"SERVER_ERROR " + c.recv_line(), "over the server's bound")
        c.request(b"get %s\r\n" % other, b"VALUE %s 0 2\r\nok\r\nEND\r\n" % other)
        fake.go()  # it reads again: what was queued arrives, and it takes requests again
        h.wait_until(lambda: keys[0] in fake.store, deadline=30, what="the first set stored")

        def takes_requests():
            c.send(b"set %s 0 0 1\r\ny\r\n" % keys[-2])
            return c.recv_line(timeout=10) == b"STORED\r\n"
        h.wait_until(takes_requests, deadline=30, what="the server takes requests again")
        self.assertAlive(px)
        self.assertNoSanitizerReport(px)
        px.stop()

class TestLateRepliesAndHolds(HostileCase):
    """From a review of the streamed-line fix (e2cfd5e): replies that come
    for a request already answered are dropped, not kept counted against its
    client; a Redis request held for control's verdict goes out when the
    hold ends, however large."""

    def client_bytes(self, px):
        return int(px.http_json()["client_bytes"])

    def late_hits(self, streamed):
        """A get on a stopped server (c3) heads the client's queue; behind it
        a get split over a dead server (b) and a stopped one (a) fails at
        once and is answered. When a resumes, its hits for the answered get
        (about 4.5 MB) were kept and counted for the client as long as the
        answered get waited behind the first; now they are read and
        dropped."""
        a, b, c3 = self.memcached(3)
        px = self.proxy([a, b, c3], timeout=20000, client_buffer_limit=64 * MiB)
        port = px.port()
        keys = [b"ek:%05x" % (i * 2654435761 % (1 << 20)) for i in range(6000)]
        val = b"x" * 1000
        c = self.raw(port, timeout=30)
        c.send(b"".join(b"set %s 0 0 %d noreply\r\n%s\r\n" % (k, len(val), val) for k in keys))
        c.request(b"version\r\n", b"VERSION ")
        c.recv_line()
        ha, hb = a.keys_held(keys), b.keys_held(keys)
        on_a = [k for k in keys if k in ha]
        on_b = [k for k in keys if k in hb]
        on_c = [k for k in keys if k not in ha and k not in hb]
        self.assertTrue(on_a and on_b and on_c, "keys on every server")
        mixed = [k for pair in zip(on_a, on_b) for k in pair]
        line = b"get " + b" ".join((mixed * 8)[:9000 if streamed else 6000]) + b"\r\n"
        if streamed:
            self.assertGreater(len(line), 64 << 10)
        else:
            self.assertLess(len(line), 64 << 10)
        base = int(a.stats()["get_hits"])
        c3.sigstop()
        self.addCleanup(c3.sigcont)
        a.sigstop()
        self.addCleanup(a.sigcont)
        b.kill()
        c.send(b"get %s\r\n" % on_c[0] + line)
        time.sleep(0.5)
        before = self.client_bytes(px)
        a.sigcont()  # its hits for the answered get come now
        asked = sum(1 for k in line[4:-2].split(b" ") if k in ha)
        h.wait_until(lambda: int(a.stats()["get_hits"]) >= base + asked, deadline=20,
                     what="the resumed server's %d hits" % asked)
        time.sleep(0.5)  # and walnut read them
        after = self.client_bytes(px)
        measured("counted for the client after the late hits of an answered %s get came"
                 % ("streamed" if streamed else "split"), "%.1f MB" % ((after - before) / 1e6))
        c3.sigcont()
        self.assertEqual(c.recv_until(b"END\r\n"), get_reply([(on_c[0], 0, val)]))
        err = c.recv_line()
        self.assertTrue(err.startswith(b"SERVER_ERROR "), err)
        self.assertLess(after - before, MiB, "late hits of an answered get kept for the client")
        c.close()
        h.wait_until(lambda: self.client_bytes(px) == 0, deadline=20, what="nothing counted")
        self.assertAlive(px)
        self.assertNoSanitizerReport(px)

    def test_late_hits_of_an_answered_streamed_line_are_dropped(self):
        self.late_hits(True)

    def test_late_hits_of_a_split_get_answered_early_are_dropped(self):
        self.late_hits(False)

    def held_request(self, req):
        """A request for a suspect server (auto_eject_hosts) is held until
        control's verdict, kept read and counted against its client. When
        the hold ended it went out only if the client was under its soft
        bound (a quarter of client_buffer_limit), which a request larger
        than that keeps it over by itself: never sent, never answered, the
        client never read again."""
        rs = [h.RedisServer(self.tmp, name="hb%d" % i).start() for i in range(2)]
        for r in rs:
            self.addCleanup(r.kill)
        px = self.proxy(rs, redis=True, auto_eject_hosts=True, server_failure_limit=2,
                        server_retry_timeout=2000, timeout=400, client_buffer_limit=MiB)
        port = px.port()
        # hashed: keys that differ only in a short counter can all land on
        # one of two servers (fnv1a_64's 32 bits, for some port pairs)
        keys = [b"hb:" + hashlib.sha1(b"%d" % i).hexdigest()[:12].encode() for i in range(400)]
        c = self.raw(port, timeout=10)
        c.send(b"".join(h.resp("SET", k, "0") for k in keys))
        c.expect(b"+OK\r\n" * len(keys))
        on1 = [k for k, e in zip(keys, rs[1].pipeline([("EXISTS", k) for k in keys])) if e == 1]
        self.assertTrue(0 < len(on1) < len(keys), "keys on both servers")
        rs[1].kill()
        c.send(h.resp("GET", on1[0]))
        self.assertTrue(c.recv_resp().startswith(b"-ERR "))  # rs[1] is suspect now
        c.send(req(keys, on1[0]) + h.resp("PING"))
        first = c.recv_resp(timeout=10)
        self.assertTrue(first == b"+OK\r\n" or first.startswith(b"-ERR "), first)
        c.expect(b"+PONG\r\n", timeout=5)
        c.close()
        h.wait_until(lambda: self.client_bytes(px) == 0, deadline=20, what="nothing counted")
        self.assertAlive(px)
        self.assertNoSanitizerReport(px)

    def test_a_held_mset_larger_than_the_soft_bound_goes_out(self):
        self.held_request(lambda keys, k: h.resp("MSET", *[x for k in keys
                                                             for x in (k, b"v" * 1000)]))

    def test_a_held_set_larger_than_the_soft_bound_goes_out(self):
        self.held_request(lambda keys, k: h.resp("SET", k, b"v" * 400000))


if __name__ == "__main__":
    h.main()
