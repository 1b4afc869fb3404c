#!/usr/bin/python3
"""test_adversarial_redis.py: defects found by an adversarial pass over the
Redis path (RESP from clients, replies from servers, split/merge, local
commands, the client_buffer_limit accounting of bytes queued for a server).

Each test is a minimal reproducer: it failed on the code it was written
against (test_01 to test_04: 3fc1c73; test_05: bd06498~1; test_06: 9d2cf8f;
test_08: 196e933), and its docstring says what it expects and what walnut did instead. Each now
guards its fix. Misbehaving servers are small fakes defined here (subclasses
of fakes.FakeRedis); everything else is a real redis-server.

Run with Debian's /usr/bin/python3; WALNUT_BIN names the binary:
    WALNUT_BIN=build/walnut /usr/bin/python3 test/integration/test_adversarial_redis.py
"""

import json
import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fakes  # noqa: E402
import harness as h  # noqa: E402
import test_hostile  # noqa: E402

resp = h.resp

# A Lua busy wait of `ms` milliseconds (redis-server runs one script at a
# time: whatever is pipelined behind it on the connection waits meanwhile).
LUA_WAIT = ("local s = redis.call('TIME') local t0 = s[1] * 1000000 + s[2] "
            "repeat local n = redis.call('TIME') until n[1] * 1000000 + n[2] - t0 > %d * 1000 ")


# ---------------------------------------------------------------------------
# fakes


class ScriptRedis(fakes.FakeRedis):
    """A FakeRedis that answers the commands named in `script` (upper-case
    name -> reply bytes) with those bytes; PING/AUTH/SELECT and the rest as
    FakeRedis does."""

    def __init__(self, script, name="script-redis"):
        self.script = dict(script)
        super().__init__(name)

    def reply(self, cid, args):
        cmd = args[0].upper() if args else b""
        if cmd in self.script:
            return self.script[cmd]
        return super().reply(cid, args)


class FullSplitRedis(fakes.FakeRedis):
    """Says redis-server's maxclients refusal on every connection it accepts,
    in two writes `gap` seconds apart, before reading anything; then closes."""

    def __init__(self, gap=0.3, name="full-split"):
        self.gap = gap
        super().__init__(name)

    def _serve(self, conn, cid):
        try:
            conn.sendall(b"-ERR max num")
            if not self.stop_event.wait(self.gap):
                conn.sendall(b"ber of clients reached\r\n")
        except OSError:
            pass
        finally:
            conn.close()


class LongProbeReplyRedis(fakes.FakeRedis):
    """Answers PING with an error line longer than any good probe answer."""

    def reply(self, cid, args):
        if args and args[0].upper() == b"PING":
            return b"-ERR " + b"y" * 600 + b"\r\n"
        return super().reply(cid, args)


# ---------------------------------------------------------------------------


class AdversarialRedisCase(test_hostile.HostileCase):
    """test_hostile's fixtures (walnut only, fakes, raw clients, keys_on, the
    liveness and sanitizer checks), with Redis pools."""

    def redis(self, n=1, prefix="r", **kw):
        out = []
        for i in range(n):
            r = h.RedisServer(self.tmp, name="%s%d" % (prefix, i), **kw).start()
            self.addCleanup(r.stop)
            out.append(r)
        return out

    def proxy(self, servers, **kw):
        return super().proxy(servers, redis=True, **kw)

    def split_over(self, a, b):
        """walnut in front of a and b, a key on each, and a client."""
        px = self.proxy([a, b], start=False, timeout=5000)
        ka = self.keys_on(px, a.addr, 1, b"a:")[0]
        kb = self.keys_on(px, b.addr, 1, b"b:")[0]
        px.start()
        self.addCleanup(px.kill)
        return px, ka, kb, self.raw(px.port(), timeout=10)


class TestLegitimateRepliesRefused(AdversarialRedisCase):
    """Replies a real redis-server 7.0 sends that walnut's reply parser
    refuses as a protocol error: it closes the shared server connection,
    fails whatever other clients have queued on it, and counts a server
    failure, so any client can get a healthy server ejected."""

    def test_01_long_status_line_from_a_script_ejects_the_server(self):
        """A script may return a status (or error) line of any length:
        EVAL "return redis.status_reply(string.rep('x', 70000))" 0 makes
        redis-server send a 70,003-byte '+xxx...' line. Expected: relayed as
        redis-server sends it, and the server stays in the pool. walnut refused
        status/error lines over 64 KiB (WN_RESP_MAX_TEXT): the client got
        '-ERR Invalid argument', the server connection was closed as if the
        server had misbehaved, and with auto_eject_hosts (server_failure_limit
        2) two such requests from any client ejected a healthy server: every
        other client's GET then answered '-ERR Connection refused' for
        server_retry_timeout (30 s here). Now such a line comes through in
        pieces, as a bulk's bytes do: a status line, an error line, and both
        inside an array, compared byte for byte with redis-server's own."""
        r = self.redis(1)[0]
        big = "string.rep('x', 70000)"
        scripts = ["return redis.status_reply(%s)" % big,
                   "return redis.error_reply('E' .. %s)" % big,
                   "return {1, redis.status_reply(%s), {redis.error_reply('F' .. string.rep('y', "
                   "200000))}, 'tail'}" % big]
        want = []
        with h.Raw(r.port) as d:
            for sc in scripts:
                d.send(resp("EVAL", sc, 0))
                want.append(d.recv_resp(timeout=10))
        self.assertEqual(want[0], b"+" + b"x" * 70000 + b"\r\n", "redis-server's own answer")
        self.assertEqual(want[1], b"-ERR E" + b"x" * 70000 + b"\r\n", "redis-server's own answer")
        self.assertEqual(len(want[2]), 4 + 4 + 70003 + 4 + 200008 + 10, "redis-server's own answer")
        r.call("SET", "other", "fine")
        px = self.proxy([r], timeout=5000, auto_eject_hosts=True, server_failure_limit=2,
                        server_retry_timeout=30000)
        c = self.raw(px.port())
        got = []
        for sc in scripts:
            c.send(resp("EVAL", sc, 0))
            got.append(c.recv_resp(timeout=10))
        time.sleep(0.5)
        other = self.raw(px.port())
        after = other.call("GET", "other")
        self.assertAlive(px)
        self.assertEqual(after, b"fine",
                         "another client's GET after the long lines (walnut's replies "
                         "to them: %s)" % [bytes(g[:40]) for g in got])
        for i, (g, w) in enumerate(zip(got, want)):
            self.assertEqual(g, w, "script %d's reply as redis-server sent it" % i)
        px.stop()

    def test_02_deep_script_reply_fails_another_clients_executed_request(self):
        """redis-server nests a script's Lua tables as deep as they go: a table
        600 levels deep is a 601-level reply. Expected: relayed as redis-server
        sends it. walnut's reply parser stops at depth 512
        (WN_RESP_MAX_DEPTH): the connection is closed as a protocol error
        and every request queued behind on that shared connection fails. Here
        another client's INCR, pipelined on the same server connection while
        the script ran, was executed by the server (the counter is 1) but that
        client is told '-ERR Invalid argument'."""
        r = self.redis(1)[0]
        deep = (LUA_WAIT % 300) + "local t = {1} for i = 1, 600 do t = {t} end return t"
        with h.Raw(r.port) as d:
            d.send(resp("EVAL", deep, 0))
            want = d.recv_resp(timeout=30)
        self.assertTrue(want.startswith(b"*1\r\n" * 601 + b":1\r\n"), "redis-server's answer")
        px = self.proxy([r], timeout=10000, server_connections=1)
        a = self.raw(px.port())
        b = self.raw(px.port())
        a.send(resp("EVAL", deep, 0))
        time.sleep(0.1)  # the script is running: B's INCR queues behind it
        b.send(resp("INCR", "counter"))
        b_reply = h.resp_parse(b.recv_resp(timeout=20))[0]
        a_reply = a.recv_resp(timeout=20)
        self.assertAlive(px)
        self.assertEqual(r.call("GET", "counter"), b"1", "the server ran B's INCR")
        self.assertEqual(b_reply, 1, "B's INCR was run by the server: B must be told its "
                                     "result, not an error")
        self.assertEqual(a_reply, want, "the 601-level reply as redis-server sent it")
        px.stop()


class TestMisbehavingServerSums(AdversarialRedisCase):

    def test_03_split_del_sum_overflows(self):
        """DEL across two servers is answered with the sum of the parts'
        integers (redis_merge.c, split->sum += tok->number, an int64_t). Two
        servers that each answer :9223372036854775807 make that sum overflow:
        signed overflow, undefined behaviour. Expected: walnut survives and
        never answers a count that no part said (an error line, or a bounded
        count). walnut instead answers ':-2' (plain build); a sanitizer build
        (WALNUT_ASAN, -fno-sanitize-recover) reports 'signed integer overflow'
        in redis_server.c and aborts, dropping every client."""
        big = b":9223372036854775807\r\n"
        a = self.fake(ScriptRedis({b"DEL": big}, name="a"))
        b = self.fake(ScriptRedis({b"DEL": big}, name="b"))
        px, ka, kb, c = self.split_over(a, b)
        try:
            got = c.call("DEL", ka, kb)
        except AssertionError as e:
            got = "no reply (%s)" % str(e)[:80]
        time.sleep(0.2)
        self.assertAlive(px, "after DEL of two keys whose servers each answered INT64_MAX")
        self.assertNoSanitizerReport(px)
        self.assertFalse(isinstance(got, int) and got < 0,
                         "DEL answered %r: a negative count no server sent" % (got,))
        px.stop()

    def test_03b_split_mset_part_answered_another_status(self):
        """An MSET part must answer +OK: one answered +QUEUED (what a server
        in a transaction says) was merged into +OK as if it had stored its
        keys (adversarial pass). Expected: a protocol error, the whole MSET
        answered with an error, the client kept."""
        a = self.fake(ScriptRedis({b"MSET": b"+QUEUED\r\n"}, name="a"))
        b = self.fake(ScriptRedis({b"MSET": b"+OK\r\n"}, name="b"))
        px, ka, kb, c = self.split_over(a, b)
        got = c.call("MSET", ka, "1", kb, "2")
        self.assertIsInstance(got, h.RespError, "MSET answered %r" % (got,))
        self.assertEqual(c.call("PING"), b"PONG")
        self.assertAlive(px, "after the MSET")
        px.stop()

    def test_04_long_fragment_error_is_replaced_by_a_wrong_cause(self):
        """A part of a split MGET answered with an error line longer than 512
        bytes. Expected: the client gets the server's error line, as it does
        for the same error to an unsplit GET (relayed whole, 607 bytes here).
        walnut's answer_error copies the line into a 512-byte buffer, finds no
        LF at its end and answers '-ERR Connection reset by peer' instead: a
        cause that did not happen, hiding what the server said."""
        err = b"-ERR " + b"e" * 600 + b"\r\n"
        a = self.fake(ScriptRedis({b"MGET": err, b"GET": err}, name="a"))
        b = self.fake(fakes.FakeRedis(name="b"))
        px, ka, kb, c = self.split_over(a, b)
        c.send(resp("GET", ka))
        self.assertEqual(c.recv_resp(), err, "the unsplit GET relays the error")
        c.send(resp("MGET", ka, kb))
        self.assertEqual(c.recv_resp(), err, "the split MGET's answer")
        px.stop()

    def test_05_split_error_line_in_pieces(self):
        """A part's error line over 64 KiB (WN_RESP_MAX_TEXT) comes in pieces,
        as a bulk's bytes do: MGET, DEL and MSET split over two servers answer
        the whole line, as the unsplit GET does; the connections stay usable and
        the other server's part is not mixed in."""
        err = b"-ERR " + b"e" * 200000 + b"\r\n"
        a = self.fake(ScriptRedis({b"MGET": err, b"GET": err, b"DEL": err, b"MSET": err},
                                  name="a"))
        b = self.fake(fakes.FakeRedis(name="b"))
        px, ka, kb, c = self.split_over(a, b)
        c.send(resp("GET", ka))
        self.assertEqual(c.recv_resp(), err, "the unsplit GET relays the error")
        for cmd in (("MGET", ka, kb), ("DEL", ka, kb), ("MSET", ka, "1", kb, "2")):
            c.send(resp(*cmd))
            self.assertEqual(c.recv_resp(), err, "the split %s's answer" % cmd[0])
        self.assertEqual(c.call("SET", kb, "v"), b"OK")
        self.assertEqual(c.call("GET", kb), b"v")
        self.assertAlive(px)
        px.stop()


class TestMgetShape(AdversarialRedisCase):

    def test_07_mget_reply_of_the_wrong_shape_is_refused(self):
        """MGET answers an array of one string or null per key. Sent whole
        (its keys on one server) a reply with more or fewer elements reached
        the client as it came; split, a part's error, integer or status
        element was merged into the client's array. Expected: each is a
        protocol error (-ERR Invalid argument), the right shape is relayed."""
        shapes = [b"*2\r\n$6\r\nsecret\r\n$6\r\nsecret\r\n",  # 2 for 1 key
                  b"*0\r\n",
                  b"*1\r\n:5\r\n", b"*1\r\n+OK\r\n", b"*1\r\n-ERR weird\r\n",
                  b"*1\r\n*1\r\n$1\r\nx\r\n"]
        for bad in shapes:
            a = self.fake(ScriptRedis({b"MGET": bad}, name="a"))
            b = self.fake(ScriptRedis({b"MGET": bad}, name="b"))
            px, ka, kb, c = self.split_over(a, b)
            for keys in ([ka], [ka, kb]):
                got = c.call("MGET", *keys)
                self.assertIsInstance(got, h.RespError, (bad, keys, got))
                self.assertIn("Invalid argument", str(got), (bad, keys))
            self.assertAlive(px)
            px.stop()
        good = b"*1\r\n$-1\r\n"
        a = self.fake(ScriptRedis({b"MGET": good}, name="a"))
        b = self.fake(ScriptRedis({b"MGET": good}, name="b"))
        px, ka, kb, c = self.split_over(a, b)
        self.assertEqual(c.call("MGET", ka), [None])
        self.assertEqual(c.call("MGET", ka, kb), [None, None])
        px.stop()


class TestClientsCannotFailServers(AdversarialRedisCase):

    def test_06_script_error_replies_do_not_count_against_the_server(self):
        """A real -LOADING or -MASTERDOWN reply says the server cannot serve
        now, and walnut counts it as a server failure. But a script may
        return any error line: EVAL "return redis.error_reply('LOADING x')"
        makes a healthy redis-server answer '-LOADING x'. walnut counted those
        too, so with auto_eject_hosts (server_failure_limit 2) three such
        EVALs from any client ejected a healthy server: another client's GET
        of a key on it answered nil (the key moved to the other server).
        Expected: the script's error relayed, nothing counted, the server
        kept (EVAL, EVALSHA and FCALL alike)."""
        a, b = self.redis(2)
        px = self.proxy([a, b], start=False, timeout=5000, auto_eject_hosts=True,
                        server_failure_limit=2, server_retry_timeout=30000)
        ka = self.keys_on(px, a.addr, 1, b"victim:")[0]
        px.start()
        self.addCleanup(px.kill)
        a.call("SET", ka, "precious")
        sha = a.call("SCRIPT", "LOAD", "return redis.error_reply('MASTERDOWN y')").decode()
        a.call("FUNCTION", "LOAD", "#!lua name=wlib\nredis.register_function('loading', "
               "function() return redis.error_reply('LOADING z') end)")
        good = self.raw(px.port(), timeout=10)
        self.assertEqual(good.call("GET", ka), b"precious")
        hostile = self.raw(px.port(), timeout=10)
        for cmd, want in ((("EVAL", "return redis.error_reply('LOADING x')", 1, ka),
                           b"-LOADING x\r\n"),
                          (("EVALSHA", sha, 1, ka), b"-MASTERDOWN y\r\n"),
                          (("FCALL", "loading", 1, ka), b"-LOADING z\r\n")):
            for _ in range(3):
                hostile.send(resp(*cmd))
                self.assertEqual(hostile.recv_resp(), want, "%s's reply, relayed" % cmd[0])
        time.sleep(0.5)  # control hears of failures asynchronously
        self.assertEqual(good.call("GET", ka), b"precious",
                         "another client's GET of a key on the server the scripts ran on")
        with h.Raw(px.stats_port, timeout=10) as st:
            st.send(b"GET /stats HTTP/1.0\r\n\r\n")
            body = st.recv_until_closed().split(b"\r\n\r\n", 1)[1]
        pool = json.loads(body)[next(iter(px.pools))]
        self.assertEqual(pool["server_ejects"], 0, "ejections in walnut's stats")
        self.assertAlive(px)
        px.stop()


class TestHandshakeReplies(AdversarialRedisCase):

    def test_08_auth_answered_with_a_bulk_is_a_protocol_error(self):
        """walnut's AUTH (redis_auth) may only be answered with a status or an
        error line. A server that answers it with a bulk string ("$2 OK") is
        not answering that AUTH: its replies are shifted or it is not Redis.
        walnut logged "answered walnut's AUTH with: $2", counted a failure,
        then counted the bulk's end as a success and ran the client's requests
        on that connection (the SET below reached the server). Expected: a
        reply that does not match its request, like any other: the connection
        is closed with the usual warning, the client's request is answered
        with an error and never written, a server error is counted."""
        fake = self.fake(ScriptRedis({b"AUTH": b"$2\r\nOK\r\n"}, name="bulk-auth"))
        px = self.proxy([fake], timeout=2000, redis_auth="s3cr3t-pw", health_check_interval=0)
        c = self.raw(px.port(), timeout=5)
        c.request(resp("AUTH", "s3cr3t-pw"), b"+OK\r\n")
        c.send(resp("SET", "k", "v"))
        self.assertRegex(c.recv_resp(), rb"^-ERR [^\r\n]+\r\n$", "the SET behind the AUTH")
        self.assertEqual([a for _, a in fake.requests()], [],
                         "requests written on a connection whose AUTH was not answered")
        log = h.wait_until(lambda: (lambda t: t if "does not match its request" in t else None)(
            h.read_text(px.log_path)), deadline=5, what="the mismatch warning")
        self.assertNotIn("answered walnut's AUTH", log)
        self.assertNotIn("s3cr3t", log, "the password in the log")
        self.assertAlive(px)
        px.stop()
    def test_14_a_server_echoing_the_password_does_not_put_it_in_the_log(self):
        """A server without AUTH (renamed away) answers walnut's AUTH with
        "-ERR unknown command 'AUTH', with args beginning with: '<password>'",
        and walnut's warning quoted that line: the password was in the log
        (review of fbc3df3). Expected: the quote with the password masked, also
        when redis-server cut a long one short."""
        for pw in ("pw-SECRET-5", "L" + "0123456789" * 20):
            r = h.RedisServer(self.tmp, name="noauth%d" % len(pw),
                              extra=["--rename-command", "AUTH", ""]).start()
            self.addCleanup(r.stop)
            px = self.proxy([r], timeout=2000, redis_auth=pw, health_check_interval=0,
                            name="px%d" % len(pw))
            c = self.raw(px.port(), timeout=5)
            c.request(resp("AUTH", pw), b"+OK\r\n")
            c.send(resp("SET", "k", "v"))
            c.recv_resp()
            log = h.wait_until(lambda: (lambda t: t if "answered walnut's AUTH" in t else None)(
                h.read_text(px.log_path)), deadline=5, what="the AUTH warning")
            self.assertIn("unknown command 'AUTH'", log)
            self.assertIn("****", log)
            for i in range(len(pw) - 7):
                self.assertNotIn(pw[i:i + 8], log, "the password in the log")
            px.stop()


class TestServerAtItsLimit(AdversarialRedisCase):

    def fill(self, r):
        """Connections to r until it refuses one; closed at the test's end."""
        self.assertEqual(r.call("CONFIG", "SET", "maxclients", "2"), b"OK")
        fillers, said = [], None
        for _ in range(16):
            f = h.Raw(r.port, timeout=5)
            f.send(b"PING\r\n")
            said = f.recv_resp()
            if said != b"+PONG\r\n":
                f.close()
                break
            fillers.append(f)
        self.addCleanup(lambda: [f.close() for f in fillers])
        self.assertEqual(said, b"-ERR max number of clients reached\r\n",
                         "redis-server did not fill")
        return fillers

    def servers_view(self, px):
        return px.http_json("/servers")["pools"][0]["servers"][0]

    def test_09_a_server_at_maxclients_says_so(self):
        """redis-server past its maxclients accepts, writes '-ERR max number of
        clients reached' and closes. walnut gave that line to the first request
        on the connection as its reply and '-ERR Connection reset by peer' (or
        Broken pipe) to the rest, and logged nothing at the default level (an
        adversarial pass, 3 Dec). Expected, as for memcached's -c (test_hostile
        test_20): every request on that connection gets redis-server's words, the
        log says the server is at its connection limit, and service resumes once
        a slot is free."""
        r = self.redis(1)[0]
        fillers = self.fill(r)
        px = self.proxy([r], workers=1, timeout=2000, health_check_interval=0)
        c = self.raw(px.port(), timeout=5)
        full = b"-ERR max number of clients reached\r\n"
        c.send(resp("SET", "k", "v") + resp("GET", "k") + resp("INCR", "n"))
        self.assertEqual([c.recv_resp() for _ in range(3)], [full] * 3)
        self.assertIn("is at its connection limit (it said '-ERR max number of clients reached'",
                      h.wait_until(lambda: (lambda t: t if "connection limit" in t else None)(
                          h.read_text(px.log_path)), deadline=5, what="the warning"))
        for f in fillers:
            f.close()
        def has_slot():
            with h.Raw(r.port, timeout=5) as s:
                s.send(b"PING\r\n")
                return s.recv_resp() == b"+PONG\r\n"
        h.wait_until(has_slot, deadline=5, what="a slot in redis-server")
        c.send(resp("SET", "k", "v") + resp("GET", "k"))
        self.assertEqual([c.recv_resp() for _ in range(2)], [b"+OK\r\n", b"$1\r\nv\r\n"])
        self.assertAlive(px)
        px.stop()

    def test_10_probe_failures_say_what_the_server_said(self):
        """A probe the server refused read 'protocol error' in the log and in
        /servers, whatever the server said: a wrong redis_auth's -NOAUTH and a
        full server looked alike (an adversarial pass, 3 Dec). Expected: the
        server's line in /servers (last_probe_said) and in the failure's log
        line; a full server's probe fails as ESRVFULL."""
        locked = self.redis(1, prefix="locked", password="right-pw")[0]
        px = self.proxy([locked], workers=1, timeout=1000, redis_auth="wrong-pw",
                        health_check_interval=100, auto_eject_hosts=False, verbosity=6)
        sv = h.wait_until(lambda: (lambda v: v if v["last_probe"] not in (None, "ok") else None)(
            self.servers_view(px)), deadline=10, what="a refused probe")
        self.assertEqual(sv["last_probe_code"], "WN_EPROTO")
        self.assertEqual(sv["last_probe_said"], "-NOAUTH Authentication required.")
        h.wait_until(lambda: "health probe, which it answered '-NOAUTH Authentication "
                     "required.'" in h.read_text(px.log_path), deadline=5, what="the log line")
        self.assertNotIn("wrong-pw", h.read_text(px.log_path), "the password in the log")
        px.stop()

        full = self.redis(1, prefix="full")[0]
        self.fill(full)
        px = self.proxy([full], workers=1, timeout=1000, health_check_interval=100,
                        auto_eject_hosts=False)
        sv = h.wait_until(lambda: (lambda v: v if v["last_probe"] not in (None, "ok") else None)(
            self.servers_view(px)), deadline=10, what="a refused probe")
        self.assertEqual(sv["last_probe_code"], "WN_ESRVFULL")
        self.assertEqual(sv["last_probe"], "the server is at its connection limit")
        self.assertEqual(sv["last_probe_said"], "-ERR max number of clients reached")
        px.stop()


    def test_11_a_script_first_on_a_full_server(self):
        """The full line was not recognised when the connection's first request
        was a script (a script may return any error): EVAL got the line as its
        reply, the GET behind it 'Connection reset by peer', the log said only
        'closed ... end of file', and the server was never counted as failing
        (review of fbc3df3). redis-server says it before reading anything, so
        it is the connection's first reply whatever was asked."""
        r = self.redis(1)[0]
        self.fill(r)
        px = self.proxy([r], workers=1, timeout=2000, health_check_interval=0)
        c = self.raw(px.port(), timeout=5)
        full = b"-ERR max number of clients reached\r\n"
        c.send(resp("EVAL", "return 1", "0") + resp("GET", "k"))
        self.assertEqual([c.recv_resp() for _ in range(2)], [full] * 2)
        h.wait_until(lambda: "is at its connection limit" in h.read_text(px.log_path),
                     deadline=5, what="the warning")
        self.assertAlive(px)
        px.stop()

    def test_12_the_full_line_in_pieces_on_a_preconnected_connection(self):
        """On a connection with nothing asked (preconnect), the first piece of
        the full line was 'bytes nobody asked for': the log said the server
        sent a reply that does not match its request (review of fbc3df3)."""
        fake = self.fake(FullSplitRedis())
        px = self.proxy([fake], workers=1, timeout=2000, health_check_interval=0,
                        preconnect=True)
        h.wait_until(lambda: "is at its connection limit" in h.read_text(px.log_path),
                     deadline=5, what="the warning")
        self.assertNotIn("does not match its request", h.read_text(px.log_path))
        self.assertAlive(px)
        px.stop()

    def test_13_a_probe_answer_longer_than_its_buffer_is_quoted(self):
        """A probe answer over 512 bytes failed the probe with no
        last_probe_said (review of fbc3df3). Expected: its start, cut."""
        fake = self.fake(LongProbeReplyRedis(name="long-probe"))
        px = self.proxy([fake], workers=1, timeout=1000, health_check_interval=100,
                        auto_eject_hosts=False)
        sv = h.wait_until(lambda: (lambda v: v if v["last_probe"] not in (None, "ok") else None)(
            self.servers_view(px)), deadline=10, what="a refused probe")
        self.assertEqual(sv["last_probe_code"], "WN_EPROTO")
        self.assertRegex(sv["last_probe_said"] or "", r"^-ERR y{80,}$")
        px.stop()

if __name__ == "__main__":
    h.main()
