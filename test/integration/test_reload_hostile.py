"""test_reload_hostile.py: SIGHUP reload (commit 2b2cc70), attacked.

Each F test is the regression test of one finding; the fix is in the commit
that added it (F6, and F1's wedge, were fixed on main meanwhile: e3d20f3,
18209aa; their tests stay):

  F1  a worker that cannot take a committed configuration (a server's name
      no longer resolves there) answered with its old generation: control
      ignored it, the reload never converged and every later SIGHUP was
      deferred for good; control's next ring (new indexes) was then routed
      with by the worker's old server array (heap-buffer-overflow)
  F2  a retired server's gauges followed its name into a later configuration
      that brought the name back: server_connections, out_queue went below 0
  F3  a unix-socket listen address was never checked before a reload
      committed: an unbindable path was "applied" (the pool listened nowhere),
      another process's live socket was unlinked and taken over
  F4  a removed pool whose servers were closed at the 30 s grace reopened a
      connection for a late request and was then never reaped
  F5  a `set` routed before a reload and queued after it (its data block
      arrived in between) went to the freed server (heap-use-after-free)
  F6  (TSan) redis_client.c's "per worker thread" client id counter was one
      variable shared by every worker
  F7  a `timeout` a reload sets never reached connections already waiting on
      a hung server: they, and every request queued behind, hung for good
  U1  a removed pool's client that is not done (half a request, or
      pipelining without pause) was never closed: the pool, and every
      configuration loaded after it, stayed until that client left. Fixed:
      such clients are closed at the 30 s grace

The rest is coverage that passes: reload storms (4 workers, many pools, Redis,
unix sockets, swapped addresses; probes, ejections and flapping servers),
reload then stop, health carried or not, Redis AUTH/SELECT changes.

Real memcached/redis-server backends, raw sockets where bytes matter. Run with
Debian's /usr/bin/python3; WALNUT_BIN names the binary (ASan and TSan builds:
a sanitizer report makes walnut exit non-zero, which Proxy.stop(check=True)
asserts against, and check_sanitizers() scans the log for it). F1 preloads
shim/flaky_dns.c (built with cc) to make a DNS outage on demand.
"""

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fakes  # noqa: E402
import harness as h  # noqa: E402
from test_reload import Loader, ReloadCase, fds  # noqa: E402

SANITIZER_RE = re.compile(r"AddressSanitizer|ThreadSanitizer|LeakSanitizer|runtime error")


def spec(addr, name, weight=1):
    return "%s:%d %s" % (addr, weight, name)


class HostileCase(ReloadCase):
    def start_proxy(self, tmp, pools, workers=1, **kw):
        # The harness waits for the pools' ports; the stats server opens
        # after them, and reload() asks it first.
        px = super().start_proxy(tmp, pools, workers=workers, **kw)
        self.assertTrue(h.wait_port(h.HOST, px.stats_port, px.proc), "no stats port")
        return px

    def wait_log(self, marker, text, deadline=10.0):
        h.wait_until(lambda: text in self.log_since(marker), deadline=deadline, what=repr(text))

    def check_sanitizers(self):
        text = h.tail(self.px.log_path + ".stdout", 200000)
        m = SANITIZER_RE.search(text)
        self.assertIsNone(m, "sanitizer report in walnut's output:\n%s" % text[-6000:])

    def stop_clean(self):
        self.px.stop()
        self.check_sanitizers()

    def metrics(self):
        return self.px.metrics()

    def reload_nowait(self, pools=None, text=None):
        with open(self.px.conf_path, "w") as f:
            f.write(text if text is not None else h.render_config(pools))
        os.kill(self.px.pid, signal.SIGHUP)

    def start_flaky(self, pools, workers=2):
        """walnut with the DNS shim (flaky.walnut.test: down, moved, logged by thread)
        and the test hook that makes every worker refuse a configuration (as out of
        memory would) while self.refuse exists."""
        self.dns_down = self.tmp.join("dns-down")
        self.dns_moved = self.tmp.join("dns-moved")
        self.dns_log = self.tmp.join("dns-lookups")
        self.dns_both = self.tmp.join("dns-both")
        self.dns_slow = self.tmp.join("dns-slow")
        self.dns_hang = self.tmp.join("dns-hang")
        self.dns_ports = self.tmp.join("dns-ports")
        self.refuse = self.tmp.join("refuse-config")
        self.no_cmd_tables = self.tmp.join("no-cmd-tables")
        env = {"LD_PRELOAD": h.build_dns_shim(self.tmp), "WALNUT_TEST_DNS_DOWN": self.dns_down,
               "WALNUT_TEST_DNS_MOVED": self.dns_moved, "WALNUT_TEST_DNS_LOG": self.dns_log,
               "WALNUT_TEST_DNS_BOTH": self.dns_both, "WALNUT_TEST_DNS_SLOW": self.dns_slow,
               "WALNUT_TEST_DNS_HANG": self.dns_hang,
               "WALNUT_TEST_DNS_PORTS": self.dns_ports,
               "WALNUT_TEST_HOOKS": "1", "WALNUT_TEST_REFUSE_CONFIG": self.refuse,
               "WALNUT_TEST_NO_CMD_TABLES": self.no_cmd_tables}
        return self.start_proxy(self.tmp, pools, workers=workers, env=env, verbosity=6)

    def lookups(self, prefix=""):
        """Who looked flaky.walnut.test up so far (prefix "down:": down.walnut.test):
        "main" (control), or the asking thread's name."""
        try:
            with open(self.dns_log) as f:
                lines = f.read().split()
        except FileNotFoundError:
            return []
        if prefix:
            return [w[len(prefix):] for w in lines if w.startswith(prefix)]
        return [w for w in lines if ":" not in w]

    def key_on(self, pools, pool, server, prefix="k"):
        """A key that `walnut --locate` puts on `server` of `pool` for the file `pools`."""
        path = self.tmp.join("locate-%d.yml" % time.monotonic_ns())
        with open(path, "w") as f:
            f.write(h.render_config(pools))
        keys = [b"%s%s" % (prefix.encode(), hashlib.md5(b"%d" % i).hexdigest()[:12].encode())
                for i in range(200)]
        got = h.walnut_locate(path, keys)
        for k in keys:
            if got[(pool, k)][0] == server:
                return k
        raise AssertionError("no key on %s" % server)


# ---------------------------------------------------------------------------
# F1: a worker that cannot apply a committed configuration wedges reloads


class TestUnresolvedServer(HostileCase):
    def test_server_that_does_not_resolve_at_start(self):
        """A server whose name does not resolve when walnut starts (DNS down at
        boot, a retired host): nutcracker starts and answers its keys
        "SERVER_ERROR Host is down"; walnut refused to start at all. Now it
        starts, warns, fails that server's requests as nutcracker does (its
        probes fail: with auto_eject_hosts it is ejected and its keys go to the
        others), and a reload after DNS is back finds its address. Here the
        lookups in the background are off (dns_refresh_interval 0), so only
        the reload can find it (TestDnsRefresh: without a reload)."""
        mc = self.start_memcached(self.tmp, n=2)
        x, y = mc
        listen = "%s:%d" % (h.HOST, h.free_port())

        def conf(**kw):
            return {"alpha": h.pool(["flaky.walnut.test:%d:1 x" % x.port, spec(y.addr, "y")],
                                    listen=listen, timeout=2000, dns_refresh_interval=0, **kw)}
        self.dns_down = self.tmp.join("dns-down")
        open(self.dns_down, "w").close()
        self.px = self.start_flaky(conf())
        self.assertIn("server x: cannot resolve 'flaky.walnut.test'", self.px.log())
        kx, ky = self.key_on(conf(), "alpha", "x"), self.key_on(conf(), "alpha", "y")
        with h.Raw(self.px.port("alpha")) as c:
            c.request(b"set %s 0 0 1\r\nv\r\n" % kx, b"SERVER_ERROR Host is down\r\n")
            c.request(b"set %s 0 0 1\r\nv\r\n" % ky, b"STORED\r\n")
        # DNS is back: a reload looks the name up again and x serves
        os.unlink(self.dns_down)
        self.assertEqual(self.reload(pools=conf())["generation"], 1)
        with h.Raw(self.px.port("alpha")) as c:
            c.request(b"set %s 0 0 1\r\nx\r\n" % kx, b"STORED\r\n")
        self.assertTrue(x.keys_held([kx]))
        # DNS down again at a reload: the server keeps the address it found
        open(self.dns_down, "w").close()
        self.assertEqual(self.reload(pools=conf(server_connections=2))["generation"], 2)
        with h.Raw(self.px.port("alpha")) as c:
            c.request(b"get %s\r\n" % kx, b"VALUE %s 0 1\r\nx\r\nEND\r\n" % kx)
        self.stop_clean()

    def test_unresolved_server_is_ejected(self):
        """With auto_eject_hosts the unresolved server's probes fail and it is
        ejected: every key is then served by the others."""
        mc = self.start_memcached(self.tmp, n=2)
        x, y = mc
        self.dns_down = self.tmp.join("dns-down")
        open(self.dns_down, "w").close()
        pools = {"alpha": h.pool(["flaky.walnut.test:%d:1 x" % x.port, spec(y.addr, "y")],
                                 auto_eject_hosts=True, server_failure_limit=2,
                                 server_retry_timeout=60000, health_check_interval=100)}
        self.px = self.start_flaky(pools)
        h.wait_until(lambda: "ejected" in self.px.log(), deadline=10.0, what="x ejected")
        kx = self.key_on(pools, "alpha", "x")
        with h.Raw(self.px.port("alpha")) as c:
            c.request(b"set %s 0 0 1\r\nv\r\n" % kx, b"STORED\r\n")
        self.assertTrue(y.keys_held([kx]))
        self.stop_clean()


class TestDnsRefresh(HostileCase):
    """Server names looked up again while walnut runs (src/control/dns.c), so a
    name that moves is followed: twemproxy looks a name up at each reconnect;
    walnut looked it up once, when the server was added, and kept the address
    for good. flaky.walnut.test is 127.0.0.1, or 127.0.0.2 once the test makes
    it move (shim/flaky_dns.c); the moved server is a second memcached on the
    same port at 127.0.0.2."""

    def memcached_on_127_0_0_2(self, port):
        proc = subprocess.Popen(
            [h.find_tool("memcached", package="memcached"), "-l", "127.0.0.2", "-p", str(port),
             "-U", "0", "-m", "16", "-t", "1"] + (["-u", "nobody"] if os.geteuid() == 0 else []),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        self.addCleanup(lambda: (proc.kill(), proc.wait()))
        self.assertTrue(h.wait_port("127.0.0.2", port, proc), "memcached on 127.0.0.2")
        return proc

    def generation(self):
        return self.servers_view()["generation"]

    def start_named(self, **settings):
        """memcached x (127.0.0.1, and its twin on 127.0.0.2) by name, y by address,
        walnut with 2 workers over them; returns x, y, the pools and a key on x."""
        x, y = self.start_memcached(self.tmp, n=2)
        self.memcached_on_127_0_0_2(x.port)
        pools = {"alpha": h.pool(["flaky.walnut.test:%d:1 x" % x.port, spec(y.addr, "y")],
                                 **settings)}
        self.px = self.start_flaky(pools, workers=2)
        return x, y, pools, self.key_on(pools, "alpha", "x")

    def wait_lookups(self, more, what):
        """`more` lookups in the background from now on."""
        seen = self.background_lookups()
        h.wait_until(lambda: self.background_lookups() >= seen + more, deadline=10.0, what=what)

    def resolved(self, name):
        """Where /servers says server `name` is looked up to (None: no address)."""
        for p in self.servers_view()["pools"]:
            for sv in p["servers"]:
                if sv["name"] == name:
                    return sv["resolved"]
        raise AssertionError("no server %s in /servers" % name)

    def dns_counts(self, name):
        """/servers' `dns` object of server `name`, and the three counters of
        /metrics for it (None for a server given by address)."""
        view = [sv for p in self.servers_view()["pools"] for sv in p["servers"]
                if sv["name"] == name]
        self.assertEqual(len(view), 1, name)
        metrics = self.metrics()
        prom = {}
        for family, key in (("walnut_server_dns_lookups_total", "lookups"),
                            ("walnut_server_dns_lookup_failures_total", "failures"),
                            ("walnut_server_address_changes_total", "moves")):
            m = re.search(r'^%s\{pool="alpha",server="%s"\} (\d+)$' % (family, name),
                          metrics, re.M)
            if m:
                prom[key] = int(m.group(1))
        return view[0]["dns"], prom or None

    def wait_generation(self, gen, deadline=10.0):
        def there():
            v = self.servers_view()
            return v["generation"] == gen and v["generation_converged"] and v
        return h.wait_until(there, deadline=deadline, what="generation %d on every worker" % gen)

    def background_lookups(self):
        """Lookups of the name in the background: by threads that are not
        control's, nor a reload's ("reload-dns")."""
        who = self.lookups()
        self.assertEqual([w for w in who if w.startswith("wn-")], [], "a worker asked DNS")
        return len([w for w in who if w not in ("main", "reload-dns")])

    def set_everywhere(self, key, value):
        """Set through walnut on fresh connections (they land on both workers)."""
        for _ in range(8):
            with h.Raw(self.px.port("alpha")) as c:
                c.request(b"set %s 0 0 %d\r\n%s\r\n" % (key, len(value), value), b"STORED\r\n")

    def test_failing_server_follows_its_moved_name(self):
        """The node behind a name is replaced: the old address stops answering
        and the name points at the new one. walnut kept the address it found at
        start (a reload did not ask again either), so every key of that server
        failed until its line was removed from the file and added back. Now the
        failing server's name is looked up again within about a second (the
        default dns_refresh_interval, 30 s, is for servers that answer) and every
        worker moves to the new address, without a reload."""
        x, y, pools, key = self.start_named(timeout=500, health_check_interval=100)
        self.set_everywhere(key, b"old")
        self.assertTrue(x.keys_held([key]))
        self.assertEqual(self.resolved("x"), "127.0.0.1:%d" % x.port)
        self.assertEqual(self.resolved("y"), y.addr)
        marker = self.log_size()
        open(self.dns_moved, "w").close()
        x.stop()
        self.wait_log(marker, "server x: 'flaky.walnut.test' now resolves to 127.0.0.2:%d "
                      "(was 127.0.0.1:%d)" % (x.port, x.port))
        self.wait_generation(1)
        self.assertEqual(self.resolved("x"), "127.0.0.2:%d" % x.port)
        self.set_everywhere(key, b"new")
        with h.Raw(x.port, host="127.0.0.2") as c:
            c.request(b"get %s\r\n" % key, b"VALUE %s 0 3\r\nnew\r\nEND\r\n" % key)
        # x was moved, not removed: the log says what closed (it said
        # "removed server x closed")
        self.wait_log(marker, "pool 'alpha': server x: its earlier connections (to 127.0.0.1:%d) "
                      "closed; new ones serve it" % x.port)
        self.assertNotIn("removed server x", self.log_since(marker))
        self.assertGreaterEqual(self.background_lookups(), 1)
        self.assertIsNone(self.servers_view()["last_reload"], "an address change is no reload")
        dns, prom = self.dns_counts("x")
        self.assertEqual(dns["moves"], 1, dns)
        self.assertGreaterEqual(dns["lookups"], 1, dns)
        self.assertEqual(dns["failures"], 0, dns)
        self.assertEqual(prom["moves"], 1, prom)
        self.assertEqual(self.dns_counts("y"), (None, None), "y is given by address")
        self.stop_clean()

    def test_answering_server_follows_its_name_every_interval(self):
        """A name that moves while the old address still answers (a blue/green
        switch) is followed within dns_refresh_interval; lookups that find the
        address in use change nothing (no new generation)."""
        x, y, pools, key = self.start_named(dns_refresh_interval=200)
        h.wait_until(lambda: self.background_lookups() >= 4, deadline=10.0,
                     what="lookups in the background")
        self.assertEqual(self.generation(), 0, "a lookup that found the same address moved x")
        self.set_everywhere(key, b"old")
        self.assertTrue(x.keys_held([key]))
        open(self.dns_moved, "w").close()
        self.wait_generation(1)
        self.set_everywhere(key, b"new")
        with h.Raw(x.port, host="127.0.0.2") as c:
            c.request(b"get %s\r\n" % key, b"VALUE %s 0 3\r\nnew\r\nEND\r\n" % key)
        h.mc_command(x.port, b"get %s\r\n" % key, b"END\r\n",
                     expect=b"VALUE %s 0 3\r\nold\r\nEND\r\n" % key)
        self.stop_clean()

    def test_clients_see_no_error_while_an_answering_server_moves(self):
        """Four clients keep one connection each and set and get keys of x without
        pause while its name moves to a server that answers too (both are up, as
        in a blue/green switch): requests on the old connections finish there, new
        ones go to the new address, and no client sees an error. (A get may miss
        once per client: its set went to the old server, the get to the new one,
        which has other data; twemproxy reconnecting does the same.)"""
        x, y, pools, key = self.start_named(dns_refresh_interval=200, timeout=2000)
        keys = [self.key_on(pools, "alpha", "x", prefix="c%d-" % i) for i in range(4)]
        moved_at = []
        errors, done, misses = [], [0] * 4, [0] * 4
        stop = threading.Event()

        def client(i):
            try:
                with h.Raw(self.px.port("alpha"), timeout=10) as c:
                    for n in range(200000):
                        if stop.is_set():
                            return
                        v = b"%d" % n
                        c.request(b"set %s 0 0 %d\r\n%s\r\n" % (keys[i], len(v), v),
                                  b"STORED\r\n")
                        c.send(b"get %s\r\n" % keys[i])
                        got = c.recv_until(b"END\r\n")
                        if got == b"END\r\n":
                            misses[i] += 1
                        elif got != b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (keys[i], len(v), v):
                            raise AssertionError("get %s: %r" % (keys[i], got))
                        done[i] += 1
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append("client %d after %d: %r" % (i, done[i], e))
        threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        try:
            h.wait_until(lambda: min(done) >= 50 or errors, deadline=10.0, what="load")
            before = list(done)
            open(self.dns_moved, "w").close()
            self.wait_generation(1)
            moved_at = list(done)
            h.wait_until(lambda: min(d - m for d, m in zip(done, moved_at)) >= 50 or errors,
                         deadline=10.0, what="load after the move")
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        self.assertEqual(errors, [])
        self.assertTrue(all(m > b for m, b in zip(moved_at, before)), (before, moved_at))
        self.assertTrue(all(m <= 1 for m in misses), misses)
        with h.Raw(x.port, host="127.0.0.2") as c:  # the new server has the latest values
            for k in keys:
                c.send(b"get %s\r\n" % k)
                self.assertTrue(c.recv_until(b"END\r\n").startswith(b"VALUE %s " % k))
        self.stop_clean()

    def test_redis_server_moves_with_its_auth(self):
        """A Redis pool with redis_auth: the server at the new address gets AUTH on
        its new connections before any request, as at start."""
        import redis  # python3-redis (test/install-deps.sh)
        port = h.free_port()
        bin_ = h.find_tool("redis-server", package="redis-server")
        procs = []
        for host in ("127.0.0.1", "127.0.0.2"):
            d = self.tmp.join("redis-" + host)
            os.makedirs(d, exist_ok=True)
            p = subprocess.Popen([bin_, "--port", str(port), "--bind", host, "--save", "",
                                  "--appendonly", "no", "--dir", d, "--requirepass", "pw",
                                  "--protected-mode", "no"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 stdin=subprocess.DEVNULL)
            self.addCleanup(lambda p=p: (p.kill(), p.wait()))
            self.assertTrue(h.wait_port(host, port, p), "redis-server on %s" % host)
            procs.append(p)
        pools = {"alpha": h.pool(["flaky.walnut.test:%d:1 x" % port], redis=True,
                                 redis_auth="pw", dns_refresh_interval=200)}
        self.px = self.start_flaky(pools, workers=2)
        old = redis.Redis(host="127.0.0.1", port=port, password="pw", socket_timeout=10)
        new = redis.Redis(host="127.0.0.2", port=port, password="pw", socket_timeout=10)
        for i in range(4):
            cl = redis.Redis(host=h.HOST, port=self.px.port("alpha"), password="pw",
                             socket_timeout=10)
            self.assertTrue(cl.set(b"k%d" % i, b"old"))
        self.assertEqual(old.get(b"k0"), b"old")
        open(self.dns_moved, "w").close()
        self.wait_generation(1)
        for i in range(4):
            cl = redis.Redis(host=h.HOST, port=self.px.port("alpha"), password="pw",
                             socket_timeout=10)
            self.assertTrue(cl.set(b"k%d" % i, b"new"))
            self.assertEqual(cl.get(b"k%d" % i), b"new")
        self.assertEqual([new.get(b"k%d" % i) for i in range(4)], [b"new"] * 4)
        self.assertEqual(old.get(b"k0"), b"old")
        self.stop_clean()

    def test_name_with_two_addresses_keeps_the_one_in_use(self):
        """A name with several addresses, listed in changing order (round-robin
        DNS): as long as the address in use is among them walnut stays, or every
        lookup could move a server and its connections about. Here the name
        gains 127.0.0.2, listed first; x stays at 127.0.0.1."""
        x, y, pools, key = self.start_named(dns_refresh_interval=200)
        open(self.dns_both, "w").close()
        self.wait_lookups(5, "lookups while the name has two addresses")
        self.assertEqual(self.generation(), 0, "x moved to the other address of its name")
        self.set_everywhere(key, b"one")
        self.assertTrue(x.keys_held([key]))
        self.assertNotIn("now resolves", self.px.log())
        self.stop_clean()

    def test_unresolved_at_start_is_found_without_a_reload(self):
        """DNS is down when walnut starts: the server has no address (its keys
        get "SERVER_ERROR Host is down", as twemproxy's do). Once DNS answers
        the server has its address within about a second, without a SIGHUP."""
        x, y = self.start_memcached(self.tmp, n=2)
        pools = {"alpha": h.pool(["flaky.walnut.test:%d:1 x" % x.port, spec(y.addr, "y")],
                                 timeout=2000)}
        self.dns_down = self.tmp.join("dns-down")
        open(self.dns_down, "w").close()
        self.px = self.start_flaky(pools, workers=2)
        key = self.key_on(pools, "alpha", "x")
        with h.Raw(self.px.port("alpha")) as c:
            c.request(b"set %s 0 0 1\r\nv\r\n" % key, b"SERVER_ERROR Host is down\r\n")
        time.sleep(1.5)  # lookups in the background fail meanwhile: nothing moves
        self.assertEqual(self.generation(), 0)
        self.assertIsNone(self.resolved("x"))
        os.unlink(self.dns_down)
        self.wait_generation(1, deadline=5.0)
        self.assertIn("server x: 'flaky.walnut.test' now resolves to 127.0.0.1:%d (was no "
                      "address)" % x.port, self.px.log())
        self.set_everywhere(key, b"v")
        self.assertTrue(x.keys_held([key]))
        # found at last, not moved: an alert on moves does not fire
        dns, prom = self.dns_counts("x")
        self.assertEqual((dns["moves"], prom["moves"]), (0, 0), dns)
        self.assertGreaterEqual(dns["failures"], 1, dns)
        self.stop_clean()

    def test_dns_outage_keeps_the_address(self):
        """Lookups that fail keep the address in use (one warning, not one per
        lookup), and the server serves on; when DNS is back, a move is followed."""
        x, y, pools, key = self.start_named(dns_refresh_interval=200)
        open(self.dns_down, "w").close()
        self.wait_lookups(5, "lookups while DNS is down")
        self.set_everywhere(key, b"kept")
        self.assertTrue(x.keys_held([key]))
        self.assertEqual(self.generation(), 0)
        warned = self.px.log().count("cannot look 'flaky.walnut.test' up again")
        self.assertEqual(warned, 1, self.px.log()[-3000:])
        self.assertIn("it stays at 127.0.0.1:%d" % x.port, self.px.log())
        dns, prom = self.dns_counts("x")
        self.assertGreaterEqual(dns["failures"], 5, dns)
        self.assertEqual(dns["moves"], 0, dns)
        self.assertGreaterEqual(prom["failures"], 5, prom)
        self.assertGreaterEqual(prom["lookups"], prom["failures"], prom)
        open(self.dns_moved, "w").close()
        os.unlink(self.dns_down)
        self.wait_generation(1)
        self.set_everywhere(key, b"new")
        with h.Raw(x.port, host="127.0.0.2") as c:
            c.request(b"get %s\r\n" % key, b"VALUE %s 0 3\r\nnew\r\nEND\r\n" % key)
        self.stop_clean()

    def test_reload_that_adds_a_name_starts_the_lookups(self):
        """Started with addresses only, nothing is looked up in the background;
        a reload that adds a server by name
        starts the lookups, and one that sets dns_refresh_interval to 0 stops them."""
        x, y = self.start_memcached(self.tmp, n=2)
        self.memcached_on_127_0_0_2(x.port)
        listen = "%s:%d" % (h.HOST, h.free_port())
        literal = {"alpha": h.pool([spec(y.addr, "y")], listen=listen,
                                   dns_refresh_interval=200)}
        self.px = self.start_flaky(literal, workers=2)
        named = {"alpha": h.pool(["flaky.walnut.test:%d:1 x" % x.port, spec(y.addr, "y")],
                                 listen=listen, dns_refresh_interval=200)}
        self.assertEqual(self.reload(pools=named)["generation"], 1)
        h.wait_until(lambda: self.background_lookups() >= 3, deadline=10.0,
                     what="lookups in the background")
        off = {"alpha": dict(named["alpha"], dns_refresh_interval=0)}
        self.assertEqual(self.reload(pools=off)["generation"], 2)
        time.sleep(0.3)  # a lookup out when the reload came ends meanwhile
        seen = self.background_lookups()
        time.sleep(1.0)
        self.assertEqual(self.background_lookups(), seen, "lookups with the interval 0")
        self.stop_clean()

    def test_every_server_has_its_turn_with_a_slow_resolver(self):
        """Two lookups run at once; with more servers due than that (a resolver
        that takes a second, 12 servers due every 100 ms), each has its turn in
        order instead of the first ones being looked up over and over."""
        y = self.start_memcached(self.tmp, n=1)[0]
        ports = [h.free_port() for _ in range(12)]
        lines = ["flaky.walnut.test:%d:1 s%d" % (p, i) for i, p in enumerate(ports)]
        pools = {"alpha": h.pool(lines + [spec(y.addr, "y")], dns_refresh_interval=100)}
        self.px = self.start_flaky(pools, workers=1)
        open(self.dns_slow, "w").close()
        start = len(h.read_text(self.dns_ports).split()) if os.path.exists(self.dns_ports) else 0

        def asked():
            return h.read_text(self.dns_ports).split()[start:]
        h.wait_until(lambda: len(set(asked())) == len(ports), deadline=20.0,
                     what="every server's name looked up (asked: %r)" % asked())
        self.assertLessEqual(len(asked()), len(ports) + 4, asked())
        os.unlink(self.dns_slow)
        self.stop_clean()

    def test_server_removed_and_walnut_stopped_during_a_lookup(self):
        """A lookup outlives its server: a reload removes the server (then adds it
        back) while its lookup is out, and walnut stops while another is out.
        The lookup's end must find nothing freed (the sanitizer builds check) and
        the stop waits at most for that one lookup."""
        x, y = self.start_memcached(self.tmp, n=2)
        listen = "%s:%d" % (h.HOST, h.free_port())
        xline = "flaky.walnut.test:%d:1 x" % x.port
        pools = {"alpha": h.pool([xline, spec(y.addr, "y")], listen=listen,
                                 dns_refresh_interval=100)}
        without_x = {"alpha": h.pool([spec(y.addr, "y")], listen=listen,
                                     dns_refresh_interval=100)}
        self.px = self.start_flaky(pools, workers=2)
        open(self.dns_slow, "w").close()
        for gen in (1, 3):
            self.wait_lookups(1, "a lookup out")
            self.assertEqual(self.reload(pools=without_x)["generation"], gen)
            self.assertEqual(self.reload(pools=pools)["generation"], gen + 1)
        key = self.key_on(pools, "alpha", "x")
        self.set_everywhere(key, b"v")
        # a resolver that does not answer for a minute: the stop does not wait.
        # Counted from before the file changes: a lookup logged between the
        # change and a count taken after it read 60 and holds the next back
        # for a minute (a CI run under ASan timed out so). The first lookup
        # logged may have read the old 1 s (the shim reads the file, then
        # logs); the one after it reads 60, or the first was that one.
        base = self.background_lookups()
        with open(self.dns_slow, "w") as f:
            f.write("60")
        h.wait_until(lambda: self.background_lookups() >= base + 1, deadline=10.0,
                     what="a lookup out")
        end = time.monotonic() + 3.0
        while self.background_lookups() < base + 2 and time.monotonic() < end:
            time.sleep(0.05)
        t0 = time.monotonic()
        self.stop_clean()
        self.assertLess(time.monotonic() - t0, 10.0, "the stop waited for the lookup")

    def test_lookup_threads_are_bounded_when_the_resolver_hangs(self):
        """The resolver stops answering (lookups in the background hang) while
        reloads remove and add a named server again and again: each server gone
        leaves its lookup's thread behind, and walnut used to start one more for
        each new server, a thread per reload for as long as the resolver hangs.
        Lookup threads, those left behind included, are two at most."""
        x, y = self.start_memcached(self.tmp, n=2)
        listen = "%s:%d" % (h.HOST, h.free_port())
        xline = "flaky.walnut.test:%d:1 x" % x.port
        pools = {"alpha": h.pool([xline, spec(y.addr, "y")], listen=listen,
                                 dns_refresh_interval=100)}
        without_x = {"alpha": h.pool([spec(y.addr, "y")], listen=listen,
                                     dns_refresh_interval=100)}
        self.px = self.start_flaky(pools, workers=2)

        def threads():
            return len(os.listdir("/proc/%d/task" % self.px.pid))
        self.wait_lookups(2, "lookups in the background")
        base = min(threads() for _ in range(20) if time.sleep(0.02) is None)
        open(self.dns_hang, "w").close()
        before = self.background_lookups()
        self.wait_lookups(1, "a lookup that hangs")
        seen = []
        for gen in range(1, 13, 2):
            self.assertEqual(self.reload(pools=without_x)["generation"], gen)
            self.assertEqual(self.reload(pools=pools)["generation"], gen + 1)
            time.sleep(0.3)  # the new x's first lookup would be due after 100 ms
            seen.append(threads())
        self.assertLessEqual(max(seen), base + 2, "threads: %d at first, then %r" % (base, seen))
        self.assertLessEqual(self.background_lookups() - before, 2, "lookups started")
        # the reloads themselves were applied: y serves, x (added back) too
        with h.Raw(self.px.port("alpha")) as c:
            c.request(b"version\r\n", b"VERSION ")
        self.stop_clean()

    def test_report_about_the_old_address_does_not_count(self):
        """A worker still on the generation before a move (here it cannot apply the
        new one: the test hook) fails x at its old address. control runs the new
        generation, where x is elsewhere: that failure is not x's at its new
        address, and is not counted against it."""
        x, y, pools, key = self.start_named(dns_refresh_interval=200, timeout=1000,
                                            health_check_interval=60000)
        open(self.refuse, "w").close()
        marker = self.log_size()
        open(self.dns_moved, "w").close()
        self.wait_log(marker, "0 of 2 worker(s) run generation 1")
        x.stop()  # the old address stops answering
        for _ in range(4):
            with h.Raw(self.px.port("alpha")) as c:
                c.send(b"get %s\r\n" % key)
                self.assertTrue(c.recv_line().startswith(b"SERVER_ERROR"))
        time.sleep(0.5)  # the workers' reports reach control
        sv = [p for p in self.servers_view()["pools"][0]["servers"] if p["name"] == "x"][0]
        self.assertEqual((sv["failures"], sv["health"]), (0, "up"), sv)
        os.unlink(self.refuse)
        self.stop_clean()

    def test_an_address_change_asks_no_dns_on_control(self):
        """A server whose name never resolves (down.walnut.test) beside one that
        moves: the generation that moves the one must not look the other up on
        control's thread (blocking it for the resolver's timeout at each move), nor
        may a SIGHUP while lookups run in the background; they ask for it."""
        x, y = self.start_memcached(self.tmp, n=2)
        self.memcached_on_127_0_0_2(x.port)
        listen = "%s:%d" % (h.HOST, h.free_port())
        pools = {"alpha": h.pool(["flaky.walnut.test:%d:1 x" % x.port, spec(y.addr, "y"),
                                  "down.walnut.test:%d:1 z" % h.refused_port()],
                                 listen=listen, dns_refresh_interval=200)}
        self.px = self.start_flaky(pools, workers=2)
        at_start = self.lookups("down:").count("main")
        self.assertGreaterEqual(at_start, 1, "at start, on control")
        open(self.dns_moved, "w").close()
        self.wait_generation(1)
        self.assertEqual(self.reload(pools=pools)["generation"], 2)
        h.wait_until(lambda: len(self.lookups("down:")) >= 3, deadline=10.0,
                     what="down.walnut.test asked in the background")
        self.assertEqual(self.lookups("down:").count("main"), at_start, self.lookups("down:"))
        self.assertEqual(self.resolved("x"), "127.0.0.2:%d" % x.port)
        self.assertIsNone(self.resolved("z"))
        # the warning at start, not once per generation
        self.assertEqual(self.px.log().count("server z: cannot resolve"), 1)
        self.stop_clean()


class TestReloadLooksNamesUpAhead(HostileCase):
    """A reload that adds a server (or a listen address) given by name looked
    it up on control's thread, blocking control's loop for as long as the
    resolver took: with DNS not answering (glibc: 5 s a try), /metrics,
    /healthz, SIGTERM and systemd's WATCHDOG=1 all waited, and one such
    name was enough to miss a WatchdogSec of 10 s (systemd then kills
    walnut mid-reload). The names are now looked up on threads of their own
    ("reload-dns") while control's loop goes on; the reload is applied
    when they have answered."""

    def healthz_seconds(self):
        t0 = time.monotonic()
        self.px.http("/healthz", timeout=30)
        return time.monotonic() - t0

    def generation(self):
        return self.servers_view()["generation"]

    def test_slow_names_do_not_hold_control(self):
        x, y = self.start_memcached(self.tmp, n=2)
        listen = "%s:%d" % (h.HOST, h.free_port())
        beta_port = h.free_port()
        before = {"alpha": h.pool([spec(y.addr, "y")], listen=listen)}
        self.px = self.start_flaky(before, workers=2)
        xline = "flaky.walnut.test:%d:1 x" % x.port
        added = {"alpha": h.pool([spec(y.addr, "y"), xline], listen=listen),
                 "beta": h.pool([spec(y.addr, "y")], listen="flaky.walnut.test:%d" % beta_port)}
        again = {"alpha": h.pool([spec(y.addr, "y"), xline], listen=listen,
                                 server_connections=2),
                 "beta": added["beta"]}
        with open(self.dns_slow, "w") as f:
            f.write("4")  # each lookup of flaky.walnut.test takes 4 s
        marker = self.log_size()
        asked = len(self.lookups())
        self.reload_nowait(pools=added)
        h.wait_until(lambda: len(self.lookups()) > asked, deadline=10.0,
                     what="the reload's lookup under way")
        # control answers meanwhile, and a second SIGHUP waits for the first
        took = self.healthz_seconds()
        self.assertLess(took, 2.0, "/healthz during the reload's lookup")
        self.assertIn("reload: looking up 1 name(s) first", self.log_since(marker))
        self.assertEqual(self.generation(), 0)
        self.reload_nowait(pools=again)
        self.wait_log(marker, "still looking names up; this one follows it")
        self.wait_log(marker, "run generation 2", deadline=30.0)
        self.assertEqual(self.generation(), 2)
        self.px.pools = again
        os.unlink(self.dns_slow)
        who = self.lookups()
        self.assertEqual(who.count("reload-dns"), 1, "one lookup for the host: %r" % who)
        key = self.key_on(again, "alpha", "x")
        with h.Raw(self.px.port("alpha")) as c:
            c.request(b"set %s 0 0 1\r\nv\r\n" % key, b"STORED\r\n")
        self.assertTrue(x.keys_held([key]))
        with h.Raw(beta_port) as c:
            c.request(b"version\r\n", b"VERSION " + y.stats()["version"].encode() + b"\r\n")
        # a name that does not resolve, found out ahead: the reload fails, saying why
        open(self.dns_down, "w").close()
        marker = self.log_size()
        z = "flaky.walnut.test:%d:1 z" % h.refused_port()
        self.reload_nowait(pools={"alpha": h.pool([spec(y.addr, "y"), xline, z],
                                                  listen=listen, server_connections=2),
                                  "beta": added["beta"]})
        self.wait_log(marker, "still serving the configuration loaded before")
        self.assertIn("server z: cannot resolve 'flaky.walnut.test'", self.log_since(marker))
        self.assertEqual(self.generation(), 2)
        os.unlink(self.dns_down)
        # and a stop during a lookup does not wait for it
        with open(self.dns_slow, "w") as f:
            f.write("20")
        marker = self.log_size()
        self.reload_nowait(pools={"alpha": h.pool([spec(y.addr, "y"), xline, z],
                                                  listen=listen, server_connections=2),
                                  "beta": added["beta"]})
        self.wait_log(marker, "reload: looking up 1 name(s) first")
        t0 = time.monotonic()
        self.stop_clean()
        self.assertLess(time.monotonic() - t0, 10.0, "the stop waited for the reload's lookup")
        self.assertIn("that reload is not applied", self.log_since(marker))


class TestWorkerCannotApply(HostileCase):
    def test_dns_outage_during_reload_does_not_wedge_reloads(self):
        """server_connections of a kept server (a host name) changes while DNS
        is down. At fe6da29 control kept the server (no lookup) and committed;
        each worker opened it anew, its own lookup failed and it stayed on the
        old configuration, and its CONFIG_DONE carried the old generation, so
        control ignored it: the reload never converged and every later SIGHUP
        was deferred for good (18209aa fixed that part). Now only control looks
        names up, and not a kept server's: it keeps its address, and every
        worker takes the configuration."""
        mc = self.start_memcached(self.tmp, n=2)
        x, y = mc
        xport = x.port

        def conf(conns):
            return {"alpha": h.pool(["flaky.walnut.test:%d:1 x" % xport, spec(y.addr, "y")],
                                    listen=listen, server_connections=conns)}
        listen = "%s:%d" % (h.HOST, h.free_port())
        self.px = self.start_flaky(conf(1))
        with h.Raw(self.px.port("alpha")) as c:
            c.request(b"set a 0 0 1\r\n1\r\n", b"STORED\r\n")
        open(self.dns_down, "w").close()
        marker = self.log_size()
        self.reload_nowait(conf(2))
        # Applied on every worker, the old address kept.
        def settled():
            v = self.servers_view()
            return v["generation_converged"] and v["generation"] == 1 and v
        try:
            v = h.wait_until(settled, deadline=8.0, what="the reload to settle")
        finally:
            os.unlink(self.dns_down)
        self.assertNotIn("error", v["last_reload"])
        # DNS is back: the next reload must be applied and converge.
        self.reload_nowait(conf(3))
        def applied():
            v = self.servers_view()
            return v["generation_converged"] and v["generation"] == 2 and \
                "applied" in v["last_reload"] and "error" not in v["last_reload"]
        h.wait_until(applied, deadline=8.0, what="a reload after DNS came back")
        # Every worker runs it: alpha's servers take two connections each.
        with h.Raw(self.px.port("alpha")) as c:
            c.request(b"get a\r\n", b"VALUE a 0 1\r\n1\r\nEND\r\n")
        self.assertNotIn("still reaching the workers", self.log_since(marker))
        self.stop_clean()

    def test_stuck_worker_gets_a_ring_it_cannot_index(self):
        """A worker stuck on its old configuration (2 servers: it could not
        apply the new one; the test hook refuses it as out of memory would)
        later gets a ring control built for the new one (3 servers) when a
        server is ejected: swap_ring checked only the pool index, and
        wn_pool_route then read p->servers[2] past the end of a 2-entry
        array."""
        mc = self.start_memcached(self.tmp, n=3)
        x, y, z = mc
        listen = "%s:%d" % (h.HOST, h.free_port())
        base = {"auto_eject_hosts": True, "server_failure_limit": 1,
                "server_retry_timeout": 60000, "health_check_interval": 200, "timeout": 300}

        def conf(servers, conns):
            return {"alpha": h.pool(servers, listen=listen, server_connections=conns, **base)}
        two = ["flaky.walnut.test:%d:1 x" % x.port, spec(y.addr, "y")]
        three = two + [spec(z.addr, "z")]
        self.px = self.start_flaky(conf(two, 1), workers=1)
        open(self.refuse, "w").close()
        marker = self.log_size()
        self.reload_nowait(conf(three, 2))
        self.wait_log(marker, "cannot apply generation 1", deadline=5.0)
        os.unlink(self.refuse)
        # Eject y: control rebuilds the 3-server ring and sends it.
        y.kill()
        h.wait_until(lambda: "ejected" in self.log_since(marker), deadline=10.0,
                     what="y ejected")
        time.sleep(0.5)
        # Keys control's ring puts on z (index 2 of 3): the stuck worker has 2 servers.
        path = self.tmp.join("three.yml")
        with open(path, "w") as f:
            f.write(h.render_config(conf(three, 2)))
        cand = [hashlib.md5(b"%d" % i).hexdigest().encode() for i in range(300)]
        got = h.walnut_locate(path, cand)
        keys = [k for k in cand if got[("alpha", k)][0] == "z"][:16]
        self.assertTrue(keys)
        # The worker runs its old configuration: a request may fail (y is
        # down and that worker cannot know), but each must be answered.
        errors = []
        try:
            with h.Raw(self.px.port("alpha"), timeout=5) as c:
                for k in keys:
                    c.send(b"set %s 0 0 1\r\nv\r\n" % k)
                    line = c.recv_line()
                    if line != b"STORED\r\n" and not line.startswith(b"SERVER_ERROR "):
                        errors.append((k, line))
        except (OSError, AssertionError) as e:
            errors.append(("connection", str(e)))
        self.assertTrue(self.px.alive(), "walnut died:\n%s" % self.px.log()[-4000:])
        self.check_sanitizers()
        self.assertEqual(errors, [], "requests on the stuck worker after the ejection")
        self.stop_clean()


    def test_refused_configuration_is_not_converged(self):
        """Every worker refuses generation 1 (the test hook: as out of memory). The
        reload used to be reported converged all the same ("all 2 worker(s) run
        generation 1", generation_converged true) while the workers served
        generation 0. Now the log and /servers say how many run it, and the next
        reload that reaches them converges."""
        x, y = self.start_memcached(self.tmp, n=2)
        listen = "%s:%d" % (h.HOST, h.free_port())

        def conf(conns):
            return {"alpha": h.pool([spec(x.addr, "x"), spec(y.addr, "y")], listen=listen,
                                    server_connections=conns)}
        self.px = self.start_flaky(conf(1), workers=2)
        open(self.refuse, "w").close()
        marker = self.log_size()
        self.reload_nowait(conf(2))
        self.wait_log(marker, "0 of 2 worker(s) run generation 1")
        v = self.servers_view()
        self.assertEqual(v["generation"], 1)
        self.assertFalse(v["generation_converged"], v)
        self.assertIn("applied with errors", v["last_reload"])
        self.assertNotIn("all 2 worker(s) run generation 1", self.log_since(marker))
        with h.Raw(self.px.port("alpha")) as c:  # still served, on generation 0
            c.request(b"set a 0 0 1\r\n1\r\nget a\r\n", b"STORED\r\nVALUE a 0 1\r\n1\r\nEND\r\n")
        os.unlink(self.refuse)
        v = self.reload(pools=conf(3))
        self.assertEqual(v["generation"], 2)
        self.assertTrue(v["generation_converged"], v)
        self.assertIn("all 2 worker(s) run generation 2", self.log_since(marker))
        self.stop_clean()

    def test_stats_on_a_worker_behind_a_reload_that_reordered_pools(self):
        """memcached's `stats` carries the asking worker's pool index to
        control, which reads it in its own configuration. From a worker not
        yet on control's generation (here it cannot apply it: the test hook)
        the reply left out every pool line, though the reload only reordered
        the pools (adversarial run: 253-635 of about 25,000 stats during
        reloads that swapped the order). Now control finds the pool by name
        in the generation before; the reply is the asker's pool's, never
        another's."""
        mc = self.start_memcached(self.tmp, n=1)
        a, b, c = (h.pool(mc, listen="%s:%d" % (h.HOST, h.free_port())) for _ in range(3))
        self.px = self.start_flaky({"a": a, "b": b, "c": c}, workers=1)
        with h.Raw(self.px.port("a")) as cl:
            for _ in range(7):
                cl.request(b"get k\r\n", b"END\r\n")
        open(self.refuse, "w").close()
        marker = self.log_size()
        self.reload_nowait({"c": c, "b": b, "a": a})
        self.wait_log(marker, "0 of 1 worker(s) run generation 1")
        with h.Raw(self.px.port("c")) as cl:
            cl.request(b"get k\r\n", b"END\r\n")
            cl.send(b"stats\r\n")
            reply = cl.recv_until(b"END\r\n").decode()
        self.assertIn("STAT requests 2\r\n", reply)  # c's get and this stats, not a's 7
        self.assertIn("STAT server_requests 1\r\n", reply)
        os.unlink(self.refuse)
        self.stop_clean()

    def server_state(self, name):
        for p in self.servers_view()["pools"]:
            for sv in p["servers"]:
                if sv["name"] == name:
                    return sv
        raise AssertionError("no server %s in /servers" % name)

    def test_report_from_before_a_reload_counts(self):
        """A worker's FAIL or OK sent under the previous generation (before it took a
        reload, or, as here, because it could not take it) was dropped by control:
        an OK that should clear a server's failure count was lost, the count stayed,
        and a later failure ejected a server that had been fine since. Reports of
        the previous generation now count for the servers the configuration in
        force keeps, matched by name."""
        x, y = self.start_memcached(self.tmp, n=2)
        listen = "%s:%d" % (h.HOST, h.free_port())

        def conf(conns):
            return {"alpha": h.pool([spec(x.addr, "x"), spec(y.addr, "y")], listen=listen,
                                    server_connections=conns, auto_eject_hosts=True,
                                    server_failure_limit=5, timeout=300)}
        self.px = self.start_flaky(conf(1), workers=1)
        key = self.key_on(conf(1), "alpha", "x")
        with h.Raw(self.px.port("alpha"), timeout=10) as c:
            x.sigstop()
            try:
                c.send(b"get %s\r\n" % key)
                self.assertTrue(c.recv_line().startswith(b"SERVER_ERROR"))
            finally:
                x.sigcont()
        h.wait_until(lambda: self.server_state("x")["failures"] >= 1, deadline=5,
                     what="x's failure counted")
        self.assertFalse(self.server_state("x")["ejected"])
        open(self.refuse, "w").close()
        marker = self.log_size()
        self.reload_nowait(conf(2))
        self.wait_log(marker, "0 of 1 worker(s) run generation 1")
        # The worker (generation 0) reaches x again: its OK carries generation 0.
        with h.Raw(self.px.port("alpha"), timeout=10) as c:
            c.request(b"get %s\r\n" % key, b"END\r\n")
        h.wait_until(lambda: self.server_state("x")["failures"] == 0, deadline=5,
                     what="x's failure count cleared by the worker's OK")
        os.unlink(self.refuse)
        self.stop_clean()

    def test_workers_never_ask_dns(self):
        """Only control looks a name up (a server's when it is added, a new listen
        address's); workers connect to the address it found. Each worker used to look every name up
        again, on its own loop, at start and at every reload: a slow DNS stalled
        every client of that worker, and a name with several addresses could send
        workers (and control's probes) to different servers."""
        x, y = self.start_memcached(self.tmp, n=2)
        listen = "%s:%d" % (h.HOST, h.free_port())
        beta_port = h.free_port()

        def conf(conns, beta=False):
            pools = {"alpha": h.pool(["flaky.walnut.test:%d:1 x" % x.port, spec(y.addr, "y")],
                                     listen=listen, server_connections=conns)}
            if beta:  # a listen address by name, new in a reload
                pools["beta"] = h.pool([spec(y.addr, "y")],
                                       listen="flaky.walnut.test:%d" % beta_port)
            return pools
        self.px = self.start_flaky(conf(1), workers=2)
        key = self.key_on(conf(1), "alpha", "x")
        v = self.reload(pools=conf(2, beta=True))  # every worker opens x anew, and beta
        self.assertEqual(v["generation"], 1)
        self.assertTrue(v["generation_converged"], v)
        for i in range(8):  # connections land on both workers
            with h.Raw(self.px.port("alpha")) as c:
                c.request(b"set %s 0 0 1\r\n%d\r\n" % (key, i), b"STORED\r\n")
            with h.Raw(beta_port) as c:
                c.request(b"version\r\n", b"VERSION " + y.stats()["version"].encode() + b"\r\n")
        h.mc_command(x.port, b"get %s\r\n" % key, b"END\r\n",
                     expect=b"VALUE %s 0 1\r\n7\r\nEND\r\n" % key)
        who = self.lookups()
        # control's own at start, the reload's (on its thread, "reload-dns",
        # for the new listen address), and maybe one in the background
        # (control's lookup threads); never a worker
        self.assertEqual([w for w in who if w.startswith("wn-")], [],
                         "lookups of flaky.walnut.test by thread: %r" % who)
        self.assertGreaterEqual(who.count("main"), 1, "at start: %r" % who)
        self.assertGreaterEqual(who.count("reload-dns"), 1, "at the reload: %r" % who)
        self.stop_clean()

    def test_kept_server_keeps_its_address(self):
        """A reload asks DNS only about servers it adds: a kept server keeps the address
        it was looked up to, even after its name moved (asking again would stall
        control for the resolver's timeout per server while DNS is down). With the
        lookups in the background off (dns_refresh_interval 0), removing the server
        and adding it back looks the name up again: every worker then reaches it at
        its new address (same port on 127.0.0.2)."""
        x, y = self.start_memcached(self.tmp, n=2)
        moved = subprocess.Popen(
            [h.find_tool("memcached", package="memcached"), "-l", "127.0.0.2", "-p", str(x.port),
             "-U", "0", "-m", "16", "-t", "1"] + (["-u", "nobody"] if os.geteuid() == 0 else []),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        self.addCleanup(lambda: (moved.kill(), moved.wait()))
        self.assertTrue(h.wait_port("127.0.0.2", x.port, moved), "memcached on 127.0.0.2")
        listen = "%s:%d" % (h.HOST, h.free_port())
        xline = "flaky.walnut.test:%d:1 x" % x.port
        pools = {"alpha": h.pool([xline, spec(y.addr, "y")], listen=listen,
                                 dns_refresh_interval=0)}
        without_x = {"alpha": h.pool([spec(y.addr, "y")], listen=listen, dns_refresh_interval=0)}
        self.px = self.start_flaky(pools, workers=2)
        key = self.key_on(pools, "alpha", "x")
        with h.Raw(self.px.port("alpha")) as c:
            c.request(b"set %s 0 0 3\r\nold\r\n" % key, b"STORED\r\n")
        open(self.dns_moved, "w").close()
        asked = len(self.lookups())
        v = self.reload(pools=pools)  # the same file: nothing asked, x where it was
        self.assertEqual(v["generation"], 1)
        self.assertEqual(len(self.lookups()), asked, "a reload asked DNS about a kept server")
        for _ in range(8):  # both workers
            with h.Raw(self.px.port("alpha")) as c:
                c.request(b"get %s\r\n" % key, b"VALUE %s 0 3\r\nold\r\nEND\r\n" % key)
        self.reload(pools=without_x)
        v = self.reload(pools=pools)  # added again: looked up, now at 127.0.0.2
        self.assertEqual(v["generation"], 3)
        self.assertTrue(v["generation_converged"], v)
        for _ in range(8):
            with h.Raw(self.px.port("alpha")) as c:
                c.send(b"get %s\r\n" % key)
                got = c.recv_until(b"END\r\n")
                self.assertIn(got, (b"END\r\n", b"VALUE %s 0 3\r\nnew\r\nEND\r\n" % key))
                c.request(b"set %s 0 0 3\r\nnew\r\n" % key, b"STORED\r\n")
        with h.Raw(x.port, host="127.0.0.2") as c:
            c.request(b"get %s\r\n" % key, b"VALUE %s 0 3\r\nnew\r\nEND\r\n" % key)
        h.mc_command(x.port, b"get %s\r\n" % key, b"END\r\n",
                     expect=b"VALUE %s 0 3\r\nold\r\nEND\r\n" % key)
        self.stop_clean()


# ---------------------------------------------------------------------------
# F2: a retired server's counters follow its name into a later configuration


class TestCommandNamesOutOfMemory(HostileCase):
    def test_reload_adding_pools_without_memory_for_command_names(self):
        """control keeps each pool's command names for the stats views. A
        reload that could not allocate them (the hook, as out of memory
        would) kept the old table, an entry a pool, and the views read it
        for every pool of the new file: past its end once pools were added
        (code review of an adversarial run). Now no command counters are
        shown until a reload can allocate them; every view stays whole."""
        mc = self.start_memcached(self.tmp, n=1)
        r = h.RedisServer(self.tmp, name="names").start()
        self.addCleanup(r.stop)
        one = {"alpha": h.pool(mc)}
        self.px = self.start_flaky(one, workers=2)
        with h.Raw(self.px.port("alpha")) as c:
            c.request(b"get k\r\n", b"END\r\n")
        self.assertIn('walnut_pool_commands_total{pool="alpha",command="get"} 1', self.px.metrics())
        open(self.no_cmd_tables, "w").close()
        more = dict(one, beta=h.pool(mc), gamma=h.pool([r], redis=True), delta=h.pool(mc))
        marker = self.log_size()
        self.assertEqual(self.reload(pools=more)["generation"], 1)
        self.assertIn("command counters are not reported until a reload can allocate",
                      self.log_since(marker))
        for name in ("beta", "delta"):
            with h.Raw(self.px.port(name)) as c:
                c.request(b"get k\r\n", b"END\r\n")
        with h.Raw(self.px.port("gamma")) as c:
            c.request(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", b"$-1\r\n")
        text = self.px.metrics()
        self.assertNotIn("walnut_pool_commands_total{", text)
        self.assertIn('walnut_pool_requests_total{pool="delta"} 1', text)
        self.assertIn("delta", json.dumps(self.px.http_json()))
        # its get, then this stats
        self.assertIn("STAT requests 2\r\n", h.mc_command(self.px.port("delta"), b"stats\r\n",
                                                          b"END\r\n").decode())
        os.unlink(self.no_cmd_tables)
        self.assertEqual(self.reload(pools=dict(more, epsilon=h.pool(mc)))["generation"], 2)
        with h.Raw(self.px.port("epsilon")) as c:
            c.request(b"get k\r\n", b"END\r\n")
        text = self.px.metrics()
        self.assertIn('walnut_pool_commands_total{pool="epsilon",command="get"} 1', text)
        self.assertIn('walnut_pool_commands_total{pool="gamma",command="get"} 1', text)
        self.stop_clean()


class TestReplacedServerKeepsClientOrder(HostileCase):
    """A reload that replaces a kept backend's server (a new
    server_connections; or the server removed and added back) while the old
    one still has requests out. A client's `set k B` went out on the old
    connection behind another client's gets; its next `get k` went out on a
    new connection and memcached ran it first: STORED, then the old value A
    (every 1 -> 2 step; 4 of 5 removed-and-added tries). Expected: a client's
    requests to one backend run in the order it sent them (README: each
    client uses the same connection for a given server), so the get sees B.
    memcached is SIGSTOPped only to hold the window open."""

    def check_order(self, mode):
        mc, other = self.start_memcached(self.tmp, n=2)
        listen = "%s:%d" % (h.HOST, h.free_port())

        def conf(step):
            if mode == "conns":
                return {"a": h.pool([spec(mc.addr, "m0")], listen=listen,
                                    server_connections=1 + step)}
            return {"a": h.pool([spec(mc.addr, "m0")] if step else [spec(other.addr, "m1")],
                                listen=listen)}
        self.px = self.start_proxy(self.tmp, conf(0 if mode == "conns" else 1), workers=1)
        port = self.px.port("a")
        for t in range(3):
            if mode == "conns" and t > 0:
                self.reload(pools=conf(0))  # back to one connection, outside the window
            key = b"order%d" % t
            c, noise = h.Raw(port, timeout=30), h.Raw(port, timeout=30)
            self.addCleanup(c.close)
            self.addCleanup(noise.close)
            c.request(b"set %s 0 0 1\r\nA\r\n" % key, b"STORED\r\n")
            noise.request(b"version\r\n", b"VERSION ")
            noise.recv_line()
            mc.sigstop()
            try:
                noise.send(b"get noise\r\n" * 3000)  # queued ahead on the old connection
                time.sleep(0.2)
                c.send(b"set %s 0 0 1\r\nB\r\n" % key)
                time.sleep(0.2)
                if mode == "conns":
                    self.reload(pools=conf(1))
                else:
                    self.reload(pools=conf(0))  # removed (the pool serves m1 meanwhile)
                    self.reload(pools=conf(1))  # and back: same name and address
                c.send(b"get %s\r\n" % key)
                time.sleep(0.3)
            finally:
                mc.sigcont()
            c.expect(b"STORED\r\n", what="try %d: set B" % t)
            c.expect(b"VALUE %s 0 1\r\nB\r\nEND\r\n" % key,
                     what="try %d: the get sent after the set" % t)
            noise.expect(b"END\r\n" * 3000, timeout=30, what="the other client's gets")
        self.stop_clean()

    def test_new_server_connections(self):
        self.check_order("conns")

    def test_server_removed_and_added_back(self):
        self.check_order("readd")


class TestRetiredServerGauges(HostileCase):
    def test_removed_then_readded_server_gauges_do_not_underflow(self):
        """A server removed while a request waits on it, then added back (same
        name) by the next reload before it answered: its gauges must not go
        below zero when the old connection finally drains and closes."""
        mc = self.start_memcached(self.tmp, n=2)
        x, y = mc
        both = {"alpha": h.pool([spec(x.addr, "x"), spec(y.addr, "y")],
                                listen="%s:%d" % (h.HOST, h.free_port()))}
        only_y = {"alpha": dict(both["alpha"], servers=[spec(y.addr, "y")])}
        self.px = self.start_proxy(self.tmp, both, workers=1, verbosity=6)
        port = self.px.port("alpha")
        key = self.key_on(both, "alpha", "x")
        with h.Raw(port) as c:
            c.request(b"set %s 0 0 1\r\nv\r\n" % key, b"STORED\r\n")
        marker = self.log_size()
        x.sigstop()
        waiting = h.Raw(port)
        self.addCleanup(waiting.close)
        try:
            waiting.send(b"get %s\r\n" % key)

            def queued_on_x():  # on x's connection, unanswered
                return sum(float(line.rsplit(" ", 1)[1]) for line in self.metrics().splitlines()
                           if line.startswith(("walnut_server_in_queue{",
                                               "walnut_server_out_queue{"))
                           and 'server="x"' in line)
            h.wait_until(lambda: queued_on_x() >= 1, deadline=20, what="the get queued on x")
            v = self.reload(pools=only_y)
            self.assertEqual(v["generation"], 1)
            v = self.reload(pools=both)
            self.assertEqual(v["generation"], 2)
        finally:
            x.sigcont()
        waiting.expect(b"VALUE %s 0 1\r\nv\r\nEND\r\n" % key,
                       what="the request that waited on the removed server")
        # The retired connection drains and closes (reaped every 100 ms).
        self.wait_log(marker, "pool 'alpha': removed server x closed")
        text = self.metrics()
        bad = []
        for line in text.splitlines():
            if line.startswith("walnut_server_") and 'server="x"' in line:
                val = int(float(line.rsplit(" ", 1)[1]))
                if val >= 1 << 62:
                    bad.append(line)
        self.assertEqual(bad, [], "gauges of server x went below zero after remove + re-add:\n"
                         + "\n".join(bad))
        self.stop_clean()


# ---------------------------------------------------------------------------
# F3: a unix-socket listen address is never checked before a reload commits


class TestUnixListenChecked(HostileCase):
    def test_unix_move_to_unbindable_path_is_refused(self):
        """A pool moved to a unix path that cannot be bound (its directory does
        not exist): README says a listen address that cannot be served is
        refused and changes nothing. walnut applies it, reports success,
        closes (and unlinks) the old socket, and the pool listens nowhere."""
        mc = self.start_memcached(self.tmp, n=1)
        old = self.tmp.join("alpha.sock")
        pools = {"alpha": h.pool(mc, listen=old)}
        self.px = self.start_proxy(self.tmp, pools, workers=2)
        bad = self.tmp.join("no-such-dir", "alpha.sock")
        view = self.reload(pools={"alpha": h.pool(mc, listen=bad)})
        try:
            self.assertEqual(view["generation"], 0,
                             "a reload to an unbindable unix path was applied: %s" % view)
            self.assertIn("failed", view["last_reload"])
        finally:
            # Whatever the verdict, the pool must still be reachable somewhere.
            reachable = any(os.path.exists(p) for p in (old, bad))
            self.assertTrue(reachable, "pool alpha listens nowhere after the reload "
                            "(last_reload: %r)" % self.servers_view()["last_reload"])
        with h.Raw(old) as c:
            c.request(b"version\r\n", b"VERSION ", what="the old unix address")
        self.stop_clean()

    def test_unix_path_another_process_serves_is_refused(self):
        """A new pool on a unix socket path another process is serving: README
        says such a reload is refused. walnut unlinks the other process's
        socket file and takes the path over."""
        mc = self.start_memcached(self.tmp, n=1)
        pools = {"alpha": h.pool(mc)}
        self.px = self.start_proxy(self.tmp, pools, workers=1)
        theirs = self.tmp.join("theirs.sock")
        other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(other.close)
        other.bind(theirs)
        other.listen(4)
        view = self.reload(pools={"alpha": pools["alpha"], "beta": h.pool(mc, listen=theirs)})
        # The other process must still own its path: a client connecting
        # there reaches it, not walnut.
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(2)
        try:
            probe.connect(theirs)
            other.settimeout(2)
            try:
                conn, _ = other.accept()
                conn.close()
                reached_other = True
            except OSError:
                reached_other = False
        finally:
            probe.close()
        self.assertTrue(reached_other, "walnut took over the unix socket path another process "
                        "serves (reload view: %s)" % view)
        self.assertEqual(view["generation"], 0, "reload onto a served unix path was applied")
        self.stop_clean()


class TestUnixPathSpellings(HostileCase):
    """One socket file spelt two ways ("dir/./s", "dir//s", a symlinked
    directory) was two addresses: two pools on it passed -t and the start,
    the second bind replaced the first's file and pool a's clients reached
    pool b's servers; and a reload respelling a pool's own path was refused
    ("another process serves it": walnut). An adversarial pass, 3 Dec."""

    def test_two_spellings_of_one_path_are_one_address(self):
        mc = self.start_memcached(self.tmp, n=2)
        link = self.tmp.join("link")
        os.symlink(self.tmp.path, link)
        path = self.tmp.join("s.sock")
        for other in (self.tmp.path + "/./s.sock", self.tmp.path + "//s.sock",
                      os.path.join(link, "s.sock")):
            with self.subTest(other=other):
                conf = self.tmp.join("two.yml")
                with open(conf, "w") as f:
                    f.write(h.render_config({"a": h.pool(mc[:1], listen=path),
                                             "b": h.pool(mc[1:], listen=other)}))
                r = h.run_walnut(["-t", "-c", conf])
                err = r.stderr.decode("utf-8", "replace")
                self.assertEqual(r.returncode, 1, err)
                self.assertIn("cannot listen on %s: pool 'a' listens there" % other, err)

    def test_a_reload_respelling_its_own_path_is_applied(self):
        mc = self.start_memcached(self.tmp, n=1)
        path = self.tmp.join("r.sock")
        self.px = self.start_proxy(self.tmp, {"alpha": h.pool(mc, listen=path)}, workers=2)
        view = self.reload(pools={"alpha": h.pool(mc, listen=self.tmp.path + "/./r.sock")})
        self.assertEqual(view["generation"], 1, "the respelt path was refused: %s" % view)
        with h.Raw(path) as c:
            c.request(b"set k 0 0 1\r\nv\r\n", b"STORED\r\n")
        self.stop_clean()


class TestListenMoveThatCannotBind(HostileCase):
    def test_pool_keeps_its_old_listener_when_the_new_one_fails(self):
        """A reload moves a pool's listen address while walnut is one
        descriptor short of its limit: control's checks pass, the worker's
        bind of the new address fails (too many open files), and the worker
        closed the old listener anyway: the pool listened nowhere, while
        /healthz said ok (adversarial pass). Expected: the old listener
        serves on, the log says why, a reload back to the old address is
        accepted (it was refused: "another process serves it", walnut being
        that process), and a later reload binds the new address."""
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < 512:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
        x, y = self.start_memcached(self.tmp, n=2)
        old_listen = "%s:%d" % (h.HOST, h.free_port())
        new_listen = "%s:%d" % (h.HOST, h.free_port())

        def conf(listen, servers):
            return {"alpha": h.pool(servers, listen=listen)}
        self.px = self.start_proxy(self.tmp, conf(old_listen, [x]), nofile=64)
        port_old, port_new = int(old_listen.rsplit(":", 1)[1]), int(new_listen.rsplit(":", 1)[1])
        keep = h.Raw(port_old, timeout=10)
        self.addCleanup(keep.close)
        keep.request(b"version\r\n", b"VERSION 1.6.18\r\n")

        def nfds():
            return len(os.listdir("/proc/%d/fd" % self.px.pid))
        held = []
        while nfds() < 63 and len(held) < 100:
            sk = socket.create_connection((h.HOST, port_old), timeout=2)
            self.addCleanup(sk.close)
            held.append(sk)
            time.sleep(0.02)
        time.sleep(0.3)
        marker = self.log_size()
        self.reload_nowait(conf(new_listen, [x, y]))
        self.wait_log(marker, "reload:")
        time.sleep(0.5)
        for sk in held:
            sk.close()
        time.sleep(0.5)
        log = self.log_since(marker)
        if "cannot listen on %s" % new_listen not in log:
            self.skipTest("the reload did not fail to bind here (descriptors left: the race "
                          "was not met); log:\n%s" % log[-1500:])
        self.assertIn("the pool listens where it did", log)
        # control's summary does not say all is well
        self.assertIn("but a listener did not open on every worker", log)
        with h.Raw(port_old, timeout=5) as c:
            c.request(b"version\r\n", b"VERSION 1.6.18\r\n")
        keep.request(b"version\r\n", b"VERSION 1.6.18\r\n")
        # Moving back is no conflict: walnut itself holds the old address
        # (it was refused as "another process serves it").
        v = self.reload(pools=conf(old_listen, [x, y]))
        self.assertIn("applied", v["last_reload"])
        self.assertNotIn("applied with errors", v["last_reload"])
        with h.Raw(port_old, timeout=5) as c:
            c.request(b"version\r\n", b"VERSION 1.6.18\r\n")
        # Descriptors free again: the next reload binds the new address.
        v = self.reload(pools=conf(new_listen, [x, y]))
        self.assertNotIn("applied with errors", v["last_reload"])
        with h.Raw(port_new, timeout=5) as c:
            c.request(b"version\r\n", b"VERSION 1.6.18\r\n")
        self.stop_clean()


class TestListenFamilyMove(HostileCase):
    def test_move_between_ipv4_and_ipv6_wildcards(self):
        """A reload moves a pool from 0.0.0.0:P to [::]:P (turning IPv6 on)
        and back. Once [::] took the IPv4 port too (dual-stack, as
        nutcracker's), the new address's probe met walnut's own listener on
        the other family and the reload was refused ("another process
        serves it"). Run in a network namespace of its own: it binds the
        wildcards."""
        if h.in_own_netns(self):
            return
        x = self.start_memcached(self.tmp, n=1)[0]
        port = h.free_port()

        def conf(host):
            return {"alpha": h.pool([x], listen="%s:%d" % (host, port))}

        def served(host):
            with socket.create_connection((host, port), timeout=5) as c:
                c.sendall(b"version\r\n")
                c.settimeout(5)
                self.assertTrue(c.recv(100).startswith(b"VERSION "), host)
        self.px = self.start_proxy(self.tmp, conf("0.0.0.0"), workers=2)
        served("127.0.0.1")
        v = self.reload(pools=conf("::"))
        self.assertEqual(v["generation"], 1, self.px.log()[-1500:])
        served("127.0.0.1")
        served("::1")
        v = self.reload(pools=conf("0.0.0.0"))
        self.assertEqual(v["generation"], 2, self.px.log()[-1500:])
        served("127.0.0.1")
        self.stop_clean()


class TestConfigPathNotAFile(HostileCase):
    def test_fifo_in_place_of_the_file_is_refused(self):
        """The configuration path replaced by a FIFO: SIGHUP blocked the control
        thread in open() until something wrote to it (no stats, no health, no
        watchdog). Expected: the reload is refused at once, saying the path is
        not a regular file, and walnut goes on serving."""
        mc = self.start_memcached(self.tmp, n=1)
        pools = {"alpha": h.pool(mc)}
        self.px = self.start_proxy(self.tmp, pools, workers=1)
        os.unlink(self.px.conf_path)
        os.mkfifo(self.px.conf_path)
        # Whatever happens, never leave walnut blocked on the FIFO: a writer
        # that gives up at once unblocks open(), which then reads an empty file.
        def unblock():
            try:
                os.close(os.open(self.px.conf_path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
        self.addCleanup(unblock)
        marker = self.log_size()
        os.kill(self.px.pid, signal.SIGHUP)
        self.wait_log(marker, "it is a FIFO, not a regular file; still serving the "
                      "configuration loaded before", deadline=5)
        view = self.servers_view()  # control answers
        self.assertEqual(view["generation"], 0)
        self.assertIn("failed", view["last_reload"])
        with h.Raw(self.px.port()) as c:
            c.request(b"version\r\n", b"VERSION ", what="alpha after the refused reload")
        self.stop_clean()


class TestLogPathNotAFile(HostileCase):
    def test_log_fifo_nobody_reads_at_sighup(self):
        """The -o log path replaced by a FIFO whose reader has gone (a log
        shipper that died): SIGHUP's reopen blocked the control thread in
        open() until a reader came: no stats, no reload, SIGTERM ignored
        (adversarial pass). Expected: the reopen fails at once, the old file
        goes on (with a warning saying so), the reload runs, walnut stops
        when told."""
        mc = self.start_memcached(self.tmp, n=1)
        pools = {"alpha": h.pool(mc)}
        self.px = self.start_proxy(self.tmp, pools, workers=1)
        old = self.px.log_path + ".1"
        os.rename(self.px.log_path, old)
        os.mkfifo(self.px.log_path)
        try:
            os.kill(self.px.pid, signal.SIGHUP)
            h.wait_until(lambda: "reload: all 1 worker(s) run generation 1" in h.read_text(old),
                         deadline=5, what="the reload, logged in the file open before")
            self.assertIn("cannot reopen the log file: no such device or address; logging on "
                          "to the one open before", h.read_text(old))
            self.assertEqual(self.servers_view()["generation"], 1)  # control answers
            with h.Raw(self.px.port()) as c:
                c.request(b"version\r\n", b"VERSION ", what="alpha after the reload")
        finally:
            try:  # a reader, even one that leaves at once, lets a blocked open() return
                os.close(os.open(self.px.log_path, os.O_RDONLY | os.O_NONBLOCK))
            except OSError:
                pass
            os.unlink(self.px.log_path)  # the harness reads the log by this name
            os.rename(old, self.px.log_path)
        self.stop_clean()


# ---------------------------------------------------------------------------
# F4: a removed pool whose servers were closed at the grace reconnects them
# for a late request, and then is never reaped


def backend_conns(m):
    """Connections memcached m has open, other than the one asking."""
    return int(m.stats()["curr_connections"]) - 1


class TestRetiredPoolReaped(HostileCase):
    def test_removed_pool_late_request_does_not_pin_a_backend_connection(self):
        mc = self.start_memcached(self.tmp, n=2)
        a, b = mc
        base_b = backend_conns(b)
        pools = {"alpha": h.pool([a]), "beta": h.pool([b], health_check_interval=0)}
        # the grace is 3 s here, not 30 (the test hook): what matters is what
        # comes after it (test_removed_pool_client_with_a_half_request_is_closed_at_the_grace
        # waits the real 30 s)
        self.px = self.start_proxy(self.tmp, pools, workers=1,
                                   env={"WALNUT_TEST_HOOKS": "1",
                                        "WALNUT_TEST_RETIRE_GRACE_MS": "3000"})
        beta = self.px.port("beta")
        slow = h.Raw(beta)
        self.addCleanup(slow.close)
        slow.request(b"set k 0 0 1\r\nv\r\n", b"STORED\r\n")
        slow.send(b"get k")  # half a line: the client is not done
        view = self.reload(pools={"alpha": pools["alpha"]})
        self.assertEqual([p["name"] for p in view["pools"]], ["alpha"])
        # Past the grace the removed pool's servers are closed ...
        time.sleep(4.5)
        # ... and the rest of the line comes.
        try:
            slow.send(b"\r\n")
            line = slow.recv_line()
        except (OSError, AssertionError):
            line = None  # closed at the grace (U1): nothing more to see
        self.assertIsNone(line, "a removed pool's client still served after the grace")
        slow.close()
        # The client is gone, the pool is gone: walnut must not keep b's
        # connection open (the reaper runs every 100 ms).
        h.wait_until(lambda: backend_conns(b) <= base_b, deadline=5.0,
                     what="walnut to close its connection to the removed pool's backend "
                          "(%d open, %d before walnut)" % (backend_conns(b), base_b))
        self.stop_clean()


# ---------------------------------------------------------------------------
# F5: a storage command routed before a reload, its data block after


class TestDataBlockAcrossReload(HostileCase):
    def test_set_whose_server_is_removed_before_its_data_arrives(self):
        """`set` is routed when its command line is parsed; the request is
        queued on that server only once its data block is in. A reload that
        removes the server in between retires it; idle, it is closed and freed
        100 ms later; the data block then arrives and the request is queued on
        the freed server (heap-use-after-free; without ASan: a write to a
        server no longer in the pool, or a crash)."""
        mc = self.start_memcached(self.tmp, n=2)
        x, y = mc
        both = {"alpha": h.pool([spec(x.addr, "x"), spec(y.addr, "y")],
                                listen="%s:%d" % (h.HOST, h.free_port()))}
        only_y = {"alpha": dict(both["alpha"], servers=[spec(y.addr, "y")])}
        self.px = self.start_proxy(self.tmp, both, workers=1, verbosity=6)
        key = self.key_on(both, "alpha", "x")
        c = h.Raw(self.px.port("alpha"))
        self.addCleanup(c.close)
        value = b"0123456789" * 10
        c.send(b"set %s 0 0 %d\r\n%s" % (key, len(value), value[:40]))
        time.sleep(0.2)  # the head is read and routed (nothing shows it)
        marker = self.log_size()
        self.reload(pools=only_y)
        self.wait_log(marker, "pool 'alpha': removed server x closed")
        c.send(value[40:] + b"\r\n")
        try:
            line = c.recv_line(timeout=5)
        except (AssertionError, OSError) as e:
            line = repr(e).encode()
        self.assertTrue(self.px.alive(), "walnut died:\n%s" % self.px.log()[-6000:])
        self.check_sanitizers()
        self.assertEqual(line, b"STORED\r\n")
        # Stored where the configuration in force puts it: y, the only server.
        self.assertEqual(y.keys_held([key]), {key}, "the value went to the removed server x")
        self.stop_clean()


# ---------------------------------------------------------------------------
# F6 (TSan): Redis client ids are counted in one variable by every worker


class TestRedisClientIds(HostileCase):
    def test_clients_on_four_workers_race_for_no_counter(self):
        """At fe6da29 redis_client.c's next_id was a plain static that every
        worker thread incremented when it accepted a Redis client: a data
        race that the TSan build reports (and exits non-zero for) as soon as
        two workers accept at once (fixed on main by e3d20f3). Run this under
        TSan; under other builds it checks the ids are unique."""
        rs = h.RedisServer(self.tmp, name="r0").start()
        self.addCleanup(rs.stop)
        pools = {"r": h.pool([spec(rs.addr, "r")], redis=True)}
        self.px = self.start_proxy(self.tmp, pools, workers=4)
        port = self.px.port("r")
        ids, errors = [], []

        def client():
            try:
                for _ in range(8):
                    with h.Raw(port, timeout=10) as c:
                        c.send(h.resp("CLIENT", "ID"))
                        ids.append(h.resp_parse(c.recv_resp())[0])
            except (OSError, AssertionError) as e:
                errors.append(str(e))
        threads = [threading.Thread(target=client) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(errors, [])
        self.assertEqual(len(set(ids)), len(ids), "duplicate CLIENT ID")
        self.stop_clean()


# ---------------------------------------------------------------------------
# F7: a timeout a reload sets never reaches connections already waiting


class TestTimeoutChange(HostileCase):
    def test_timeout_added_by_reload_applies_to_a_hung_connection(self):
        """The backend hangs (SIGSTOP) and the pool has no timeout, so a
        request waits. The operator reloads with `timeout: 300`: the kept
        server keeps its connection, whose timer was never armed (no timeout
        when it connected and wrote), and nothing arms it now; every later
        request on that connection queues behind and hangs too."""
        mc = self.start_memcached(self.tmp, n=1)
        x = mc[0]
        listen = "%s:%d" % (h.HOST, h.free_port())
        pools = {"alpha": h.pool([spec(x.addr, "x")], listen=listen)}
        self.px = self.start_proxy(self.tmp, pools, workers=1)
        c = h.Raw(self.px.port("alpha"), timeout=10)
        self.addCleanup(c.close)
        c.request(b"set k 0 0 1\r\nv\r\n", b"STORED\r\n")
        x.sigstop()
        self.addCleanup(x.sigcont)
        c.send(b"get k\r\n")
        time.sleep(0.3)
        v = self.reload(pools={"alpha": h.pool([spec(x.addr, "x")], listen=listen, timeout=300)})
        self.assertEqual(v["generation"], 1)
        c.send(b"get k\r\n")
        try:
            first = c.recv_line(timeout=4)
            second = c.recv_line(timeout=4)
        except AssertionError as e:
            self.fail("a request on the hung server's connection still waits 4 s after a "
                      "reload set timeout: 300 (%s)" % e)
        self.assertServerError(first, "the request that waited before the reload")
        self.assertServerError(second, "the request sent after the reload")
        x.sigcont()
        self.stop_clean()


# ---------------------------------------------------------------------------
# U1: a removed pool's client that is not done is closed at the grace


class TestRemovedPoolClientsEnd(HostileCase):
    def test_removed_pool_client_with_a_half_request_is_closed_at_the_grace(self):
        """README: removed pools 'answer what their clients have in flight,
        then close those clients'. A client that sent half a line (or keeps
        pipelining, so input always waits) is never 'drained', and nothing
        closes a removed pool's clients at the 30 s grace (stop closes its
        clients after 5 s). The pool then never goes, and since the worker
        frees old configurations only once every retired object is gone
        (wn_reconf_reap), every configuration loaded after it stays in
        memory too, one more per reload."""
        mc = self.start_memcached(self.tmp, n=2)
        pools = {"alpha": h.pool(mc[:1]), "beta": h.pool(mc[1:])}
        self.px = self.start_proxy(self.tmp, pools, workers=1)
        half = h.Raw(self.px.port("beta"))
        self.addCleanup(half.close)
        half.request(b"version\r\n", b"VERSION ")
        half.recv_line()
        half.send(b"get k")
        self.reload(pools={"alpha": pools["alpha"]})
        try:
            half.expect_closed(timeout=36, what="a removed pool's client with half a request, "
                                               "36 s after the reload")
        finally:
            self.stop_clean()


# ---------------------------------------------------------------------------
# Storms: many SIGHUPs, many pools, four workers, under load


class RedisLoader(threading.Thread):
    """One RESP connection: SET then GET its own keys until told to stop."""

    def __init__(self, port, name, limit_s=120.0):
        super().__init__(daemon=True)
        self.port, self.name, self.limit_s = port, name, limit_s
        self.stop_event = threading.Event()
        self.errors = []
        self.ops = 0
        self.conn = h.Raw(port, timeout=10.0)

    def run(self):
        deadline = time.monotonic() + self.limit_s
        seq = 0
        try:
            while not self.stop_event.is_set() and time.monotonic() < deadline:
                seq += 1
                key = "%s:%d" % (self.name, seq % 300)
                val = "%s=%d" % (key, seq)
                self.conn.send(h.resp("SET", key, val) + h.resp("GET", key))
                r1 = h.resp_parse(self.conn.recv_resp())[0]
                r2 = h.resp_parse(self.conn.recv_resp())[0]
                if r1 != b"OK" or r2 not in (val.encode(), None):
                    self.errors.append("%s: %r %r" % (key, r1, r2))
                    return
                self.ops += 1
        except (AssertionError, OSError) as e:
            self.errors.append("connection: %s" % e)

    def finish(self):
        self.stop_event.set()
        self.join(30)
        alive = self.is_alive()
        self.conn.close()
        return alive


def write_atomic(path, text):
    tmp = path + ".new"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)


class TestReloadStorm(HostileCase):
    def test_fifty_sighups_four_workers_many_pools(self):
        mc = self.start_memcached(self.tmp, n=4)
        rs = h.RedisServer(self.tmp, name="r0").start()
        self.addCleanup(rs.stop)
        ports = {n: "%s:%d" % (h.HOST, h.free_port()) for n in ("m1", "m2", "m3", "r1", "x")}
        upath = self.tmp.join("u.sock")

        def conf(k):
            pools = {
                "m1": h.pool([spec(mc[0].addr, "a"), spec(mc[1].addr, "b")][:1 + k % 2],
                             listen=ports["m1"], server_connections=1 + k % 3),
                "m2": h.pool([spec(mc[1].addr, "b"), spec(mc[2].addr, "c", 1 + k % 4)],
                             listen=ports["m2"] if k % 5 else ports["x"]),
                "r1": h.pool([spec(rs.addr, "r")], listen=ports["r1"], redis=True,
                             redis_db=k % 2),
                "u": h.pool([spec(mc[3].addr, "d")], listen=upath),
            }
            if k % 3 == 0:
                pools["m3"] = h.pool([spec(mc[3].addr, "d")], listen=ports["m3"])
            if k % 4 == 1:  # m1 and m2 swap addresses
                pools["m1"]["listen"], pools["m2"]["listen"] = \
                    pools["m2"]["listen"], pools["m1"]["listen"]
            return pools

        base = conf(0)
        self.px = self.start_proxy(self.tmp, base, workers=4, verbosity=5)
        loaders = [Loader(h.listen_port(base["m1"]), "l1"),
                   Loader(h.listen_port(base["m2"]), "l2"),
                   Loader(upath, "lu")]
        rl = RedisLoader(h.listen_port(base["r1"]), "r")
        for t in loaders + [rl]:
            t.start()
        self.addCleanup(lambda: [t.finish() for t in loaders + [rl]])
        h.wait_until(lambda: all(t.ops > 20 for t in loaders + [rl]), deadline=20.0,
                     what="loaders running")
        fds0 = fds(self.px.pid)
        for k in range(1, 51):
            write_atomic(self.px.conf_path, h.render_config(conf(k)))
            os.kill(self.px.pid, signal.SIGHUP)
            time.sleep(0.01 if k % 7 else 0.2)
        self.assertTrue(self.px.alive(), self.px.log()[-4000:])
        # The last file is conf(0) again: it must end in force on every worker.
        write_atomic(self.px.conf_path, h.render_config(base))
        time.sleep(0.5)
        os.kill(self.px.pid, signal.SIGHUP)

        def settled():
            v = self.servers_view()
            names = sorted(p["name"] for p in v["pools"])
            return v["generation_converged"] and names == sorted(base) and \
                "applied" in v["last_reload"]
        h.wait_until(settled, deadline=30.0, what="the storm to settle on the base file")
        ops = [t.ops for t in loaders + [rl]]
        h.wait_until(lambda: all(t.ops > o + 10 for t, o in zip(loaders + [rl], ops)),
                     deadline=15.0, what="loaders still running after the storm")
        for t in loaders + [rl]:
            self.assertFalse(t.finish(), "loader %s hung" % t.name)
            self.assertEqual(t.errors, [], "loader %s" % t.name)
        # Retired objects drain within a second here (no stopped backend).
        time.sleep(1.5)
        text = self.metrics()
        huge = [l for l in text.splitlines() if not l.startswith("#") and
                float(l.rsplit(" ", 1)[1]) >= 2 ** 62]
        self.assertEqual(huge, [], "counters below zero after the storm")
        self.assertLessEqual(fds(self.px.pid), fds0, "fds leaked by the storm")
        self.stop_clean()


class TestReloadStormHealth(HostileCase):
    def test_storm_while_probes_fly_and_servers_flap(self):
        """50 reloads 20 ms apart while control probes every 20 ms, ejects
        and rejoins: servers (one dead, one SIGSTOPped) are removed and added
        back while their probes are connecting, waiting or timing out."""
        mc = self.start_memcached(self.tmp, n=3)
        dead = "%s:%d" % (h.HOST, h.refused_port())
        mc[2].sigstop()
        self.addCleanup(mc[2].sigcont)
        listen = "%s:%d" % (h.HOST, h.free_port())
        settings = {"auto_eject_hosts": True, "server_failure_limit": 1,
                    "server_retry_timeout": 100, "health_check_interval": 20, "timeout": 50}

        def conf(k):
            servers = [spec(mc[0].addr, "a")]
            if k % 2:
                servers.append(spec(dead, "dead"))
            if k % 3:
                servers.append(spec(mc[2].addr, "stopped"))
            if k % 5 == 0:
                servers.append(spec(mc[1].addr, "b", 1 + k % 3))
            return {"alpha": h.pool(servers, listen=listen,
                                    server_connections=1 + k % 2, **settings)}
        self.px = self.start_proxy(self.tmp, conf(1), workers=2)
        port = self.px.port("alpha")
        stop = threading.Event()
        replies = []

        def client():
            try:
                with h.Raw(port, timeout=10) as c:
                    n = 0
                    while not stop.is_set():
                        n += 1
                        c.send(b"set %s 0 0 1\r\nv\r\n" % hashlib.md5(b"%d" % n).hexdigest().encode())
                        replies.append(c.recv_line())
            except (OSError, AssertionError) as e:
                replies.append(repr(e).encode())
        t = threading.Thread(target=client, daemon=True)
        t.start()
        for k in range(2, 52):
            write_atomic(self.px.conf_path, h.render_config(conf(k)))
            os.kill(self.px.pid, signal.SIGHUP)
            time.sleep(0.02)
        time.sleep(1.0)
        stop.set()
        t.join(20)
        self.assertTrue(self.px.alive(), self.px.log()[-4000:])
        bad = [r for r in replies if r != b"STORED\r\n" and not r.startswith(b"SERVER_ERROR ")]
        self.assertEqual(bad, [], "replies other than STORED or SERVER_ERROR")
        self.assertGreater(len(replies), 20)
        mc[2].sigcont()
        self.stop_clean()


class TestReloadAndStop(HostileCase):
    def test_sighup_then_sigterm_at_once(self):
        """A reload still reaching the workers (one holding a retired server
        with a request queued on a SIGSTOPped backend) when walnut is told to
        stop: a clean exit, nothing leaked (LeakSanitizer under ASan)."""
        for rnd in range(3):
            tmp = self.tmpdir()
            mc = self.start_memcached(tmp, n=2)
            x, y = mc
            both = {"alpha": h.pool([spec(x.addr, "x"), spec(y.addr, "y")]),
                    "beta": h.pool([spec(y.addr, "y")])}
            self.px = self.start_proxy(tmp, both, workers=2)
            key = self.key_on(both, "alpha", "x")
            x.sigstop()
            waiting = h.Raw(self.px.port("alpha"))
            self.addCleanup(waiting.close)
            waiting.send(b"get %s\r\n" % key)
            time.sleep(0.2)
            nc = {"alpha": dict(both["alpha"], servers=[spec(y.addr, "y")]),
                  "gamma": h.pool([spec(y.addr, "y")])}
            with open(self.px.conf_path, "w") as f:
                f.write(h.render_config(nc))
            os.kill(self.px.pid, signal.SIGHUP)
            if rnd:
                time.sleep(0.05 * rnd)
            os.kill(self.px.pid, signal.SIGHUP)
            self.px.stop()  # SIGCONTs nothing of x: the stop's grace ends the wait
            self.check_sanitizers()
            x.sigcont()


# ---------------------------------------------------------------------------
# What must carry over a reload, and what must not (these pass: coverage)


class TestReloadCarries(HostileCase):
    def test_ejected_server_stays_out_removed_then_added_starts_fresh(self):
        mc = self.start_memcached(self.tmp, n=2)
        x, y = mc
        listen = "%s:%d" % (h.HOST, h.free_port())
        settings = {"auto_eject_hosts": True, "server_failure_limit": 1,
                    "server_retry_timeout": 60000, "health_check_interval": 100, "timeout": 300}

        def conf(servers):
            return {"alpha": h.pool(servers, listen=listen, **settings)}
        both = conf([spec(x.addr, "x"), spec(y.addr, "y")])
        self.px = self.start_proxy(self.tmp, both, workers=2)
        key = self.key_on(both, "alpha", "x")
        x.kill()

        def state(name):
            for p in self.servers_view()["pools"]:
                for sv in p["servers"]:
                    if sv["name"] == name:
                        return sv
            return None
        h.wait_until(lambda: state("x")["ejected"], deadline=10, what="x ejected")
        # Kept (y re-weighted): x stays out, its keys go to y with no error.
        v = self.reload(pools=conf([spec(x.addr, "x"), spec(y.addr, "y", 2)]))
        self.assertEqual(v["generation"], 1)
        self.assertTrue(state("x")["ejected"], "a kept ejected server came back on reload")
        with h.Raw(self.px.port("alpha")) as c:
            for _ in range(4):  # both workers, whichever takes the connection
                c.request(b"set %s 0 0 1\r\nv\r\n" % key, b"STORED\r\n",
                          what="a key of the ejected server after a reload that kept it")
        # Removed, then added back while it answers again: it starts fresh
        # (not held out by the old ejection's 60 s retry timeout).
        self.reload(pools=conf([spec(y.addr, "y")]))
        x.start()
        v = self.reload(pools=conf([spec(x.addr, "x"), spec(y.addr, "y")]))
        self.assertEqual(v["generation"], 3)
        self.assertFalse(state("x")["ejected"], "a removed and re-added server kept its ejection")
        with h.Raw(self.px.port("alpha")) as c:
            c.request(b"set %s 0 0 1\r\nw\r\n" % key, b"STORED\r\n")
        self.assertEqual(x.keys_held([key]), {key}, "the re-added server gets its keys")
        self.stop_clean()

    def x_killed(self, workers, **settings):
        """Pool alpha over memcached x and y, conf(eject) its file (ejection as
        given, the rest from settings), walnut started with ejection on, a
        key on x, and x killed: (x, y, conf, key)."""
        x, y = self.start_memcached(self.tmp, n=2)
        listen = "%s:%d" % (h.HOST, h.free_port())

        def conf(eject):
            return {"alpha": h.pool([spec(x.addr, "x"), spec(y.addr, "y")], listen=listen,
                                    auto_eject_hosts=eject, server_failure_limit=1,
                                    timeout=300, **settings)}
        self.px = self.start_proxy(self.tmp, conf(True), workers=workers)
        key = self.key_on(conf(True), "alpha", "x")
        x.kill()
        return x, y, conf, key

    def test_auto_eject_turned_off_brings_an_ejected_server_back(self):
        """A reload that turns auto_eject_hosts off: the file in force ejects
        nothing, so a server ejected before is in the ring again, as a fresh
        start with that file has it (its keys get SERVER_ERROR while it is
        down, as twemproxy without auto_eject_hosts). It stayed ejected: its
        keys were stored on the other server, and /servers said 'ejected'."""
        x, y, conf, key = self.x_killed(2, server_retry_timeout=60000,
                                        health_check_interval=100)

        def state(name):
            return next(sv for p in self.servers_view()["pools"] for sv in p["servers"]
                        if sv["name"] == name)
        h.wait_until(lambda: state("x")["ejected"], deadline=10, what="x ejected")
        self.assertEqual(self.reload(pools=conf(False))["generation"], 1)
        self.assertFalse(state("x")["ejected"], "x under a file that ejects nothing")
        with h.Raw(self.px.port("alpha")) as c:
            for _ in range(4):  # both workers, whichever takes the connection
                c.send(b"set %s 0 0 1\r\nv\r\n" % key)
                self.assertServerError(c.recv_line(), "a key of the dead x")
        self.assertEqual(y.keys_held([key]), set(), "x's key stored on y")
        x.start()

        def stored():
            with h.Raw(self.px.port("alpha")) as c:
                c.send(b"set %s 0 0 1\r\nw\r\n" % key)
                return c.recv_line() == b"STORED\r\n"
        h.wait_until(stored, deadline=10, what="x answering again")
        self.assertEqual(x.keys_held([key]), {key}, "x's key on x")
        self.stop_clean()

    def test_lower_max_ejected_fraction_brings_the_last_ejected_back(self):
        """Three of four servers dead and ejected under max_ejected_fraction
        1.0, then a reload to 0.25: all three stayed out, though a fresh start
        with that file keeps one out (adversarial pass). Expected: the two
        ejected last come back (failing, kept in by the cap), the first
        ejected stays out, and the log says why."""
        ms = self.start_memcached(self.tmp, n=4)
        listen = "%s:%d" % (h.HOST, h.free_port())

        def conf(frac):
            return {"alpha": h.pool(["127.0.0.1:%d:1 s%d" % (m.port, i) for i, m in enumerate(ms)],
                                    listen=listen, auto_eject_hosts=True, server_failure_limit=1,
                                    server_retry_timeout=60000, health_check_interval=100,
                                    timeout=300, max_ejected_fraction=frac)}
        self.px = self.start_proxy(self.tmp, conf(1.0), workers=2)

        def ejected():
            return sorted(sv["name"] for p in self.servers_view()["pools"]
                          for sv in p["servers"] if sv["ejected"])
        for i in (1, 2, 3):  # one at a time: the order of ejection is known
            ms[i].kill()
            h.wait_until(lambda: "s%d" % i in ejected(), deadline=10, what="s%d ejected" % i)
        self.assertEqual(ejected(), ["s1", "s2", "s3"])
        self.reload(pools=conf(0.25))
        self.assertEqual(ejected(), ["s1"])
        log = self.px.log()
        for name in ("s2", "s3"):
            self.assertIn("server %s rejoins (max_ejected_fraction is lower now)" % name, log)
        time.sleep(0.5)  # probes fail on s2 and s3: the cap keeps them in
        self.assertEqual(ejected(), ["s1"])
        self.stop_clean()

    def test_failure_cleared_by_an_answer_after_new_server_connections(self):
        """A request failed, then a reload changed server_connections (new
        connections, a new worker-side server): the old one owed control the
        report of its next answer, the new one did not know, so the failure
        counted for good and one more much later ejected the server at limit
        2 (control-plane review). Expected: the answer after the reload
        clears it, as without the reload."""
        fake = fakes.BoomBackend()
        self.addCleanup(fake.stop)

        def conf(conns):
            return {"alpha": h.pool(["%s:1 b" % fake.addr], auto_eject_hosts=True,
                                    server_failure_limit=2, server_retry_timeout=60000,
                                    health_check_interval=200, timeout=1000,
                                    server_connections=conns, listen=listen)}
        listen = "%s:%d" % (h.HOST, h.free_port())
        self.px = self.start_proxy(self.tmp, conf(1), workers=1)

        def failures():
            return self.servers_view()["pools"][0]["servers"][0]["failures"]
        with h.Raw(self.px.port()) as c:
            c.request(b"get boom1\r\n", b"SERVER_ERROR ")
        h.wait_until(lambda: failures() == 1, deadline=5, what="the failure counted")
        self.reload(pools=conf(2))
        with h.Raw(self.px.port()) as c:
            c.request(b"get fine\r\n", b"END\r\n")
        h.wait_until(lambda: failures() == 0, deadline=5, what="the answer clearing the count")
        self.stop_clean()

    def test_auto_eject_turned_off_with_probes_off_probes_nothing(self):
        """health_check_interval 0 (probes off): an ejected server's timer is
        its rejoin at server_retry_timeout. A reload that turned
        auto_eject_hosts off brought the server back but left that timer
        armed; when it fired, the server was no longer ejected, so control
        probed it and kept a connection open in a pool with probes off.
        Expected: no connection to it from walnut without client traffic."""
        x, y, conf, key = self.x_killed(1, server_retry_timeout=1500, health_check_interval=0)
        with h.Raw(self.px.port("alpha")) as c:
            c.send(b"get %s\r\n" % key)
            self.assertServerError(c.recv_line(), "x is down")
        h.wait_until(lambda: "ejected" in self.px.log(), deadline=5, what="x ejected")
        self.reload(pools=conf(False))
        x.start()
        time.sleep(2.5)  # past the retry timeout
        self.assertEqual(self.fd_census({x.port})["to_backend"].get(x.port, 0), 0,
                         "walnut's connections to x with probes off and no traffic")
        self.stop_clean()

    def probed_pool(self, interval):
        """Pool alpha over memcached x and y with probes every `interval` ms
        (ejection on, limit 1): (x, y, conf(interval) for a reload)."""
        x, y = self.start_memcached(self.tmp, n=2)
        listen = "%s:%d" % (h.HOST, h.free_port())

        def conf(every):
            return {"alpha": h.pool([spec(x.addr, "x"), spec(y.addr, "y")], listen=listen,
                                    auto_eject_hosts=True, server_failure_limit=1,
                                    server_retry_timeout=60000, timeout=300,
                                    health_check_interval=every)}
        self.px = self.start_proxy(self.tmp, conf(interval), workers=1)
        return x, y, conf

    def test_shorter_health_check_interval_applies_at_once(self):
        """A reload from probes every 20 s to every 200 ms: each server's next
        probe stayed where the old interval put it, so a server dying after
        the reload went unnoticed for up to 20 s; a fresh start with that
        file ejects it in about 200 ms (control-plane review)."""
        x, y, conf = self.probed_pool(20000)
        time.sleep(0.3)  # the first probes are done: the next are 20 s away
        self.reload(pools=conf(200))
        x.kill()
        h.wait_until(lambda: "server x ejected" in self.px.log(), deadline=3,
                     what="x ejected by the 200 ms probes")
        self.stop_clean()

    def test_health_checks_turned_off_close_probe_connections(self):
        """A reload to health_check_interval 0 stopped probing but left each
        server's probe connection open for good; a fresh start with that file
        opens none (control-plane review)."""
        x, y, conf = self.probed_pool(100)
        h.wait_until(lambda: self.fd_census({x.port})["to_backend"].get(x.port, 0) > 0,
                     deadline=20, what="a probe connection to x before the reload")
        self.reload(pools=conf(0))
        h.wait_until(lambda: self.fd_census({x.port, y.port})["to_backend"] == {}, deadline=3,
                     what="the probe connections closed")
        self.stop_clean()

    def test_redis_auth_and_db_change_reopen_server_connections(self):
        rs = h.RedisServer(self.tmp, name="r0", password="p1").start()
        self.addCleanup(rs.stop)
        listen = "%s:%d" % (h.HOST, h.free_port())

        def conf(pw, db):
            return {"r": h.pool([spec(rs.addr, "r")], listen=listen, redis=True,
                                redis_auth=pw, redis_db=db)}
        self.px = self.start_proxy(self.tmp, conf("p1", 0), workers=2)
        port = self.px.port("r")
        old = h.Raw(port)
        self.addCleanup(old.close)
        self.assertEqual(old.call("AUTH", "p1"), b"OK")
        self.assertEqual(old.call("SET", "a", "1"), b"OK")
        # The backend's password changes, and walnut's with it; db 0 -> 3.
        rs.call("CONFIG", "SET", "requirepass", "p2")
        rs.password = "p2"
        v = self.reload(pools=conf("p2", 3))
        self.assertEqual(v["generation"], 1)
        # Kill every connection the backend has: walnut must come back with
        # AUTH p2 and SELECT 3.
        rs.call("CLIENT", "KILL", "TYPE", "normal")
        with h.Raw(port) as c:
            self.assertEqual(c.call("AUTH", "p2"), b"OK")
            self.assertEqual(c.call("SET", "b", "2"), b"OK")
        self.assertEqual(rs.call("GET", "b", db=3), b"2")
        self.assertIsNone(rs.call("GET", "b", db=0))
        # The client from before the reload goes on (it authenticated then).
        self.assertEqual(old.call("SET", "c", "3"), b"OK")
        self.assertEqual(rs.call("GET", "c", db=3), b"3")
        self.stop_clean()

    def test_redis_auth_removed_lets_a_waiting_client_in(self):
        """A client connected under redis_auth that has not authenticated: a
        reload removing redis_auth let new clients in, but this one got
        -NOAUTH for good (an adversarial helper). redis-server serves such a
        client at once once its requirepass is removed; so does walnut now,
        with an authenticated client's limits (a 100 KB value)."""
        rs = h.RedisServer(self.tmp, name="r0").start()
        self.addCleanup(rs.stop)
        listen = "%s:%d" % (h.HOST, h.free_port())

        def conf(pw):
            return {"r": h.pool([spec(rs.addr, "r")], listen=listen, redis=True,
                                **({"redis_auth": pw} if pw else {}))}
        self.px = self.start_proxy(self.tmp, conf("pw"), workers=1)
        waiting = h.Raw(self.px.port("r"))
        self.addCleanup(waiting.close)
        waiting.request(h.resp("GET", "k"), b"-NOAUTH Authentication required\r\n")
        v = self.reload(pools=conf(None))
        self.assertEqual(v["generation"], 1)
        big = b"v" * 100000
        waiting.request(h.resp("SET", "k", big), b"+OK\r\n")
        waiting.request(h.resp("GET", "k"), b"$%d\r\n%s\r\n" % (len(big), big))
        self.stop_clean()

    def test_pool_removed_and_readded_while_its_old_client_drains(self):
        mc = self.start_memcached(self.tmp, n=2)
        x, y = mc
        beta_listen = "%s:%d" % (h.HOST, h.free_port())
        pools = {"alpha": h.pool([spec(y.addr, "y")]),
                 "beta": h.pool([spec(x.addr, "x")], listen=beta_listen)}
        self.px = self.start_proxy(self.tmp, pools, workers=2)
        old = h.Raw(self.px.port("beta"))
        self.addCleanup(old.close)
        old.request(b"set k 0 0 1\r\nv\r\n", b"STORED\r\n")
        x.sigstop()
        self.addCleanup(x.sigcont)
        old.send(b"get k\r\n")
        time.sleep(0.2)
        self.reload(pools={"alpha": pools["alpha"]})
        v = self.reload(pools=pools)
        self.assertEqual(v["generation"], 2)
        x.sigcont()
        old.expect(b"VALUE k 0 1\r\nv\r\nEND\r\n", what="the old beta's client")
        old.expect_closed(timeout=5, what="the old beta's client after its reply")
        news = [h.Raw(self.px.port("beta")) for _ in range(3)]
        for c in news:
            self.addCleanup(c.close)
            c.request(b"get k\r\n", b"VALUE k 0 1\r\nv\r\nEND\r\n", what="the new beta")
        h.wait_until(lambda: self.metric("walnut_pool_client_connections", pool="beta") == 3,
                     deadline=5, what="beta's client_connections to be 3 (is %s)" %
                     self.metric("walnut_pool_client_connections", pool="beta"))
        self.stop_clean()


if __name__ == "__main__":
    h.main()
