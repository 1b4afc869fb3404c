#!/usr/bin/python3
"""walnut's command line: -V, -h, -t on good and bad configurations, bad options,
-D (twemproxy's stat names), and --locate against the placement tables measured
on the real nutcracker (test/data/placement/). Needs no backend and no serving
data path; nutcracker is used to cross-check -D and the bad configurations.
"""

import glob
import os
import random
import re
import signal
import socket
import subprocess
import sys

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

# twemproxy 0.5.0's stats (nc_stats.h), pool then server
TWEMPROXY_POOL_STATS = ["client_eof", "client_err", "client_connections", "server_ejects",
                        "forward_error", "fragments"]
TWEMPROXY_SERVER_STATS = ["server_eof", "server_err", "server_timedout", "server_connections",
                          "server_ejected_at", "requests", "request_bytes", "responses",
                          "response_bytes", "in_queue", "in_queue_bytes", "out_queue",
                          "out_queue_bytes"]

GOOD = """\
alpha:
  listen: 127.0.0.1:22121
  hash: fnv1a_64
  distribution: ketama
  timeout: 400
  servers:
   - 127.0.0.1:11211:1 one
   - 127.0.0.1:11212:1 two
"""

# name -> (config text, line the message must name, words the message must contain)
BAD_CONFIGS = {
    "unknown_key": (GOOD.replace("  timeout: 400\n", "  timeout: 400\n  bogus_key: 1\n"),
                    6, ["bogus_key"]),
    "bad_hash": (GOOD.replace("hash: fnv1a_64", "hash: sha1"), 3, ["hash", "sha1"]),
    "bad_distribution": (GOOD.replace("ketama", "chaos"), 4, ["distribution", "chaos"]),
    "duplicate_server_names": (GOOD.replace("11212:1 two", "11212:1 one"), 8,
                               ["servers", "one"]),
    "zero_weight": (GOOD.replace("11212:1 two", "11212:0 two"), 8, ["servers", "weight"]),
    "bad_server_port": (GOOD.replace("11212:1 two", "99999:1 two"), 8, ["servers", "99999"]),
    "bad_listen_port": (GOOD.replace("22121", "notaport"), 2, ["listen", "notaport"]),
    "bad_timeout": (GOOD.replace("timeout: 400", "timeout: soon"), 5, ["timeout", "soon"]),
    "bad_bool": (GOOD.replace("  timeout: 400\n", "  timeout: 400\n  preconnect: maybe\n"), 6,
                 ["preconnect", "maybe"]),
}


def run(args, timeout=60):
    r = h.run_walnut(args, timeout=timeout)
    return r.returncode, r.stdout.decode("utf-8", "replace"), r.stderr.decode("utf-8", "replace")


def term(pid):
    """SIGTERM to pid, if it still runs."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass



def listen_where(conf, pool):
    """"file:line" of pool's listen key in conf, as walnut's listen errors name it."""
    in_pool = False
    with open(conf) as f:
        for n, line in enumerate(f, 1):
            if not line.startswith(" "):
                in_pool = line.rstrip().rstrip(":").strip("'\"") == pool
            elif in_pool and line.strip().startswith("listen:"):
                return "%s:%d" % (conf, n)
    raise AssertionError("no listen key for pool %s in %s" % (pool, conf))

class TestCommandLine(h.ProxyTestCase):
    def held_port(self):
        """A loopback port another socket listens on (for this test's life)."""
        held = socket.socket()
        self.addCleanup(held.close)
        held.bind((h.HOST, 0))
        held.listen(1)
        return held.getsockname()[1]


    def setUp(self):
        self.bin = h.walnut_bin()

    def test_version(self):
        for flag in ("-V", "--version"):
            rc, out, err = run([flag])
            self.assertEqual(rc, 0, err)
            self.assertRegex(out, r"^This is walnut-\d+\.\d+\.\d+\S*\n", flag)

    def test_help(self):
        for flag in ("-h", "--help"):
            rc, out, err = run([flag])
            self.assertEqual(rc, 0, err)
            self.assertIn("Usage: walnut", out)
            for opt in ("-h", "-V", "-t", "-d", "-D", "-v", "-o", "-c", "-s", "-a", "-i", "-p",
                        "-m", "--workers", "--client-memory", "--batch-wait", "--locate"):
                self.assertRegex(out, r"(^|[\s,\[])%s\b" % re.escape(opt),
                                 "%s does not mention %s" % (flag, opt))

    def test_example_configs_are_ok(self):
        src = h.source_dir()
        for name in ("nutcracker.yml", "walnut.yml"):
            path = os.path.join(src, "config", name)
            self.assertTrue(os.path.isfile(path), "missing example configuration %s" % path)
            for args in (["-t", "-c", path], ["--test-conf", "--conf-file=%s" % path]):
                rc, out, err = run(args)
                self.assertEqual(rc, 0, "%s: %s" % (args, out + err))
                self.assertIn("syntax is ok", out + err, args)
                self.assertIn(path, out + err, "the ok message names the file")
        # config/nutcracker.yml is twemproxy's own example: nutcracker accepts it too
        nc = h.nutcracker_bin()
        r = subprocess.run([nc, "-t", "-c", os.path.join(src, "config", "nutcracker.yml")],
                           capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_bad_configs(self):
        tmp = self.tmpdir()
        nc = h.nutcracker_bin()
        path = tmp.join("good.yml")
        with open(path, "w") as f:
            f.write(GOOD)
        rc, out, err = run(["-t", "-c", path])
        self.assertEqual(rc, 0, "the base of the bad configs must be good: %s" % err)
        for name, (text, line, words) in BAD_CONFIGS.items():
            with self.subTest(config=name):
                path = tmp.join("%s.yml" % name)
                with open(path, "w") as f:
                    f.write(text)
                rc, out, err = run(["-t", "-c", path])
                msg = out + err
                self.assertEqual(rc, 1, "%s: exit %d, output: %s" % (name, rc, msg))
                self.assertIn("syntax is invalid", msg)
                self.assertRegex(msg, r"%s:%d:" % (re.escape(os.path.basename(path)), line),
                                 "%s: the message must name file and line %d" % (name, line))
                for w in words:
                    self.assertIn(w, msg, "%s: the message must name %r" % (name, w))
                # as strict as twemproxy: it rejects these too
                r = subprocess.run([nc, "-t", "-c", path], capture_output=True, timeout=60,
                                   stdin=subprocess.DEVNULL)
                self.assertNotEqual(r.returncode, 0, "nutcracker accepts %s" % name)

    def test_failed_start_says_why_in_the_log_file(self):
        """A start whose configuration does not validate said why on stderr
        only; under a service manager that drops stderr the log file (-o)
        stayed empty. nutcracker writes it there too."""
        tmp = self.tmpdir()
        path, log = tmp.join("bad.yml"), tmp.join("walnut.log")
        with open(path, "w") as f:
            f.write(GOOD + "  bogus_key: 1\n")
        for verbosity in ("5", "0"):  # whatever the level: the operator must see why
            if os.path.exists(log):
                os.unlink(log)
            r = subprocess.run([self.bin, "-c", path, "-o", log, "-v", verbosity, "-s",
                                str(h.free_port()), "-a", h.HOST], stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=60)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn(b"bogus_key", r.stderr)
            text = h.read_text(log)
            self.assertIn("unknown key 'bogus_key'", text, "-v %s" % verbosity)
            self.assertIn("syntax is invalid, not started", text)
            self.assertRegex(text, r"bad\.yml:\d+:")

    def test_unreadable_and_malformed_configs(self):
        tmp = self.tmpdir()
        cases = {
            "missing": (None, ["cannot open"]),
            "empty": ("", ["empty"]),
            "not_yaml": ("alpha:\n  listen: [\n", ["alpha"]),
            "no_servers": ("alpha:\n  listen: 127.0.0.1:22121\n", ["servers"]),
        }
        for name, (text, words) in cases.items():
            with self.subTest(config=name):
                path = tmp.join("%s.yml" % name)
                if text is not None:
                    with open(path, "w") as f:
                        f.write(text)
                rc, out, err = run(["-t", "-c", path])
                self.assertEqual(rc, 1, out + err)
                self.assertIn(os.path.basename(path), out + err)
                self.assertIn("syntax is invalid", out + err)
                for w in words:
                    self.assertIn(w, out + err)

    def test_bad_options(self):
        tmp = self.tmpdir()
        conf = tmp.join("good.yml")
        with open(conf, "w") as f:
            f.write(GOOD)
        cases = [
            (["-v", "-1"], "-v"),
            (["-v", "x"], "-v"),
            (["-m", "1"], "-m"),
            (["-m", "100000000"], "-m"),
            (["--workers", "0"], "--workers"),
            (["--workers", "257"], "--workers"),
            (["-T", "0"], "-T"),
            (["-s", "70000"], "-s"),
            (["-i", "abc"], "-i"),
            (["-x"], "-x"),
            (["--no-such-option"], "--no-such-option"),
            (["--workers"], "--workers"),
            (["--batch-wait", "1001"], "--batch-wait"),
            (["--batch-wait", "fast"], "--batch-wait"),
        ]
        for args, opt in cases:
            with self.subTest(args=args):
                # -t keeps a wrongly accepted option from starting a proxy
                rc, out, err = run(args + ["-t", "-c", conf] if args != ["--workers"]
                                   else ["-t", "-c", conf] + args, timeout=30)
                self.assertNotEqual(rc, 0, "%s accepted: %s" % (args, out + err))
                # an option's long and short spellings name the same option
                aliases = {"-T": ("-T", "--workers"), "--workers": ("-T", "--workers")}
                self.assertTrue(any(a in err for a in aliases.get(opt, (opt,))),
                                "%s: the error must name the option %s: %r" % (args, opt, err))
                self.assertNotIn("syntax is ok", out + err)

    def test_unresolvable_listen_address_says_so(self):
        """Issue 7, D13: a listen host that does not resolve is reported as such (it
        was "cannot listen on ..."), and walnut exits non-zero. The name fails in
        the test's DNS shim: no resolver is asked."""
        tmp = self.tmpdir()
        down = tmp.join("dns-down")
        open(down, "w").close()
        conf = tmp.join("unresolvable.yml")
        with open(conf, "w") as f:
            f.write(h.render_config({"alpha": h.pool(["127.0.0.1:%d:1" % h.free_port()],
                                                     listen="flaky.walnut.test:%d"
                                                     % h.free_port())}))
        env = dict(os.environ, LD_PRELOAD=h.build_dns_shim(tmp), WALNUT_TEST_DNS_DOWN=down)
        r = subprocess.run([self.bin, "-c", conf, "-s", str(h.free_port()), "-a", h.HOST],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=60, env=env)
        err = r.stderr.decode("utf-8", "replace")
        self.assertNotEqual(r.returncode, 0, err)
        self.assertIn("%s: pool 'alpha': cannot resolve listen address flaky.walnut.test:"
                      % listen_where(conf, "alpha"), err)
        self.assertNotIn("cannot listen on", err)
        # -t looks it up too, as nutcracker -t does
        r = subprocess.run([self.bin, "-t", "-c", conf], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=60, env=env)
        err = r.stderr.decode("utf-8", "replace")
        self.assertNotEqual(r.returncode, 0, err)
        self.assertIn("%s: pool 'alpha': cannot resolve listen address flaky.walnut.test:"
                      % listen_where(conf, "alpha"), err)
        self.assertNotIn("syntax is ok", err)

    def test_port_taken_by_a_connection_is_said_so(self):
        """A listen port that a connection has as its local port (a port in
        the ephemeral range) cannot be bound though nobody listens there;
        walnut said "another process serves it" and nothing more (found
        checking published configurations). Expected: the message names
        that case too."""
        tmp = self.tmpdir()
        srv = socket.socket()
        self.addCleanup(srv.close)
        srv.bind((h.HOST, 0))
        srv.listen(1)
        conn = socket.create_connection(srv.getsockname(), timeout=5)
        self.addCleanup(conn.close)
        port = conn.getsockname()[1]
        conf = tmp.join("taken.yml")
        with open(conf, "w") as f:
            f.write(h.render_config({"alpha": h.pool(["127.0.0.1:%d:1" % h.free_port()],
                                                     listen="%s:%d" % (h.HOST, port))}))
        r = subprocess.run([self.bin, "-c", conf, "-s", str(h.free_port()), "-a", h.HOST,
                            "-T", "1"], stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        err = r.stderr.decode("utf-8", "replace")
        self.assertNotEqual(r.returncode, 0, err)
        self.assertIn("cannot listen on %s:%d: address already in use" % (h.HOST, port), err)
        self.assertIn("or a connection has it as its local port", err)

    def test_start_refuses_two_pools_on_one_address(self):
        """Two pools on one address spelled two ways (validation compares the
        text), or a pool on walnut's own stats address, failed at start with
        'Address already in use (another process serves it)'. Expected:
        a start that fails naming who listens there."""
        tmp = self.tmpdir()
        port, stats = h.free_port(), h.free_port()
        server = ["127.0.0.1:%d:1" % h.free_port()]
        cases = [
            ({"alpha": h.pool(server, listen="127.0.0.1:%d" % port),
              "beta": h.pool(server, listen="127.1:%d" % port)},
             "{beta}: pool 'beta': cannot listen on 127.1:%d: pool 'alpha' listens there "
             "(127.0.0.1:%d, {alpha})" % (port, port)),
            ({"alpha": h.pool(server, listen="0.0.0.0:%d" % port),
              "beta": h.pool(server, listen="127.0.0.1:%d" % port)},
             "{beta}: pool 'beta': cannot listen on 127.0.0.1:%d: pool 'alpha' listens there "
             "(0.0.0.0:%d, {alpha})" % (port, port)),
            ({"alpha": h.pool(server, listen="127.1:%d" % stats)},
             "{alpha}: pool 'alpha': cannot listen on 127.1:%d: walnut's stats server listens "
             "there" % stats),
        ]
        for pools, why in cases:
            conf = tmp.join("one-address.yml")
            with open(conf, "w") as f:
                f.write(h.render_config(pools))
            why = why.format(**{p: listen_where(conf, p) for p in pools})
            r = subprocess.run([self.bin, "-c", conf, "-s", str(stats), "-a", h.HOST],
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
            err = r.stderr.decode("utf-8", "replace")
            self.assertNotEqual(r.returncode, 0, err)
            self.assertIn(why, err, pools)
            self.assertNotIn("another process", err)
            if "stats" in why:
                # -t with the same -a and -s says so too (it said "syntax is ok")
                rc, out, err = run(["-t", "-c", conf, "-s", str(stats), "-a", h.HOST])
                self.assertNotEqual(rc, 0, err)
                self.assertIn(why, err)
                self.assertNotIn("syntax is ok", err)
                rc, out, err = run(["-t", "-c", conf, "-s", str(stats + 1), "-a", h.HOST])
                self.assertEqual(rc, 0, err)
                # -t with -a :: (which holds the IPv4 port too), for a pool
                # on the IPv4 address or its IPv4-mapped spelling
                try:
                    socket.socket(socket.AF_INET6).close()
                    v6 = True
                except OSError:
                    v6 = False
                for listen in ("127.0.0.1:%d" % stats, "::ffff:127.0.0.1:%d" % stats):
                    if not v6:
                        break
                    conf2 = tmp.join("mapped.yml")
                    with open(conf2, "w") as f:
                        f.write(h.render_config({"alpha": h.pool(server, listen=listen)}))
                    rc, out, err = run(["-t", "-c", conf2, "-s", str(stats), "-a", "::"])
                    self.assertNotEqual(rc, 0, (listen, err))
                    self.assertIn("walnut's stats server listens there", err, listen)
                # a stats server on [::] holds the IPv4 port too (not v6-only)
                try:
                    socket.socket(socket.AF_INET6).close()
                except OSError:
                    continue
                r = subprocess.run([self.bin, "-c", conf, "-s", str(stats), "-a", "::"],
                                   stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
                err = r.stderr.decode("utf-8", "replace")
                self.assertNotEqual(r.returncode, 0, err)
                self.assertIn(why, err, "-a ::")
                self.assertNotIn("another process", err)
            else:
                # -t says so too (as nutcracker -t looks listen addresses up)
                rc, out, err = run(["-t", "-c", conf])
                self.assertNotEqual(rc, 0, err)
                self.assertIn(why, err)
                self.assertNotIn("syntax is ok", err)

    def test_test_conf_checks_the_stats_address(self):
        """-t said "syntax is ok" for an -a the start then could not listen
        on (ExecStartPre passed, the service failed)."""
        tmp = self.tmpdir()
        conf = tmp.join("stats-addr.yml")
        with open(conf, "w") as f:
            f.write(h.render_config({"alpha": h.pool(["127.0.0.1:%d:1" % h.free_port()],
                                                     listen="127.0.0.1:%d" % h.free_port())}))
        stats = str(h.free_port())
        # a name that never resolves (the DNS shim's: no DNS server is asked)
        env = dict(os.environ, LD_PRELOAD=h.build_dns_shim(tmp))
        addr = "down.walnut.test"
        for args in (["-t"], []):
            r = subprocess.run([self.bin] + args + ["-c", conf, "-s", stats, "-a", addr],
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
                               env=env)
            err = r.stderr.decode("utf-8", "replace")
            self.assertEqual(r.returncode, 1, (args, err))
            self.assertIn("stats: cannot listen on %s:%s: " % (addr, stats), err)
            if args:
                self.assertIn("syntax is invalid", err)
        for addr in (h.HOST, "localhost", "::1"):
            rc, out, err = run(["-t", "-c", conf, "-s", stats, "-a", addr])
            self.assertEqual(rc, 0, err)

    def test_listen_error_keeps_its_reason_after_long_names(self):
        """A pool name of 600 bytes filled the listen error's buffer before
        the reason: -t said "pool 'ppp…" and nothing else. Names are quoted
        at most 80 bytes, as validation quotes them."""
        tmp = self.tmpdir()
        port = h.free_port()
        server = ["127.0.0.1:%d:1" % h.free_port()]
        a, b = "a" * 600, "b" * 600
        conf = tmp.join("long-names.yml")
        with open(conf, "w") as f:
            f.write(h.render_config({a: h.pool(server, listen="127.0.0.1:%d" % port),
                                     b: h.pool(server, listen="127.1:%d" % port)}))
        rc, out, err = run(["-t", "-c", conf])
        self.assertNotEqual(rc, 0, err)
        self.assertIn("%s: pool '%s': cannot listen on 127.1:%d: pool '%s' listens there "
                      "(127.0.0.1:%d, %s)" % (listen_where(conf, b), b[:80], port, a[:80], port,
                                              listen_where(conf, a)), err)

    def test_start_refuses_unix_path_another_process_serves(self):
        """At start walnut unlinked a unix listen path another live process
        accepts on and bound its own (a reload refused the same path). Expected:
        the start fails as a reload does, and the other process keeps its path;
        a stale socket file nobody accepts on is still replaced."""
        tmp = self.tmpdir()
        path = tmp.join("theirs.sock")
        other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(other.close)
        other.bind(path)
        other.listen(4)
        conf = tmp.join("unix.yml")
        with open(conf, "w") as f:
            f.write(h.render_config({"alpha": h.pool(["127.0.0.1:%d:1" % h.free_port()],
                                                     listen=path)}))
        r = subprocess.run([self.bin, "-c", conf, "-s", str(h.free_port()), "-a", h.HOST,
                            "-T", "1"], stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=10)
        err = r.stderr.decode("utf-8", "replace")
        self.assertNotEqual(r.returncode, 0, err)
        self.assertIn("%s: pool 'alpha': cannot listen on %s: address already in use (another "
                      "process serves it)" % (listen_where(conf, "alpha"), path), err)
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(probe.close)
        probe.settimeout(2)
        probe.connect(path)  # still the other process's path
        other.settimeout(2)
        other.accept()[0].close()
        # A socket file nobody accepts on (left by a process that died) is replaced.
        other.close()
        px = h.Proxy(tmp, {"alpha": h.pool(["127.0.0.1:%d:1" % h.free_port()], listen=path)},
                     name="stale")
        px.start()
        self.addCleanup(px.stop, False)
        self.assertTrue(px.alive(), px.log())
        px.stop()

    def test_failed_start_leaves_the_pid_file_alone(self):
        """A second walnut that failed to start (its port taken by the first)
        removed the first one's pid file (-p), written before its listeners
        were bound. Expected (as nutcracker): the file is written once start-up
        has succeeded, so the failed one never touches it; the first removes it
        when it stops."""
        tmp = self.tmpdir()
        pidfile = tmp.join("walnut.pid")
        pools = {"alpha": h.pool(["127.0.0.1:%d:1" % h.free_port()])}
        first = h.Proxy(tmp, pools, name="first", extra=["-p", pidfile])
        first.start()
        self.addCleanup(first.stop, False)
        h.wait_until(lambda: os.path.exists(pidfile), what="the pid file")
        with open(pidfile) as f:
            self.assertEqual(f.read(), "%d\n" % first.pid)
        r = subprocess.run([self.bin, "-c", first.conf_path, "-s", str(h.free_port()), "-a",
                            h.HOST, "-T", "1", "-p", pidfile], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=30)
        err = r.stderr.decode("utf-8", "replace")
        self.assertNotEqual(r.returncode, 0, err)
        self.assertIn("another process serves it", err)
        self.assertTrue(os.path.exists(pidfile), "the failed start removed the pid file")
        with open(pidfile) as f:
            self.assertEqual(f.read(), "%d\n" % first.pid, "the failed start rewrote it")
        first.stop()
        self.assertFalse(os.path.exists(pidfile), "the pid file outlived its process")

    def test_daemon_exit_status_says_whether_it_serves(self):
        """walnut -d exited 0 at once, before the daemon had loaded anything:
        with its port taken the start failed in the background and the
        command still said 0, and on success the pid file appeared only
        later (a Type=forking unit reads it when the command returns).
        Expected: the command returns once the daemon serves, 0 with the pid
        file written, or 1 when the daemon failed (the reason in its log)."""
        tmp = self.tmpdir()
        conf = tmp.join("busy.yml")
        with open(conf, "w") as f:
            f.write(h.render_config({"alpha": h.pool(["127.0.0.1:%d:1" % h.free_port()],
                                                     listen="%s:%d" % (h.HOST, self.held_port()))}))
        pidfile, log = tmp.join("busy.pid"), tmp.join("busy.log")
        r = subprocess.run([self.bin, "-d", "-c", conf, "-p", pidfile, "-o", log, "-s",
                            str(h.free_port()), "-a", h.HOST, "-T", "1"],
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("another process serves it", h.read_text(log))
        self.assertFalse(os.path.exists(pidfile))
        # and a start that works returns with its pid file written (its port
        # open: daemon() connects)
        rc, pid = self.daemon(tmp, "ok", "", tmp.join("ok.log"))
        self.assertEqual(rc, 0)
        self.assertIsNotNone(pid, "the command returned before the pid file")

    def daemon(self, tmp, name, shell_redirects, log):
        """walnut -d started by sh with those redirections: (status, pid)."""
        pools = {"alpha": h.pool(["127.0.0.1:%d:1" % h.free_port()])}
        conf, pidfile = tmp.join(name + ".yml"), tmp.join(name + ".pid")
        with open(conf, "w") as f:
            f.write(h.render_config(pools))
        cmd = "exec %s -d -c %s -p %s -o %s -s %d -a %s -T 1 %s" % (
            self.bin, conf, pidfile, log, h.free_port(), h.HOST, shell_redirects)
        r = subprocess.run(["sh", "-c", cmd], stdin=subprocess.DEVNULL, timeout=30)
        pid = None
        if os.path.exists(pidfile):
            with open(pidfile) as f:
                pid = int(f.read())

            self.addCleanup(term, pid)
            socket.create_connection((h.HOST, h.listen_port(pools["alpha"])), timeout=5).close()
            term(pid)
            h.wait_until(lambda: not os.path.exists(pidfile), deadline=10,
                         what="the daemon to stop")
        return r.returncode, pid

    def test_daemon_with_closed_descriptors_or_log_on_stderr(self):
        """Review of the change above: started with stdin and stdout closed,
        the readiness pipe took descriptors 0 and 1, daemonizing pointed 1 at
        /dev/null (closing the daemon's end) and the command said 1 while the
        daemon served; with stderr closed the log file took descriptor 2 and
        was pointed at /dev/null once serving. And `-o stderr` counted as a
        file: the daemon let go of the log itself. Expected: status 0, the
        log whole."""
        tmp = self.tmpdir()
        log = tmp.join("closed.log")
        rc, pid = self.daemon(tmp, "closed", "<&- >&- 2>&-", log)
        self.assertEqual(rc, 0)
        self.assertIsNotNone(pid, "no pid file")
        text = h.read_text(log)
        for line in ("started on pid %d" % pid, "stopped"):
            self.assertIn(line, text)
        err = tmp.join("stderr.txt")
        rc, pid = self.daemon(tmp, "stderr", "2>%s" % err, "stderr")
        self.assertEqual(rc, 0)
        text = h.read_text(err)
        for line in ("started on pid %d" % pid, "stopped"):
            self.assertIn(line, text)

    def test_daemon_keeps_relative_paths(self):
        """-d chdirs to /, and relative -c, -p and -o paths were then read
        against /: the pid file went to /NAME, a reload read /NAME.yml (and
        failed) and the log reopened on SIGHUP was /NAME.log. Expected: they
        name the files in the directory walnut was started from."""
        tmp = self.tmpdir()
        name = os.path.basename(os.path.dirname(tmp.join("x")))  # unique: nothing in / has it
        for stray in ("/%s.pid" % name, "/%s.log" % name):  # where the bug put them
            self.addCleanup(lambda p=stray: os.path.exists(p) and os.unlink(p))
        with open(tmp.join(name + ".yml"), "w") as f:
            f.write(h.render_config({"alpha": h.pool(["127.0.0.1:%d:1" % h.free_port()])}))
        r = subprocess.run([self.bin, "-d", "-c", name + ".yml", "-p", name + ".pid", "-o",
                            name + ".log", "-s", str(h.free_port()), "-a", h.HOST, "-T", "1"],
                           cwd=os.path.dirname(tmp.join("x")), stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
        self.assertEqual(r.returncode, 0)

        def daemon_pid():
            for p in (tmp.join(name + ".pid"), "/%s.pid" % name):
                try:
                    with open(p) as f:
                        return int(f.read())
                except (OSError, ValueError):
                    pass
            return None
        h.wait_until(lambda: daemon_pid() is not None, what="the daemon's pid file")
        pid = daemon_pid()
        self.addCleanup(term, pid)
        self.assertTrue(os.path.exists(tmp.join(name + ".pid")),
                        "the pid file is not where -p named it")
        log = tmp.join(name + ".log")
        os.rename(log, log + ".1")
        os.kill(pid, signal.SIGHUP)

        def reloaded():
            return os.path.exists(log) and "reload: all 1 worker(s) run generation" in open(
                log).read()
        h.wait_until(reloaded, deadline=10, what="the reload logged in the reopened log file")
        term(pid)
        h.wait_until(lambda: not os.path.exists(tmp.join(name + ".pid")), deadline=10,
                     what="the daemon to remove its pid file")

    def test_ring_size_limits_named_everywhere(self):
        """Three ketama servers of weight 2^31-1, or modula weights over 2^26 in
        all: -t said ok, a start exited 1 without a word (even at -v 11) and
        --locate said only "value exceeds a limit". Expected: every one of them
        refuses the file naming the pool and the limit."""
        tmp = self.tmpdir()
        cases = {
            "ketama": (["127.0.0.1:%d:2147483647" % h.free_port() for _ in range(3)],
                       "at most 4294967295 in all"),
            "modula": (["127.0.0.1:%d:67108864" % h.free_port(), "127.0.0.1:%d:1" % h.free_port()],
                       "one ring slot per unit of weight, at most 67108864"),
        }
        for dist, (servers, limit) in cases.items():
            with self.subTest(distribution=dist):
                conf = tmp.join("%s.yml" % dist)
                with open(conf, "w") as f:
                    f.write(h.render_config({"alpha": h.pool(servers, distribution=dist)}))
                for args in (["-t"], ["-v", "11", "-s", str(h.free_port()), "-a", h.HOST, "-T",
                                      "1"], ["--locate", "k"]):
                    rc, out, err = run(["-c", conf] + args, timeout=60)
                    self.assertEqual(rc, 1, "%s: %s" % (args, out + err))
                    self.assertIn("pool 'alpha'", err, args)
                    self.assertIn(limit, err, args)

    def test_config_path_must_be_a_regular_file(self):
        """A FIFO as the configuration file blocked -t (and a start) in open()
        until something wrote to it. Expected: refused at once, saying why."""
        tmp = self.tmpdir()
        fifo = tmp.join("fifo.yml")
        os.mkfifo(fifo)
        for args in (["-t"], ["-s", str(h.free_port()), "-a", h.HOST, "-T", "1"]):
            try:
                rc, out, err = run(["-c", fifo] + args, timeout=10)
            except subprocess.TimeoutExpired:
                self.fail("%s on a FIFO blocked" % args)
            self.assertEqual(rc, 1, out + err)
            self.assertIn("fifo.yml: cannot read: it is a FIFO, not a regular file", err)
        rc, out, err = run(["-t", "-c", tmp.join("")], timeout=10)
        self.assertEqual(rc, 1, out + err)
        self.assertIn("it is a directory, not a regular file", err)

    def test_stats_port_taken_says_so_once(self):
        """A stats port another process holds: the message read "stats: stats:
        cannot listen on ..." (the prefix twice)."""
        tmp = self.tmpdir()
        conf = tmp.join("stats.yml")
        with open(conf, "w") as f:
            f.write(h.render_config({"alpha": h.pool(["127.0.0.1:%d:1" % h.free_port()])}))
        held = self.held_port()
        rc, out, err = run(["-c", conf, "-s", str(held), "-a", h.HOST, "-T", "1"], timeout=30)
        self.assertEqual(rc, 1, out + err)
        self.assertIn("stats: cannot listen on %s:%d" % (h.HOST, held), err)
        self.assertNotIn("stats: stats:", err)

    def test_describe_stats(self):
        rc, out, err = run(["-D"])
        self.assertEqual(rc, 0, err)
        self.assertTrue(out.startswith("This is walnut-"), out[:200])  # as nutcracker's
        names = set(re.findall(r"^[ \t]+([a-z_]+)[ \t]", out, re.M))
        for n in TWEMPROXY_POOL_STATS + TWEMPROXY_SERVER_STATS:
            self.assertIn(n, names, "-D does not list twemproxy's %s" % n)
        # and every name the real nutcracker describes
        r = subprocess.run([h.nutcracker_bin(), "-D"], capture_output=True, timeout=30,
                           stdin=subprocess.DEVNULL)
        nc_names = set(re.findall(r"^[ \t]+([a-z_]+)[ \t]", (r.stdout + r.stderr).decode(), re.M))
        self.assertTrue(nc_names, "could not read nutcracker -D")
        self.assertEqual(nc_names - names, set(), "stats nutcracker -D lists and walnut -D lacks")

    def test_locate_matches_placement_tables(self):
        pdir = os.path.join(h.source_dir(), "test", "data", "placement")
        # Shapes with a table (redis_routing.yml goes with a JSON of routes).
        shapes = sorted(y for y in glob.glob(os.path.join(pdir, "*.yml"))
                        if os.path.isfile(y[:-4] + ".tsv"))
        self.assertGreaterEqual(len(shapes), 12, "placement tables missing in %s" % pdir)
        total = 0
        for yml in shapes:
            shape = os.path.basename(yml)[:-4]
            tsv = yml[:-4] + ".tsv"
            with self.subTest(shape=shape):
                self.assertTrue(os.path.isfile(tsv), "%s has no %s" % (yml, tsv))
                rows = {}  # key -> {pool: server}
                with open(tsv, "rb") as f:
                    for line in f:
                        pool, key_hex, server = line.rstrip(b"\n").split(b"\t")
                        key = bytes.fromhex(key_hex.decode())
                        rows.setdefault(key, {})[pool.decode()] = server.decode()
                # --locate prints a line per key, control bytes escaped (keys
                # with a NUL cannot be given on a command line)
                usable = sorted(k for k in rows if k and b"\0" not in k)
                sample = random.Random(shape).sample(usable, min(150, len(usable)))
                # always include the longest and some non-ASCII keys
                sample += [k for k in usable if len(k) >= 240][:3]
                sample += [k for k in usable if any(b >= 0x80 for b in k)][:5]
                # and keys with a tab, a line break, a control byte, a backslash,
                # a leading '-' (after "--")
                sample += [k for k in usable if any(b < 0x20 or b == 0x7f for b in k)][:5]
                sample += [k for k in usable if b"\\" in k][:3]
                sample += [k for k in usable if k.startswith(b"-")][:3]
                sample = list(dict.fromkeys(sample))
                located = h.walnut_locate(yml, sample)
                checked = 0
                for key in sample:
                    for pool, server in rows[key].items():
                        got = located.get((pool, key))
                        self.assertIsNotNone(got, "%s: --locate printed nothing for pool %s key %r"
                                             % (shape, pool, key))
                        self.assertEqual(got[0], server, "%s: pool %s key %r (hex %s)" % (
                            shape, pool, key, key.hex()))
                        checked += 1
                self.assertGreaterEqual(checked, len(sample), "%s: too few rows checked" % shape)
                total += checked
        self.assertGreaterEqual(total, 1000 * len(shapes))

    def test_locate_escapes_keys_and_names(self):
        """Each key, pool and server name is one field of one line: tabs, line
        breaks, control bytes and backslashes escaped; a key after -- may
        start with '-'."""
        tmp = self.tmpdir()
        conf = tmp.join("names.yml")
        with open(conf, "w") as f:
            f.write('"po\\tol":\n  listen: 127.0.0.1:%d\n  servers:\n'
                    '   - "127.0.0.1:%d:1 on\\te\\\\"\n' % (h.free_port(), h.free_port()))
        keys = [b"a\tb", b"c\nd", b"e\\f", b"g\x01h", b"-i", "ключ".encode()]
        r = subprocess.run([self.bin, "-c", conf, "--locate", "--"] + keys,
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.split(b"\n")
        self.assertEqual(lines[-1], b"")
        self.assertEqual([ln.split(b"\t")[:3] for ln in lines[:-1]],
                         [[b"po\\tol", k, b"on\\te\\\\"] for k in
                          (b"a\\tb", b"c\\nd", b"e\\\\f", b"g\\x01h", b"-i", "ключ".encode())])
        located = h.walnut_locate(conf, keys)
        self.assertEqual(sorted(located), sorted(("po\tol", k) for k in keys))
        self.assertEqual({v[0] for v in located.values()}, {"on\te\\"})

    def test_locate_usage(self):
        pdir = os.path.join(h.source_dir(), "test", "data", "placement")
        rc, out, err = run(["-c", os.path.join(pdir, "two_servers.yml"), "--locate"])
        self.assertNotEqual(rc, 0, "--locate with no key must fail")
        self.assertIn("--locate", err)
        # a bad config: --locate reports it like -t does
        tmp = self.tmpdir()
        bad = tmp.join("bad.yml")
        with open(bad, "w") as f:
            f.write(BAD_CONFIGS["bad_hash"][0])
        rc, out, err = run(["-c", bad, "--locate", "k"])
        self.assertEqual(rc, 1)
        self.assertIn("bad.yml:3:", err)
        self.assertEqual(out, "")


def tearDownModule():
    h.report_known_diffs()


if __name__ == "__main__":
    h.main()
