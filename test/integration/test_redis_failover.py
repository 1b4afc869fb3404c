#!/usr/bin/python3
"""Failover for a Redis pool, as test_failover.py shows it for memcached: two
redis-servers, walnut --workers 4 -v 6, auto_eject_hosts: true,
server_failure_limit: 2, server_retry_timeout: 2000, timeout: 400.

  1  four clients write (SET, each on one persistent connection) and one
     splits MSETs over both servers; SIGKILL one redis-server -> it is ejected
     (logged), its keys' writes go to the survivor (asked directly), no client
     error for a request sent after the ejection was logged, at most the one
     in-flight error per client before;
  2  restart it on the same port -> it rejoins (not before
     server_retry_timeout), its keys' writes go to it again, still no error.
  3  a request held while its server is suspect is sent on by the ejection,
     without the client sending anything more.

Run with Debian's /usr/bin/python3; WALNUT_BIN names the binary. Measured
latencies go to stderr.
"""

import hashlib
import os
import socket
import sys
import threading
import time
import unittest

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import test_failover as mcfo  # noqa: E402  (its walnut-log reader)

POOL = mcfo.POOL
WORKERS = 4
NCLIENTS = 4
RETRY_MS = 2000
INTERVAL_MS = 1000
BASE = {"redis": True, "auto_eject_hosts": True, "server_retry_timeout": RETRY_MS,
        "server_failure_limit": 2, "timeout": 400}
OP_DEADLINE = 3.0
EJECT_DEADLINE = 5.0
MARGIN = 2.0
KEYS_PER_SERVER = 5


class RespClient:
    """One persistent RESP connection, kept across -ERR replies."""

    def __init__(self, port):
        self.c = h.Raw(port, timeout=OP_DEADLINE)

    def call(self, *args):
        return self.c.call(*args)

    def close(self):
        self.c.close()


class Writers:
    """NCLIENTS threads SET their keys round-robin; one more MSETs pairs of
    keys on both servers. Every op: (client, kind, keys, value, t0, t1, reply)."""

    def __init__(self, port, keysets, mset_pairs):
        self.port, self.keysets, self.mset_pairs = port, keysets, mset_pairs
        self.ops = [[] for _ in range(len(keysets) + 1)]
        self.stop_evt = threading.Event()
        self.go = threading.Event()
        self.go.set()
        self.idle = [False] * len(self.ops)
        self.threads = []

    def _run(self, i):
        client, seq = None, 0
        end = time.monotonic() + 60
        mset = i == len(self.keysets)
        while not self.stop_evt.is_set() and time.monotonic() < end:
            if not self.go.is_set():
                self.idle[i] = True
                self.go.wait(10)
                self.idle[i] = False
                continue
            if mset:
                pair = self.mset_pairs[seq % len(self.mset_pairs)]
                keys = list(pair)
            else:
                keys = [self.keysets[i][seq % len(self.keysets[i])]]
            value = b"c%d-%d" % (i, seq)
            seq += 1
            t0 = time.time()
            try:
                if client is None:
                    client = RespClient(self.port)
                if mset:
                    reply = client.call("MSET", *[x for k in keys for x in (k, value)])
                else:
                    reply = client.call("SET", keys[0], value)
            except (AssertionError, OSError, socket.timeout) as e:
                reply = h.RespError(("CLIENT %r" % e).encode())
                if client is not None:
                    client.close()
                client = None
            self.ops[i].append((i, keys, value, t0, time.time(), reply))
            time.sleep(0.002)
        if client is not None:
            client.close()

    def start(self):
        for i in range(len(self.ops)):
            t = threading.Thread(target=self._run, args=(i,), daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def pause(self):
        """Every writer idle between requests (its last reply recorded)."""
        self.go.clear()
        h.wait_until(lambda: all(self.idle), deadline=OP_DEADLINE + 5, interval=0.01,
                     what="the writers to pause")

    def resume(self):
        self.go.set()

    def stop(self):
        self.stop_evt.set()
        self.go.set()
        for t in self.threads:
            t.join(OP_DEADLINE + 5)

    def all_ops(self):
        return [op for ops in self.ops for op in list(ops)]

    def errors(self):
        return [op for op in self.all_ops() if op[5] != b"OK"]

    def wait_rounds_after(self, t, rounds=2, deadline=10.0):
        need = [rounds * len(ks) for ks in self.keysets] + [rounds * len(self.mset_pairs)]
        h.wait_until(lambda: all(sum(1 for op in list(ops) if op[3] > t) >= n
                                 for ops, n in zip(self.ops, need)),
                     deadline=deadline, interval=0.02, what="writers to go round %d times" % rounds)

    def last_values(self):
        """{key: (t0, value, ok)} of each key's last write."""
        out = {}
        for ops in self.ops:
            for (_, keys, value, t0, _, reply) in ops:
                for k in keys:
                    if k not in out or out[k][0] < t0:
                        out[k] = (t0, value, reply == b"OK")
        return out


@unittest.skipIf(h.UNDER_NUTCRACKER, "walnut's control thread and log are not twemproxy's")
class TestRedisFailover(h.ProxyTestCase):

    def setUp(self):
        self.tmp = self.tmpdir()
        self.writers = None
        self.addCleanup(lambda: self.writers and self.writers.stop())

    def with_log(self, msg):
        return "%s\n--- walnut log (tail) ---\n%s" % (msg, h.tail(self.proxy.log_path, 8000))

    def setup_pair(self):
        self.rs = [h.RedisServer(self.tmp, name="fo%d" % i).start() for i in range(2)]
        for r in self.rs:
            self.addCleanup(r.stop)
        self.proxy = self.start_proxy(self.tmp, {POOL: h.pool(self.rs, **BASE)},
                                      workers=WORKERS, verbosity=6)
        self.port = self.proxy.port()
        self.log = mcfo.Log(self.proxy.log_path)
        keys = [b"rf:" + hashlib.sha1(b"%d" % i).hexdigest()[:12].encode() for i in range(200)]
        located = h.walnut_locate(self.proxy.conf_path, keys)
        self.names = {}
        self.keys_on = {r.addr: [] for r in self.rs}
        for k in keys:
            name, addr = located[(POOL, k)]
            self.keys_on[addr].append(k)
            self.names[addr] = name
        for r in self.rs:
            self.assertGreaterEqual(len(self.keys_on[r.addr]), (NCLIENTS + 1) * KEYS_PER_SERVER)
        # --locate agrees with where SET through walnut puts them
        sample = self.keys_on[self.rs[0].addr][:10] + self.keys_on[self.rs[1].addr][:10]
        with h.Raw(self.port) as c:
            c.send(b"".join(h.resp("SET", k, "x") for k in sample))
            c.expect(b"+OK\r\n" * len(sample))
        where = h.redis_placement(self.rs, sample)
        for k in sample:
            self.assertEqual(where[k].addr, located[(POOL, k)][1], k)
        for r in self.rs:
            r.call("FLUSHALL")
        a, b = (self.keys_on[r.addr] for r in self.rs)
        n = KEYS_PER_SERVER
        keysets = [[k for pair in zip(a[i * n:(i + 1) * n], b[i * n:(i + 1) * n]) for k in pair]
                   for i in range(NCLIENTS)]
        pairs = list(zip(a[NCLIENTS * n:(NCLIENTS + 1) * n], b[NCLIENTS * n:(NCLIENTS + 1) * n]))
        self.writers = Writers(self.port, keysets, pairs).start()
        return self.writers

    def assert_errors_ok(self, w, t_kill, t_eject):
        errors = w.errors()
        sys.stderr.write("  [info] %d requests, %d client errors: %s\n" % (
            len(w.all_ops()), len(errors), sorted({bytes(op[5]).decode() for op in errors})))
        for op in errors:
            sys.stderr.write("  [info] client %d %s sent at kill%+.3fs, answered after %.3fs: "
                             "%r\n" % (op[0], b" ".join(op[1]).decode(), op[3] - t_kill,
                                        op[4] - op[3], bytes(op[5])))
        late = [op for op in errors if op[3] > t_eject + mcfo.LOG_SLACK]
        self.assertFalse(late, self.with_log("errors for requests sent after the ejection: %r"
                                             % late[:5]))
        early = [op for op in errors if op[4] < t_kill]
        self.assertFalse(early, "errors before the kill: %r" % early[:5])
        for op in errors:
            self.assertRegex(bytes(op[5]), rb"^ERR (Connection refused|Connection reset by peer|"
                             rb"Connection timed out)$", op)
        per = {}
        for op in errors:
            per[op[0]] = per.get(op[0], 0) + 1
        self.assertFalse({c: n for c, n in per.items() if n > 1},
                         self.with_log("a client saw more than its one in-flight error: %r" % per))
        victim_keys = set(self.keys_on[self.victim.addr])
        self.assertFalse([op for op in errors if not set(op[1]) & victim_keys],
                         "errors for requests with no key on the dead server")

    def assert_last_writes_on(self, r, keys, after):
        last = self.writers.last_values()
        got = r.pipeline([("GET", k) for k in keys])
        for k, v in zip(keys, got):
            t0, value, ok = last[k]
            self.assertGreater(t0, after, "key %r not written since %.3f" % (k, after))
            self.assertTrue(ok, k)
            self.assertEqual(v, value, self.with_log("key %r: its last write %r is not on %s "
                                                     "(holds %r)" % (k, value, r.addr, v)))

    def test_kill_ejects_reroutes_restart_rejoins(self):
        w = self.setup_pair()
        self.survivor, self.victim = self.rs
        w.wait_rounds_after(time.time(), rounds=2)
        self.assertFalse(w.errors(), "errors before any failure: %r" % w.errors()[:5])
        written = [k for ks in w.keysets for k in ks] + [k for p in w.mset_pairs for k in p]
        on_victim = [k for k in written if k in set(self.keys_on[self.victim.addr])]
        on_survivor = [k for k in written if k not in set(on_victim)]

        # 1: kill, ejection, writes re-routed to the survivor
        t_kill = time.time()
        self.victim.kill()
        try:
            (e_ej, _), = self.log.wait(mcfo.rx_ejected(self.names[self.victim.addr]),
                                       EJECT_DEADLINE)[:1]
        except AssertionError as e:
            raise AssertionError(self.with_log(str(e))) from None
        mcfo.measured("redis: SIGKILL -> ejection logged", e_ej.t - t_kill)
        w.wait_rounds_after(e_ej.t + 0.2, rounds=2)
        t_moved = time.time()
        w.pause()
        self.assert_last_writes_on(self.survivor, on_victim + on_survivor, after=e_ej.t)
        w.resume()

        # 2: restart on the same port, rejoin, writes back on it
        self.victim.start()
        t_restart = time.time()
        rejoin_by = max(t_restart, e_ej.t + RETRY_MS / 1000.0) + INTERVAL_MS / 1000.0 + MARGIN
        try:
            (e_rj, _), = self.log.wait(mcfo.rx_rejoins(self.names[self.victim.addr]),
                                       rejoin_by - time.time())[:1]
        except AssertionError as e:
            raise AssertionError(self.with_log(str(e))) from None
        mcfo.measured("redis: restart -> rejoin logged", e_rj.t - t_restart)
        self.assertGreaterEqual(e_rj.t - e_ej.t, RETRY_MS / 1000.0 - 0.05,
                                self.with_log("rejoined before server_retry_timeout"))
        self.assertGreater(t_moved, e_ej.t)
        # every worker on the rejoin's ring (control logs when all are; one
        # may take it late on a loaded machine), then two rounds
        conv = h.wait_until(lambda: [e for e, m in self.log.find(mcfo.RX_CONVERGED,
                                                                 thread="control")
                                     if e.t >= e_rj.t] or None,
                            deadline=10, what="every worker on the rejoin's ring")
        w.wait_rounds_after(conv[0].t + 0.05, rounds=2)
        w.stop()
        self.assert_last_writes_on(self.victim, on_victim, after=e_rj.t)
        self.assert_last_writes_on(self.survivor, on_survivor, after=e_rj.t)
        self.assertTrue(self.proxy.alive())
        self.assert_errors_ok(w, t_kill, e_ej.t)
        self.proxy.stop()

    def test_held_request_resumes_after_ejection(self):
        """A request that arrives while its server is suspect is held until
        control decides; the ejection must send it on (to the survivor) at once,
        without the client sending anything more."""
        self.rs = [h.RedisServer(self.tmp, name="ho%d" % i).start() for i in range(2)]
        for r in self.rs:
            self.addCleanup(r.stop)
        self.proxy = self.start_proxy(self.tmp, {POOL: h.pool(self.rs, **BASE)}, workers=1,
                                      verbosity=6)
        self.log = mcfo.Log(self.proxy.log_path)
        keys = [b"ho:" + hashlib.sha1(b"%d" % i).hexdigest()[:12].encode() for i in range(50)]
        located = h.walnut_locate(self.proxy.conf_path, keys)
        victim_key = [k for k in keys if located[(POOL, k)][1] == self.rs[1].addr][0]
        with h.Raw(self.proxy.port(), timeout=OP_DEADLINE) as c:
            c.request(h.resp("SET", victim_key, "1"), b"+OK\r\n")
            self.rs[1].kill()
            c.send(h.resp("SET", victim_key, "2"))
            self.assertRegex(c.recv_resp(), rb"^-ERR (Connection refused|Connection reset by "
                             rb"peer)\r\n$")
            t0 = time.time()
            c.send(h.resp("SET", victim_key, "held"))  # the server is suspect: held
            self.log.wait(mcfo.rx_ejected(self.rs[1].addr), EJECT_DEADLINE)
            try:
                c.expect(b"+OK\r\n", timeout=OP_DEADLINE, what="the held SET, after the ejection")
            except AssertionError as e:
                # one more byte from the client, and it goes
                c.send(h.resp("PING"))
                late = c.recv_exact(12, timeout=OP_DEADLINE)
                raise AssertionError(self.with_log(
                    "%s; after the client sent a PING %.1f s later it got %r" % (
                        e, time.time() - t0, late))) from None
        self.assertEqual(self.rs[0].call("GET", victim_key), b"held")


if __name__ == "__main__":
    h.main()
