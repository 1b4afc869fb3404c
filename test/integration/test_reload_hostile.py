"""test_reload_hostile.py: SIGHUP reload (commit 2b2cc70), attacked.

Each F test is the regression test of one finding; the fix is in the commit
that added it:

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
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
from test_reload import Loader, ReloadCase, fds  # noqa: E402

SANITIZER_RE = re.compile(r"AddressSanitizer|ThreadSanitizer|LeakSanitizer|runtime error")


def spec(addr, name, weight=1):
    return "%s:%d %s" % (addr, weight, name)


class HostileCase(ReloadCase):
    def check_sanitizers(self):
        text = h.tail(self.px.log_path + ".stdout", 200000)
        m = SANITIZER_RE.search(text)
        self.assertIsNone(m, "sanitizer report in walnut's output:\n%s" % text[-6000:])

    def stop_clean(self):
        self.px.stop()
        self.check_sanitizers()

    def metrics(self):
        import urllib.request
        url = "http://%s:%d/metrics" % (h.HOST, self.px.stats_port)
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.read().decode()

    def reload_nowait(self, pools=None, text=None):
        with open(self.px.conf_path, "w") as f:
            f.write(text if text is not None else h.render_config(pools))
        os.kill(self.px.pid, signal.SIGHUP)

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
        self.px = self.start_proxy(self.tmp, both, workers=1)
        key = self.key_on(both, "alpha", "x")
        c = h.Raw(self.px.port("alpha"))
        self.addCleanup(c.close)
        value = b"0123456789" * 10
        c.send(b"set %s 0 0 %d\r\n%s" % (key, len(value), value[:40]))
        time.sleep(0.2)
        self.reload(pools=only_y)
        time.sleep(0.6)  # the retired server is reaped
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


if __name__ == "__main__":
    h.main()
