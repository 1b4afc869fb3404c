#!/usr/bin/python3
"""Failover, end to end: the control thread's health checks, ejection and rejoin,
with real memcached backends that are killed, stopped and restarted under load.

walnut runs with --workers 4 and -v 6 (so the log shows every worker's ring
epoch) and the pool settings auto_eject_hosts: true, server_retry_timeout:
2000, server_failure_limit: 2, timeout: 400 (health_check_interval: default,
1000 ms) unless a test says otherwise.

  1  the classic twemproxy demo: SIGKILL one of two memcached under 4 writing
     clients -> ejected within ~1 s, its keys re-routed to the survivor, at most
     one error per client and none after the ejection
  2  restart it on the same port -> it rejoins (not before server_retry_timeout,
     within one more probe interval), its keys go to it again, no client error;
     3  every worker ends on the final ring epoch (and took every epoch)
  4  SIGSTOP a backend -> requests time out (SERVER_ERROR Connection timed out)
     or are held and re-routed, never hang; ejected; SIGCONT -> rejoins
  5  every backend down -> quick SERVER_ERRORs, then immediate
     "SERVER_ERROR Connection refused"; restart both -> service recovers
  6  a flapping backend (5 kill/restart cycles, pymemcache clients that
     reconnect) -> no crash, bounded ring rebuilds, ends with both live
  7  a blip (health checks off, one failed request, success after restart)
     does not eject, twice in a row
  8  max_ejected_fraction 0.5, both backends down -> one ejected, the other
     "stays in"; clients get SERVER_ERROR, not a hang; both return -> recovery
  9a, 9b  two walnut bugs, fixed (once expected failures): a request meeting
     a closing backend connection failed unreported; a server kept in by
     max_ejected_fraction was never probed again

Writers in 1, 2, 4, 5 and 8 keep one connection each (as a client library
that does not drop its connection on SERVER_ERROR would): a walnut client
connection lives on one worker, and that worker holds it while a server is
suspect, so each client sees at most the one error of its request that was in
flight (or first to find the failure). pymemcache closes its socket on any
error and reconnects, possibly to another worker that has not yet met the
failure, so its error count per client is looser; test 6 uses it.

Run with Debian's /usr/bin/python3 (pymemcache); WALNUT_BIN names the binary.
Measured latencies are printed at the end (stderr).
"""

import hashlib
import importlib.util
import os
import re
import signal
import socket
import statistics
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

HOST = h.HOST
POOL = "alpha"
WORKERS = 4
NCLIENTS = 4
RETRY_MS = 2000
INTERVAL_MS = 1000          # health_check_interval: walnut's default
TIMEOUT_MS = 400
FAILURE_LIMIT = 2
BASE = {"auto_eject_hosts": True, "server_retry_timeout": RETRY_MS,
        "server_failure_limit": FAILURE_LIMIT, "timeout": TIMEOUT_MS}
OP_DEADLINE = 3.0           # a request unanswered this long is a hang
EJECT_DEADLINE = 5.0        # generous; the measured time is reported
MARGIN = 2.0                # slack on rejoin deadlines (slow 2-core machine)
KEYS_PER_SERVER = 6         # per client
LOG_SLACK = 0.001           # log times are truncated to the millisecond

MEASURED = []               # (what, seconds), printed at the end


def measured(what, seconds):
    MEASURED.append((what, seconds))
    sys.stderr.write("  [measured] %s: %.0f ms\n" % (what, seconds * 1000))


# ---------------------------------------------------------------------------
# walnut's log

LOG_RE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.(\d{3})\] (\S+)\s+"
                    r"(control|main|worker \d+) (\S+:\d+) (.*)$")


class Entry:
    __slots__ = ("t", "level", "thread", "msg", "line")

    def __init__(self, t, level, thread, msg, line):
        self.t, self.level, self.thread, self.msg, self.line = t, level, thread, msg, line


class Log:
    """walnut's log file, parsed on every call (it is small)."""

    def __init__(self, path):
        self.path = path

    def entries(self):
        try:
            with open(self.path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return []
        out = []
        for line in text.splitlines():
            m = LOG_RE.match(line)
            if m is None:
                continue
            t = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + \
                int(m.group(2)) / 1000.0
            out.append(Entry(t, m.group(3), m.group(4), m.group(6), line))
        return out

    def find(self, pattern, thread=None, since=None):
        """[(entry, match)] of lines whose message matches pattern (re.search)."""
        rx = re.compile(pattern)
        out = []
        for e in self.entries():
            if thread is not None and e.thread != thread:
                continue
            if since is not None and e.t < since - LOG_SLACK:
                continue
            m = rx.search(e.msg)
            if m is not None:
                out.append((e, m))
        return out

    def wait(self, pattern, deadline, count=1, thread=None, since=None, what=None):
        """Wait until at least count lines match; returns their (entry, match) list."""
        return h.wait_until(lambda: (lambda r: r if len(r) >= count else None)(
            self.find(pattern, thread, since)), deadline=deadline, interval=0.01,
            what=what or "%d log line(s) matching %r" % (count, pattern))


def rx_ejected(name):
    return r"pool '%s': server %s ejected after \d+ consecutive failures" % (POOL, re.escape(name))


def rx_rejoins(name):
    return r"pool '%s': server %s rejoins" % (POOL, re.escape(name))


def rx_stays_in(name=r"\S+"):
    return r"pool '%s': server (%s) is failing \(.*\) but stays in" % (POOL, name)


RX_ANY_EJECTED = r"pool '%s': server (\S+) ejected after (\d+) consecutive failures" % POOL
RX_ANY_REJOINS = r"pool '%s': server (\S+) rejoins" % POOL
RX_RING = r"pool '%s': ring epoch (\d+): (\d+) of (\d+) servers live" % POOL
RX_CONVERGED = r"pool '%s': all %d workers on ring epoch (\d+)" % (POOL, WORKERS)
RX_WORKER_EPOCH = r"pool '%s': now on ring epoch (\d+) \(" % POOL
RX_FAST = r"pool '%s': ring changes coming fast; rebuilding in \d+ ms" % POOL


# ---------------------------------------------------------------------------
# clients


class RawMc:
    """memcached text protocol on one persistent connection, kept across SERVER_ERRORs."""

    def __init__(self, port, timeout=OP_DEADLINE):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def _line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2:]
                return line
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed by walnut")
            self.buf += chunk

    def set(self, key, value):
        self.sock.sendall(b"set %s 0 0 %d\r\n%s\r\n" % (key, len(value), value))
        return self._line()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class PyMc:
    """pymemcache (closes its socket on any error; the next call reconnects)."""

    def __init__(self, port, timeout=OP_DEADLINE):
        from pymemcache.client.base import Client
        self.c = Client((HOST, port), connect_timeout=timeout, timeout=timeout,
                        no_delay=True, default_noreply=False)

    def set(self, key, value):
        from pymemcache.exceptions import MemcacheServerError
        try:
            return b"STORED" if self.c.set(key, value, noreply=False) else b"NOT_STORED"
        except MemcacheServerError as e:
            text = e.args[0] if e.args else b""
            if isinstance(text, str):
                text = text.encode()
            return b"SERVER_ERROR " + text

    def close(self):
        self.c.close()


class Op:
    __slots__ = ("client", "key", "value", "t0", "t1", "reply")

    def __init__(self, client, key, value, t0, t1, reply):
        self.client, self.key, self.value = client, key, value
        self.t0, self.t1, self.reply = t0, t1, reply

    @property
    def ok(self):
        return self.reply == b"STORED"

    @property
    def latency(self):
        return self.t1 - self.t0

    def __repr__(self):
        return "<client %d set %s at %.3f (+%.0f ms): %r>" % (
            self.client, self.key.decode(), self.t0, self.latency * 1000, self.reply)


class Writers:
    """NCLIENTS threads, each setting its own keys round-robin through walnut.

    Every op is recorded with time.time() before sending (t0) and after the
    reply (t1). A reply not within OP_DEADLINE is recorded as b"HANG" and
    the client reconnects. Threads stop on stop() or after max_seconds.
    """

    def __init__(self, port, keysets, kind="raw", max_seconds=60.0, pause=0.002):
        self.port, self.keysets, self.kind = port, keysets, kind
        self.max_seconds, self.pause = max_seconds, pause
        self.ops = [[] for _ in keysets]
        self.stop_evt = threading.Event()
        self.threads = []

    def _connect(self):
        return RawMc(self.port) if self.kind == "raw" else PyMc(self.port)

    def _run(self, i):
        keys = self.keysets[i]
        client = None
        seq = 0
        end = time.monotonic() + self.max_seconds
        while not self.stop_evt.is_set() and time.monotonic() < end:
            key = keys[seq % len(keys)]
            value = b"c%d-%d" % (i, seq)
            seq += 1
            t0 = time.time()
            try:
                if client is None:
                    client = self._connect()
                reply = client.set(key, value)
            except socket.timeout:
                reply = b"HANG"
            except Exception as e:  # noqa: BLE001 - recorded and asserted on
                reply = ("EXC %r" % e).encode()
            t1 = time.time()
            if not reply.startswith(b"STORED") and not reply.startswith(b"SERVER_ERROR") \
                    and client is not None:
                client.close()
                client = None
            self.ops[i].append(Op(i, key, value, t0, t1, reply))
            time.sleep(self.pause)
        if client is not None:
            client.close()

    def start(self):
        for i in range(len(self.keysets)):
            t = threading.Thread(target=self._run, args=(i,), daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def stop(self):
        self.stop_evt.set()
        for t in self.threads:
            t.join(OP_DEADLINE + 5)
        alive = [t for t in self.threads if t.is_alive()]
        if alive:
            raise AssertionError("%d writer thread(s) did not stop" % len(alive))

    def all_ops(self):
        return [op for ops in self.ops for op in list(ops)]

    def errors(self):
        return [op for op in self.all_ops() if not op.ok]

    def wait_rounds_after(self, t, rounds=2, deadline=10.0):
        """Wait until every client has set each of its keys `rounds` times since t."""
        def done():
            return all(sum(1 for op in list(ops) if op.t0 > t) >= rounds * len(keys)
                       for ops, keys in zip(self.ops, self.keysets))
        h.wait_until(done, deadline=deadline, interval=0.02,
                     what="every client to set its keys %d times after %.3f" % (rounds, t))

    def wait_answers_after(self, t, count, deadline=10.0):
        """Wait until every client has had `count` requests sent after t answered."""
        def done():
            return all(sum(1 for op in list(ops) if op.t0 > t) >= count for ops in self.ops)
        h.wait_until(done, deadline=deadline, interval=0.02,
                     what="every client to get %d answers after %.3f" % (count, t))

    def last_ops(self):
        """{key: the last op on it} (keys are disjoint between clients)."""
        out = {}
        for ops in self.ops:
            for op in ops:
                out[op.key] = op
        return out


# ---------------------------------------------------------------------------
# the tests


@unittest.skipIf(h.UNDER_NUTCRACKER, "walnut's control thread (logs, epochs, "
                 "max_ejected_fraction) is not twemproxy's")
class TestFailover(h.ProxyTestCase):

    # ------------------------------------------------------------- fixture

    def setUp(self):
        self.tmp = self.tmpdir()
        self.writers = None
        self.addCleanup(self._stop_writers)

    def _stop_writers(self):
        if self.writers is not None:
            self.writers.stop_evt.set()
            for t in self.writers.threads:
                t.join(OP_DEADLINE + 5)

    def setup_pair(self, **settings):
        """Two memcached, walnut (4 workers, -v 6) in front; keys located per backend."""
        self.mcs = self.start_memcached(self.tmp, n=2)
        conf = dict(BASE)
        conf.update(settings)
        self.proxy = self.start_proxy(self.tmp, {POOL: h.pool(self.mcs, **conf)},
                                      workers=WORKERS, verbosity=6)
        self.port = self.proxy.port()
        self.log = Log(self.proxy.log_path)
        self.t_start = time.time()
        # Where every key lands, as walnut --locate says.
        # Hashed names: twemproxy's fnv1a_64 (32-bit arithmetic) puts keys that
        # differ only in a short counter, like fo:0000..fo:0399, all on one of two
        # servers for about one port pair in seven (nutcracker does the same).
        keys = [b"fo:" + hashlib.sha1(b"%d" % i).hexdigest()[:12].encode() for i in range(400)]
        located = h.walnut_locate(self.proxy.conf_path, keys)
        by_addr = {m.addr: m for m in self.mcs}
        self.names = {}
        self.keys_on = {m.addr: [] for m in self.mcs}
        for k in keys:
            name, addr = located[(POOL, k)]
            self.assertIn(addr, by_addr, "--locate address for %r" % k)
            self.keys_on[addr].append(k)
            self.names[addr] = name
        for m in self.mcs:
            self.assertGreaterEqual(len(self.keys_on[m.addr]), NCLIENTS * KEYS_PER_SERVER,
                                    "too few keys on %s" % m.addr)
        # Check --locate against the real placement through walnut, then start clean.
        sample = self.keys_on[self.mcs[0].addr][:20] + self.keys_on[self.mcs[1].addr][:20]
        with h.Raw(self.port) as c:
            c.send(b"".join(b"set %s 0 0 1\r\nx\r\n" % k for k in sample))
            c.expect(b"STORED\r\n" * len(sample), what="placing sample keys")
        where = h.placement(self.mcs, sample)
        for k in sample:
            self.assertEqual(where[k].addr, located[(POOL, k)][1],
                             "key %r stored on %s, --locate says %s" % (
                                 k, where[k].addr, located[(POOL, k)][1]))
        for m in self.mcs:
            m.flush()

    def proxy_stat(self, name):
        """A counter from walnut's own `stats` reply (summed over its workers)."""
        with h.Raw(self.port, timeout=OP_DEADLINE) as c:
            c.send(b"stats\r\n")
            raw = c.recv_until(b"END\r\n")
        m = re.search(rb"STAT %s (\d+)\r\n" % name.encode(), raw)
        if m is None:
            raise AssertionError("walnut's stats have no %s: %r" % (name, raw[:300]))
        return int(m.group(1))

    def name(self, m):
        return self.names[m.addr]

    def victim_connections(self, m):
        """walnut's open connections to backend m, all workers together."""
        return self.proxy.http_json()[POOL][self.name(m)]["server_connections"]

    def keysets(self):
        """Each client's keys: KEYS_PER_SERVER on each backend, interleaved."""
        a, b = (self.keys_on[m.addr] for m in self.mcs)
        out = []
        for i in range(NCLIENTS):
            ka = a[i * KEYS_PER_SERVER:(i + 1) * KEYS_PER_SERVER]
            kb = b[i * KEYS_PER_SERVER:(i + 1) * KEYS_PER_SERVER]
            out.append([k for pair in zip(ka, kb) for k in pair])
        return out

    def start_writers(self, kind="raw"):
        self.writers = Writers(self.port, self.keysets(), kind=kind).start()
        return self.writers

    def with_log(self, msg):
        return "%s\n--- walnut log (tail) ---\n%s" % (msg, h.tail(self.proxy.log_path, 8000))

    def on(self, m, keys):
        return [k for k in keys if k in set(self.keys_on[m.addr])]

    # ------------------------------------------------------------- checks

    def assert_no_hang(self, ops):
        bad = [op for op in ops if op.reply == b"HANG" or op.latency >= OP_DEADLINE]
        self.assertFalse(bad, self.with_log("requests unanswered for %.0f s: %r" % (
            OP_DEADLINE, bad[:10])))

    def assert_only(self, ops, allowed, what):
        bad = [op for op in ops if op.reply not in allowed]
        self.assertFalse(bad, self.with_log("%s: replies other than %r: %r" % (
            what, allowed, bad[:10])))

    def assert_at_most_one_error_per_client(self, errors):
        per = {}
        for op in errors:
            per.setdefault(op.client, []).append(op)
        many = {c: ops for c, ops in per.items() if len(ops) > 1}
        self.assertFalse(many, self.with_log(
            "a client saw more than the one error of its in-flight request: %r (a "
            "'Connection reset by peer' with no 'closed with N request(s) in flight' line "
            "from its worker, then 'Connection refused', is the unreported failure of a "
            "request that met a closing backend connection: see test_9a)" % many))
        self.assertLessEqual(len(errors), NCLIENTS)

    def assert_no_error_after(self, errors, t, what):
        late = [op for op in errors if op.t0 > t + LOG_SLACK]
        self.assertFalse(late, self.with_log("client errors for requests sent after %s "
                                             "(%.3f): %r" % (what, t, late[:10])))

    def assert_last_writes_on(self, m, keys, after):
        """Each key's last write (sent after `after`) succeeded and is on m, asked directly."""
        last = self.writers.last_ops()
        held = h.mc_get_many(m.port, keys)
        checked = 0
        for k in keys:
            op = last[k]
            self.assertGreater(op.t0, after, "key %r not written since %.3f" % (k, after))
            self.assertTrue(op.ok, self.with_log("last write of %r failed: %r" % (k, op)))
            self.assertEqual(held.get(k), op.value, self.with_log(
                "key %r: its last write %r is not on %s (holds %r)" % (
                    k, op, m.addr, held.get(k))))
            checked += 1
        self.assertGreater(checked, 0)
        return checked

    def rings(self):
        """[(entry, epoch, live, n)] of control's ring rebuilds, in order."""
        return [(e, int(m.group(1)), int(m.group(2)), int(m.group(3)))
                for e, m in self.log.find(RX_RING, thread="control")]

    def assert_converged(self, live=None, deadline=5.0):
        """Point 3: every worker took every ring epoch; all are on the final one.

        Returns (final epoch, time of the 'all workers' line)."""
        def final():
            rings = self.rings()
            if not rings:
                return None
            epoch = rings[-1][1]
            if live is not None and rings[-1][2] != live:
                return None
            conv = [e for e, m in self.log.find(RX_CONVERGED, thread="control")
                    if int(m.group(1)) == epoch]
            return (epoch, conv[0].t) if conv else None
        try:
            epoch, t_conv = h.wait_until(final, deadline=deadline, interval=0.01,
                                         what="all workers on the final ring epoch")
        except AssertionError as e:
            raise AssertionError(self.with_log(str(e))) from None
        rings = self.rings()
        epochs = [r[1] for r in rings]
        self.assertEqual(epochs, list(range(2, 2 + len(epochs))),
                         self.with_log("ring epochs are not 2, 3, ... in order"))
        # A worker publishes its epoch just before it logs the swap, so control's
        # "all workers" line may come a moment before a worker's own line.
        def seen():
            out = {}
            for e, m in self.log.find(RX_WORKER_EPOCH):
                if e.thread.startswith("worker "):
                    out.setdefault(int(m.group(1)), set()).add(int(e.thread.split()[1]))
            return out
        try:
            h.wait_until(lambda: all(seen().get(ep) == set(range(WORKERS)) for ep in epochs),
                         deadline=2.0, interval=0.01,
                         what="every worker to log 'now on ring epoch E' for E in %r" % epochs)
        except AssertionError as e:
            raise AssertionError(self.with_log("%s; seen: %r" % (e, seen()))) from None
        return epoch, t_conv

    # ------------------------------------------------------------- 1

    def test_1_kill_ejects_fast_and_reroutes(self):
        """SIGKILL one of two memcached under load: ejected in ~1 s, keys re-routed."""
        self.setup_pair()
        survivor, victim = self.mcs
        w = self.start_writers()
        w.wait_rounds_after(time.time(), rounds=2)
        self.assertFalse(w.errors(), "errors before any failure: %r" % w.errors()[:5])

        t_kill = time.time()
        victim.kill()
        try:
            (e_ej, _), = self.log.wait(rx_ejected(self.name(victim)), EJECT_DEADLINE)[:1]
        except AssertionError as e:
            raise AssertionError(self.with_log(str(e))) from None
        measured("1: SIGKILL -> ejection logged", e_ej.t - t_kill)
        self.assertLess(e_ej.t - t_kill, EJECT_DEADLINE)
        epoch, t_conv = self.assert_converged(live=1)
        measured("1: SIGKILL -> all workers on the new ring", t_conv - t_kill)

        w.wait_rounds_after(t_conv, rounds=2)
        w.stop()
        ops = w.all_ops()
        self.assert_no_hang(ops)
        errors = w.errors()
        sys.stderr.write("  [info] 1: %d requests, %d client errors: %s\n" % (
            len(ops), len(errors), sorted({op.reply.decode() for op in errors})))
        self.assert_only(errors, (b"SERVER_ERROR Connection reset by peer",
                                  b"SERVER_ERROR Connection refused"), "errors at the kill")
        self.assertFalse([op for op in errors if op.key not in self.keys_on[victim.addr]],
                         "errors for keys of the survivor")
        self.assertFalse([op for op in errors if op.t1 < t_kill], "errors before the kill")
        self.assert_at_most_one_error_per_client(errors)
        self.assert_no_error_after(errors, e_ej.t, "the ejection")
        # The dead server's keys now live on the survivor; the survivor's stay there.
        keys = [k for ks in w.keysets for k in ks]
        n = self.assert_last_writes_on(survivor, keys, after=t_conv)
        self.assertEqual(n, len(keys))
        self.assertTrue(self.proxy.alive())

    # ------------------------------------------------------------- 2 and 3

    def test_2_restart_rejoins_and_3_every_worker_converges(self):
        """Restart the killed memcached: rejoins in time, gets its keys back, no error."""
        self.setup_pair()
        survivor, victim = self.mcs
        w = self.start_writers()
        w.wait_rounds_after(time.time(), rounds=1)
        t_kill = time.time()
        victim.kill()
        (e_ej, _), = self.log.wait(rx_ejected(self.name(victim)), EJECT_DEADLINE)[:1]
        _, t_conv1 = self.assert_converged(live=1)
        w.wait_rounds_after(t_conv1, rounds=1)

        victim.start()                      # same port
        t_restart = time.time()
        rejoin_by = max(t_restart, e_ej.t + RETRY_MS / 1000.0) + INTERVAL_MS / 1000.0 + MARGIN
        try:
            (e_rj, _), = self.log.wait(rx_rejoins(self.name(victim)),
                                       rejoin_by - time.time())[:1]
        except AssertionError as e:
            raise AssertionError(self.with_log(str(e))) from None
        measured("2: restart -> rejoin logged", e_rj.t - t_restart)
        measured("2: ejection -> rejoin logged (server_retry_timeout %d ms)" % RETRY_MS,
                 e_rj.t - e_ej.t)
        # (control's loop time can lag the wall clock a little: 50 ms of slack)
        self.assertGreaterEqual(e_rj.t - e_ej.t, RETRY_MS / 1000.0 - 0.05,
                                self.with_log("rejoined before server_retry_timeout"))
        epoch, t_conv2 = self.assert_converged(live=2)
        self.assertEqual(epoch, 3, self.with_log("one rebuild to eject, one to rejoin"))
        measured("2: rejoin -> all workers on the new ring", t_conv2 - e_rj.t)

        w.wait_rounds_after(t_conv2, rounds=2)
        w.stop()
        ops = w.all_ops()
        self.assert_no_hang(ops)
        errors = w.errors()
        self.assert_at_most_one_error_per_client(errors)
        self.assert_no_error_after(errors, e_ej.t, "the ejection (through the rejoin)")
        self.assertFalse([op for op in errors if op.t1 < t_kill], "errors before the kill")
        # Its keys are written to it again; the survivor keeps its own.
        keys = [k for ks in w.keysets for k in ks]
        self.assert_last_writes_on(victim, self.on(victim, keys), after=t_conv2)
        self.assert_last_writes_on(survivor, self.on(survivor, keys), after=t_conv2)
        # Point 3, once more on the whole log: the final epoch is everyone's.
        self.assertTrue(self.log.find(r"pool '%s': all %d workers on ring epoch 3$" % (
            POOL, WORKERS), thread="control"))
        for i in range(WORKERS):
            self.assertTrue(self.log.find(r"pool '%s': now on ring epoch 3 \(2 of 2 servers "
                                          r"live\)" % POOL, thread="worker %d" % i),
                            self.with_log("worker %d never logged epoch 3" % i))

    # ------------------------------------------------------------- 4

    def test_4_sigstop_times_out_ejects_and_sigcont_rejoins(self):
        """A stopped (not dead) backend: timeouts or holds, never a hang; ejected; rejoins."""
        self.setup_pair()
        survivor, victim = self.mcs
        w = self.start_writers()
        w.wait_rounds_after(time.time(), rounds=1)
        t_stop = time.time()
        victim.sigstop()
        try:
            (e_ej, _), = self.log.wait(rx_ejected(self.name(victim)), EJECT_DEADLINE)[:1]
        except AssertionError as e:
            raise AssertionError(self.with_log(str(e))) from None
        measured("4: SIGSTOP -> ejection logged", e_ej.t - t_stop)
        _, t_conv1 = self.assert_converged(live=1)
        w.wait_rounds_after(t_conv1, rounds=2)
        # While it is out, its keys are written to the survivor.
        last = w.last_ops()
        moved = [k for k in self.on(victim, last) if last[k].t0 > t_conv1 and last[k].ok]
        self.assertTrue(moved)

        victim.sigcont()
        t_cont = time.time()
        rejoin_by = max(t_cont, e_ej.t + RETRY_MS / 1000.0) + INTERVAL_MS / 1000.0 + MARGIN
        try:
            (e_rj, _), = self.log.wait(rx_rejoins(self.name(victim)),
                                       rejoin_by - time.time())[:1]
        except AssertionError as e:
            raise AssertionError(self.with_log(str(e))) from None
        measured("4: SIGCONT -> rejoin logged", e_rj.t - t_cont)
        _, t_conv2 = self.assert_converged(live=2)
        w.wait_rounds_after(t_conv2, rounds=2)
        w.stop()

        ops = w.all_ops()
        self.assert_no_hang(ops)
        errors = w.errors()
        worst = max(op.latency for op in ops if op.t0 > t_stop)
        measured("4: slowest request while stopped/ejected", worst)
        sys.stderr.write("  [info] 4: %d requests, %d client errors: %s\n" % (
            len(ops), len(errors), sorted({op.reply.decode() for op in errors})))
        self.assert_only(errors, (b"SERVER_ERROR Connection timed out",), "errors at the stop")
        self.assert_at_most_one_error_per_client(errors)
        self.assert_no_error_after(errors, e_ej.t, "the ejection")
        keys = [k for ks in w.keysets for k in ks]
        self.assert_last_writes_on(victim, self.on(victim, keys), after=t_conv2)
        self.assert_last_writes_on(survivor, self.on(survivor, keys), after=t_conv2)

    # ------------------------------------------------------------- 5

    def test_5_all_down_fails_fast_and_recovers(self):
        """Both backends die: quick SERVER_ERRORs; both return: service resumes."""
        self.setup_pair()
        w = self.start_writers()
        w.wait_rounds_after(time.time(), rounds=1)
        t_kill = time.time()
        for m in self.mcs:
            m.kill()
        try:
            for m in self.mcs:
                self.log.wait(rx_ejected(self.name(m)), EJECT_DEADLINE)
        except AssertionError as e:
            raise AssertionError(self.with_log(str(e))) from None
        _, t_out = self.assert_converged(live=0)
        measured("5: both killed -> all workers on the empty ring", t_out - t_kill)
        errors = w.errors()
        self.assertTrue(errors)
        first = min(op.t1 for op in errors)
        measured("5: both killed -> first client error", first - t_kill)
        self.assertLess(first - t_kill, OP_DEADLINE)

        # Nothing is live: every request is refused at once. (Judged by the
        # median: a loaded machine may deschedule this process or walnut for
        # a second, and a refusal that waited on anything would be slow in
        # most rounds, not one.)
        took = []
        with h.Raw(self.port, timeout=OP_DEADLINE) as c:
            for k in self.keys_on[self.mcs[0].addr][:5] + self.keys_on[self.mcs[1].addr][:5]:
                t0 = time.time()
                c.request(b"set %s 0 0 1\r\nx\r\n" % k, b"SERVER_ERROR Connection refused\r\n")
                c.request(b"get %s\r\n" % k, b"SERVER_ERROR Connection refused\r\n")
                took.append(time.time() - t0)
        self.assertLess(sorted(took)[len(took) // 2], 0.5, "refusals while all are out: %s" % took)
        w.wait_rounds_after(t_out, rounds=2)

        for m in self.mcs:
            m.start()
        t_restart = time.time()
        rejoin_by = max(t_restart, t_out + RETRY_MS / 1000.0) + INTERVAL_MS / 1000.0 + MARGIN
        try:
            rj = [self.log.wait(rx_rejoins(self.name(m)), rejoin_by - time.time())[0][0]
                  for m in self.mcs]
        except AssertionError as e:
            raise AssertionError(self.with_log(str(e))) from None
        measured("5: restart both -> both rejoin", max(e.t for e in rj) - t_restart)
        _, t_back = self.assert_converged(live=2)
        w.wait_rounds_after(t_back, rounds=2)
        w.stop()

        ops = w.all_ops()
        self.assert_no_hang(ops)
        dark = [op for op in ops if t_out + LOG_SLACK < op.t0 and op.t1 < min(e.t for e in rj)]
        self.assertTrue(dark)
        self.assert_only(dark, (b"SERVER_ERROR Connection refused",),
                         "requests while every server was out")
        lat = sorted(op.latency for op in dark)
        measured("5: slowest refusal while all were out", lat[-1])
        measured("5: 90th percentile refusal while all were out", lat[len(lat) * 9 // 10])
        # a hang is caught by assert_no_hang; "immediate" by the bulk of them
        # (one descheduled second on a loaded machine may delay a few)
        self.assertLess(lat[len(lat) * 9 // 10], 1.0,
                        "refusals while all servers are out must be immediate")
        self.assert_no_error_after(w.errors(), t_back, "the recovery")
        keys = [k for ks in w.keysets for k in ks]
        for m in self.mcs:
            self.assert_last_writes_on(m, self.on(m, keys), after=t_back)

    # ------------------------------------------------------------- 6

    def test_6_flapping_backend_no_storm(self):
        """Kill/restart one backend 5 times quickly: bounded rebuilds, ends with both live."""
        if importlib.util.find_spec("pymemcache") is None:
            self.skipTest("pymemcache missing: run with Debian's /usr/bin/python3")
        self.setup_pair()
        survivor, victim = self.mcs
        w = self.start_writers(kind="pymemcache")
        w.wait_rounds_after(time.time(), rounds=1)
        cycles = 5
        t_first = time.time()
        for i in range(cycles):
            victim.kill()
            time.sleep(0.3)
            victim.start()
            time.sleep(1.7 if i < cycles - 1 else 0.1)
            self.assertTrue(self.proxy.alive(), self.with_log("walnut died while flapping"))
        t_last = time.time()
        # Both end live: the last rebuild says 2 of 2 and every worker took it.
        deadline = RETRY_MS / 1000.0 + INTERVAL_MS / 1000.0 + MARGIN + 1.0
        _, t_conv = self.assert_converged(live=2, deadline=deadline)
        measured("6: last restart -> both live on every worker", max(0.0, t_conv - t_last))
        w.wait_rounds_after(max(t_conv, t_last), rounds=2)
        w.stop()

        rings = self.rings()
        ejected = self.log.find(RX_ANY_EJECTED, thread="control")
        rejoined = self.log.find(RX_ANY_REJOINS, thread="control")
        fast = self.log.find(RX_FAST, thread="control")
        sys.stderr.write("  [info] 6: %d cycles over %.1f s: %d ejections, %d rejoins, "
                         "%d ring rebuilds, %d rate-limited\n" % (
                             cycles, t_last - t_first, len(ejected), len(rejoined),
                             len(rings), len(fast)))
        self.assertTrue(ejected)
        self.assertLess(len(rings), 4 * cycles, self.with_log("ring rebuild storm"))
        self.assertLessEqual(len(rings), len(ejected) + len(rejoined),
                             self.with_log("a ring rebuild without an ejection or a rejoin"))
        self.assertEqual({m.group(1) for _, m in ejected}, {self.name(victim)},
                         "only the flapping server is ever ejected")
        ops = w.all_ops()
        self.assert_no_hang(ops)
        errors = w.errors()
        sys.stderr.write("  [info] 6: %d requests, %d client errors: %s\n" % (
            len(ops), len(errors), sorted({op.reply.decode() for op in errors})))
        self.assert_only(errors, (b"SERVER_ERROR Connection reset by peer",
                                  b"SERVER_ERROR Connection refused"), "errors while flapping")
        self.assertFalse([op for op in errors if op.key not in self.keys_on[victim.addr]],
                         self.with_log("errors for keys of the healthy server"))
        # (If the last kill was not confirmed before the restart, nothing was
        # ejected and t_conv is older than the last kill: count from t_last then.)
        after = max(t_conv, t_last)
        self.assert_no_error_after(errors, after, "the final convergence and restart")
        keys = [k for ks in w.keysets for k in ks]
        self.assert_last_writes_on(victim, self.on(victim, keys), after=after)
        self.assert_last_writes_on(survivor, self.on(survivor, keys), after=after)
        self.proxy.stop(check=True)  # and it exits cleanly

    # ------------------------------------------------------------- 7

    def test_7_blip_does_not_eject(self):
        """Health checks off: one failed request, then success, twice -> never ejected."""
        self.setup_pair(health_check_interval=0)
        victim = self.mcs[1]
        key = self.keys_on[victim.addr][0]
        with h.Raw(self.port, timeout=OP_DEADLINE) as c:  # one connection: one worker
            c.request(b"set %s 0 0 2\r\nv0\r\n" % key, b"STORED\r\n")
            for blip in (1, 2):
                t = time.time()
                victim.kill()
                # Let the worker see its idle connection close before the request
                # comes: a request that meets the connection while it is closing
                # fails unreported (test_9), which would make this test flaky.
                # Every worker's: the client's is one of four, and waiting for
                # any close (server_eof + server_err moving) let the request meet
                # its worker's connection still open (a CI run under ASan:
                # "Connection reset by peer").
                h.wait_until(lambda: self.victim_connections(victim) == 0, deadline=5.0,
                             interval=0.01, what="walnut to see the backend close")
                c.send(b"set %s 0 0 1\r\nx\r\n" % key)
                line = c.recv_line(timeout=OP_DEADLINE)
                self.assertEqual(line, b"SERVER_ERROR Connection refused\r\n",
                                 self.with_log("blip %d" % blip))
                try:
                    self.log.wait(r"pool '%s': server %s failure 1 of 2 " % (
                        POOL, re.escape(self.name(victim))), EJECT_DEADLINE, since=t)
                except AssertionError as e:
                    raise AssertionError(self.with_log("blip %d: %s" % (blip, e))) from None
                victim.start()
                value = b"blip%d" % blip
                c.request(b"set %s 0 0 %d\r\n%s\r\n" % (key, len(value), value), b"STORED\r\n",
                          timeout=OP_DEADLINE, what="first request after blip %d" % blip)
                self.assertEqual(h.mc_get_many(victim.port, [key]), {key: value})
            time.sleep(0.3)  # room for a (wrong) ejection to show
        self.assertFalse(self.log.find(RX_ANY_EJECTED), self.with_log("a blip ejected"))
        self.assertFalse(self.rings(), self.with_log("a blip rebuilt the ring"))
        self.assertFalse(self.log.find(r"failure [2-9] of 2"),
                         self.with_log("a success did not reset the failure count"))

    # ------------------------------------------------------------- 9: regressions

    def test_9a_request_meeting_a_closing_connection_is_reported(self):
        """A request that reaches a backend connection while it is closing (the
        backend just went away, the worker saw its EOF in the same loop turn) waits
        for a new connection; when that fails it is reported to control like any
        other failure. (It used to get "Connection reset by peer" unreported.)
        Made deterministic by stopping walnut while the backend dies and the request
        arrives."""
        self.setup_pair(health_check_interval=0)
        victim = self.mcs[1]
        key = self.keys_on[victim.addr][0]
        with h.Raw(self.port, timeout=OP_DEADLINE) as c:
            c.request(b"set %s 0 0 1\r\na\r\n" % key, b"STORED\r\n")  # opens the connection
            t = time.time()
            h.sigstop_and_wait(self.proxy.proc.pid)
            try:
                victim.kill()                    # its FIN reaches walnut first,
                c.send(b"set %s 0 0 1\r\nb\r\n" % key)  # then this request
            finally:
                os.kill(self.proxy.proc.pid, signal.SIGCONT)
            line = c.recv_line(timeout=OP_DEADLINE)
            sys.stderr.write("  [info] 9: reply %r\n" % line)
            self.assertTrue(line.startswith(b"SERVER_ERROR "))
        self.log.wait(r"pool '%s': server %s failure 1 of 2 " % (
            POOL, re.escape(self.name(victim))), 2.0, since=t,
            what="control to hear of the failed request")

    def test_9b_server_kept_by_max_ejected_fraction_is_still_probed(self):
        """A failing server that max_ejected_fraction keeps in is still probed, so
        its recovery is seen (it used to get no probe at all). Here the kept server
        is restarted with no client traffic; with health_check_interval 1000 a
        probe connection should reach it within 2.5 s."""
        self.setup_pair(max_ejected_fraction=0.5)
        for m in self.mcs:
            m.kill()
        try:
            self.log.wait(RX_ANY_EJECTED, EJECT_DEADLINE)
            (_, m_st), = self.log.wait(rx_stays_in(), EJECT_DEADLINE)[:1]
        except AssertionError as e:
            raise AssertionError(self.with_log(str(e))) from None
        kept = [m for m in self.mcs if self.name(m) == m_st.group(1)][0]
        time.sleep(0.3)                         # the last probe of it has failed
        kept.start()
        before = int(kept.stats()["total_connections"])  # this stats call is one
        time.sleep(2.5)
        after = int(kept.stats()["total_connections"])
        self.assertGreaterEqual(after - before, 2, self.with_log(
            "no probe connection reached the kept server %s in 2.5 s (total_connections "
            "%d -> %d, one of them this check's own)" % (kept.addr, before, after)))

    # ------------------------------------------------------------- 10

    def test_10_idle_dead_server_is_ejected_by_probes(self):
        """With no client traffic at all, control's own probes find a dead server and
        eject it: a first failed probe, a confirming one, then the new ring."""
        self.setup_pair()
        victim = self.mcs[1]
        t_kill = time.time()
        victim.kill()
        try:
            (e, _), = self.log.wait(rx_ejected(self.name(victim)),
                                    INTERVAL_MS / 1000.0 + EJECT_DEADLINE, since=t_kill)[:1]
        except AssertionError as err:
            raise AssertionError(self.with_log(str(err))) from None
        measured("10: idle kill -> ejected by probes", e.t - t_kill)
        counted = self.log.find(r"pool '%s': server %s failure \d of 2 \((.*)\)" % (
            POOL, re.escape(self.name(victim))), since=t_kill)
        self.assertTrue(counted, self.with_log("no failure was counted"))
        self.assertTrue(all(m.group(1).endswith("health probe") for _, m in counted),
                        self.with_log("with no traffic only probes can find the failure"))
        self.assert_converged(live=1)

    # ------------------------------------------------------------- 8

    def test_8_max_ejected_fraction_keeps_one(self):
        """max_ejected_fraction 0.5, both down: one ejected, the other stays in; no hang."""
        self.setup_pair(max_ejected_fraction=0.5)
        w = self.start_writers()
        w.wait_rounds_after(time.time(), rounds=1)
        t_kill = time.time()
        # Both at once: killed (and reaped) one after the other, on a loaded
        # machine the second died 300 ms later, after the first's ejection,
        # and answered requests the check below took for the dark time.
        for m in self.mcs:
            os.kill(m.proc.pid, signal.SIGKILL)
        for m in self.mcs:
            m.kill()
        t_dead = time.time()
        try:
            (e_ej, m_ej), = self.log.wait(RX_ANY_EJECTED, EJECT_DEADLINE)[:1]
            (e_st, m_st), = self.log.wait(rx_stays_in(), EJECT_DEADLINE)[:1]
        except AssertionError as e:
            raise AssertionError(self.with_log(str(e))) from None
        measured("8: both killed -> one ejected", e_ej.t - t_kill)
        ejected_name, kept_name = m_ej.group(1), m_st.group(1)
        self.assertEqual({ejected_name, kept_name}, {self.name(m) for m in self.mcs})
        _, t_conv = self.assert_converged(live=1)
        # Requests to the kept (dead) server can be held for a verdict (up to
        # timeout * server_failure_limit + 500 ms each), so count answers, not rounds.
        w.wait_answers_after(max(t_conv, t_dead) + LOG_SLACK, count=3, deadline=15.0)
        t_check = time.time()
        self.assertEqual([m.group(1) for _, m in self.log.find(RX_ANY_EJECTED)], [ejected_name],
                         self.with_log("more than max_ejected_fraction ejected"))
        self.assertEqual(len(self.rings()), 1, self.with_log("one rebuild only"))

        # While both are down every request gets a SERVER_ERROR, in bounded time.
        dark = [op for op in w.all_ops()
                if op.t0 > max(t_conv, t_dead) + LOG_SLACK and op.t1 < t_check]
        self.assertTrue(dark)
        self.assert_no_hang(dark)
        self.assertFalse([op for op in dark if not op.reply.startswith(b"SERVER_ERROR ")],
                         self.with_log("non-errors while every server was down"))
        kept = [m for m in self.mcs if self.name(m) == kept_name][0]
        self.assertTrue([op for op in dark if op.key in set(self.keys_on[kept.addr])],
                        "requests for the kept server's own keys")
        lat = sorted(op.latency for op in dark)
        measured("8: slowest SERVER_ERROR while one is out and one stays in", lat[-1])
        measured("8: median SERVER_ERROR latency then", statistics.median(lat))
        sys.stderr.write("  [info] 8: %d requests while down: %s\n" % (
            len(dark), sorted({op.reply.decode() for op in dark})))

        # Both come back: service recovers without restarting walnut.
        for m in self.mcs:
            m.start()
        t_restart = time.time()
        _, t_back = self.assert_converged(
            live=2, deadline=RETRY_MS / 1000.0 + INTERVAL_MS / 1000.0 + MARGIN + 1.0)
        w.wait_rounds_after(max(t_back, t_restart), rounds=2, deadline=15.0)
        w.stop()
        self.assert_no_hang(w.all_ops())
        self.assert_no_error_after(w.errors(), max(t_back, t_restart + OP_DEADLINE),
                                   "the recovery")


class TestHoldThroughOtherChanges(h.ProxyTestCase):
    """A client held for a suspect server (its request waits for control's
    verdict on it) stays held when the ring changes for another server, or a
    reload leaves the server where it was: that is no verdict on it. Both
    used to let the client go: its request went to the stopped server again
    and timed out, a second error, sometimes after the server's ejection
    (found by an adversarial pass, 3 Dec)."""

    TIMEOUT = 1000
    LIMIT = 3  # a hold of up to 3 x 1000 + 500 ms

    def run_case(self, change):
        tmp = self.tmpdir()
        a, b, c = self.start_memcached(tmp, n=3)
        pools = {POOL: h.pool([a, b, c], auto_eject_hosts=True, server_retry_timeout=30000,
                              server_failure_limit=self.LIMIT, timeout=self.TIMEOUT)}
        px = self.start_proxy(tmp, pools, workers=2, verbosity=6)
        log = Log(px.log_path)
        keys = [b"hold:" + hashlib.sha1(b"%d" % i).hexdigest()[:12].encode() for i in range(300)]
        located = h.walnut_locate(px.conf_path, keys)
        names = {addr: name for name, addr in located.values()}
        on_c = [k for k in keys if located[(POOL, k)][1] == c.addr]
        self.assertGreater(len(on_c), 5)
        client = RawMc(px.port(), timeout=15.0)
        self.addCleanup(client.close)
        ops = []

        def write(n):
            for _ in range(n):
                k = on_c[len(ops) % len(on_c)]
                v = b"v%d" % len(ops)
                t0 = time.time()
                ops.append((t0, k, client.set(k, v), time.time()))

        write(3)
        self.assertTrue(all(r == b"STORED" for _, _, r, _ in ops), ops)
        c.sigstop()
        self.addCleanup(c.sigcont)
        t_stop = time.time()
        write(1)  # in flight at the stop: times out, c turns suspect
        self.assertEqual(ops[-1][2], b"SERVER_ERROR Connection timed out", ops[-1])
        # the next request waits for the verdict on c; meanwhile another change
        done = threading.Event()
        writer = threading.Thread(target=lambda: (write(4), done.set()), daemon=True)
        writer.start()
        time.sleep(0.2)
        change(px, pools, a, b)
        log.wait(rx_ejected(names[c.addr]), 10.0, since=t_stop,
                 what="the stopped server ejected")
        self.assertTrue(done.wait(20.0), "the writer is stuck")
        errors = [op for op in ops[4:] if op[2] != b"STORED"]
        self.assertFalse(errors, "a held client was let go by another change and met the "
                         "stopped server again: %r\n%s" % (errors, h.tail(px.log_path, 6000)))
        # its last write is on a survivor (b may be the killed one)
        key, want = ops[-1][1], b"v%d" % (len(ops) - 1)
        held = [m.addr for m in (a, b) if m.running() and h.mc_get_many(m.port, [key]).get(key) == want]
        self.assertEqual(len(held), 1, "the last write of %r on %r" % (key, held))
        c.sigcont()
        px.stop(check=True)

    def test_another_servers_ejection_keeps_the_hold(self):
        def kill_b(px, pools, a, b):
            b.kill()
        self.run_case(kill_b)

    def test_a_reload_that_keeps_the_server_keeps_the_hold(self):
        def reload(px, pools, a, b):
            pools["beta"] = h.pool([a], listen="%s:%d" % (HOST, h.free_port()))
            px.write_config()
            os.kill(px.pid, signal.SIGHUP)
        self.run_case(reload)


class TestHoldOnlyWhereAVerdictComes(h.ProxyTestCase):
    """A client waits for control's verdict on a suspect server only when
    one can come within the wait (at most 5 s). With a high
    server_failure_limit (100: ten seconds of probes at the least) every
    request for a dead server waited the 5 s and then failed all the same,
    where twemproxy answers at once (an adversarial helper's find); and a
    wait that ran out with no verdict was followed by another for the next
    request, and another, until control decided."""

    RX_NO_VERDICT = r"no verdict on server \S+ in time"

    def start(self, **settings):
        tmp = self.tmpdir()
        a, c = self.start_memcached(tmp, n=2)
        settings.setdefault("timeout", 1000)
        pools = {POOL: h.pool([a, c], auto_eject_hosts=True, **settings)}
        px = self.start_proxy(tmp, pools, workers=1, verbosity=6)
        keys = [b"limit:" + hashlib.sha1(b"%d" % i).hexdigest()[:10].encode()
                for i in range(200)]
        located = h.walnut_locate(px.conf_path, keys)
        self.on_c = [k for k in keys if located[(POOL, k)][1] == c.addr]
        self.c_name = [n for n, addr in located.values() if addr == c.addr][0]
        self.assertGreaterEqual(len(self.on_c), 4)
        conn = RawMc(px.port(), timeout=30.0)
        self.addCleanup(conn.close)
        self.assertEqual(conn.set(self.on_c[0], b"x"), b"STORED")
        return px, c, conn

    def timed_set(self, conn, key):
        t0 = time.monotonic()
        reply = conn.set(key, b"y")
        return reply, time.monotonic() - t0

    def test_a_limit_control_cannot_reach_in_the_wait_holds_nothing(self):
        px, c, conn = self.start(server_failure_limit=100)
        log = Log(px.log_path)
        t0 = time.time()
        c.kill()
        for i in range(4):
            reply, took = self.timed_set(conn, self.on_c[i])
            self.assertTrue(reply.startswith(b"SERVER_ERROR "), reply)
            # waited 5.0 s from the second on
            self.assertLess(took, 3.0, "request %d: %r after %.1f s" % (i, reply, took))
        self.assertFalse(log.find(self.RX_NO_VERDICT, since=t0 - LOG_SLACK),
                         h.tail(px.log_path, 3000))
        px.stop(check=True)

    def test_a_wait_that_ran_out_is_not_followed_by_another(self):
        # A stopped server: each probe and request fails at the 1 s timeout,
        # so control needs about 20 s; the wait is 5 s.
        px, c, conn = self.start(server_failure_limit=20)
        log = Log(px.log_path)
        t0 = time.time()
        c.sigstop()
        self.addCleanup(c.sigcont)
        reply, took = self.timed_set(conn, self.on_c[1])
        self.assertEqual(reply, b"SERVER_ERROR Connection timed out")
        reply, took = self.timed_set(conn, self.on_c[2])  # waits 5 s, then tried
        self.assertEqual(reply, b"SERVER_ERROR Connection timed out")
        self.assertEqual(len(log.find(self.RX_NO_VERDICT, since=t0 - LOG_SLACK)), 1)
        reply, took = self.timed_set(conn, self.on_c[3])  # tried at once
        self.assertEqual(reply, b"SERVER_ERROR Connection timed out")
        self.assertLess(took, 3.0, "the next request waited again: %.1f s" % took)
        self.assertEqual(len(log.find(self.RX_NO_VERDICT, since=t0 - LOG_SLACK)), 1)
        c.sigcont()
        px.stop(check=True)

    def test_holds_come_back_once_control_has_decided(self):
        """A server whose hold ran out, then ejected and back: the ejection
        is control's verdict, and when the server dies again its clients
        are held and re-routed as before (review: the ejection's ring did
        not clear the spent hold when no other server was suspect, and
        every request for it failed from then on)."""
        px, c, conn = self.start(server_failure_limit=10, server_retry_timeout=1000,
                                 timeout=600)
        log = Log(px.log_path)
        t0 = time.time()
        c.sigstop()
        self.addCleanup(c.sigcont)
        self.assertEqual(conn.set(self.on_c[1], b"y"), b"SERVER_ERROR Connection timed out")
        log.wait(self.RX_NO_VERDICT, 15.0, since=t0, what="the hold running out")
        log.wait(rx_ejected(self.c_name), 20.0, since=t0, what="c ejected")
        c.sigcont()
        log.wait(rx_rejoins(self.c_name), 20.0, since=t0, what="c rejoins")
        time.sleep(0.3)  # the ring reaches the worker
        c.kill()
        first = conn.set(self.on_c[2], b"z")
        self.assertTrue(first.startswith(b"SERVER_ERROR "), first)
        # held until c is ejected again, then stored on the other server
        self.assertEqual(conn.set(self.on_c[3], b"z"), b"STORED")
        px.stop(check=True)


class TestHoldsEndWithAVerdict(h.ProxyTestCase):
    """Every hold ends with a verdict, not at its deadline ("no verdict on
    server ... in time"). Two ways it once did not, once other changes no
    longer ended holds (a review of 52b1999): a worker whose request to a
    server failed after control had ejected it held clients for it (control
    sent no verdict on an ejected server), still after the server rejoined;
    and a reload turning probes off dropped a suspicion without a word."""

    RX_NO_VERDICT = r"no verdict on server \S+ in time"

    def start(self, workers, **settings):
        tmp = self.tmpdir()
        a, c = self.start_memcached(tmp, n=2)
        pools = {POOL: h.pool([a, c], auto_eject_hosts=True, timeout=1000, **settings)}
        px = self.start_proxy(tmp, pools, workers=workers, verbosity=6)
        keys = [b"verdict:" + hashlib.sha1(b"%d" % i).hexdigest()[:10].encode()
                for i in range(200)]
        located = h.walnut_locate(px.conf_path, keys)
        self.c_name = [n for n, addr in located.values() if addr == c.addr][0]
        self.on_c = [k for k in keys if located[(POOL, k)][1] == c.addr]
        self.assertGreaterEqual(len(self.on_c), 8)
        return px, pools, a, c

    def sets(self, conns, value):
        """One set per connection at once, each on its own key of c."""
        out = {}

        def one(i):
            out[i] = conns[i].set(self.on_c[i], value)
        threads = [threading.Thread(target=one, args=(i,), daemon=True)
                   for i in range(len(conns))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        return out

    def test_a_request_failing_after_the_ejection_holds_nothing_past_the_rejoin(self):
        px, pools, a, c = self.start(2, server_failure_limit=2, server_retry_timeout=1500)
        log = Log(px.log_path)
        conns = [RawMc(px.port(), timeout=15.0) for _ in range(8)]
        for cl in conns:
            self.addCleanup(cl.close)
        self.assertEqual(set(self.sets(conns, b"x").values()), {b"STORED"})
        c.sigstop()
        self.addCleanup(c.sigcont)
        t0 = time.time()
        self.assertEqual(conns[0].set(self.on_c[0], b"y"), b"SERVER_ERROR Connection timed out")
        time.sleep(0.4)
        self.sets(conns[1:], b"z")  # in flight or held, on both workers, across the ejection
        log.wait(rx_ejected(self.c_name), 10.0, since=t0, what="c ejected")
        c.sigcont()
        (e_rj, _), = log.wait(rx_rejoins(self.c_name), 10.0, since=t0, what="c rejoins")[:1]
        time.sleep(0.3)  # the ring reaches the workers
        replies = self.sets(conns, b"w")
        self.assertEqual(set(replies.values()), {b"STORED"}, replies)
        time.sleep(0.5)
        self.assertFalse(log.find(self.RX_NO_VERDICT, since=e_rj.t - LOG_SLACK),
                         "clients held for a server that had rejoined:\n" +
                         h.tail(px.log_path, 5000))
        px.stop(check=True)

    def test_a_reload_turning_probes_off_ends_the_hold(self):
        px, pools, a, c = self.start(1, server_failure_limit=3, server_retry_timeout=30000)
        log = Log(px.log_path)
        first, second = RawMc(px.port(), timeout=15.0), RawMc(px.port(), timeout=15.0)
        self.addCleanup(first.close)
        self.addCleanup(second.close)
        self.assertEqual(first.set(self.on_c[0], b"x"), b"STORED")
        c.sigstop()
        self.addCleanup(c.sigcont)
        t0 = time.time()
        self.assertEqual(first.set(self.on_c[0], b"y"), b"SERVER_ERROR Connection timed out")
        held = {}
        t = threading.Thread(target=lambda: held.update(r=second.set(self.on_c[1], b"z")),
                             daemon=True)
        t.start()
        time.sleep(0.3)  # held: c is suspect, its verdict to come from probes
        pools[POOL]["health_check_interval"] = 0
        px.write_config()
        os.kill(px.pid, signal.SIGHUP)
        log.wait(r"reload: all 1 worker\(s\) run generation", 10.0, since=t0,
                 what="the reload applied")
        t.join(20)
        self.assertIn("r", held, "the held client got no answer")
        self.assertFalse(log.find(self.RX_NO_VERDICT, since=t0),
                         "the hold lasted to its deadline:\n" + h.tail(px.log_path, 5000))
        c.sigcont()
        px.stop(check=True)


def tearDownModule():
    if MEASURED:
        sys.stderr.write("\n=== test_failover measured times ===\n")
        for what, s in MEASURED:
            sys.stderr.write("  %-62s %7.0f ms\n" % (what, s * 1000))
        sys.stderr.write("\n")


if __name__ == "__main__":
    h.main()
